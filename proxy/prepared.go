package proxy

import (
	"errors"
	"fmt"
	"time"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/wire"
)

var (
	parseComplete = []byte{wire.BeParseComplete, 0, 0, 0, 4}
	closeComplete = []byte{wire.BeCloseComplete, 0, 0, 0, 4}
	readyIdle     = []byte{wire.BeReadyForQuery, 0, 0, 0, 5, wire.TxIdle}
)

// scanPooled handles a batch in transaction and statement mode, where the
// server may change between transactions. Named prepared statements are
// mapped to pgtide's per-pool names and prepared on whichever server the
// client holds; a batch that needs no server (Parse of a statement already
// validated elsewhere, Close of a statement, Sync) is answered without
// borrowing one, which is what keeps pgbench -M prepared from deadlocking
// when every server is held by a client inside a transaction.
//
// The steps: frame the batch, take the server and mu (lockBatchServer),
// queue and rewrite every message under mu (pooledBatch), then write to the
// server and the client without it (send).
func (ss *session) scanPooled() (int, bool, error) {
	for {
		n, term, again, err := ss.scanPooledOnce()
		if !again {
			return n, term, err
		}
	}
}

// scanPooledOnce is one pass of scanPooled; again says it stopped at a
// drops barrier before reading anything, and waited: read again.
func (ss *session) scanPooledOnce() (int, bool, bool, error) {
	b := ss.rd.Buffered()
	end, term, need := 0, false, false
	for {
		typ, n, err := ss.nextFrame(&b, end)
		if errors.Is(err, errStream) {
			n, term, err := ss.startStream(typ, n)
			return n, term, false, err
		}
		if err != nil {
			return 0, false, false, err
		}
		if n == 0 {
			break
		}
		if typ == wire.FeTerminate {
			term = true
			break
		}
		if !need {
			need = ss.needsServer(typ, b[end+5:end+n])
		}
		end += n
	}
	if end == 0 {
		return 0, term, false, nil
	}
	now := time.Now() // the batch's one clock read, unless its borrow waits
	sc, err := ss.lockBatchServer(need, &now)
	if errors.Is(err, errWaitCancelled) {
		n, term, err := ss.answerCancelled(b[:end])
		return n, term, false, err
	}
	if err != nil {
		return 0, false, false, err
	}
	op, lp := takeScratch(), takeScratch()
	p := pooledBatch{ss: ss, b: b, end: end, sc: sc, out: *op, local: *lp, now: now}
	p.startLocked()
	p.rewriteLocked()
	p.queuedLocked()
	ss.mu.Unlock()

	err = p.send()
	if err == nil {
		err = ss.drivePump(p.deferred, now) // pump.go
	}
	giveScratch(op, p.out)
	giveScratch(lp, p.local)
	if err != nil {
		return 0, false, false, err
	}
	if p.bad != 0 {
		return 0, false, false, ss.badMessage(p.bad)
	}
	ss.rd.Discard(p.end)
	if p.barrier {
		// What follows the cut (a Terminate too) is read again once the
		// requests that may drop names were answered.
		if err := ss.awaitDrops(); err != nil {
			return 0, false, false, err
		}
		return p.end, false, p.end == 0, nil
	}
	return p.end, term, false, nil
}

// answerCancelled answers the first request of batch b, whose wait for a
// server the client's cancel request ended, as PostgreSQL answers a
// cancelled query: 57014, then ReadyForQuery at its end (a Query or a
// FunctionCall that comes first, else the Sync). Nothing of it reached a server, and nothing is
// booked: it failed at its first message. A request whose Sync has not
// come yet skips the rest up to it (clientSkip, transaction and statement
// mode; session mode interrupts only a batch that holds a whole request,
// book), as after any error; a client that was already skipping gets no
// second error. What follows the request is a new batch. With no server
// attached the client is between transactions, so its status is idle.
func (ss *session) answerCancelled(b []byte) (int, bool, error) {
	ss.mu.Lock()
	skipping := ss.clientSkip // all up to Sync is dropped unanswered, a Query too
	cut, last := len(b), byte(0)
	for off := 0; off < len(b); {
		typ, n := wire.Header(b[off:])
		// A Query or FunctionCall is the request only when it comes
		// first: after extended messages, the error is theirs, and
		// PostgreSQL skips a Query up to the Sync as it skips them.
		first := off == 0 && !skipping
		off += n
		if typ == wire.FeSync || first && (typ == wire.FeQuery || typ == wire.FeFunctionCall) {
			cut, last = off, typ
			break
		}
	}
	var reply []byte
	if !skipping {
		reply = append(reply, cancelledError...)
	}
	ss.clientSkip = last == 0
	ss.mu.Unlock()
	if last != 0 {
		reply = append(reply, readyIdle...)
	}
	if err := ss.writeClient(reply); err != nil {
		return 0, false, err
	}
	ss.rd.Discard(cut)
	return cut, false, nil
}

