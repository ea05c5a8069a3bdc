package proxy

// The PAUSE/DISABLE gate every borrow passes (enterBorrow, called by
// session.borrow and login): a paused database lends no servers, so new
// transactions wait (bounded by query_wait_timeout); a disabled one refuses
// new logins. SUSPEND (suspend.go) closes the gate of every database too.
// The admin console (proxy/admin) sets it through the Backend methods in
// console.go.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgtide/pgtide/pool"
)

// gatePass is a session's state at the gate.
type gatePass struct {
	// ctl is the database's gate, looked up once; owned by the client goroutine.
	ctl *dbControl
	// waitStart is when the session started waiting for a server (unix ns),
	// 0 when it is not waiting (SHOW CLIENTS state, cl_waiting, maxwait).
	// Its lowest bit is cleared when a wait starts and set once the wait's
	// query_wait_notify NOTICE is due (waitnotify.go): one per wait.
	waitStart atomic.Int64
	// held: the session holds the server it borrowed without using it
	// until RESUME (SUSPEND began while it waited); SUSPEND counts it, and
	// a session waiting for a server (waitStart), as quiet.
	held atomic.Bool
}

// dbControl is the gate of one database name.
type dbControl struct {
	g                *gate
	paused, disabled atomic.Bool
	// inflight counts borrows past the gate whose Acquire has not returned;
	// PAUSE waits for them as for lent servers.
	inflight atomic.Int64
}

// gate is the Server's PAUSE/DISABLE state. The zero value is ready.
type gate struct {
	dbs       sync.Map // database name → *dbControl; freed with an autodb database's pools (autodb.go)
	pausedAll atomic.Bool

	mu      sync.Mutex
	changed chan struct{} // closed and dropped by broadcast
}

// db returns the control of a database name, creating it.
func (g *gate) db(name string) *dbControl {
	if c, ok := g.dbs.Load(name); ok {
		return c.(*dbControl)
	}
	c, _ := g.dbs.LoadOrStore(name, &dbControl{g: g})
	return c.(*dbControl)
}

// peek returns the control of a database name, or nil.
func (g *gate) peek(name string) *dbControl {
	if c, ok := g.dbs.Load(name); ok {
		return c.(*dbControl)
	}
	return nil
}

func (g *gate) paused(c *dbControl) bool { return g.pausedAll.Load() || c.paused.Load() }

// gateClosed reports whether a borrow of c must wait: PAUSE or SUSPEND.
func (s *Server) gateClosed(c *dbControl) bool { return s.gate.paused(c) || s.susp.on.Load() }

// wait returns a channel closed at the next broadcast: take it before
// looking at the state it guards, so that no change is missed.
func (g *gate) wait() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.changed == nil {
		g.changed = make(chan struct{})
	}
	return g.changed
}

// broadcast wakes everyone waiting on the gate: a pause was set or lifted,
// or the last borrow in flight of a paused database left.
func (g *gate) broadcast() {
	g.mu.Lock()
	if g.changed != nil {
		close(g.changed)
		g.changed = nil
	}
	g.mu.Unlock()
}

// setPaused pauses or resumes db ("" = every database).
func (g *gate) setPaused(db string, on bool) {
	if db != "" {
		g.db(db).paused.Store(on)
	} else {
		g.pausedAll.Store(on)
		if !on {
			g.dbs.Range(func(_, v any) bool {
				v.(*dbControl).paused.Store(false)
				return true
			})
		}
	}
	g.broadcast()
}

// enterBorrow is the gate of every borrow: it marks the session as waiting
// and blocks while its database is paused (blocked: it did, so the borrow
// waited, and its wait time counts). The caller must call leave on the
// result once its Acquire has returned.
func (s *Server) enterBorrow(ctx context.Context, ss *session, start time.Time) (_ *dbControl, blocked bool, _ error) {
	c := ss.gate.ctl
	if c == nil {
		c = s.gate.db(ss.dbName)
		ss.gate.ctl = c
	}
	ss.gate.waitStart.Store(start.UnixNano() &^ waitNotified) // waitnotify.go
	for {
		// Count first, then look: PAUSE sets the flag, then waits for
		// inflight to drain, so one of the two sees the other.
		c.inflight.Add(1)
		if !s.gateClosed(c) {
			return c, blocked, nil
		}
		c.leave(nil)
		blocked = true
		if err := s.waitResume(ctx, c); err != nil {
			ss.gate.waitStart.Store(0)
			return nil, blocked, err
		}
	}
}

// leave ends a borrow's pass through the gate (ss nil: a pass that did not
// get through). A borrow that ends while suspended keeps its server unused
// until RESUME: nothing of the client's goes out during a SUSPEND.
func (c *dbControl) leave(ss *session) {
	if c.inflight.Add(-1) == 0 && c.g.paused(c) {
		c.g.broadcast() // a PAUSE may be waiting for the last one
	}
	if ss != nil {
		// Clear, then look: SUSPEND sets its flag, then looks at
		// waitStart, so one of the two sees the other.
		ss.gate.waitStart.Store(0)
		ss.srv.holdWhileSuspended(ss)
	}
}

// waitResume blocks until c is neither paused nor suspended, ctx ends
// (query_wait_timeout) or shutdown begins.
func (s *Server) waitResume(ctx context.Context, c *dbControl) error {
	var intr <-chan struct{} // a cancel request for the waiting query
	if ic, ok := ctx.(pool.Interruptible); ok && s.gateClosed(c) {
		intr = ic.Interrupt()
	}
	for {
		ch := s.gate.wait()
		if !s.gateClosed(c) {
			return nil
		}
		select {
		case <-ch:
		case <-s.stopBegun:
			return &clientError{codeAdminShutdown, "terminating connection due to administrator command"}
		case <-ctx.Done():
			return acquireError(pool.ErrWaitTimeout)
		case <-intr:
			return errWaitCancelled
		}
	}
}

// loginAcquire borrows the server a login needs: refused for a disabled
// database, waiting while it is paused. Errors are for the client.
func (s *Server) loginAcquire(ctx context.Context, ss *session) (_ *pool.Conn, waited bool, _ error) {
	if err := s.loginAllowed(ss); err != nil {
		return nil, false, err
	}
	g, blocked, err := s.enterBorrow(ctx, ss, time.Now())
	if err != nil {
		return nil, blocked, err
	}
	sc, w, err := acquire(ctx, ss.pe.pool, time.Now())
	g.leave(ss)
	if err != nil {
		return nil, blocked || w, acquireError(err)
	}
	return sc, blocked || w, nil
}

// loginAllowed refuses a login to a database DISABLEd by the admin.
func (s *Server) loginAllowed(ss *session) error {
	c := s.gate.db(ss.dbName)
	ss.gate.ctl = c
	if c.disabled.Load() {
		return &clientError{codeCannotConnectNow, fmt.Sprintf("database %q is disabled", ss.dbName)}
	}
	return nil
}
