package proxy

import (
	"bytes"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/wire"
)

// SQL-level PREPARE / EXECUTE / DEALLOCATE in transaction and statement
// mode (README: "Transaction pooling: what carries over").
//
// PostgreSQL has one namespace per session for SQL- and protocol-level
// prepared statements, so both live in session.stmts:
//
//   - PREPARE name ... gets a new server-side name of its own (the
//     statement's parameter types are SQL type names, which a Parse cannot
//     carry), and the PREPARE runs on the server with that name. On a server
//     that lacks it, pgtide runs the same PREPARE through the unnamed
//     statement and portal first, its replies swallowed. The name is mapped
//     when the client's request is scanned and unmapped again if the
//     server's reply shows that the PREPARE did not run (no "PREPARE" tag
//     before the ReadyForQuery).
//   - EXECUTE name (also EXPLAIN ... EXECUTE, CREATE TABLE ... AS EXECUTE)
//     is rewritten to the server-side name, after making sure the statement
//     exists on the server, whichever way the client prepared it.
//   - DEALLOCATE name unmaps the name (SQL- or protocol-prepared, as in
//     PostgreSQL; mapped again if the reply shows it did not run). A
//     statement of the client's own SQL PREPARE that the server has is
//     deallocated there for real (so a client that prepares and
//     deallocates per request leaves nothing behind); otherwise the server
//     runs DEALLOCATE of a throwaway statement prepared just before it. So
//     the reply, its tag and its errors (in a failed transaction) are the
//     server's. DEALLOCATE ALL is passed on: its tag clears the client's
//     map and the server's (pump.go).
//
// Server errors naming pgtide's statement names are rewritten to name the
// client's.

// sqlFx is what a Query or Sync still has to confirm: the client's
// PREPAREs and DEALLOCATEs in it, in order. Each "PREPARE" or
// "DEALLOCATE" tag confirms the first of its kind; those left at the
// ReadyForQuery did not run (an error came first): a PREPARE's name is
// unmapped again, a DEALLOCATE's mapped again.
type sqlFx struct {
	preps, deallocs []sqlPrep
	// execs are the statements its EXECUTEs and DEALLOCATEs name, under
	// the client's names: a DEALLOCATE ALL ahead of one in the same
	// request drops the statement (and takes the DEALLOCATE out of
	// deallocs), and the server's 26000 names pgtide's.
	execs []sqlPrep
	// edits are the names rewritten in the request's text, in order: a
	// server error's position is moved back onto the client's text
	// (unshiftPosition).
	edits []posEdit
}

// posEdit is one statement name pgtide replaced in a query text: where it
// starts in the text sent and how long it is there and in the client's
// text, in characters (an error's position counts characters).
type posEdit struct{ at, newLen, oldLen int }

// books reports whether fx holds a PREPARE of st not yet confirmed.
func (fx *sqlFx) books(st *stmt) bool {
	for _, p := range fx.preps {
		if p.st == st {
			return true
		}
	}
	return false
}

type sqlPrep struct {
	name string // "" for a name pgtide does not map (U&"...")
	st   *stmt
	real bool   // a DEALLOCATE the server runs on st itself
	seq  uint64 // booking order (sqlPrepSeq): undoSQLLocked goes backwards
}

// sqlPrepSeq numbers the PREPAREs and DEALLOCATEs pgtide books.
var sqlPrepSeq atomic.Uint64

var syncFrame = []byte{wire.FeSync, 0, 0, 0, 4}

// nopBody is the throwaway statement a DEALLOCATE is pointed at.
var nopBody = []byte("SELECT\x00\x00\x00")

// stdStringsLocked reports whether the client's strings treat backslash
// literally (standard_conforming_strings, on unless it said otherwise).
// Read from ss.view, which is gone after the startup reply, the setting
// was always on, and with it off a PREPARE after 'it\'s' passed as string
// content, unmapped, under the client's own name.
func (ss *session) stdStringsLocked() bool {
	return ss.clientSettingLocked("standard_conforming_strings") != "off"
}