// writeClient writes pgtide's own reply b to the client (the client
// goroutine, with no server attached).
func (ss *session) writeClient(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	ss.wmu.Lock()
	_, err := ss.conn.Write(b)
	ss.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	return nil
}

// cancelledError is PostgreSQL's reply to a cancelled query.
var cancelledError = wire.ErrorFrame("ERROR", codeQueryCanceled, "canceling statement due to user request")

// lockBatchServer returns the server a batch goes to with ss.mu held and
// ss.sc == sc; the caller unlocks. want says a message in the batch needs
// a server: one is borrowed if none is attached. Otherwise the batch goes
// to the server attached now, if any (an open transaction's), and nil
// means pgtide answers it: a server the pump gave back after the batch was
// read is not borrowed again for messages no server needs (a borrow that
// queued nothing would be held with nothing to give it back). Holding mu
// until the batch is queued is what keeps the pump from giving sc back
// meanwhile. On error mu is not held. *now is the batch's clock, moved on
// when a borrow waited (borrow).
func (ss *session) lockBatchServer(want bool, now *time.Time) (*pool.Conn, error) {
	for {
		var sc *pool.Conn
		if want {
			var err error
			if sc, err = ss.server(now, true); err != nil {
				return nil, err
			}
		}
		ss.mu.Lock()
		if err := ss.forwardLocked(nil); err != nil {
			ss.mu.Unlock() // the session is over: its server was lost or it was killed
			return nil, err
		}
		if !want || ss.sc == sc {
			return ss.sc, nil // mu stays held: the pump cannot give it back while we queue
		}
		// The pump returned the server to the pool after we looked: borrow.
		ss.mu.Unlock()
	}
}

// pooledBatch is one batch of client messages, b[:end], on its way through
// scanPooled: what goes to the server in its place (out, then b[seg:end])
// and what pgtide answers itself when there is no server (local). Its
// *Locked methods run under ss.mu, held from lockBatchServer to the end of
// queuedLocked; send runs without it. It lives on scanPooled's stack: the
// hot path allocates nothing for it.
type pooledBatch struct {
	ss  *session
	b   []byte     // the client's buffered bytes
	end int        // the batch is b[:end]; cut short before a malformed message
	sc  *pool.Conn // the server the batch goes to; nil: none, pgtide answers
	srv *serverState

	out      []byte // what goes to the server in place of b[:seg]
	local    []byte // replies pgtide writes to the client itself (no server)
	seg      int    // start of the pass-through run not yet copied to out
	modified bool   // out (then b[seg:end]) replaces b[:end]
	wake     bool   // a fake reply was queued: the pump may need waking
	bad      byte   // a malformed message: the batch ends before it

	queued   int  // requests queued before this batch
	wasEmpty bool // nothing was queued before this batch
	owesNone bool // the batch queued no request: the pump may give sc back meanwhile (toAttached)

	deferred []byte    // what drivePump writes to a server borrowed for this batch
	now      time.Time // the batch's clock: when its requests were queued
	// barrier: the batch ends before a message whose names depend on a
	// request still unanswered (one that may drop the client's names, a
	// Close of the name, an earlier PREPARE of it: cutForRepliesLocked);
	// scanPooled waits for that answer.
	barrier bool
}

// dropsBarrierLocked ends the batch before the message at off when a
// request queued ahead of it (this batch's or an earlier one's) may drop
// the client's statement names: a DEALLOCATE or DISCARD ALL, in a Query
// or run by an Execute. pgtide books names as it reads them, so a name
// used behind one would resolve as if it had not run (a Parse refused
// with 42P05, a Bind or Describe of a statement the server dropped run
// anyway) where PostgreSQL runs them in order. The message is read again
// once the reply came (scanPooled), with the names as the server left
// them. Nothing of the sort is queued in ordinary traffic: no cost then.
func (p *pooledBatch) dropsBarrierLocked(off int) bool {
	return p.ss.q.dropsAhead() && p.cutForRepliesLocked(off, -1)
}

