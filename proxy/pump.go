package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// What the pump does after writing a chunk of replies.
const (
	evNone      = iota
	evBoundary  // a ReadyForQuery left the session between transactions
	evStmtTxn   // statement mode: the client opened a transaction block
	evCopyAbort // COPY IN started for a client that is gone: end it
	evSettle    // a transaction that may have changed the session ended: capture it (sessionstate.go)
	evRestore   // session mode: a RESET may have undone startup settings: set them again (sessionstate.go)
)

// pump is the server side of an attachment: it forwards what the server
// sends as raw bytes from the server's read buffer, decoding only the few
// message types it must, splices in pgtide's own replies (fake
// ParseComplete and the like) at their place in the reply order and
// swallows replies to pgtide's own requests. In transaction and statement
// mode it gives the server back at a transaction boundary.
//
// It runs in its own goroutine, or inline in the client goroutine for a
// transaction-mode round trip (drivePump): then it returns false (done
// stays open) when what is owed is answered but the server stays attached,
// when COPY IN waits for the client, or when the reply takes longer than
// inlineFor, and drivePump decides who reads the server from there.
func (ss *session) pump(sc *pool.Conn, done chan struct{}) { ss.runPump(sc, done, false) }

func (ss *session) runPump(sc *pool.Conn, done chan struct{}, inline bool) (finished bool) {
	defer func() {
		if r := recover(); r != nil {
			ss.logger().Error().Interface("panic", r).Msg("pump panicked; closing the client and the server")
			ss.mu.Lock()
			if ss.sc == sc {
				ss.sc = nil
			}
			ss.pumpErr = fmt.Errorf("panic: %v", r)
			ss.endLocked(ss.pumpErr)
			ss.mu.Unlock()
			sc.Pool().Discard(sc)
			_ = ss.conn.Close()
			ss.srv.unpark(ss) // a parked session ends only on a goroutine (park.go)
			finished = true
		}
		if finished && done != nil {
			close(done)
		}
	}()
	return ss.pumpLoop(sc, inline)
}

func (ss *session) pumpLoop(sc *pool.Conn, inline bool) bool {
	rd := sc.Reader
	passRemain := 0   // bytes of a large message still to pass through
	passDrop := false // whether those bytes are swallowed instead
	for {
		if rd.Len() == 0 || (passRemain == 0 && !frameReady(rd.Buffered())) {
			if inline && passRemain == 0 && ss.yieldInline() {
				return false
			}
			if err := rd.Fill(); err != nil {
				if inline && passRemain == 0 && isTimeout(err) {
					ss.inlineIdle = false
					return false // inlineFor passed: a goroutine waits from here
				}
				if ss.woken(err) {
					if ss.flushFakes(sc) {
						return true
					}
					continue
				}
				ss.serverStopped(sc, err)
				return true
			}
		}
		b := rd.Buffered()
		var out []byte // taken from the scratch pool only when splicing
		spliced := false
		off, seg := 0, 0
		if passRemain > 0 {
			off = min(passRemain, len(b))
			passRemain -= off
			if passDrop {
				seg, spliced = off, true
			}
		}
		ev := evNone
		ss.mu.Lock()
		if f := ss.takeFakesLocked(nil); len(f) > 0 {
			out, seg, spliced = append(append(scratch(out), b[seg:off]...), f...), off, true
		}
		for passRemain == 0 && off+wire.HeaderLen <= len(b) {
			typ, n := wire.Header(b[off:])
			if n < wire.HeaderLen {
				ss.mu.Unlock()
				ss.serverStopped(sc, fmt.Errorf("%w: server sent a bad length", errProtocol))
				return true
			}
			complete := off+n <= len(b)
			if !complete && needsBody(typ) {
				break // Fill grows the buffer as the rest arrives
			}
			var body []byte
			if complete {
				body = b[off+wire.HeaderLen : off+n]
			}
			fwd, e, repl := ss.routeLocked(sc, typ, body)
			if e != evNone {
				ev = e
			}
			end := off + n
			if !complete {
				passRemain, passDrop, end = off+n-len(b), !fwd, len(b)
			}
			if !fwd || repl != nil {
				out, seg, spliced = append(append(scratch(out), b[seg:off]...), repl...), end, true
			}
			off = end
			if f := ss.takeFakesLocked(nil); len(f) > 0 {
				out, seg, spliced = append(append(scratch(out), b[seg:off]...), f...), off, true
				if ev == evNone && ss.releasableLocked() {
					ev = evBoundary // pgtide's own reply ended the transaction
					if ss.holdForCaptureLocked(nil) {
						// The transaction that ended before it changed the
						// session: capture that first (its ReadyForQuery
						// has gone to the client already).
						ev = evSettle
					}
				}
			}
			if ev != evNone {
				break
			}
		}
		var capErr error
		switch ev {
		case evSettle:
			capErr = ss.sendCaptureLocked(sc) // under mu: see sendCaptureLocked
		case evRestore:
			capErr = ss.sendRestoreLocked(sc) // under mu, as the capture
		case evStmtTxn:
			// Under mu, as the capture: a statement the client pipelined
			// behind the one that opened the transaction is queued after
			// the swallowed ROLLBACK, so it must not reach the server
			// before it either.
			ss.swmu.Lock()
			_, capErr = sc.Net.Write(rollbackQuery)
			ss.swmu.Unlock()
		}
		ss.mu.Unlock()
		if spliced {
			out = append(out, b[seg:off]...)
			if len(out) > 0 {
				ss.toClient(out)
			}
			putScratch(out)
		} else if off > 0 {
			ss.toClient(b[:off])
		}
		rd.Discard(off)
		switch ev {
		case evStmtTxn:
			if capErr != nil {
				ss.serverStopped(sc, capErr)
				return true
			}
		case evCopyAbort: // the client is gone: nothing of its can follow
			req := wire.AppendFrame(nil, wire.FeCopyFail, []byte("client disconnected\x00"))
			req = wire.AppendFrame(req, wire.FeSync)
			ss.swmu.Lock()
			_, err := sc.Net.Write(req)
			ss.swmu.Unlock()
			if err != nil {
				ss.serverStopped(sc, err)
				return true
			}
		case evBoundary:
			if ss.atBoundary(sc) {
				return true
			}
		case evSettle:
			if ss.settle(sc, capErr) {
				return true
			}
		case evRestore:
			if ss.restored(sc, capErr) {
				return true
			}
		}
	}
}