// mbLenLocked is the client encoding's mbLen (sqlprepare.go), nil for most.
func (ss *session) mbLenLocked() mbLen {
	return clientMBLen(ss.clientSettingLocked("client_encoding"))
}

// clientSettingLocked returns the value of a reported parameter for the
// client: the one it wants (in transaction and statement mode every value
// a server reports to it, parameterStatusLocked), else the one it was told
// at login; "" if neither.
func (ss *session) clientSettingLocked(name string) string {
	if v, ok := ss.want[name]; ok {
		return v
	}
	if ss.login != nil {
		v, _ := reportedParam(ss.login.told, name)
		return v
	}
	return ""
}

// skipInjectLocked reports whether the server is in a failed transaction
// with nothing before this request: anything pgtide injected would fail
// with 25P02 as the client's own request will, so inject nothing.
func (ss *session) skipInjectLocked() bool {
	return ss.txStatus == wire.TxFailed && ss.q.empty()
}

// ensureLocked makes st exist on the server before what comes next in out,
// and returns out with whatever that took.
func (ss *session) ensureLocked(srv *serverState, st *stmt, out []byte) []byte {
	if st.dep != nil {
		out = ss.ensureLocked(srv, st.dep, out)
	}
	if srv.has(st) {
		return out
	}
	ss.evictLocked(srv, &out)
	if st.parse != nil {
		out = append(out, st.parse...)
		ss.q.push(entry{kind: wire.FeParse, act: actSkip, st: st})
	} else {
		// The client's SQL PREPARE, through the unnamed statement and
		// portal: the client's unnamed statement is parsed again when it
		// next uses it (scanPooled).
		out = wire.AppendFrame(out, wire.FeParse, []byte{0}, st.prep, []byte{0, 0, 0})
		out = wire.AppendFrame(out, wire.FeBind, []byte{0, 0, 0, 0, 0, 0, 0, 0})
		out = wire.AppendFrame(out, wire.FeExecute, []byte{0, 0, 0, 0, 0})
		ss.q.push(entry{kind: wire.FeParse, act: actSkip})
		ss.q.push(entry{kind: wire.FeBind, act: actSkip})
		ss.q.push(entry{kind: wire.FeExecute, act: actSkip, st: st})
		srv.unnamed = nil
	}
	srv.add(st)
	return out
}