// cutForRepliesLocked ends the batch before the message at off, to be read
// again once the requests marked as drops are answered (awaitDrops); entry
// i >= 0 is marked first. Not in COPY IN, which waits for the client's
// data, nor once the session is over: awaitDrops would not wait, and the
// batch would be cut at the same place again. Nor behind a COPY the client
// ended in the pipeline (its CopyDone or CopyFail queued): what follows
// the cut would be read after the server's CopyInResponse, which pgtide
// takes for a COPY still waiting for data (a Sync read then is dropped as
// one sent during COPY IN).
func (p *pooledBatch) cutForRepliesLocked(off, i int) bool {
	ss := p.ss
	if ss.copyIn || ss.over != nil || ss.q.copyEndQueued() {
		return false
	}
	if i >= 0 {
		ss.q.e[i].drops = true
	}
	p.end, p.barrier = off, true
	return true
}

// closeBarrierLocked is dropsBarrierLocked for a Parse, Bind or Describe of
// a name the client has closed in a request still unanswered behind
// another: if the server skips that Close (an error ahead, up to its
// Sync), the statement is still there, and PostgreSQL answers the Parse
// with 42P05 and runs the Bind. The Close counts as a drop until answered.
func (p *pooledBatch) closeBarrierLocked(off int, name string) bool {
	i := p.ss.q.closeQueued(name)
	return i >= 0 && p.cutForRepliesLocked(off, i)
}

// prepBarrierLocked is dropsBarrierLocked for a query text that PREPAREs a
// name whose earlier PREPARE is booked by a request still unanswered (an
// unnamed Parse that may never be executed, a statement after an error):
// whether the name exists when this PREPARE runs depends on whether that
// one ran, which its request's answer tells (the booking confirmed or taken
// back). The text is read again once it came.
func (p *pooledBatch) prepBarrierLocked(off int, query []byte) bool {
	ss := p.ss
	if len(ss.stmts) == 0 {
		return false
	}
	refs, _ := scanSQL(query, ss.stdStringsLocked(), ss.mbLenLocked())
	for _, r := range refs {
		if r.kind != sqlPrepare || r.bad {
			continue
		}
		old := ss.stmts[r.name]
		if old == nil || old.prep == nil {
			continue
		}
		for i := range ss.q.e {
			if fx := ss.q.e[i].sql; fx != nil && fx.books(old) {
				return p.cutForRepliesLocked(off, i)
			}
		}
	}
	return false
}

// parseQuery returns the query text of a whole Parse frame.
func parseQuery(frame []byte) []byte {
	if len(frame) < wire.HeaderLen {
		return nil
	}
	_, rest, ok := cstring(frame[wire.HeaderLen:])
	if !ok {
		return nil
	}
	q, _, _ := cstring(rest)
	return q
}

// startLocked notes the queue as it was before this batch and closes the
// server's dead SQL statements first (sqlsession.go).
func (p *pooledBatch) startLocked() {
	if p.sc != nil {
		p.srv = stateOf(p.sc)
	}
	p.queued = len(p.ss.q.e)
	p.wasEmpty = p.queued == 0
	if p.srv != nil {
		if p.out = p.ss.sweepLocked(p.srv, p.out); len(p.out) > 0 {
			p.modified = true // dead SQL statements closed first: sqlsession.go
		}
	}
}