// rollbackQuery ends the transaction a statement opened in statement mode.
var rollbackQuery = wire.AppendFrame(nil, wire.FeQuery, []byte("ROLLBACK\x00"))

// inlineFor is how long the client goroutine waits on a server's reply
// itself (drivePump) before a pump goroutine takes over, so that a client
// that leaves during a long query is still seen at once.
const inlineFor = 20 * time.Millisecond

// drivePump runs after a batch for a server borrowed for it (transaction
// and statement mode) was queued, on the client goroutine, and writes w,
// the batch, to it. A round trip the server answers without more from the
// client (nothing unsynced, no COPY IN) is pumped right here: no goroutine
// is started, the write and the wait for the reply are one step
// (pool.Conn.WriteThenWait), and the server usually goes back before the
// client is read again. Otherwise, or when the inline pump hands back, the
// pump gets its own goroutine as in session mode. The error is the write's.
func (ss *session) drivePump(w []byte, now time.Time) error {
	if !ss.pumpPending {
		return nil
	}
	ss.pumpPending = false
	if ss.heldIdle.Load() {
		ss.heldIdle.Store(false)
	}
	ss.mu.Lock()
	sc := ss.sc
	// pgtide's own replies at the head of the queue (a Close it answers,
	// then Flush) owe nothing to the server, and no pump runs yet to write
	// them: write them now, or a server that is sent nothing to answer
	// would keep them from the client for good.
	var fakes []byte
	if sc != nil && ss.over == nil {
		fakes = ss.takeFakesLocked(nil)
		if len(fakes) > 0 {
			ss.wake = false
		}
	}
	idleAfter := len(fakes) > 0 && ss.q.empty() && !ss.copyIn && ss.txStatus != wire.TxIdle
	inline := sc != nil && !ss.q.empty() && !ss.unsynced && !ss.copyIn && ss.over == nil
	ss.pumpInline = inline
	ss.mu.Unlock()
	if sc == nil {
		return nil
	}
	if len(fakes) > 0 {
		_ = sc.Net.SetReadDeadline(time.Time{}) // the wake queuedLocked set for a pump
		ss.toClient(fakes)
	}
	if idleAfter && ss.srv.parker != nil {
		// Nothing owed inside a transaction: the server waits unread for
		// the client's next statement, as below (heldIdle).
		var err error
		if len(w) > 0 {
			err = ss.toServer(sc, w)
		}
		ss.pumpPending = true
		ss.heldIdle.Store(true)
		return err
	}
	if !inline {
		ss.goPump(sc)
		if len(w) > 0 {
			return ss.toServer(sc, w)
		}
		return nil
	}
	_ = sc.Net.SetReadDeadline(now.Add(inlineFor))
	if len(w) > 0 {
		ss.swmu.Lock()
		n, _, err := sc.WriteThenWait(w)
		ss.swmu.Unlock()
		ss.pe.counters.BytesIn.Add(uint64(n))
		if err != nil && n == len(w) {
			err = nil // the wait's deadline: the pump sees it too
		}
		if err == nil && n < len(w) {
			err = ss.toServer(sc, w[n:]) // TLS, or the socket's buffer filled
		} else if err != nil {
			err = fmt.Errorf("%w: %w", errServerGone, err)
		}
		if err != nil {
			// As when the pump already ran: it reads the server's end.
			ss.setInline(false)
			_ = sc.Net.SetReadDeadline(time.Time{})
			ss.goPump(sc)
			return err
		}
	}
	finished := ss.runPump(sc, nil, true)
	ss.mu.Lock()
	ss.pumpInline = false
	if finished {
		ss.pumpDone = pumpEnded // nothing to wait for (finish)
	}
	ss.mu.Unlock()
	if finished {
		return nil
	}
	_ = sc.Net.SetReadDeadline(time.Time{}) // still attached: no one else sets one now
	if ss.inlineIdle && ss.srv.parker != nil {
		// Inside a transaction with nothing owed: the server waits for the
		// client's next statement, which pumps inline again. Until then
		// nothing reads it. A client quiet for a sweep (park.go sweepIdle,
		// 2-4 s) gets its pump goroutine then, which sees a server that
		// died; before that, its next statement finds it dead and goes
		// nowhere else (session.over). finish and a stream start the pump
		// goroutine at once (startPump).
		ss.pumpPending = true
		ss.heldIdle.Store(true)
		return nil
	}
	ss.goPump(sc)
	return nil
}