// rewriteSQLLocked maps the prepared-statement names of one query text
// (a simple Query's, or an unnamed Parse's) and puts what the server
// needs first in out. It returns the new text (nil if unchanged), out, and
// what the server's reply has to confirm (nil if nothing).
func (ss *session) rewriteSQLLocked(srv *serverState, text []byte, out []byte) ([]byte, []byte, *sqlFx) {
	refs, _ := scanSQL(text, ss.stdStringsLocked(), ss.mbLenLocked())
	if len(refs) == 0 {
		return nil, out, nil
	}
	skip := ss.skipInjectLocked()
	var fx sqlFx
	var nt []byte
	last := 0
	put := func(r sqlRef, name string) {
		nt = append(nt, text[last:r.start]...)
		fx.edits = append(fx.edits, posEdit{at: textChars(nt), newLen: textChars([]byte(name)), oldLen: textChars(text[r.start:r.end])})
		nt = append(nt, name...)
		last = r.end
	}
	for _, r := range refs {
		switch r.kind {
		case sqlPrepare:
			if old := ss.stmts[r.name]; old != nil && !r.bad {
				// PostgreSQL says 42P05: let the server say it, about a
				// statement it has (the name is mapped back).
				if !skip {
					out = ss.ensureLocked(srv, old, out)
				}
				put(r, old.name)
				continue
			}
			st := &stmt{name: newStmtName()}
			st.prep = append(append([]byte("PREPARE "), st.name...), text[r.end:r.stmtEnd]...)
			put(r, st.name)
			ss.noteParseLocked(st, text[r.end:r.stmtEnd]) // its EXECUTEs raise the check (sessionstate.go)
			p := sqlPrep{st: st, seq: sqlPrepSeq.Add(1)}
			if !r.bad {
				p.name = r.name
				ss.addStmtLocked(r.name, st)
				ss.evictLocked(srv, &out)
				srv.add(st)
			}
			fx.preps = append(fx.preps, p)
		case sqlExecute:
			st := ss.stmts[r.name]
			if st == nil || r.bad {
				if strings.HasPrefix(r.name, "pgtide_") {
					put(r, noStmtName) // never another client's statement
				}
				continue // the server says it does not exist
			}
			st = ss.execStmtLocked(st)
			if !skip {
				out = ss.ensureLocked(srv, st, out)
			}
			put(r, st.name)
			fx.execs = append(fx.execs, sqlPrep{name: r.name, st: st})
		case sqlDeallocate:
			if r.bad || ss.stmts[r.name] == nil {
				if strings.HasPrefix(r.name, "pgtide_") {
					put(r, noStmtName) // never another client's statement
				}
				continue
			}
			st := ss.stmts[r.name]
			d := sqlPrep{name: r.name, st: st, real: st.prep != nil && srv.has(st), seq: sqlPrepSeq.Add(1)}
			fx.deallocs = append(fx.deallocs, d)
			fx.execs = append(fx.execs, sqlPrep{name: r.name, st: st})
			delete(ss.stmts, r.name)
			if d.real {
				put(r, st.name) // out of srv once the server confirms it
				continue
			}
			nop := newStmtName()
			if !skip {
				out = wire.AppendFrame(out, wire.FeParse, []byte(nop), []byte{0}, nopBody)
				ss.q.push(entry{kind: wire.FeParse, act: actSkip})
			}
			put(r, nop)
		}
	}
	fxp := &fx
	if len(fx.preps) == 0 && len(fx.deallocs) == 0 && len(fx.edits) == 0 {
		fxp = nil
	}
	if nt == nil {
		return nil, out, fxp
	}
	return append(nt, text[last:]...), out, fxp
}

// textChars counts the characters of a query text as PostgreSQL counts an
// error's position: UTF-8 characters, or bytes in a text that is not UTF-8
// (a single-byte client encoding).
func textChars(b []byte) int {
	if utf8.Valid(b) {
		return utf8.RuneCount(b)
	}
	return len(b)
}

// unshiftPosition returns the ErrorResponse body moved back onto the
// client's text when its position (P) lies after or inside a statement
// name pgtide rewrote: a whole frame, or nil when nothing changes.
func unshiftPosition(body []byte, edits []posEdit) []byte {
	if len(edits) == 0 || errorField(body, 'P') == "" {
		return nil
	}
	var er pgproto3.ErrorResponse
	if er.Decode(body) != nil || er.Position <= 0 {
		return nil
	}
	p, shift := int(er.Position)-1, 0 // 0-based, in the text sent
	for _, e := range edits {
		if p < e.at {
			break
		}
		if p < e.at+e.newLen {
			p = e.at // inside the name: its start
			break
		}
		shift += e.newLen - e.oldLen
	}
	if shift == 0 && int(er.Position)-1 == p {
		return nil
	}
	er.Position = int32(p - shift + 1)
	out, err := er.Encode(nil)
	if err != nil {
		return nil
	}
	return out
}