// rewriteLocked queues each message's request and rewrites the batch
// where pgtide maps, answers or drops a message.
func (p *pooledBatch) rewriteLocked() {
	ss := p.ss
	for off := 0; off < p.end; {
		typ, n := wire.Header(p.b[off:])
		body := p.b[off+5 : off+n]
		if ss.clientSkip && typ != wire.FeSync {
			// After an error pgtide raised, drop all up to Sync, as a
			// server does after its own errors.
			p.replace(off, n)
			off += n
			continue
		}
		switch typ {
		case wire.FeSync:
			p.syncLocked(off, n)
		case wire.FeFlush:
			if p.sc == nil {
				p.replace(off, n) // nothing to flush without a server
			}
		case wire.FeQuery:
			p.queryLocked(off, n, body)
		case wire.FeFunctionCall:
			ss.q.push(entry{kind: wire.FeFunctionCall})
			ss.st.check = true // a function call may change anything
		case wire.FeExecute:
			ss.q.push(entry{kind: wire.FeExecute, drops: ss.bindDrops && len(ss.stmts) > 0})
			ss.unsynced = true
		case wire.FeCopyData, wire.FeCopyDone, wire.FeCopyFail:
			if p.sc == nil {
				// No server, so no COPY: PostgreSQL ignores these outside
				// one (a late CopyDone after the server ended a COPY on
				// an error, as pgx sends), and so does pgtide, without a
				// borrow (needsServer).
				p.replace(off, n)
				break
			}
			if typ != wire.FeCopyData {
				ss.q.push(entry{kind: reqCopyEnd})
				ss.copyIn = false
			}
		case wire.FeParse:
			p.parseLocked(off, n, body)
		case wire.FeBind, wire.FeDescribe:
			p.bindOrDescribeLocked(typ, off, n, body)
		case wire.FeClose:
			p.closeLocked(off, n, body)
		default:
			p.malformed(typ, off)
		}
		if p.bad != 0 {
			break
		}
		off += n
	}
}

// replace ends the pass-through run before message [off, off+n) and puts
// repl (possibly nothing) in its place.
func (p *pooledBatch) replace(off, n int, repl ...[]byte) {
	p.out = append(p.out, p.b[p.seg:off]...)
	for _, r := range repl {
		p.out = append(p.out, r...)
	}
	p.seg, p.modified = off+n, true
}

// copyUpTo ends the pass-through run at off, so that what pgtide adds next
// to out goes before the message there.
func (p *pooledBatch) copyUpTo(off int) {
	p.out = append(p.out, p.b[p.seg:off]...)
	p.seg = off
}

// malformed ends the batch before the message at off: what came before is
// sent, then the client is refused (badMessage).
func (p *pooledBatch) malformed(typ byte, off int) {
	p.bad, p.end = typ, off
}

// fakeReplyLocked answers for the server, in order with the server's
// replies; with no server, pgtide writes it itself.
func (p *pooledBatch) fakeReplyLocked(r []byte) {
	if p.sc == nil {
		p.local = append(p.local, r...)
		return
	}
	p.ss.q.push(entry{kind: wire.FeParse, act: actFake, fake: r})
	p.wake = true
}

// refuseLocked drops the message [off, off+n), answers it with the error
// reply r and skips the rest up to Sync, as a server does after an error.
// With a server, the server must fail there too: PostgreSQL aborts the
// transaction block, or the implicit transaction up to this Sync, on any
// error, and an error the server never saw would let a later COMMIT, or
// this Sync, commit what ran before it (DESIGN.md invariant 9). So the
// message is replaced by one that fails without side effects, a Describe
// of a statement that cannot exist (pgtide's own are "pgtide_<n>"), whose
// error reaches the client as r.
func (p *pooledBatch) refuseLocked(off, n int, r []byte) {
	ss := p.ss
	ss.clientSkip = true
	if p.sc == nil {
		p.replace(off, n)
		p.fakeReplyLocked(r)
		return
	}
	p.replace(off, n, refusedDescribe)
	ss.q.push(entry{kind: wire.FeDescribe, act: actErr, fake: r})
	ss.unsynced = true
}

// refusedDescribe is refuseLocked's failing stand-in.
var refusedDescribe = wire.AppendFrame(nil, wire.FeDescribe, []byte{wire.ObjStatement}, []byte("pgtide_refused\x00"))

// syncLocked ends an extended batch (and any skipping). With no server
// pgtide answers it: nothing before it needed one.
func (p *pooledBatch) syncLocked(off, n int) {
	ss := p.ss
	if ss.copyIn {
		// PostgreSQL ignores a Sync during COPY IN (CopyGetData): no
		// ReadyForQuery is owed, and one booked would hold the server
		// after the COPY forever. It goes through, as session mode's (book).
		return
	}
	ss.clientSkip = false
	if p.sc != nil {
		ss.q.push(entry{kind: wire.FeSync, sql: ss.takeSQLPendingLocked()})
		ss.unsynced = false
	} else {
		p.replace(off, n)
		p.local = append(p.local, readyIdle...)
	}
}