func (ss *session) setInline(v bool) {
	ss.mu.Lock()
	ss.pumpInline = v
	ss.mu.Unlock()
}

// pumpEnded is the pumpDone of an inline pump that finished.
var pumpEnded = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// goPump starts sc's pump goroutine; its channel is made here, so the
// round trips pumped inline allocate none.
func (ss *session) goPump(sc *pool.Conn) {
	done := make(chan struct{})
	ss.mu.Lock()
	ss.pumpDone = done
	ss.mu.Unlock()
	go ss.pump(sc, done)
}

// startPump gives a pending pump (attachLocked) its goroutine; client
// goroutine only.
func (ss *session) startPump() {
	if !ss.pumpPending {
		return
	}
	ss.pumpPending = false
	ss.heldIdle.Store(false)
	ss.mu.Lock()
	sc := ss.sc
	ss.mu.Unlock()
	if sc != nil {
		ss.goPump(sc)
	}
}

// yieldInline reports whether the inline pump should stop waiting on the
// server: nothing is owed while the server stays attached, COPY IN waits
// for the client's data, or the session is over (the client goroutine
// cleans up). inlineIdle says the server may then be held unread: inside a
// transaction, where PostgreSQL sends nothing unasked (notifications wait
// for its end). Outside one (a pinned client, which may LISTEN) and in the
// other cases a pump goroutine takes over.
func (ss *session) yieldInline() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	busy := ss.copyIn || ss.over != nil
	owed := !ss.q.empty()
	ss.inlineIdle = !owed && !busy && ss.txStatus != wire.TxIdle
	return !owed || busy
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// heldZ is the ReadyForQuery to hold back during a capture: nothing when
// it answers pgtide's own request.
func heldZ(skip bool, status byte) []byte {
	if skip {
		return nil
	}
	return []byte{wire.BeReadyForQuery, 0, 0, 0, 5, status}
}