// sqlQueryLocked queues a simple Query (msg, a whole frame) whose text may
// name prepared statements, appending to out what goes to the server.
func (ss *session) sqlQueryLocked(srv *serverState, msg []byte, out []byte) []byte {
	body := msg[5:]
	if len(body) == 0 || body[len(body)-1] != 0 {
		ss.q.push(entry{kind: wire.FeQuery})
		return append(out, msg...) // malformed: the server says so
	}
	before := len(out)
	text, out, fx := ss.rewriteSQLLocked(srv, body[:len(body)-1], out)
	if ss.execsFlaggedLocked(fx) {
		ss.st.check = true
	}
	if len(out) > before && !ss.unsynced {
		// What was injected is extended protocol: end it before the
		// Query (a Sync inside the client's transaction block commits
		// nothing).
		out = append(out, syncFrame...)
		ss.q.push(entry{kind: wire.FeSync, act: actSkip})
	}
	ss.q.push(entry{kind: wire.FeQuery, sql: fx})
	if text == nil {
		return append(out, msg...)
	}
	return wire.AppendFrame(out, wire.FeQuery, text, []byte{0})
}

// sqlParseLocked rewrites an unnamed Parse (msg) whose text may name
// prepared statements; it returns the Parse to send, out with what the
// server needs first, and the rewrites for the Parse's entry (or nil). The client's PREPAREs wait for its next Sync.
func (ss *session) sqlParseLocked(srv *serverState, msg, query, types []byte, out []byte) ([]byte, []byte, *sqlFx) {
	text, out, fx := ss.rewriteSQLLocked(srv, query, out)
	if ss.execsFlaggedLocked(fx) {
		ss.st.unnamed = true // its Bind raises the check (noteBindLocked)
	}
	if fx != nil && len(fx.preps)+len(fx.deallocs)+len(fx.execs) > 0 {
		if ss.sqlPending == nil {
			ss.sqlPending = &sqlFx{}
		}
		ss.sqlPending.preps = append(ss.sqlPending.preps, fx.preps...)
		ss.sqlPending.deallocs = append(ss.sqlPending.deallocs, fx.deallocs...)
		ss.sqlPending.execs = append(ss.sqlPending.execs, fx.execs...)
	}
	var pos *sqlFx // the Parse's own entry: where its text was rewritten
	if fx != nil && len(fx.edits) > 0 {
		pos = &sqlFx{edits: fx.edits}
	}
	if text == nil {
		return msg, out, pos
	}
	return wire.AppendFrame(nil, wire.FeParse, []byte{0}, text, []byte{0}, types), out, pos
}

// takeSQLPendingLocked hands the pending PREPAREs to the Sync being queued.
func (ss *session) takeSQLPendingLocked() *sqlFx {
	fx := ss.sqlPending
	ss.sqlPending = nil
	return fx
}

// sqlNamedParseLocked maps the text of a named Parse. An EXECUTE names
// pgtide's statement, which becomes the new statement's dep; a name the
// client does not hold stays as it is (the server reports it missing when
// the statement is described or run), unless it is one of pgtide's own,
// which never reaches another client's statement. PREPARE and DEALLOCATE
// of a name would take effect each time the statement runs, later and
// perhaps elsewhere: they are refused (refuse is the error). execs reports
// an EXECUTE in the text: PostgreSQL looks its name up each time the
// statement runs, so pgtide maps it again then (execStmtLocked).
func (ss *session) sqlNamedParseLocked(query []byte) (q []byte, dep *stmt, execs bool, refuse []byte) {
	refs, _ := scanSQL(query, ss.stdStringsLocked(), ss.mbLenLocked())
	last := 0
	for _, r := range refs {
		switch r.kind {
		case sqlPrepare, sqlDeallocate:
			return nil, nil, false, wire.ErrorFrame("ERROR", codeFeatureNotSupported,
				"PREPARE and DEALLOCATE cannot be prepared as a named statement in transaction pooling mode; send them unnamed or as a simple query")
		case sqlExecute:
			execs = true
			st := ss.stmts[r.name]
			name := ""
			switch {
			case st != nil && !r.bad && dep == nil:
				name, dep = st.name, st
			case (st == nil || r.bad) && strings.HasPrefix(r.name, "pgtide_"):
				name = noStmtName // never another client's statement
			default:
				continue
			}
			q = append(append(q, query[last:r.start]...), name...)
			last = r.end
		}
	}
	if q == nil {
		return query, nil, execs, nil
	}
	return append(q, query[last:]...), dep, execs, nil
}