// queryLocked queues a simple query, mapping the statement names of SQL
// PREPARE/EXECUTE/DEALLOCATE in it.
func (p *pooledBatch) queryLocked(off, n int, body []byte) {
	ss := p.ss
	may := mayNameStmts(body) // SQL PREPARE/EXECUTE/DEALLOCATE: sqlsession.go
	if may && p.prepBarrierLocked(off, body[:max(len(body)-1, 0)]) {
		return // read again once the request ahead is answered
	}
	if ss.noteQueryLocked(body) { // sessionstate.go
		ss.st.check = true
	}
	if may {
		p.copyUpTo(off)
		p.out = ss.sqlQueryLocked(p.srv, p.b[off:off+n], p.out)
		p.seg, p.modified = off+n, true
	} else {
		ss.q.push(entry{kind: wire.FeQuery})
	}
	if len(ss.stmts) > 0 && mayDropStmts(body) {
		ss.q.markDrops(wire.FeQuery) // dropsBarrier
	}
	// A simple query destroys the unnamed statement, for the
	// server and so for the client.
	p.srv.unnamed = nil
	ss.unnamedParse = nil
	ss.newUnnamedLocked()
}

// parseLocked handles a Parse: the unnamed statement goes to the server
// as it is, a named one is mapped to the pool's statement.
func (p *pooledBatch) parseLocked(off, n int, body []byte) {
	name, rest, ok1 := cstring(body)
	query, types, ok2 := cstring(rest)
	if !ok1 || !ok2 {
		p.malformed(wire.FeParse, off)
		return
	}
	if len(name) == 0 {
		p.parseUnnamedLocked(off, n, query, types)
		return
	}
	p.parseNamedLocked(off, n, name, query, types)
}

// parseUnnamedLocked forwards a Parse of the unnamed statement and keeps a
// copy, to parse it again on a server whose unnamed statement is another
// client's by the time the client binds it.
func (p *pooledBatch) parseUnnamedLocked(off, n int, query, types []byte) {
	ss := p.ss
	ss.noteUnnamedParseLocked(query) // sessionstate.go
	msg := p.b[off : off+n]
	var pos *sqlFx
	if mayNameStmts(query) { // sqlsession.go
		if p.prepBarrierLocked(off, query) {
			return
		}
		p.copyUpTo(off)
		msg, p.out, pos = ss.sqlParseLocked(p.srv, msg, query, types, p.out)
		p.out = append(p.out, msg...)
		p.seg, p.modified = off+n, true
	}
	ss.unnamedParse = append(ss.unnamedParse[:0], msg...)
	ss.newUnnamedLocked()
	p.srv.setUnnamed(ss)
	ss.q.push(entry{kind: wire.FeParse, sql: pos})
	ss.unsynced = true
}

// parseNamedLocked maps a named Parse to the pool's statement for its
// text, and prepares that on the server only if it lacks it.
func (p *pooledBatch) parseNamedLocked(off, n int, name, query, types []byte) {
	ss := p.ss
	if _, dup := ss.stmts[string(name)]; dup && p.dropsBarrierLocked(off) || !dup && p.closeBarrierLocked(off, string(name)) {
		return
	}
	var dep *stmt // an EXECUTE's statement: sqlsession.go
	var execs bool
	clientQuery := query
	if mayNameStmts(query) {
		var refuse []byte
		if query, dep, execs, refuse = ss.sqlNamedParseLocked(query); refuse != nil {
			p.refuseLocked(off, n, refuse)
			return
		}
	}
	if ss.txStatus == wire.TxFailed && ss.q.empty() && !txnExitStmt(query) {
		// PostgreSQL refuses a Parse in a failed transaction block, before
		// it looks at the name, unless it ends the block (ROLLBACK, COMMIT)
		// or is empty: pgtide must not answer one itself from a server that
		// has the text, nor map the name.
		p.refuseLocked(off, n, abortedTxnError)
		return
	}
	if _, dup := ss.stmts[string(name)]; dup {
		p.copyUpTo(off)
		p.abortCheckLocked(query)
		p.refuseLocked(off, n, wire.ErrorFrame("ERROR", "42P05", fmt.Sprintf("prepared statement %q already exists", name)))
		return
	}
	var st *stmt
	if execs {
		st = newExecStmt(query, types, dep, clientQuery)
	} else {
		st = ss.pe.stmts.getDep(query, types, dep)
	}
	cname := string(name)
	ss.addStmtLocked(cname, st)
	ss.noteParseLocked(st, query)
	switch {
	case p.sc == nil:
		// Validated on another server before (needsServer): pgtide answers.
		p.replace(off, n)
		p.local = append(p.local, parseComplete...)
	case p.srv.has(st):
		// Already prepared on this server: answered in order with its replies.
		p.copyUpTo(off)
		p.abortCheckLocked(query)
		p.replace(off, n)
		ss.q.push(entry{kind: wire.FeParse, act: actFake, fake: parseComplete, st: st, name: cname})
		p.wake = true
		ss.unsynced = true
	default:
		// What pgtide adds (a dependency, an eviction's Close) goes
		// where this Parse was, after the messages before it.
		p.copyUpTo(off)
		if st.dep != nil {
			p.out = ss.ensureLocked(p.srv, st.dep, p.out)
		}
		ss.evictLocked(p.srv, &p.out)
		p.replace(off, n, st.parse)
		ss.q.push(entry{kind: wire.FeParse, st: st, name: cname})
		p.srv.add(st)
		ss.unsynced = true
	}
}

