package proxy

import (
	"errors"
	"fmt"
	"time"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/wire"
)

var (
	parseComplete = []byte{'1', 0, 0, 0, 4}
	closeComplete = []byte{'3', 0, 0, 0, 4}
	readyIdle     = []byte{wire.BeReadyForQuery, 0, 0, 0, 5, 'I'}
)

// scanPooled handles a batch in transaction and statement mode, where the
// server may change between transactions. Named prepared statements are
// mapped to pgtide's per-pool names and prepared on whichever server the
// client holds; a batch that needs no server (Parse of a statement already
// validated elsewhere, Close of a statement, Sync) is answered without
// borrowing one, which is what keeps pgbench -M prepared from deadlocking
// when every server is held by a client inside a transaction.
func (ss *session) scanPooled() (int, bool, error) {
	b := ss.rd.Buffered()
	end, term, need := 0, false, false
	ss.mu.Lock()
	attached := ss.sc != nil
	ss.mu.Unlock()
	for {
		typ, n, err := ss.nextFrame(&b, end)
		if errors.Is(err, errStream) {
			return ss.startStream(typ, n)
		}
		if err != nil {
			return 0, false, err
		}
		if n == 0 {
			break
		}
		if typ == wire.FeTerminate {
			term = true
			break
		}
		if !attached && !need {
			need = ss.needsServer(typ, b[end+5:end+n])
		}
		end += n
	}
	if end == 0 {
		return 0, term, nil
	}
	var sc *pool.Conn
	for {
		if attached || need {
			var err error
			if sc, err = ss.server(); err != nil {
				return 0, false, err
			}
		}
		ss.mu.Lock()
		if err := ss.forwardLocked(nil); err != nil {
			ss.mu.Unlock() // the session is over: its server was lost or it was killed
			return 0, false, err
		}
		if ss.sc == sc {
			break // mu stays held: the pump cannot give sc back while we queue
		}
		// The pump returned the server to the pool after we looked: borrow.
		ss.mu.Unlock()
		attached, need = false, true
	}

	out, local := getScratch(), getScratch()
	seg, modified, wake := 0, false, false
	var bad byte // a malformed message: the batch ends before it
	var srv *serverState
	if sc != nil {
		srv = stateOf(sc)
	}
	queued := len(ss.q.e)
	wasEmpty := queued == 0
	if srv != nil {
		if out = ss.sweepLocked(srv, out); len(out) > 0 {
			modified = true // dead SQL statements closed first: sqlsession.go
		}
	}
	// replace ends the pass-through run before message [off, off+n) and
	// puts repl (possibly nothing) in its place.
	replace := func(off, n int, repl ...[]byte) {
		out = append(out, b[seg:off]...)
		for _, r := range repl {
			out = append(out, r...)
		}
		seg, modified = off+n, true
	}
	fakeReply := func(r []byte) {
		if sc == nil {
			local = append(local, r...)
			return
		}
		ss.q.push(entry{kind: wire.FeParse, act: actFake, fake: r})
		wake = true
	}
	ensure := func(st *stmt) { // st prepared on sc before the current message
		out = ss.ensureLocked(srv, st, out)
	}

	for off := 0; off < end; {
		typ, n := wire.Header(b[off:])
		body := b[off+5 : off+n]
		if ss.clientSkip && typ != 'S' {
			replace(off, n)
			off += n
			continue
		}
		switch typ {
		case wire.FeSync:
			ss.clientSkip = false
			if sc != nil {
				ss.q.push(entry{kind: wire.FeSync, sql: ss.takeSQLPendingLocked()})
				ss.unsynced = false
			} else {
				replace(off, n)
				local = append(local, readyIdle...)
			}
		case wire.FeFlush:
			if sc == nil {
				replace(off, n)
			}
		case wire.FeQuery:
			if ss.noteQueryLocked(body) { // sessionstate.go
				ss.st.check = true
			}
			if mayNameStmts(body) { // SQL PREPARE/EXECUTE/DEALLOCATE: sqlsession.go
				out = ss.sqlQueryLocked(srv, b[off:off+n], append(out, b[seg:off]...))
				seg, modified = off+n, true
			} else {
				ss.q.push(entry{kind: wire.FeQuery})
			}
			// A simple query destroys the unnamed statement, for the
			// server and so for the client.
			srv.unnamed = nil
			ss.unnamedParse = nil
		case wire.FeFunctionCall:
			ss.q.push(entry{kind: wire.FeFunctionCall})
			ss.st.check = true // a function call may change anything
		case wire.FeExecute:
			ss.q.push(entry{kind: wire.FeExecute})
			ss.unsynced = true
		case wire.FeCopyData:
		case wire.FeCopyDone, wire.FeCopyFail:
			ss.q.push(entry{kind: reqCopyEnd})
			ss.copyIn = false
		case wire.FeParse:
			name, rest, ok1 := cstring(body)
			query, types, ok2 := cstring(rest)
			if !ok1 || !ok2 {
				bad, end = typ, off // send what came before, then refuse
				break
			}
			if len(name) == 0 {
				ss.noteUnnamedParseLocked(query) // sessionstate.go
				msg := b[off : off+n]
				if mayNameStmts(query) { // sqlsession.go
					msg, out = ss.sqlParseLocked(srv, msg, query, types, append(out, b[seg:off]...))
					out = append(out, msg...)
					seg, modified = off+n, true
				}
				ss.unnamedParse = append(ss.unnamedParse[:0], msg...)
				srv.unnamed = ss
				ss.q.push(entry{kind: wire.FeParse})
				ss.unsynced = true
				break
			}
			var dep *stmt // an EXECUTE's statement: sqlsession.go
			if mayNameStmts(query) {
				var refuse []byte
				if query, dep, refuse = ss.sqlNamedParseLocked(query); refuse != nil {
					replace(off, n)
					fakeReply(refuse)
					ss.clientSkip = true
					break
				}
			}
			if _, dup := ss.stmts[string(name)]; dup {
				replace(off, n)
				fakeReply(wire.ErrorFrame("ERROR", "42P05", fmt.Sprintf("prepared statement %q already exists", name)))
				ss.clientSkip = true
				break
			}
			st := ss.pe.stmts.getDep(query, types, dep)
			ss.stmts[string(name)] = st
			ss.noteParseLocked(st, query)
			switch {
			case sc == nil:
				replace(off, n)
				local = append(local, parseComplete...)
			case srv.has(st):
				replace(off, n)
				fakeReply(parseComplete)
				ss.unsynced = true
			default:
				if st.dep != nil {
					out, seg = append(out, b[seg:off]...), off
					out = ss.ensureLocked(srv, st.dep, out)
				}
				ss.evictLocked(srv, &out)
				replace(off, n, st.parse)
				ss.q.push(entry{kind: wire.FeParse, st: st})
				srv.add(st)
				ss.unsynced = true
			}
		case wire.FeBind, wire.FeDescribe:
			var prefix, name, rest []byte
			ok := true
			if typ == wire.FeBind {
				var portal []byte
				portal, rest, ok = cstring(body)
				prefix = body[:len(portal)+1]
				if ok {
					name, rest, ok = cstring(rest)
				}
			} else if len(body) > 0 && body[0] == 'S' {
				prefix = body[:1]
				name, rest, ok = cstring(body[1:])
			} else {
				ss.q.push(entry{kind: wire.FeDescribe})
				ss.unsynced = true
				break
			}
			if !ok {
				bad, end = typ, off
				break
			}
			ss.unsynced = true
			if len(name) == 0 {
				if srv.unnamed != ss {
					if ss.unnamedParse == nil {
						replace(off, n)
						fakeReply(wire.ErrorFrame("ERROR", "26000", "unnamed prepared statement does not exist"))
						ss.clientSkip = true
						break
					}
					out = append(out, b[seg:off]...)
					seg = off
					out = append(out, ss.unnamedParse...)
					ss.q.push(entry{kind: wire.FeParse, act: actSkip})
					srv.unnamed, modified = ss, true
				}
				if typ == wire.FeBind {
					ss.noteBindLocked(nil)
				}
				ss.q.push(entry{kind: typ, descS: typ == wire.FeDescribe})
				break
			}
			st := ss.stmts[string(name)]
			if st == nil {
				replace(off, n)
				fakeReply(wire.ErrorFrame("ERROR", "26000", fmt.Sprintf("prepared statement %q does not exist", name)))
				ss.clientSkip = true
				break
			}
			if typ == wire.FeBind {
				ss.noteBindLocked(st)
			}
			out = append(out, b[seg:off]...)
			seg = off
			ensure(st)
			out = wire.AppendFrame(out, typ, prefix, []byte(st.name), []byte{0}, rest)
			seg, modified = off+n, true
			ss.q.push(entry{kind: typ, descS: typ == wire.FeDescribe, st: st})
		case wire.FeClose:
			if len(body) > 1 && body[0] == 'S' && body[1] != 0 {
				name, _, _ := cstring(body[1:])
				delete(ss.stmts, string(name))
				replace(off, n)
				fakeReply(closeComplete)
				break
			}
			ss.q.push(entry{kind: wire.FeClose})
			ss.unsynced = true
		default:
			bad, end = typ, off
		}
		if bad != 0 {
			break
		}
		off += n
	}
	if wake {
		// Fakes with nothing ahead of them are written by the pump, which
		// owns the reply order; wake it if it waits on the server.
		if h := ss.q.head(); h != nil && h.act == actFake && sc != nil {
			// Under mu, while sc is certainly still ours: a deadline left
			// on a server after it went back to the pool would fail its
			// next borrower's liveness check.
			ss.wake = true
			_ = sc.Net.SetReadDeadline(time.Now())
		}
	}
	// With nothing queued and no open extended batch, the pump may give
	// the server back at any moment: send it nothing.
	idleWrite := sc != nil && len(ss.q.e) == queued && !ss.unsynced && ss.boundaryLocked()
	ss.armTimersLocked(wasEmpty)
	ss.requestsQueuedLocked(wasEmpty)
	ss.mu.Unlock()
	if idleWrite {
		sc, modified = nil, false
	}

	var err error
	switch {
	case modified:
		out = append(out, b[seg:end]...)
		if len(out) > 0 && sc != nil {
			err = ss.toServer(sc, out)
		}
	case sc != nil:
		err = ss.toServer(sc, b[:end])
	}
	if len(local) > 0 && err == nil {
		ss.wmu.Lock()
		_, werr := ss.conn.Write(local)
		ss.wmu.Unlock()
		if werr != nil {
			err = fmt.Errorf("%w: %w", errClientGone, werr)
		}
	}
	putScratch(out)
	putScratch(local)
	if err != nil {
		return 0, false, err
	}
	if bad != 0 {
		return 0, false, ss.badMessage(bad)
	}
	ss.rd.Discard(end)
	return end, term, nil
}

// needsServer reports whether a message can only be answered by a server
// (as opposed to by pgtide from what it knows).
func (ss *session) needsServer(typ byte, body []byte) bool {
	switch typ {
	case wire.FeSync, wire.FeFlush:
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
		return !(len(body) > 1 && body[0] == 'S' && body[1] != 0)
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
	*out = wire.AppendFrame(*out, wire.FeClose, []byte{'S'}, []byte(old.name), []byte{0})
	ss.q.push(entry{kind: wire.FeClose, act: actSkip})
}