// execName returns the client's name of the statement a text EXECUTEs
// (the first), or "".
func execName(query []byte, stdStrings bool, mb mbLen) string {
	refs, _ := scanSQL(query, stdStrings, mb)
	for _, r := range refs {
		if r.kind == sqlExecute && !r.bad {
			return r.name
		}
	}
	return ""
}

// execStmtLocked returns the statement a Bind (or a SQL EXECUTE) must run
// for st: st itself, or for a statement whose text EXECUTEs another by the
// client's name, the pool's statement for that text with the name mapped
// as it is now. PostgreSQL looks the EXECUTEd name up at each run, so one
// prepared after the Parse, or dropped and prepared again, is the one that
// runs, and one dropped since is reported missing. (A Describe of st keeps
// what the Parse saw, as PostgreSQL's does.)
func (ss *session) execStmtLocked(st *stmt) *stmt {
	if st.exec == nil {
		return st
	}
	q, dep, _, refuse := ss.sqlNamedParseLocked(st.exec.query)
	if refuse != nil || dep == st.dep && bytes.Equal(q, parseQuery(st.parse)) {
		return st
	}
	return ss.pe.stmts.getDep(q, st.exec.types, dep)
}

// firstRequestLocked returns the queued Query, Sync or FunctionCall that
// the server is answering now.
func (ss *session) firstRequestLocked() *entry {
	for i := range ss.q.e {
		switch ss.q.e[i].kind {
		case wire.FeQuery, wire.FeSync, wire.FeFunctionCall:
			return &ss.q.e[i]
		}
	}
	return nil
}

// sqlReadyLocked runs before a ReadyForQuery is matched: PREPAREs and
// DEALLOCATEs of the request it ends that the server did not confirm did
// not happen.
func (ss *session) sqlReadyLocked(sc *pool.Conn) {
	e := ss.firstRequestLocked()
	if e == nil || e.sql == nil {
		return
	}
	ss.undoSQLLocked(stateOf(sc), e.sql)
	e.sql = nil
}

// undoSQLLocked takes back the PREPAREs and DEALLOCATEs of fx that the
// server did not confirm: a statement not prepared is not on the server
// nor under the client's name; a name not deallocated is the client's
// again.
//
// It goes backwards through them in the order they were booked: a PREPARE
// then a DEALLOCATE of one name, neither run, leave no name (undone the
// other way round, the DEALLOCATE mapped the name again to the PREPARE's
// statement, which the server never had: 42P05 on the next PREPARE, and an
// EXECUTE ran that text); a DEALLOCATE then a PREPARE leave the old one.
func (ss *session) undoSQLLocked(srv *serverState, fx *sqlFx) {
	i, j := len(fx.preps)-1, len(fx.deallocs)-1
	for i >= 0 || j >= 0 {
		if j < 0 || i >= 0 && fx.preps[i].seq > fx.deallocs[j].seq {
			p := fx.preps[i]
			i--
			srv.remove(p.st)
			if p.name != "" && ss.stmts[p.name] == p.st {
				delete(ss.stmts, p.name)
			}
			continue
		}
		d := fx.deallocs[j]
		j--
		if _, taken := ss.stmts[d.name]; !taken {
			ss.addStmtLocked(d.name, d.st)
		}
	}
}

// sqlFxNowLocked is what the reply being read may confirm: the request
// being answered holds it. With none queued, it is an Execute answered
// after a Flush whose batch has no Sync yet: its PREPAREs and DEALLOCATEs
// still wait in sqlPending for that Sync, and are confirmed there (left
// unconfirmed, the Sync's ReadyForQuery would take back a PREPARE the
// server ran).
func (ss *session) sqlFxNowLocked() *sqlFx {
	if e := ss.firstRequestLocked(); e != nil {
		return e.sql
	}
	return ss.sqlPending
}