// needsBody lists the server messages the pump must see whole.
func needsBody(typ byte) bool {
	switch typ {
	case wire.BeReadyForQuery, wire.BeParameterStatus, wire.BeCommandComplete, wire.BeErrorResponse,
		wire.BeNotification: // small: at most a channel name and an 8000-byte payload
		return true
	}
	return false
}

// notifyPID rewrites, in place, the process ID of a NotificationResponse
// (body, its message body) to the cancel-key process ID pgtide minted for
// the client that sent the NOTIFY, where pgtide knows exactly which client
// that was, so that it equals what that client was told is its backend's
// (BackendKeyData: PQbackendPID, asyncpg's get_server_pid(), psycopg's
// info.backend_pid), as it does straight against PostgreSQL:
//   - the notifying backend is sc, this client's own server: this client;
//   - session mode: a server of the same pool whose last loan was to a
//     session-mode client (pool.Conn.SetHolder, attachLocked), lent to it
//     now or since it left, and not lent again: that client.
//
// Otherwise the server's PID stays, as PgBouncer leaves it: in transaction
// mode a server moves to another client at every transaction's end, and
// may have done so before the listener's backend reads the NOTIFY. Needs
// neither mu nor any other lock of the session's.
func (ss *session) notifyPID(sc *pool.Conn, body []byte) {
	if len(body) < 4 {
		return
	}
	pid := binary.BigEndian.Uint32(body)
	var to uint32
	switch {
	case pid == sc.PID:
		to = ss.keyPID
	case ss.mode == config.PoolSession && sc.Pool() != nil:
		to = sc.Pool().HolderOf(pid)
	}
	if to != 0 {
		binary.BigEndian.PutUint32(body, to)
	}
}

// frameReady reports whether b starts with a message the pump can handle
// now: a whole one, or one it may pass through in pieces.
func frameReady(b []byte) bool {
	if len(b) < wire.HeaderLen {
		return false
	}
	typ, n := wire.Header(b)
	return n <= len(b) || !needsBody(typ)
}

