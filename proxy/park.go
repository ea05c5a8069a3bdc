package proxy

import (
	"errors"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"
)

// Parking: a client with nothing in flight and no server holds no
// goroutine. Its socket waits in the parker's epoll set (park_linux.go)
// and a goroutine runs the session again when the client sends something
// or pgtide must end the session (kill). A parked client costs its session
// record and socket, about what PgBouncer keeps for an idle client, instead
// of a goroutine's stack on top, and no read buffer.
//
// A client parks when it logs in with nothing sent yet, and later when the
// sweeper finds it idle for a whole sweep (parkAfter): the sweeper wakes the
// goroutine's blocked read with a read deadline in the past, and the
// session loop parks if it still may (parkableLocked). Busy clients never
// see the sweeper: the hot path pays one atomic add per read.
//
// TLS clients are never parked: tls.Conn buffers decrypted bytes that epoll
// cannot see.

// parkAfter is how long a client must have read nothing before the sweeper
// parks it.
const parkAfter = 2 * time.Second

// errParked is the session loop's signal that the session parked: its
// goroutine ends without cleaning up; another one resumes it.
var errParked = errors.New("session parked")

// startSession runs a client that just logged in: parked at once when it
// has sent nothing yet, else on a worker (workers.go). Called on the login's
// worker, which then goes back for the next job.
func (s *Server) startSession(ss *session) {
	s.logConnected(ss)
	ss.startIdleClock() // client_idle_timeout (timeouts.go)
	if ss.rd.Len() == 0 {
		ss.rd.Shrink() // the login's read buffer goes back to the shared pool
		if s.park(ss) {
			return
		}
	}
	s.work.run(func() { s.runSession(ss) })
}

// runSession runs a client's session loop until it ends (then cleans up
// after it) or parks.
func (s *Server) runSession(ss *session) {
	parked := false
	defer func() {
		if parked {
			return // whoever resumes the session owns it now
		}
		if r := recover(); r != nil {
			ss.logger().Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("session panicked; closing its connections")
		}
		_ = ss.conn.Close()
		s.admitted.Add(-1)
		s.connGone() // console.go
		s.sessWG.Done()
	}()
	for {
		err := ss.run()
		if errors.Is(err, errParked) {
			if s.park(ss) {
				parked = true
				return
			}
			continue // the parker refused it: wait on this goroutine
		}
		s.logDisconnected(ss, err) // statslog.go
		return
	}
}

// park hands an idle session to the parker. It reports false when the
// session must go on running on the caller's goroutine; true means the
// caller must not touch the session again (park itself still looks at
// over once the parker holds it, and resumes a session ended meanwhile).
func (s *Server) park(ss *session) bool {
	p := s.parker
	if p == nil || parkSocket(ss.conn) == nil {
		return false
	}
	// Without a server, what its last transaction left goes: the request
	// queue's array and the last pump's channel (closed or closing; finish
	// waits on pumpDone only with a server attached). A session-mode
	// client parks at login with its server attached. The Reader stays
	// (its buffer went back to the shared pool already): pumps write to
	// the client through its RawConn (toClient).
	ss.mu.Lock()
	if ss.sc == nil && ss.q.empty() {
		ss.q = reqQueue{}
		ss.pumpDone = nil
	}
	ss.mu.Unlock()
	if !p.park(ss) {
		return false
	}
	// A kill that came after run found the session parkable saw nothing
	// parked to resume (kill sets over, then unparks): resume it now, or
	// it waits parked for a client that may never send or close.
	ss.mu.Lock()
	over := ss.over != nil
	ss.mu.Unlock()
	if over {
		s.unpark(ss)
	}
	return true
}

// unpark resumes a parked session at once, so that it sees what was done to
// it (kill closed its socket). No-op for a session that is running.
func (s *Server) unpark(ss *session) {
	if p := s.parker; p != nil && p.take(ss) {
		s.work.run(func() { s.runSession(ss) })
	}
}

// ParkedClients is the number of clients parked now (the metrics'
// pgtide_client_connections_parked).
func (s *Server) ParkedClients() int {
	if p := s.parker; p != nil {
		return int(p.n.Load())
	}
	return 0
}

// parkWake reports whether a client read error is the sweeper's wake-up
// (the only other read deadline on a logged-in client is kill's, once the
// session is over), and clears the deadline so the next read waits again.
func (ss *session) parkWake(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	// Under mu from the check to the clear: kill sets over under mu before
	// it sets its linger deadline, so the clear cannot erase that deadline.
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.over != nil {
		return false // kill's linger deadline (lingerClose): the read ends here
	}
	_ = ss.conn.SetReadDeadline(time.Time{})
	return true
}