// sqlCompleteLocked looks at a CommandComplete of the client's: a PREPARE
// or DEALLOCATE is confirmed; DDL may have changed any statement's parameter or result
// types, so the next Parse of any text goes to a server again.
func (ss *session) sqlCompleteLocked(sc *pool.Conn, body []byte, h *entry) {
	if h != nil && h.act == actSkip {
		return
	}
	tag := body
	if i := bytes.IndexByte(tag, 0); i >= 0 {
		tag = tag[:i]
	}
	switch {
	case string(tag) == "PREPARE":
		if fx := ss.confirmingLocked(h); fx != nil && len(fx.preps) > 0 {
			fx.preps = fx.preps[1:]
		}
	case string(tag) == "DEALLOCATE":
		if fx := ss.confirmingLocked(h); fx != nil && len(fx.deallocs) > 0 {
			d := fx.deallocs[0]
			if d.real {
				stateOf(sc).remove(d.st)
			}
			if d.st.prep != nil {
				markDead(d.st) // copies on other servers
			}
			fx.deallocs = fx.deallocs[1:]
		}
	case bytes.HasPrefix(tag, []byte("ALTER ")), bytes.HasPrefix(tag, []byte("DROP ")), bytes.HasPrefix(tag, []byte("CREATE ")):
		ss.pe.stmts.flush()
	}
}

// confirmingLocked returns the sqlFx that a PREPARE or DEALLOCATE tag of
// h's request confirms. A Query's is its own. An Execute's (an unnamed
// Parse's text) waits for its batch's Sync (sqlParseLocked): the first
// Sync queued, or, when the client has not sent it yet (the batch ended
// with Flush), sqlPending, which that Sync will take. Looking only at the
// first request queued, a tag that came before the Sync confirmed nothing,
// and the Sync's ReadyForQuery took back a PREPARE or DEALLOCATE that ran.
func (ss *session) confirmingLocked(h *entry) *sqlFx {
	if h == nil || h.kind != wire.FeExecute {
		if e := ss.firstRequestLocked(); e != nil {
			return e.sql
		}
		return nil
	}
	for i := range ss.q.e {
		if ss.q.e[i].kind == wire.FeSync {
			return ss.q.e[i].sql
		}
	}
	return ss.sqlPending
}

// deadSeq counts statements marked dead, so a server closes its dead
// statements once per change (sweepLocked) rather than looking each time.
var deadSeq atomic.Uint64

func markDead(st *stmt) {
	if !st.dead.Swap(true) {
		deadSeq.Add(1)
	}
}

// sqlForgetLocked marks the client's own SQL statements dead: it leaves,
// or dropped them all. No other client can name them: servers that still
// have them close them (sweepLocked).
func (ss *session) sqlForgetLocked() {
	for _, st := range ss.stmts {
		if st.prep != nil {
			markDead(st)
		}
	}
}

// sweepLocked closes the dead statements srv still has, before the batch
// (a Sync ends them unless the client's extended batch is open, which
// ends them itself). Nothing is added while the server is in COPY IN.
func (ss *session) sweepLocked(srv *serverState, out []byte) []byte {
	seq := deadSeq.Load()
	if srv.swept == seq || ss.copyIn {
		return out
	}
	srv.swept = seq
	n := 0
	for st := range srv.stmts {
		if st.dead.Load() {
			out = wire.AppendFrame(out, wire.FeClose, []byte{wire.ObjStatement}, []byte(st.name), []byte{0})
			ss.q.push(entry{kind: wire.FeClose, act: actSkip})
			srv.remove(st)
			n++
		}
	}
	if n > 0 && !ss.unsynced {
		out = append(out, syncFrame...)
		ss.q.push(entry{kind: wire.FeSync, act: actSkip})
	}
	return out
}