// routeLocked matches one server message to the request it answers and
// says whether the client sees it. body is nil for a message that is being
// passed through in pieces (never one of needsBody's types).
func (ss *session) routeLocked(sc *pool.Conn, typ byte, body []byte) (fwd bool, ev int, repl []byte) {
	h := ss.q.head()
	skip := h != nil && h.act == actSkip
	switch typ {
	case wire.BeReadyForQuery:
		status := wire.TxIdle
		if len(body) > 0 {
			status = body[0]
		}
		if ss.mode != config.PoolSession {
			ss.sqlReadyLocked(sc)
		}
		rk := ss.q.readyKind()
		sk, _ := ss.q.popReady()
		ss.txStatus, sc.TxStatus = status, status
		ss.readyLocked(status, sk)
		ss.copyIn = false
		if status == wire.TxIdle && ss.q.empty() && !ss.unsynced {
			// All the client sent is answered, with its tags
			// (noteTagLocked), and no portal it bound is left to run.
			ss.st.setDefault = false
		}
		if (rk == wire.FeQuery || rk == wire.FeFunctionCall) && ss.unsynced && ss.q.empty() && ss.mode != config.PoolSession {
			// A Query (or FunctionCall) after extended messages with no
			// Sync (asyncpg's Parse/Describe/Flush, then COPY as a simple
			// Query): the server ran it, so nothing before it failed, and
			// its end ended their implicit transaction: as after a Sync.
			// Nothing the client sent after it waits for a reply.
			ss.unsynced = false
		}
		if ss.mode == config.PoolStatement && status != wire.TxIdle && !sk && ss.q.empty() && !ss.unsynced {
			// Statement mode: the statement opened a transaction block.
			// Roll it back unseen and tell the client.
			ss.q.push(entry{kind: wire.FeQuery, act: actSkip})
			ss.q.push(entry{kind: wire.FeQuery, act: actFake, fake: append(
				wire.ErrorFrame("ERROR", codeFeatureNotSupported, "transaction blocks are not allowed in statement pooling mode"),
				wire.BeReadyForQuery, 0, 0, 0, 5, wire.TxIdle)})
			return false, evStmtTxn, nil
		}
		ss.settleTimersLocked()
		if ss.mode == config.PoolSession && status == wire.TxIdle && ss.holdForRestoreLocked(heldZ(sk, status)) {
			return false, evRestore, nil
		}
		if ss.releasableLocked() {
			ev = evBoundary
			if ss.holdForCaptureLocked(heldZ(sk, status)) {
				return false, evSettle, nil
			}
		}
		return !sk, ev, nil
	case wire.BeParameterStatus:
		ss.parameterStatusLocked(sc, body)
		return !skip, evNone, nil
	case wire.BeNotification:
		// Asynchronous: the client's LISTEN's, whatever request is at
		// the head (pgtide's own included), so it always reaches the client.
		ss.notifyPID(sc, body)
		return true, evNone, nil
	case wire.BeParseComplete:
		if h != nil && h.kind == wire.FeParse {
			e := ss.q.popHead()
			if e.st != nil {
				e.st.validated.Store(true)
			}
		}
	case wire.BeBindComplete:
		if h != nil && h.kind == wire.FeBind {
			ss.q.popHead()
		}
	case wire.BeCloseComplete:
		if h != nil && h.kind == wire.FeClose {
			ss.q.popHead()
		}
	case wire.BeRowDescription, wire.BeNoData:
		if h != nil && h.kind == wire.FeDescribe {
			ss.q.popHead()
		}
	case wire.BeCommandComplete:
		ss.noteTagLocked(body) // sessionstate.go
		if ss.mode != config.PoolSession && body != nil {
			ss.sqlCompleteLocked(sc, body, h) // sqlsession.go
		}
		if ss.mode != config.PoolSession && len(body) > 0 && body[0] == 'D' {
			tag := string(body)
			if tag == "DISCARD ALL\x00" || tag == "DEALLOCATE ALL\x00" {
				ss.forgetAllLocked(sc, h)
			}
		}
		if h != nil && h.kind == wire.FeExecute {
			ss.q.popHead()
			if ss.txStatus == wire.TxFailed && (string(body) == "ROLLBACK\x00" || string(body) == "COMMIT\x00") {
				// The failed block ended (ROLLBACK, or COMMIT, whose tag is
				// then ROLLBACK), or ROLLBACK TO SAVEPOINT left it going:
				// before the Sync's ReadyForQuery says which, what the
				// client sends next is not refused as in a failed block.
				ss.txStatus = wire.TxInTx
			}
		}
	case wire.BeEmptyQueryResponse, wire.BePortalSuspended:
		if h != nil && h.kind == wire.FeExecute {
			ss.q.popHead()
		}
	case wire.BeErrorResponse:
		if h != nil && h.act == actErr && !fatalError(body) {
			// The server failed where pgtide refused: the client sees
			// pgtide's error (refuseLocked).
			repl = h.fake
		} else if body != nil {
			ss.serverErrorLocked(body)
			if fatalError(body) && !ss.gone {
				ss.serverFatal = true // serverStopped sends no second error
			}
		}
		if body != nil && ss.mode != config.PoolSession && h != nil && errorCode(body) == "26000" {
			ss.lostStmtsLocked(sc, h) // sqlsession.go
		}
		if repl == nil && body != nil && ss.mode != config.PoolSession {
			// PostgreSQL names the statement in some errors: use the
			// client's name, never pgtide's (sqlsession.go).
			repl = ss.sqlErrorLocked(body, h)
			if h != nil && h.sql != nil && len(h.sql.edits) > 0 && (h.kind == wire.FeQuery || h.kind == wire.FeParse) {
				// The error's position counts in the text pgtide sent,
				// whose statement names it rewrote: the client's counts.
				src := body
				if repl != nil {
					src = repl[5:]
				}
				if r := unshiftPosition(src, h.sql.edits); r != nil {
					repl = r
				}
			}
		}
		if h != nil && isExtended(h.kind) {
			e := ss.q.popHead()
			// What the server skipped behind the failed request is taken
			// back first, newest first, as undoSkippedLocked does: a
			// skipped Close of a name this failed Parse booked puts the
			// name back, so the Parse's own undo must come after it (it
			// came before, and the name stayed mapped).
			dropped := ss.q.dropUntilSync()
			ss.undoSkippedLocked(sc, dropped)
			if e.kind == wire.FeExecute && e.st != nil {
				stateOf(sc).remove(e.st) // pgtide's own SQL PREPARE failed
			}
			if e.kind == wire.FeParse && e.st != nil {
				stateOf(sc).remove(e.st)
				if e.act == actFwd && ss.stmts[e.name] == e.st {
					delete(ss.stmts, e.name)
				}
			}
			if e.act == actSkip && errorCode(body) == codeInFailedTxn && pgtideOnly(dropped) &&
				len(ss.q.e) > 0 && ss.q.e[0].kind == wire.FeSync && ss.q.e[0].act == actSkip {
				// pgtide's own batch ahead of a client's Query (a statement
				// prepared again for its EXECUTE) ran in a transaction that a
				// request pipelined before it had failed: the Query gets its
				// own 25P02, and PostgreSQL sends one (skipInjectLocked, when
				// the failure was known in time).
				return false, evNone, nil
			}
			if e.kind == wire.FeParse && e.st == nil && e.act == actFwd {
				// The client's unnamed Parse failed: PostgreSQL dropped the
				// old unnamed statement before parsing, so none is left.
				ss.dropUnnamedLocked(stateOf(sc))
			}
			if ss.mode != config.PoolSession && ss.unsynced && len(ss.q.e) == 0 {
				// The server skips all up to the client's Sync, which has
				// not come yet: so does pgtide, before it books anything.
				ss.clientSkip = true
			}
		}
		return !ss.gone, evNone, repl // errors reach the client, even for pgtide's requests
	case wire.BeCopyInResponse:
		ss.copyIn = true
		ss.q.copyStarted()
		ss.q.wake() // what is queued behind the COPY waits for its data: holdBack reads on
		if ss.gone {
			// The client left before the server asked for its data (a
			// cancel does not end a COPY waiting for input): fail the COPY
			// ourselves so the server reaches ReadyForQuery.
			ss.copyIn = false
			ss.q.push(entry{kind: reqCopyEnd})
			ss.q.push(entry{kind: wire.FeSync})
			return false, evCopyAbort, nil
		}
	}
	return !skip, evNone, nil
}