// parkableLocked reports whether the session may park: idle, and nothing
// read and not yet handled. Session goroutine only (it owns rd).
func (ss *session) parkableLocked() bool {
	return ss.idleLocked() && ss.passRemain == 0 && ss.rd.Len() == 0
}

// idleLocked is the part of parkableLocked anyone holding mu may ask: no
// server, nothing owed by one, not ending.
func (ss *session) idleLocked() bool {
	return parkSocket(ss.conn) != nil && ss.sc == nil && ss.q.empty() && !ss.unsynced && !ss.copyIn &&
		ss.over == nil && !ss.gone
}

// sweepIdle asks every running, parkable client that read nothing since
// the last sweep to park, by waking its blocked read. A client that holds a
// server idle in a transaction with no pump reading it (pump.go heldIdle)
// is woken the same way, and starts the pump goroutine that watches it.
func (s *Server) sweepIdle() {
	var ask []*session
	s.mu.Lock()
	for _, ss := range s.sessions {
		if ss.parked.Load() || (parkSocket(ss.conn) == nil && !ss.heldIdle.Load()) {
			continue
		}
		a := ss.activity.Load()
		if a != ss.sweepSeen {
			ss.sweepSeen = a
			continue
		}
		ask = append(ask, ss)
	}
	s.mu.Unlock()
	for _, ss := range ask {
		// Under mu, with over checked: kill sets over under mu before its
		// linger deadline, so this past deadline cannot replace that one
		// (which would close the socket at once, the FATAL perhaps unread).
		ss.mu.Lock()
		if ss.idleLocked() || ss.heldIdle.Load() && ss.over == nil {
			_ = ss.conn.SetReadDeadline(time.Now())
		}
		ss.mu.Unlock()
	}
}

// Trimming: parked clients hold little, but the garbage of their logins
// (SCRAM, startup, a server's welcome) made the heap grow to twice its live
// size (GOGC=100), and the Go runtime keeps that much mapped once it is
// idle. When a wave of at least trimMin more clients than at the last trim
// has parked and no client parked for trimSettle since, the heap's free
// pages go back to the OS (a forced GC, then a scavenge). Under load
// clients keep running or park a few at a time, so this never runs there;
// once traffic resumes the heap may grow back to GOGC's goal.
const (
	trimMin    = 1000
	trimSettle = 500 * time.Millisecond
)

// trimState is the parker loop's trim bookkeeping (loop only, but for
// running).
type trimState struct {
	base    int64     // parked clients at the last trim (or fewer, as clients leave)
	parks   uint64    // the parker's park count when last looked at
	quiet   time.Time // since when no client parked
	pending bool      // a wave is big enough: trim once it settles
	running atomic.Bool
}

// check looks at the parked count n and the count of parks so far, and
// reports whether to trim now: a big enough wave has settled.
func (t *trimState) check(n int64, parks uint64, now time.Time) bool {
	t.base = min(t.base, n)
	if parks != t.parks {
		t.parks, t.quiet = parks, now
	}
	t.pending = n-t.base >= max(trimMin, t.base/4)
	if !t.pending || now.Sub(t.quiet) < trimSettle || !t.running.CompareAndSwap(false, true) {
		return false
	}
	t.base, t.pending = n, false
	return true
}

// trimNow returns the heap's free pages to the OS (off the parker loop:
// wake-ups must not wait for a GC).
func (s *Server) trimNow(t *trimState, parked int64) {
	defer t.running.Store(false)
	s.work.dropIdle() // their stacks go back with the heap (workers.go)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	debug.FreeOSMemory()
	runtime.ReadMemStats(&after)
	s.logger().Debug().Int64("parked", parked).Uint64("released_bytes", after.HeapReleased-min(after.HeapReleased, before.HeapReleased)).
		Msg("clients parked: free heap memory returned to the OS")
}

// parkSocket returns the socket a session may park on: a plain TCP or Unix
// connection (never TLS).
func parkSocket(nc net.Conn) syscall.Conn {
	switch c := nc.(type) {
	case *net.TCPConn:
		return c
	case *net.UnixConn:
		return c
	case *suspendConn: // the accepted socket, wrapped for SUSPEND (suspend.go)
		if parkSocket(c.Conn) != nil {
			return c
		}
	}
	return nil
}
