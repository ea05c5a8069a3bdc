package proxy

// SUSPEND and RESUME of the admin console. PgBouncer's SUSPEND flushes its
// socket buffers and stops reading every socket, for an online restart that
// hands the sockets over. pgtide has no such hand-over, so its SUSPEND is
// the part an operator can observe: client traffic stops and nothing is in
// flight.
//
//   - Every client socket of a database session stops being read: its
//     connection is a suspendConn (accepted connections are wrapped in
//     serveConn and armed when the session starts), whose reads wait while
//     suspended; a read already blocked in the kernel is woken by a read
//     deadline in the past and re-issued after RESUME. Bytes the client
//     sends meanwhile wait in the kernel, unread, so nothing is lost and
//     nothing reaches a server: a transaction stays open on its server,
//     whole, and goes on after RESUME.
//   - Borrows wait at the PAUSE gate (gate.go), and one that got its
//     server as SUSPEND began keeps it unused until RESUME.
//   - SUSPEND returns once every session is quiet: its reader is parked
//     with every complete message it had read forwarded and no reply owed
//     by its server (or owed only after the client's next message: an
//     unsynced batch, a COPY IN), or it waits at the gate with nothing sent,
//     or it is parked without a goroutine (park.go; when its client sends,
//     the goroutine that resumes it reads through the suspendConn, and
//     waits there).
//
// Consoles are never armed, so the console keeps working; new connections
// are accepted and may open a console (to RESUME), while their logins to a
// database wait at the gate. Servers are untouched: none is closed, reset
// or handed over, so no transaction is broken and none is lent dirty.

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pgtide/pgtide/proxy/admin"
)

// suspendCtl is the Server's SUSPEND state. The zero value is not suspended.
type suspendCtl struct {
	on atomic.Bool

	mu      sync.Mutex
	resumed chan struct{} // closed by resume; non-nil while suspended
	armed   map[*suspendConn]struct{}
}

// errSuspended is SUSPEND given twice.
var errSuspended = errors.New("already suspended")

// begin suspends: reads of armed connections stop, the one in progress is
// woken. false when already suspended.
func (sc *suspendCtl) begin() bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.on.Load() {
		return false
	}
	sc.resumed = make(chan struct{})
	sc.on.Store(true) // before interrupting: a read that starts now sees it
	for c := range sc.armed {
		c.interrupt()
	}
	return true
}

// resume ends a suspension: parked reads go on. false when not suspended.
func (sc *suspendCtl) resume() bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !sc.on.Load() {
		return false
	}
	sc.on.Store(false)
	close(sc.resumed)
	sc.resumed = nil
	for c := range sc.armed {
		c.restore()
	}
	return true
}

// waitCh returns a channel closed at resume, or nil when not suspended.
func (sc *suspendCtl) waitCh() <-chan struct{} {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.resumed
}

// arm makes c's reads stop while suspended (a database session's client
// socket; never a console's).
func (sc *suspendCtl) arm(nc net.Conn) {
	c := asSuspendConn(nc)
	if c == nil {
		return
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return // Close's disarm may have run already: do not leave it behind
	}
	if sc.armed == nil {
		sc.armed = map[*suspendConn]struct{}{}
	}
	sc.armed[c] = struct{}{}
	c.armed.Store(true)
	if sc.on.Load() {
		c.interrupt()
	}
}

func (sc *suspendCtl) disarm(c *suspendConn) {
	sc.mu.Lock()
	delete(sc.armed, c)
	sc.mu.Unlock()
}

// asSuspendConn finds the suspendConn under nc (TLS included), or nil.
func asSuspendConn(nc net.Conn) *suspendConn {
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	c, _ := nc.(*suspendConn)
	return c
}

// suspendConn is an accepted client connection whose reads SUSPEND can
// stop. Reads are by the client goroutine only (through Read, or through
// the RawConn of wire's idle reader); the deadline fields are under mu.
type suspendConn struct {
	net.Conn
	ctl   *suspendCtl
	armed atomic.Bool
	// parked: a read is waiting for RESUME (SUSPEND's quiet test).
	parked atomic.Bool

	mu          sync.Mutex
	userRD      time.Time     // the read deadline its owner set
	kick        chan struct{} // closed when userRD changes or the conn closes; made by a read that waits (nil until then: idle clients are many)
	interrupted bool          // the socket's read deadline is SUSPEND's, not userRD
	closed      bool          // (the two bools together: 80 bytes, not 96, per client)
}

func newSuspendConn(nc net.Conn, ctl *suspendCtl) *suspendConn {
	return &suspendConn{Conn: nc, ctl: ctl}
}

// Write is the socket's, as raw system calls (rawio.go): the login's
// writes (and TLS records) go this way; the data path writes through the
// reader's RawConn. As runtime system calls they woke the runtime's
// monitor thread on a login's round trips (docs/performance.md,
// "Per-login CPU"). The RawConn is fetched per write (a small allocation)
// rather than kept: idle clients are many.
func (c *suspendConn) Write(p []byte) (int, error) {
	switch nc := c.Conn.(type) {
	case *net.TCPConn:
		if rc, err := nc.SyscallConn(); err == nil {
			return writeRaw(rc, p)
		}
	case *net.UnixConn:
		if rc, err := nc.SyscallConn(); err == nil {
			return writeRaw(rc, p)
		}
	}
	return c.Conn.Write(p)
}

// interrupt wakes a read blocked in the kernel (called under ctl.mu).
func (c *suspendConn) interrupt() {
	c.mu.Lock()
	c.interrupted = true
	_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
	c.mu.Unlock()
}

