package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgtide/pgtide/proxy/wire"
)

// PoolCounters are the running totals of one pool, in PgBouncer's terms
// (SHOW STATS): a query is one request answered by ReadyForQuery (a Query,
// a Sync of an extended batch, a FunctionCall); a transaction ends at a
// ReadyForQuery with status I. Updated with atomics on the hot path.
type PoolCounters struct {
	Xacts, Queries    atomic.Uint64
	BytesIn, BytesOut atomic.Uint64 // client→server, server→client
	XactNanos         atomic.Int64  // total time in transactions
	QueryNanos        atomic.Int64  // total time of queries
	WaitNanos         atomic.Int64  // total time clients waited for a server
	Waits             atomic.Uint64
	Logins            atomic.Uint64
	// Clients pinned to their server now, and statements refused under
	// pin_policy "refuse", by reason (PinReasons order).
	Pinned      [numPinReasons]atomic.Int64
	PinRefusals [numPinReasons]atomic.Uint64

	errMu  sync.Mutex
	errors map[string]uint64 // by SQLSTATE class (first two characters)
}

// ErrorsByClass returns a copy of the error counts by SQLSTATE class.
func (c *PoolCounters) ErrorsByClass() map[string]uint64 {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	out := make(map[string]uint64, len(c.errors))
	for k, v := range c.errors {
		out[k] = v
	}
	return out
}

// CountError counts a server ErrorResponse by its SQLSTATE class.
func (c *PoolCounters) CountError(code string) {
	if len(code) < 2 {
		return
	}
	c.errMu.Lock()
	if c.errors == nil {
		c.errors = map[string]uint64{}
	}
	c.errors[code[:2]]++
	c.errMu.Unlock()
}

// Observer receives per-event timings, for histograms (metrics). Calls come
// from session goroutines and must not block.
type Observer interface {
	QueryDone(db, user string, d time.Duration)
	XactDone(db, user string, d time.Duration)
	Waited(db, user string, d time.Duration)
	ServerError(db, user, sqlstate string)
	Login(db, user string, ok bool)
}

// SetObserver installs o (nil removes it). Set it before Serve.
func (s *Server) SetObserver(o Observer) {
	if o == nil {
		s.observer.Store(nil)
		return
	}
	s.observer.Store(&o)
}

func (s *Server) obs() Observer {
	if p := s.observer.Load(); p != nil {
		return *p
	}
	return nil
}

// LoginFailures counts failed client logins (any database).
func (s *Server) LoginFailures() uint64 { return s.loginFailures.Load() }

// requestsQueuedLocked notes the start of a query (and of a transaction)
// when the client goroutine queued requests on an empty queue; now is the
// batch's clock.
func (ss *session) requestsQueuedLocked(wasEmpty bool, now time.Time) {
	if !wasEmpty || ss.q.empty() {
		return
	}
	ss.queryStart = now
	if ss.txStatus == wire.TxIdle {
		ss.xactStart = now
	}
}

// readyLocked counts a query, and a transaction when status is I.
func (ss *session) readyLocked(status byte, skipped bool) {
	if skipped {
		return
	}
	c := ss.pe.counters
	now := time.Now()
	o := ss.srv.obs()
	c.Queries.Add(1)
	if !ss.queryStart.IsZero() {
		d := now.Sub(ss.queryStart)
		c.QueryNanos.Add(int64(d))
		if o != nil {
			o.QueryDone(ss.dbName, ss.userName, d)
		}
	}
	ss.queryStart = now // the next pipelined request starts now
	if ss.q.empty() {
		ss.queryStart = time.Time{}
	}
	if status == wire.TxIdle && !ss.xactStart.IsZero() {
		d := now.Sub(ss.xactStart)
		c.Xacts.Add(1)
		c.XactNanos.Add(int64(d))
		if o != nil {
			o.XactDone(ss.dbName, ss.userName, d)
		}
		ss.xactStart = time.Time{}
		if !ss.q.empty() {
			ss.xactStart = now
		}
	}
}

// serverErrorLocked counts an ErrorResponse by its SQLSTATE.
func (ss *session) serverErrorLocked(body []byte) {
	code := errorCode(body)
	ss.pe.counters.CountError(code)
	if o := ss.srv.obs(); o != nil {
		o.ServerError(ss.dbName, ss.userName, code)
	}
}

// errorCode finds the SQLSTATE field of an ErrorResponse body.
func errorCode(b []byte) string { return errorField(b, 'C') }

// fatalError reports whether an ErrorResponse body ends the server's
// session (severity FATAL or PANIC): the server closes the connection next.
func fatalError(b []byte) bool {
	sev := errorField(b, 'V') // not localized (9.6+)
	if sev == "" {
		sev = errorField(b, 'S')
	}
	return sev == "FATAL" || sev == "PANIC"
}

// errorField finds one field of an ErrorResponse body.
func errorField(b []byte, field byte) string {
	for len(b) > 1 && b[0] != 0 {
		f := b[0]
		b = b[1:]
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		if f == field {
			return string(b[:i])
		}
		if i >= len(b) {
			break
		}
		b = b[i+1:]
	}
	return ""
}
