package proxy

import (
	"time"
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
	d := ss.srv.Config().QueryTimeout.Duration
	if d <= 0 {
		return
	}
	if ss.queryTimer == nil {
		ss.queryTimer = time.AfterFunc(d, ss.queryTimedOut)
	} else {
		ss.queryTimer.Reset(d)
	}
}

// settleTimersLocked runs at a ReadyForQuery: the query is done; a client
// left inside a transaction starts its idle clock.
func (ss *session) settleTimersLocked() {
	if !ss.q.empty() {
		return
	}
	if ss.queryTimer != nil {
		ss.queryTimer.Stop()
	}
	if ss.txStatus == 'I' || ss.unsynced {
		return
	}
	d := ss.srv.Config().IdleTransactionTimeout.Duration
	if d <= 0 {
		return
	}
	if ss.idleTimer == nil {
		ss.idleTimer = time.AfterFunc(d, ss.idleTxnTimedOut)
	} else {
		ss.idleTimer.Reset(d)
	}
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
	ss.mu.Unlock()
	if busy {
		ss.log.Warn().Msg("query_timeout: cancelling the running query")
		ss.cancel()
	}
}

// idleTxnTimedOut ends a session that sat inside a transaction longer than
// idle_transaction_timeout, holding a server; its transaction is rolled back.
func (ss *session) idleTxnTimedOut() {
	ss.mu.Lock()
	idle := ss.q.empty() && !ss.unsynced && ss.txStatus != 'I' && !ss.gone
	ss.mu.Unlock()
	if idle {
		ss.log.Warn().Msg("idle_transaction_timeout: closing the client")
		ss.kill("25P03", "terminating connection due to idle-in-transaction timeout")
	}
}