// releasableLocked reports whether the pump should look at giving the
// server back: at the release rule, or drained after the client left.
func (ss *session) releasableLocked() bool {
	return ss.boundaryLocked() || (ss.gone && ss.drainedLocked())
}

// renameInError rewrites an ErrorResponse body that names pgtide's
// statement so it names the client's; nil when there is nothing to change.
func renameInError(body []byte, ours, theirs string) []byte {
	if theirs == "" || !bytes.Contains(body, []byte(ours)) {
		return nil
	}
	var er pgproto3.ErrorResponse
	if er.Decode(body) != nil {
		return nil
	}
	q, t := `"`+ours+`"`, `"`+theirs+`"`
	er.Message = strings.ReplaceAll(er.Message, q, t)
	er.Detail = strings.ReplaceAll(er.Detail, q, t)
	er.Hint = strings.ReplaceAll(er.Hint, q, t)
	out, err := er.Encode(nil)
	if err != nil {
		return nil
	}
	return out
}

// pgtideOnly reports whether every entry is a request pgtide made itself.
func pgtideOnly(es []entry) bool {
	for _, e := range es {
		if e.act != actSkip {
			return false
		}
	}
	return true
}

func isExtended(k byte) bool {
	switch k {
	case wire.FeParse, wire.FeBind, wire.FeDescribe, wire.FeExecute, wire.FeClose:
		return true
	}
	return false
}

// takeFakesLocked pops the fake replies now at the head of the queue and
// appends them to dst.
func (ss *session) takeFakesLocked(dst []byte) []byte {
	for {
		h := ss.q.head()
		if h == nil || h.act != actFake {
			return dst
		}
		dst = append(dst, h.fake...)
		ss.q.popHead()
	}
}

// woken reports whether a read error is the client goroutine waking the
// pump (a read deadline in the past) rather than a failure.
func (ss *session) woken(err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	ss.mu.Lock()
	gone := ss.gone
	ss.mu.Unlock()
	if gone {
		return false
	}
	// Clear the deadline before looking at the queue, so a wake-up that
	// comes after this point is seen on the next read.
	if sc := ss.currentServer(); sc != nil {
		_ = sc.Net.SetReadDeadline(time.Time{})
	}
	return true
}

func (ss *session) currentServer() *pool.Conn {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.sc
}

