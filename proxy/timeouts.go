package proxy

import (
	"time"

	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// Timers for query_timeout, idle_transaction_timeout and
// transaction_timeout. All are armed and stopped under session.mu; with the
// settings at 0 (the default) no timer exists and the hot path pays one
// atomic config load.
//
// transaction_timeout has no timer of its own: while a request is
// outstanding it rides on the query timer, while the client is idle inside
// the transaction on the idle timer, each armed for whichever of its own
// timeout and what is left of the transaction's comes first. Either timer,
// when it fires, looks at the transaction first (xactExpiredLocked).

// armTimersLocked runs after the client goroutine queued requests (and
// requestsQueuedLocked noted the transaction's start): a query is now
// outstanding, and the client is no longer idle in a transaction.
func (ss *session) armTimersLocked(wasEmpty bool) {
	if ss.idleTimer != nil {
		ss.idleTimer.Stop()
	}
	to := ss.srv.Config().TimeoutsFor(ss.userName)
	xact, inXact := ss.xactLeftLocked(to)
	if ss.q.empty() {
		// Nothing outstanding (what was sent is unsynced, or pgtide
		// answered it): the transaction's clock still runs.
		if inXact {
			ss.armIdleLocked(xact)
		}
		return
	}
	if !wasEmpty {
		return // the query timer runs since the queue's first request
	}
	d := to.Query
	if inXact && (d <= 0 || xact < d) {
		d = xact
	}
	if d <= 0 && !inXact {
		return
	}
	if ss.queryTimer == nil {
		ss.queryTimer = time.AfterFunc(d, ss.queryTimedOut)
	} else {
		ss.queryTimer.Reset(d)
	}
}

// xactLeftLocked says whether transaction_timeout applies (it is set and a
// transaction is open: xactStart, from its first request to the
// ReadyForQuery that ends it) and how long the transaction has left (0 when
// it has none). It reads the clock only when the setting is on.
func (ss *session) xactLeftLocked(to config.ClientTimeouts) (time.Duration, bool) {
	t := to.Transaction
	if t <= 0 || ss.xactStart.IsZero() {
		return 0, false
	}
	return max(t-time.Since(ss.xactStart), 0), true
}

func (ss *session) armIdleLocked(d time.Duration) {
	if ss.idleTimer == nil {
		ss.idleTimer = time.AfterFunc(d, ss.idleTimedOut)
	} else {
		ss.idleTimer.Reset(d)
	}
}

// settleTimersLocked runs at a ReadyForQuery (and once at login): the query
// is done; the client's idle clock starts, idle_transaction_timeout inside
// a transaction (or what is left of transaction_timeout, if sooner),
// client_idle_timeout outside one.
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
	to := ss.srv.Config().TimeoutsFor(ss.userName)
	xact, inXact := ss.xactLeftLocked(to)
	if ss.unsynced {
		// An extended batch goes on: not idle, but inside a transaction.
		if inXact {
			ss.armIdleLocked(xact)
		}
		return
	}
	d := to.IdleTransaction
	if ss.txStatus == wire.TxIdle {
		d = to.ClientIdle
	} else if inXact && (d <= 0 || xact < d) {
		d = xact
	}
	if d <= 0 && !(inXact && ss.txStatus != wire.TxIdle) {
		return
	}
	ss.armIdleLocked(d)
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

// xactExpiredLocked reports whether the client's transaction has been open
// for transaction_timeout; both timers ask it first.
func (ss *session) xactExpiredLocked(to config.ClientTimeouts) bool {
	left, in := ss.xactLeftLocked(to)
	return in && left <= 0 && !ss.gone
}

// xactTimedOut ends a session whose transaction ran past
// transaction_timeout, as PostgreSQL 17 does its own: FATAL 25P04. What the
// server still owes is cancelled and the transaction rolled back when the
// session finishes (finish, releaseClean), or the server closed: nothing
// of the transaction is committed by pgtide, and the server is never lent
// with it open (DESIGN.md invariants 1 and 9).
func (ss *session) xactTimedOut() {
	ss.logger().Warn().Msg("transaction_timeout: closing the client")
	ss.kill(codeTransactionTimeout, "terminating connection due to transaction timeout")
}

// queryTimedOut cancels a query that ran past query_timeout; the client
// gets PostgreSQL's 57014 error for it. A transaction past
// transaction_timeout ends the session instead.
func (ss *session) queryTimedOut() {
	ss.mu.Lock()
	to := ss.srv.Config().TimeoutsFor(ss.userName)
	if ss.xactExpiredLocked(to) {
		ss.mu.Unlock()
		ss.xactTimedOut()
		return
	}
	busy := !ss.q.empty() && !ss.gone
	xact, inXact := ss.xactLeftLocked(to)
	var left time.Duration // how long until this timer is due again; 0 = not again
	if d := to.Query; d > 0 {
		if l := d - time.Since(ss.queryStart); busy && !ss.queryStart.IsZero() && l > 0 {
			// The query running now started after this timer was armed: it
			// fired for one that ended as the next was queued (Stop came
			// too late), or a pipelined request started since. Its turn
			// comes when it has run query_timeout itself.
			left, busy = l, false
		}
	} else {
		busy = false // no query_timeout: armed for the transaction only
	}
	if inXact && !ss.q.empty() && (left == 0 || xact < left) {
		left = xact // the transaction's turn comes first
	}
	if left > 0 {
		ss.queryTimer.Reset(left)
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
// its own idle_in_transaction_session_timeout and idle_session_timeout; or
// one whose transaction ran past transaction_timeout (25P04).
func (ss *session) idleTimedOut() {
	ss.mu.Lock()
	to := ss.srv.Config().TimeoutsFor(ss.userName)
	if ss.xactExpiredLocked(to) {
		ss.mu.Unlock()
		ss.xactTimedOut()
		return
	}
	if ss.srv.susp.on.Load() {
		// SUSPEND stopped reading the client: it is not idle by choice.
		// Its clock starts again.
		ss.settleTimersLocked()
		ss.mu.Unlock()
		return
	}
	idle := ss.q.empty() && !ss.unsynced && !ss.gone
	inTxn := ss.txStatus != wire.TxIdle
	// The timer may have been armed for the transaction only (its
	// transaction_timeout is not due yet: it fired early, after a Reset):
	// then the idle timeout it stands for is off.
	if inTxn && to.IdleTransaction <= 0 || !inTxn && to.ClientIdle <= 0 {
		idle = false
	}
	if !idle && ss.q.empty() && !ss.gone {
		if xact, ok := ss.xactLeftLocked(to); ok {
			ss.armIdleLocked(xact) // the transaction's clock goes on
		}
	}
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