// abortCheckLocked goes before a named Parse that pgtide answers itself
// (a statement the server has, or a duplicate name) when the transaction
// may be failed by the time the Parse is reached: it is failed now, or a
// request ahead ends at a ReadyForQuery whose status is not known yet (a
// Query or Sync that may run BEGIN and fail). PostgreSQL answers such a
// Parse with 25P02, not ParseComplete or 42P05. pgtide cannot know which,
// so the server decides: an unnamed Parse of a statement that does nothing
// goes in its place, its ParseComplete swallowed; when it fails, its 25P02
// is the client's and pgtide's answer is dropped with the rest up to the
// Sync (undoSkippedLocked takes the name back). The server's unnamed
// statement is replaced, so the client's is parsed again when it uses it.
func (p *pooledBatch) abortCheckLocked(query []byte) {
	ss := p.ss
	if p.sc == nil || ss.q.empty() || txnExitStmt(query) {
		return // nothing ahead: parseNamedLocked refused it already if failed
	}
	unsure := ss.txStatus == wire.TxFailed
	for i := 0; !unsure && i < len(ss.q.e); i++ {
		switch ss.q.e[i].kind {
		case wire.FeSync, wire.FeQuery, wire.FeFunctionCall:
			unsure = true
		}
	}
	if !unsure {
		return
	}
	p.out = append(p.out, abortCheckParse...)
	p.modified = true
	ss.q.push(entry{kind: wire.FeParse, act: actSkip})
	p.srv.unnamed = nil
	ss.unsynced = true
}

// abortCheckParse is abortCheckLocked's Parse: "SELECT", unnamed.
var abortCheckParse = wire.AppendFrame(nil, wire.FeParse, []byte{0}, nopBody)

// txnExitStmt reports whether PostgreSQL lets a statement through in a
// failed transaction block (exec_parse_message, IsTransactionExitStmt):
// empty, or COMMIT/END, ROLLBACK/ABORT (ROLLBACK TO SAVEPOINT too), or
// PREPARE TRANSACTION.
func txnExitStmt(q []byte) bool {
	l := &sqlLexer{q: q} // sqlprepare.go
	t := l.next()
	switch {
	case t.kind == 0 || t.kind == tokSemi:
		return true
	case l.word(t, "commit"), l.word(t, "end"), l.word(t, "rollback"), l.word(t, "abort"):
		return true
	case l.word(t, "prepare"):
		return l.word(l.next(), "transaction")
	}
	return false
}

// abortedTxnError is PostgreSQL's reply to anything but a Sync in a failed
// transaction block.
var abortedTxnError = wire.ErrorFrame("ERROR", "25P02", "current transaction is aborted, commands ignored until end of transaction block")

// bindOrDescribeLocked handles a Bind, or a Describe of a statement, by
// the statement it names; a Describe of a portal goes through as it is.
func (p *pooledBatch) bindOrDescribeLocked(typ byte, off, n int, body []byte) {
	ss := p.ss
	var prefix, name, rest []byte
	ok := true
	if typ == wire.FeBind {
		var portal []byte
		portal, rest, ok = cstring(body)
		prefix = body[:len(portal)+1]
		if ok {
			name, rest, ok = cstring(rest)
		}
	} else if len(body) > 0 && body[0] == wire.ObjStatement {
		prefix = body[:1]
		name, rest, ok = cstring(body[1:])
	} else {
		ss.q.push(entry{kind: wire.FeDescribe})
		ss.unsynced = true
		return
	}
	if !ok {
		p.malformed(typ, off)
		return
	}
	ss.unsynced = true
	if len(name) == 0 {
		p.useUnnamedLocked(typ, off, n)
		return
	}
	p.useNamedLocked(typ, off, n, prefix, name, rest)
}

