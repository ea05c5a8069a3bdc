package proxy

import (
	"time"

	"github.com/pgtide/pgtide/proxy/wire"
)

// query_wait_notify (PgBouncer 1.25): a client that has waited for a server
// connection longer than this gets one NOTICE per wait, so that a person at
// psql sees why nothing happens. The wait is the one SHOW POOLS counts in
// cl_waiting (gate.waitStart: the pool's queue, PAUSE and SUSPEND, dialing,
// retrying a restarting PostgreSQL), except while its database is paused or
// suspended; a login's wait is not told (the client has not been welcomed
// yet). Both as in PgBouncer.
//
// A loop looks at the waiting sessions a few times per threshold. For one
// due it sets the low bit of waitStart (waitNotified), by compare-and-swap
// from the value it saw, so a wait is told once; then the NOTICE is written,
// under wmu, only if waitStart still holds that same value: the wait has not
// ended. Everything written to the client after the wait ends takes wmu
// too, so the NOTICE comes before it, never after the reply to the query
// that waited; and nothing is half-written to the client while it waits
// for a server (a borrow starts with no server attached, after the last
// one's replies were forwarded whole up to their ReadyForQuery).

// waitNotified is the bit of gate.waitStart that says the wait's NOTICE is
// due or sent; a wait starts with it cleared.
const waitNotified = 1

// waitNoticeText is PgBouncer's text, so that whoever searches for it
// finds both.
const waitNoticeText = "No server connection available in postgres backend, client being queued"

var waitNoticeFrame = wire.NoticeFrame(waitNoticeText)

// waitNotifyLoop runs until shutdown ends the server.
func (s *Server) waitNotifyLoop() {
	s.tickLoop(func() time.Duration { return quarterTick(s.Config().QueryWaitNotify.Duration, 20*time.Millisecond) },
		s.notifyWaiting)
}

// notifyWaiting sends the NOTICE to every session whose wait for a server
// passed query_wait_notify at now and has not been told yet.
func (s *Server) notifyWaiting(now time.Time) {
	d := s.Config().QueryWaitNotify.Duration
	if d <= 0 {
		return
	}
	due := now.Add(-d).UnixNano()
	type told struct {
		ss *session
		w  int64 // waitStart with waitNotified set
	}
	var list []told
	s.mu.Lock()
	for _, ss := range s.sessions {
		w := ss.gate.waitStart.Load()
		if w == 0 || w&waitNotified != 0 || w > due {
			continue
		}
		if c := s.gate.peek(ss.dbName); c != nil && s.gateClosed(c) {
			// Held at PAUSE or SUSPEND, which the operator asked for: not
			// told (nor in PgBouncer). A wait that goes on after RESUME is.
			continue
		}
		if ss.gate.waitStart.CompareAndSwap(w, w|waitNotified) {
			list = append(list, told{ss, w | waitNotified})
		}
	}
	s.mu.Unlock()
	for _, t := range list {
		// A goroutine each: a client that does not read would hold wmu
		// (and this loop) for as long as its write blocks. Rare: only
		// clients that waited past the threshold, once per wait.
		go t.ss.waitNotice(t.w)
	}
}

// waitNotice writes the query_wait_notify NOTICE if the wait that was
// marked (w) still goes on, and the session is logged in and not over.
func (ss *session) waitNotice(w int64) {
	ss.mu.Lock()
	skip := ss.loggingIn || ss.gone || ss.over != nil
	ss.mu.Unlock()
	if skip {
		return
	}
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	if ss.gate.waitStart.Load() != w {
		return // the wait ended (or another began): too late for this one
	}
	var err error
	if rc := ss.rd.RawConn(); rc != nil {
		_, err = writeRaw(rc, waitNoticeFrame) // rawio.go
	} else {
		_, err = ss.conn.Write(waitNoticeFrame)
	}
	if err == nil {
		ss.counters.BytesOut.Add(uint64(len(waitNoticeFrame)))
	}
	// A failed write is the client's end; the session sees it on its own.
}