// flushFakes writes fake replies that reached the head of the queue while
// the pump waited on the server.
// It reports whether the pump is then done with sc (see atBoundary).
func (ss *session) flushFakes(sc *pool.Conn) bool {
	ss.mu.Lock()
	ss.wake = false
	f := ss.takeFakesLocked(nil)
	ss.mu.Unlock()
	if len(f) == 0 {
		return false
	}
	ss.toClient(f)
	ss.mu.Lock()
	if ss.sc == sc && ss.releasableLocked() && ss.holdForCaptureLocked(nil) {
		// As in pumpLoop: a transaction that changed the session ended
		// before these fakes; capture it before the server goes back.
		err := ss.sendCaptureLocked(sc)
		ss.mu.Unlock()
		return ss.settle(sc, err)
	}
	ss.mu.Unlock()
	return ss.atBoundary(sc)
}

// atBoundary runs after replies up to a ReadyForQuery were written. It
// reports whether the pump is done with sc: returned to the pool
// (transaction and statement mode), left to finish (client gone), or
// the session is closing for shutdown.
func (ss *session) atBoundary(sc *pool.Conn) bool {
	ss.mu.Lock()
	if ss.sc != sc {
		ss.mu.Unlock()
		return false
	}
	if ss.gone && ss.drainedLocked() {
		// The client left; finish rolls back whatever is open.
		ss.mu.Unlock()
		return true
	}
	if !ss.boundaryLocked() {
		ss.mu.Unlock()
		return false
	}
	switch {
	case ss.closing:
		msg := ss.closeWhyLocked()
		ss.mu.Unlock()
		ss.kill(codeAdminShutdown, msg)
		return true
	case ss.mode != config.PoolSession && ss.st.pins == 0: // a pinned client keeps its server
		ss.sc = nil
		inline := ss.pumpInline
		ss.mu.Unlock()
		if inline {
			_ = sc.Net.SetReadDeadline(time.Time{}) // inlineFor's: never lend a server with one
		}
		// A client write that queued nothing may still be under way:
		// it ends before sc goes back, and none starts after (toAttached).
		ss.swmu.Lock()
		ss.swmu.Unlock() // empty on purpose: it waits for that write
		ss.giveBack(sc)  // closed instead if a streamed message is cut on it (pool.Conn.Partial)
		return true
	}
	ss.mu.Unlock()
	return false
}

// undoSkippedLocked takes back what pgtide booked, when it read the batch,
// for requests the server skipped after an error (PostgreSQL ignores all
// up to Sync): a statement to be prepared (the client's Parse, pgtide's
// re-Parse, an SQL PREPARE) is not on the server, nor under the client's
// name; a name pgtide answered a Parse for is not the client's, one it
// answered a Close for still is; a statement an eviction was to close is
// still on the server; whose the server's unnamed statement is, is no
// longer known. Otherwise pgtide would answer for statements that do not
// exist, on this client's later requests and on every client's that gets
// the server.
func (ss *session) undoSkippedLocked(sc *pool.Conn, dropped []entry) {
	if len(dropped) == 0 {
		return
	}
	srv := stateOf(sc)
	// Newest first: each undo then finds the state its request left (a
	// Parse and a Close of one name in the same batch).
	for i := len(dropped) - 1; i >= 0; i-- {
		e := dropped[i]
		if e.sql != nil {
			ss.undoSQLLocked(srv, e.sql) // sqlsession.go
		}
		switch {
		case e.kind == wire.FeParse && e.st != nil:
			if e.act != actFake {
				srv.remove(e.st)
			}
			if e.name != "" && ss.stmts[e.name] == e.st {
				delete(ss.stmts, e.name)
			}
		case e.kind == wire.FeParse && e.act == actFwd: // the client's unnamed statement
			ss.dropUnnamedLocked(srv)
		case e.kind == wire.FeParse: // pgtide's, of an unnamed statement
			if srv.unnamed == ss || e.act == actSkip {
				srv.unnamed = nil
			}
		case e.kind == wire.FeClose && e.act == actFake && e.name != "" && e.st != nil:
			if _, taken := ss.stmts[e.name]; !taken {
				ss.addStmtLocked(e.name, e.st)
			}
		case e.kind == wire.FeClose && e.act == actSkip && e.st != nil:
			srv.add(e.st) // an eviction's Close
		case e.kind == wire.FeClose && e.act == actFwd && e.fake != nil:
			// A Close of the client's unnamed statement (closeLocked): it
			// is still there, and still the client's.
			ss.unnamedParse = e.fake
			ss.newUnnamedLocked()
			srv.setUnnamed(ss)
		case e.kind == wire.FeExecute && e.st != nil:
			srv.remove(e.st) // pgtide's own SQL PREPARE (ensureLocked)
		}
	}
}