// lostStmtsLocked runs at a server's 26000 (prepared statement does not
// exist) for request h: the statements h used, which pgtide believed the
// server held, are gone from it, dropped behind pgtide's back (server-side
// code of any client of the pool can DEALLOCATE pgtide's names, listed in
// pg_prepared_statements). The next request that needs one prepares it
// there again; before, every later use of that text on that server, by
// any client, got 26000 until the server was closed.
func (ss *session) lostStmtsLocked(sc *pool.Conn, h *entry) {
	srv := stateOf(sc)
	forget := func(st *stmt) {
		if st != nil {
			srv.remove(st)
			if st.dep != nil {
				srv.remove(st.dep)
			}
		}
	}
	if h.kind == wire.FeBind || h.kind == wire.FeDescribe {
		forget(h.st)
	}
	if h.sql != nil {
		for _, e := range h.sql.execs {
			forget(e.st)
		}
	}
}

// sqlErrorLocked looks at a server error: a statement whose plan may not
// change result type is dropped from the registry, so a client that
// prepares its text again gets fresh types. It returns the error renamed
// for the client when it names pgtide's statements (nil otherwise).
func (ss *session) sqlErrorLocked(body []byte, h *entry) []byte {
	if h != nil && h.st != nil && h.kind == wire.FeBind && errorCode(body) == codeFeatureNotSupported &&
		bytes.Contains(body, []byte("cached plan must not change result type")) {
		ss.pe.stmts.invalidate(h.st)
	}
	if !bytes.Contains(body, []byte(`"pgtide_`)) {
		return nil
	}
	// The name the client bound or described comes first: with the same
	// text prepared under two names, a map walk would pick either (and
	// DEALLOCATE ALL may have taken the name: forgetAllLocked). Then any
	// name the client uses for another statement in the message.
	var out []byte
	if h != nil && h.st != nil && (h.kind == wire.FeBind || h.kind == wire.FeDescribe) {
		if r := renameInError(body, h.st.name, h.name); r != nil {
			out, body = r, r[5:]
		}
	}
	for cname, st := range ss.stmts {
		if r := renameInError(body, st.name, cname); r != nil {
			out, body = r, r[5:]
		}
	}
	// A name a DEALLOCATE or Close pipelined behind took when pgtide read
	// it (a PREPARE of a name in use gets the server's 42P05 about pgtide's
	// statement): the client's still, until that runs. Errors only.
	rename := func(st *stmt, cname string) {
		if st != nil {
			if r := renameInError(body, st.name, cname); r != nil {
				out, body = r, r[5:]
			}
		}
	}
	for i := range ss.q.e {
		e := &ss.q.e[i]
		if e.kind == wire.FeClose && e.act == actFake {
			rename(e.st, e.name)
		}
		if e.sql != nil {
			for _, d := range e.sql.deallocs {
				rename(d.st, d.name)
			}
		}
	}
	if ss.sqlPending != nil {
		for _, d := range ss.sqlPending.deallocs {
			rename(d.st, d.name)
		}
	}
	for _, st := range ss.stmts {
		// A statement whose text EXECUTEs another the server no longer
		// has (a DEALLOCATE ALL ran ahead of it): the client's name for
		// that one is in the client's text.
		if st.exec != nil && st.dep != nil {
			if cname := execName(st.exec.query, ss.stdStringsLocked(), ss.mbLenLocked()); cname != "" {
				rename(st.dep, cname)
			}
		}
	}
	if fx := ss.sqlFxNowLocked(); out == nil && fx != nil {
		// Or one that an EXECUTE or DEALLOCATE being run names and that
		// left the map before the server answered: a DEALLOCATE of it
		// (whose PREPARE, booked ahead, may never have run: a Parse of it
		// replaced unexecuted), or a DEALLOCATE ALL ahead of it.
		for _, d := range fx.execs {
			if r := renameInError(body, d.st.name, d.name); r != nil {
				out, body = r, r[5:]
			}
		}
	}
	return out
}