// useUnnamedLocked forwards a Bind or Describe of the unnamed statement,
// parsing the client's again first when the server's unnamed statement is
// no longer its own.
func (p *pooledBatch) useUnnamedLocked(typ byte, off, n int) {
	ss := p.ss
	if !p.srv.holdsUnnamed(ss) {
		if ss.unnamedParse == nil {
			p.refuseLocked(off, n, wire.ErrorFrame("ERROR", "26000", "unnamed prepared statement does not exist"))
			return
		}
		p.copyUpTo(off)
		p.out = append(p.out, ss.unnamedParse...)
		ss.q.push(entry{kind: wire.FeParse, act: actSkip})
		p.srv.setUnnamed(ss)
		p.modified = true
	}
	if typ == wire.FeBind {
		ss.noteBindLocked(nil)
		ss.bindDrops = len(ss.stmts) > 0 && ss.unnamedParse != nil && mayDropStmts(parseQuery(ss.unnamedParse))
	}
	ss.q.push(entry{kind: typ, descS: typ == wire.FeDescribe})
}

// useNamedLocked rewrites a Bind or Describe of a named statement to the
// pool's name for it, preparing it on the server first if it lacks it.
func (p *pooledBatch) useNamedLocked(typ byte, off, n int, prefix, name, rest []byte) {
	ss := p.ss
	st := ss.stmts[string(name)]
	if st != nil && p.dropsBarrierLocked(off) || st == nil && p.closeBarrierLocked(off, string(name)) {
		return
	}
	if st == nil {
		p.refuseLocked(off, n, wire.ErrorFrame("ERROR", "26000", fmt.Sprintf("prepared statement %q does not exist", name)))
		return
	}
	if typ == wire.FeBind {
		ss.bindDrops = st.drops
		// A Describe keeps the statement as parsed: PostgreSQL fixed its
		// result description then.
		st = ss.execStmtLocked(st)
		ss.noteBindLocked(st) // what runs now: flaggedLocked looks at its dep
	}
	p.copyUpTo(off)
	p.out = ss.ensureLocked(p.srv, st, p.out)
	p.out = wire.AppendFrame(p.out, typ, prefix, []byte(st.name), []byte{0}, rest)
	p.seg, p.modified = off+n, true
	// The client's name rides along: a server that lacks st (its Parse,
	// pipelined before a Sync ahead, was skipped after an error) answers
	// 26000 naming pgtide's statement, which sqlErrorLocked renames.
	ss.q.push(entry{kind: typ, descS: typ == wire.FeDescribe, st: st, name: string(name)})
}

// closeLocked answers a Close of a named statement itself: it only forgets
// the client's name, the server's copy is the pool's. A Close of the
// unnamed statement goes through only while the server's is this
// client's; a Close of a portal goes through.
func (p *pooledBatch) closeLocked(off, n int, body []byte) {
	ss := p.ss
	if len(body) > 1 && body[0] == wire.ObjStatement && body[1] != 0 {
		name, _, _ := cstring(body[1:])
		cname := string(name)
		st := ss.stmts[cname]
		delete(ss.stmts, cname)
		p.replace(off, n)
		if p.sc == nil {
			p.local = append(p.local, closeComplete...)
			return
		}
		ss.q.push(entry{kind: wire.FeClose, act: actFake, fake: closeComplete, st: st, name: cname})
		p.wake = true
		return
	}
	if len(body) > 1 && body[0] == wire.ObjStatement { // the unnamed statement
		closed := ss.unnamedParse
		held := p.sc != nil && p.srv.holdsUnnamed(ss)
		ss.unnamedParse = nil
		ss.newUnnamedLocked()
		if !held {
			// None on a server, or the server's is another client's, which
			// closing would destroy behind pgtide's back: pgtide answers.
			p.replace(off, n)
			p.fakeReplyLocked(closeComplete)
			return
		}
		p.srv.unnamed = nil
		// The Parse it closes rides on the entry (in fake, unused by a
		// forwarded request), for undoSkippedLocked.
		ss.q.push(entry{kind: wire.FeClose, fake: closed})
		ss.unsynced = true
		return
	}
	ss.q.push(entry{kind: wire.FeClose})
	ss.unsynced = true
}