// restore puts the owner's read deadline back (called under ctl.mu).
func (c *suspendConn) restore() {
	c.mu.Lock()
	c.interrupted = false
	_ = c.Conn.SetReadDeadline(c.userRD)
	c.mu.Unlock()
}

func (c *suspendConn) kickLocked() {
	if c.kick != nil {
		close(c.kick)
		c.kick = nil
	}
}

func (c *suspendConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.userRD = t
	c.kickLocked()
	if c.interrupted {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *suspendConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

func (c *suspendConn) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		c.kickLocked()
	}
	c.mu.Unlock()
	c.ctl.disarm(c) // after closed is set: arm checks it under ctl.mu
	return c.Conn.Close()
}

// gateRead parks the caller while suspended. It returns an error when the
// connection is closed or its owner's read deadline passes meanwhile.
func (c *suspendConn) gateRead() error {
	for c.armed.Load() && c.ctl.on.Load() {
		ch := c.ctl.waitCh()
		c.mu.Lock()
		if c.kick == nil {
			c.kick = make(chan struct{})
		}
		closed, rd, kick := c.closed, c.userRD, c.kick
		c.mu.Unlock()
		if closed {
			return net.ErrClosed
		}
		if ch == nil {
			continue // resumed in between
		}
		var timeout <-chan time.Time
		var t *time.Timer
		if !rd.IsZero() {
			d := time.Until(rd)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			t = time.NewTimer(d)
			timeout = t.C
		}
		c.parked.Store(true)
		select {
		case <-ch:
		case <-kick:
		case <-timeout:
		}
		c.parked.Store(false)
		if t != nil {
			t.Stop()
		}
	}
	return nil
}

// ours reports whether err is the timeout SUSPEND caused, not the owner's.
func (c *suspendConn) ours(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	c.mu.Lock()
	rd, closed := c.userRD, c.closed
	c.mu.Unlock()
	return !closed && (rd.IsZero() || time.Now().Before(rd))
}

func (c *suspendConn) Read(p []byte) (int, error) {
	for {
		if err := c.gateRead(); err != nil {
			return 0, err
		}
		n, err := c.Conn.Read(p)
		if n == 0 && err != nil && c.ours(err) {
			continue
		}
		return n, err
	}
}

// CloseWrite ends the write side of the socket beneath: kill's lingering
// close (session.go lingerClose) reaches plain sockets through here.
func (c *suspendConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// SyscallConn gives wire's idle reader a RawConn whose reads SUSPEND stops
// too.
func (c *suspendConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	return suspendRaw{raw, c}, nil
}

type suspendRaw struct {
	syscall.RawConn
	c *suspendConn
}

func (r suspendRaw) Read(f func(fd uintptr) bool) error {
	for {
		if err := r.c.gateRead(); err != nil {
			return err
		}
		err := r.RawConn.Read(f)
		if err != nil && r.c.ours(err) {
			continue // f saw no data (EAGAIN) before the deadline
		}
		return err
	}
}

// Suspend is the console's SUSPEND: it stops client traffic (see above).
func (s *Server) Suspend() error {
	if s.state.Load() != stateRunning {
		return admin.ErrStopping
	}
	if !s.susp.begin() {
		return errSuspended
	}
	s.logger().Info().Msg("SUSPEND: client sockets are no longer read")
	s.gate.broadcast()
	return nil
}

// WaitSuspended returns once every session is quiet, with ErrResumed when
// a RESUME came first and ErrStopping when shutdown began.
func (s *Server) WaitSuspended(ctx context.Context) error {
	// Sessions park and servers answer without telling the gate: look
	// again at each gate event and every few milliseconds.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		gch := s.gate.wait()
		rch := s.susp.waitCh()
		if s.state.Load() != stateRunning {
			return admin.ErrStopping // a shutdown ends the suspension too
		}
		if rch == nil {
			return admin.ErrResumed
		}
		if s.quiet() {
			s.logger().Info().Msg("SUSPEND: every session is quiet")
			return nil
		}
		select {
		case <-gch:
		case <-rch:
		case <-tick.C:
		case <-s.stopBegun:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// quiet reports whether no session has anything in flight.
func (s *Server) quiet() bool {
	s.mu.Lock()
	list := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		list = append(list, ss)
	}
	s.mu.Unlock()
	for _, ss := range list {
		if !ss.quietForSuspend() {
			return false
		}
	}
	return true
}

// quietForSuspend: the session waits for a server with nothing of this
// request sent (gate.go: held at the gate, in Acquire, or holding the
// server it got until RESUME), it is parked without a goroutine (park.go:
// idle, no server), or its reader is parked and its server owes it nothing
// it would send unasked.
func (ss *session) quietForSuspend() bool {
	if ss.gate.held.Load() || ss.gate.waitStart.Load() != 0 || ss.parked.Load() {
		return true
	}
	c := asSuspendConn(ss.conn)
	if c == nil || !c.parked.Load() {
		return false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.q.empty() || ss.unsynced || ss.copyIn || ss.gone || ss.over != nil
}

// holdWhileSuspended keeps a session that just borrowed a server from
// using it until RESUME (or until the session ends or shutdown begins).
func (s *Server) holdWhileSuspended(ss *session) {
	if !s.susp.on.Load() {
		return
	}
	ss.gate.held.Store(true)
	defer ss.gate.held.Store(false)
	for {
		ch := s.susp.waitCh()
		if ch == nil {
			return
		}
		select {
		case <-ch:
		case <-s.stopBegun:
			return
		case <-ss.ended.Done():
			return
		}
	}
}

// Suspended is SHOW STATE's "suspended".
func (s *Server) Suspended() bool { return s.susp.on.Load() }
