package proxy

import (
	"time"

	"github.com/pgtide/pgtide/proxy/wire"
)

// Timers for query_timeout and idle_transaction_timeout. Both are armed
// and stopped under session.mu; with the settings at 0 (the default) no
// timer exists and the hot path pays one atomic config load.

// armTimersLocked runs after the client goroutine queued requests: a query
// is now outstanding, and the client is no longer idle in a transaction.
func (ss *session) armTimersLocked(wasEmpty bool) {
	if ss.idleTimer != nil {
		ss.idleTimer.Stop()
	}
	if !wasEmpty || ss.q.empty() {
		return
	}
	d := ss.srv.Config().TimeoutsFor(ss.userName).Query
	if d <= 0 {
		return
	}
	if ss.queryTimer == nil {
		ss.queryTimer = time.AfterFunc(d, ss.queryTimedOut)
	} else {
		ss.queryTimer.Reset(d)
	}
}

// settleTimersLocked runs at a ReadyForQuery (and once at login): the query
// is done; the client's idle clock starts, idle_transaction_timeout inside
// a transaction, client_idle_timeout outside one.
func (ss *session) settleTimersLocked() {
	if !ss.q.empty() {
		return
	}
	if ss.queryTimer != nil {
		ss.queryTimer.Stop()
	}
	if ss.idleTimer != nil {
		ss.idleTimer.Stop()
	}
	if ss.unsynced {
		return
	}
	t := ss.srv.Config().TimeoutsFor(ss.userName)
	d := t.IdleTransaction
	if ss.txStatus == wire.TxIdle {
		d = t.ClientIdle
	}
	if d <= 0 {
		return
	}
	if ss.idleTimer == nil {
		ss.idleTimer = time.AfterFunc(d, ss.idleTimedOut)
	} else {
		ss.idleTimer.Reset(d)
	}
}

// startIdleClock starts client_idle_timeout for a client that just logged in.
func (ss *session) startIdleClock() {
	ss.mu.Lock()
	ss.settleTimersLocked()
	ss.mu.Unlock()
}

func (ss *session) stopTimersLocked() {
	if ss.queryTimer != nil {
		ss.queryTimer.Stop()
	}
	if ss.idleTimer != nil {
		ss.idleTimer.Stop()
	}
}

// queryTimedOut cancels a query that ran past query_timeout; the client
// gets PostgreSQL's 57014 error for it.
func (ss *session) queryTimedOut() {
	ss.mu.Lock()
	busy := !ss.q.empty() && !ss.gone
	if d := ss.srv.Config().TimeoutsFor(ss.userName).Query; busy && d > 0 && !ss.queryStart.IsZero() {
		if left := d - time.Since(ss.queryStart); left > 0 {
			// The query running now started after this timer was armed: it
			// fired for one that ended as the next was queued (Stop came
			// too late), or a pipelined request started since. Its turn
			// comes when it has run query_timeout itself.
			ss.queryTimer.Reset(left)
			busy = false
		}
	}
	ss.mu.Unlock()
	if busy {
		ss.logger().Warn().Msg("query_timeout: cancelling the running query")
		ss.cancel()
	}
}

// idleTimedOut ends a session that sat idle too long: inside a transaction
// (idle_transaction_timeout, holding a server; its transaction is rolled
// back), or outside one (client_idle_timeout), with PostgreSQL's errors for
// its own idle_in_transaction_session_timeout and idle_session_timeout.
func (ss *session) idleTimedOut() {
	ss.mu.Lock()
	if ss.srv.susp.on.Load() {
		// SUSPEND stopped reading the client: it is not idle by choice.
		// Its clock starts again.
		ss.settleTimersLocked()
		ss.mu.Unlock()
		return
	}
	idle := ss.q.empty() && !ss.unsynced && !ss.gone
	inTxn := ss.txStatus != wire.TxIdle
	ss.mu.Unlock()
	switch {
	case !idle:
	case inTxn:
		ss.logger().Warn().Msg("idle_transaction_timeout: closing the client")
		ss.kill("25P03", "terminating connection due to idle-in-transaction timeout")
	default:
		ss.logger().Warn().Msg("client_idle_timeout: closing the client")
		ss.kill("57P05", "terminating connection due to idle-session timeout")
	}
}