// queuedLocked finishes the batch under mu: wakes the pump for fakes it
// must write, decides whether the server may still be written, and arms
// the timers for what was queued.
func (p *pooledBatch) queuedLocked() {
	ss := p.ss
	if p.wake {
		// Fakes with nothing ahead of them are written by the pump, which
		// owns the reply order; wake it if it waits on the server.
		if h := ss.q.head(); h != nil && h.act == actFake && p.sc != nil {
			// Under mu, while sc is certainly still ours: a deadline left
			// on a server after it went back to the pool would fail its
			// next borrower's liveness check.
			ss.wake = true
			_ = p.sc.Net.SetReadDeadline(time.Now())
		}
	}
	// With nothing queued and no open extended batch, the pump may give
	// the server back at any moment: send it nothing.
	idleWrite := p.sc != nil && len(ss.q.e) == p.queued && !ss.unsynced && ss.boundaryLocked()
	p.owesNone = true
	for _, e := range ss.q.e[p.queued:] {
		if e.kind != reqCopyEnd && e.act != actFake {
			p.owesNone = false // sc stays until the server answers it
			break
		}
	}
	ss.backlog = len(ss.q.e) > queueHigh       // holdBack
	ss.requestsQueuedLocked(p.wasEmpty, p.now) // xactStart, which armTimersLocked reads
	ss.armTimersLocked(p.wasEmpty)
	if idleWrite {
		p.sc, p.modified = nil, false
	}
}

// send writes the batch to the server and pgtide's own replies to the
// client, without mu.
func (p *pooledBatch) send() error {
	ss := p.ss
	var err error
	var w []byte
	switch {
	case p.modified:
		p.out = append(p.out, p.b[p.seg:p.end]...)
		if len(p.out) > 0 && p.sc != nil {
			w = p.out
		}
	case p.sc != nil:
		w = p.b[:p.end]
	}
	switch {
	case ss.pumpPending:
		p.deferred = w // written by drivePump, where it waits for the reply
	case w != nil && p.owesNone:
		err = ss.toAttached(p.sc, w) // session.go
	case w != nil:
		err = ss.toServer(p.sc, w)
	}
	if len(p.local) > 0 && err == nil {
		ss.wmu.Lock()
		_, werr := ss.conn.Write(p.local)
		ss.wmu.Unlock()
		if werr != nil {
			err = fmt.Errorf("%w: %w", errClientGone, werr)
		}
	}
	return err
}

// needsServer reports whether a message can only be answered by a server
// (as opposed to by pgtide from what it knows).
func (ss *session) needsServer(typ byte, body []byte) bool {
	switch typ {
	case wire.FeSync, wire.FeFlush:
		return false
	case wire.FeCopyData, wire.FeCopyDone, wire.FeCopyFail:
		// Only a COPY the server is in wants them, and a server in COPY
		// is attached: with none, they are dropped (rewriteLocked).
		return false
	case wire.FeParse:
		name, rest, ok := cstring(body)
		if !ok || len(name) == 0 {
			return true
		}
		ss.mu.Lock()
		_, dup := ss.stmts[string(name)]
		ss.mu.Unlock()
		if dup {
			return false
		}
		query, types, ok := cstring(rest)
		return !ok || mayNameStmts(query) || !ss.pe.stmts.get(query, types).validated.Load()
	case wire.FeClose:
		return !(len(body) > 1 && body[0] == wire.ObjStatement) // statements: closeLocked
	}
	return true
}

// evictLocked makes room for one more statement on a server, closing the
// least recently used one (its CloseComplete is swallowed).
func (ss *session) evictLocked(srv *serverState, out *[]byte) {
	max := ss.srv.Config().MaxPreparedStatements
	if max <= 0 || len(srv.stmts) < max {
		return
	}
	old := srv.evict()
	if old == nil {
		return
	}
	*out = wire.AppendFrame(*out, wire.FeClose, []byte{wire.ObjStatement}, []byte(old.name), []byte{0})
	ss.q.push(entry{kind: wire.FeClose, act: actSkip, st: old})
}