// dropUnnamedLocked forgets the client's unnamed statement, on the client
// and on srv: its Parse failed or was skipped. Not when the client has
// pipelined another Parse of it that is still queued: that one is the
// client's unnamed statement once it runs, and was booked as such when it
// was read (pgtide forgot it before, and the client's next Bind of it got
// 26000 from pgtide).
func (ss *session) dropUnnamedLocked(srv *serverState) {
	for i := range ss.q.e {
		if e := &ss.q.e[i]; e.kind == wire.FeParse && e.st == nil && e.act == actFwd {
			return
		}
	}
	ss.unnamedParse = nil
	ss.newUnnamedLocked()
	if srv.unnamed == ss {
		srv.unnamed = nil
	}
}

// forgetAllLocked runs at the CommandComplete of the client's DEALLOCATE
// ALL or DISCARD ALL (h, its request): the server has no prepared
// statement left and the client none of its names. Requests the client
// pipelined behind it were booked when pgtide read them, before this
// reply, and run after it on the server: what they prepare (on the server,
// under the client's names) is booked again, in their order. Before, it
// was forgotten with the rest: the server kept a statement pgtide thought
// it lacked, and the next client to prepare that text there got 42P05.
func (ss *session) forgetAllLocked(sc *pool.Conn, h *entry) {
	srv := stateOf(sc)
	old := ss.stmts
	ss.stmts = nil
	srv.clear()
	later := map[*stmt]bool{}
	replay := func(fx *sqlFx) {
		if fx == nil {
			return
		}
		for _, p := range fx.preps { // not confirmed yet: after this one
			srv.add(p.st)
			later[p.st] = true
			if p.name != "" {
				ss.addStmtLocked(p.name, p.st)
			}
		}
		// A DEALLOCATE of a name from before finds none now: the server
		// refuses it, and the name must not come back at its ReadyForQuery.
		fx.deallocs = slices.DeleteFunc(fx.deallocs, func(d sqlPrep) bool { return !later[d.st] })
		for _, d := range fx.deallocs {
			delete(ss.stmts, d.name)
		}
	}
	seen := false
	for i := range ss.q.e {
		e := &ss.q.e[i]
		if e == h {
			seen = true
			replay(e.sql)
			continue
		}
		if !seen {
			continue
		}
		switch {
		case e.kind == wire.FeParse && e.st != nil:
			if e.act != actFake {
				srv.add(e.st)
				later[e.st] = true
			}
			if e.name != "" {
				ss.addStmtLocked(e.name, e.st)
			}
		case e.kind == wire.FeExecute && e.st != nil && e.act == actSkip: // pgtide's SQL PREPARE
			srv.add(e.st)
			later[e.st] = true
		case e.kind == wire.FeClose && e.st != nil && e.act == actSkip: // an eviction
			srv.remove(e.st)
		case e.kind == wire.FeClose && e.act == actFake && e.st != nil && !later[e.st]:
			// A Close of a statement from before: this took it, and a
			// skip of the Close must not give the name back
			// (undoSkippedLocked).
			e.st, e.name = nil, ""
		case e.kind == wire.FeClose && e.st != nil && e.name != "" && ss.stmts[e.name] == e.st:
			delete(ss.stmts, e.name)
		case (e.kind == wire.FeBind || e.kind == wire.FeDescribe) && e.st != nil && e.name == "":
			// Already sent under pgtide's name: the server's 26000 names
			// the client's (sqlErrorLocked).
			for cname, st := range old {
				if st == e.st {
					e.name = cname
					break
				}
			}
		}
		replay(e.sql)
	}
	// PREPAREs of unnamed Parses queued behind it whose batch's Sync has not
	// come (sent with Flush) wait in sqlPending, not on a queued entry.
	replay(ss.sqlPending)
	// The client's own SQL statements from before: no one can name them
	// now; servers that have them close them (sweepLocked).
	for _, st := range old {
		if st.prep != nil && !later[st] {
			markDead(st)
		}
	}
}
