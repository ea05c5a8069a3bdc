package proxy

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// Session state in transaction and statement mode (DESIGN.md invariant 10).
//
// Settings. pgtide does not parse SQL to learn what a client changed. When
// something the client ran may have changed its session (a CommandComplete
// tag SET, RESET, DISCARD, LISTEN, UNLISTEN, DO, CALL, and DROP or CLOSE
// while pinned; a statement whose text mentions set_config, advisory locks,
// temporary objects or WITH HOLD; a FunctionCall), the session is marked,
// and at the end of that transaction, before the client sees its ReadyForQuery, pgtide asks the
// server what the session now holds (one round trip: pg_settings with source
// 'session', role, session_authorization, custom x.y names the client's SQL
// mentioned, and the pin checks below). That answer becomes the client's
// wanted state, applied to every server it gets next (syncParams), and the
// server's record of what it carries (pool.Conn.Applied), which the next
// borrower's syncParams resets before anyone else uses it. SET LOCAL and
// settings of a rolled-back transaction are gone by then, so they are not
// kept. A client that never changes anything costs nothing.
//
// Pins. State that cannot be moved to another server (temporary objects,
// session-level advisory locks, LISTEN, cursors WITH HOLD) found by the same
// query keeps the client on its server, as in session mode, until a later
// check finds it gone; with pin_policy "refuse" it is undone at once and the
// client gets 0A000. A client that leaves with pins or unchecked changes
// gets its server back only after DISCARD ALL.

// Pin reasons, as bits of sessState.pins.
const (
	pinTemp = 1 << iota
	pinAdvisory
	pinListen
	pinCursor
	numPinReasons = iota
)

// PinReasons names each pin reason (metrics label, SHOW CLIENTS, logs), in
// bit order.
var PinReasons = [numPinReasons]string{"temp_table", "advisory_lock", "listen", "held_cursor"}

// pinWhat describes each reason in a refusal message.
var pinWhat = [numPinReasons]string{
	"a temporary object", "a session-level advisory lock", "LISTEN", "a cursor WITH HOLD",
}

// pinUndo releases each kind of pinned state (pin_policy "refuse").
var pinUndo = []string{
	"DISCARD TEMP", "SELECT pg_catalog.pg_advisory_unlock_all()", "UNLISTEN *", "CLOSE ALL",
}

// sessState is the session's bookkeeping of its server-side state, under
// session.mu.
type sessState struct {
	check   bool  // the session may have changed: capture at the next boundary
	pins    uint8 // pin reasons in force
	unnamed bool  // flagged (below), for the client's unnamed statement
	// capturing: the capture is on the server, ahead of anything the
	// client sent after it (sendCaptureLocked until settle has its
	// answer). cancelLater: a cancel request of the client's came
	// meanwhile; it is sent once the capture is answered (session.cancel,
	// afterCapture), so that it stops the client's request, not the capture.
	capturing, cancelLater bool
	// restoring: the capture is preceded by restoreSQL, in a Sync of its
	// own, so that its failure leaves the capture standing. mayReset: a
	// command that can return a setting to its default ran (RESET, SET ...
	// TO DEFAULT, DISCARD, DO, CALL), so the next capture restores.
	restoring, mayReset bool
	// setDefault (session mode): something the client sent since the
	// last ReadyForQuery outside a transaction block that answered all it
	// had sent may run a SET ... TO DEFAULT (setsDefault), so a SET tag
	// raises mayReset. Inside a block it stays: a portal bound there may
	// run in a later Sync.
	setDefault bool
	customs    map[string]bool // custom (x.y) parameter names seen in the client's SQL
	flagged    map[*stmt]bool  // the client's statements whose text may change state
	// defStmts (session mode): the client's statement names ("" the
	// unnamed one) whose text may SET ... TO DEFAULT, and defAnyStmt when
	// one could not be read. Unlike the rest, only whoever runs the
	// client goroutine uses it (noteSessionMsg), without mu.
	defStmts map[string]bool
	heldZ    []byte // the ReadyForQuery held back while capturing
}

// captureSQL asks a server what its session holds beyond the pool's
// baseline. Every name is schema-qualified: the client may have set
// search_path to anything. The transaction_* parameters are left out:
// SET TRANSACTION marks them source 'session' for good, but each
// transaction starts them from the default_transaction_* ones, and
// setting one again on another server fails (25001) once its transaction
// has run a query.
const captureSQL = `SELECT 's', name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings WHERE source = 'session' AND name NOT IN ('transaction_isolation', 'transaction_read_only', 'transaction_deferrable')
UNION ALL SELECT 's', 'role', pg_catalog.current_setting('role') WHERE pg_catalog.current_setting('role') <> 'none'
UNION ALL SELECT 'a', 'session_authorization', pg_catalog.current_setting('session_authorization')
UNION ALL SELECT 's', n, pg_catalog.current_setting(n, true) FROM pg_catalog.unnest($1::pg_catalog.text[]) AS n WHERE pg_catalog.current_setting(n, true) IS NOT NULL
UNION ALL SELECT 'p', '0', '' WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE pronamespace = pg_catalog.pg_my_temp_schema())
UNION ALL SELECT 'p', '1', '' WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid())
UNION ALL SELECT 'p', '2', '' WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_listening_channels())
UNION ALL SELECT 'p', '3', '' WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_cursors WHERE is_holdable)
UNION ALL SELECT 'x', '', '' WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements)`

// captureQuery is the capture with the custom names the client used.
func (ss *session) captureQueryLocked() pool.ParamQuery {
	var a textArray
	for k := range ss.st.customs {
		a.add(k)
	}
	for k := range ss.want {
		if strings.IndexByte(k, '.') >= 0 && !ss.st.customs[k] {
			a.add(k)
		}
	}
	return pool.ParamQuery{SQL: captureSQL, Args: []string{a.String()}}
}

// captureGuardSQL runs first in the capture's round trip (its implicit
// transaction): it reports the client's statement_timeout ('t') and lifts
// it until the Sync. Otherwise a client's short timeout (1ms always, 3-5ms
// often on a busy machine) failed the capture, and the server was closed
// with the settings the client had just made: its SET statement_timeout was
// silently forgotten. It must stay this cheap (no pg_settings), as it still
// runs under the client's timeout. captureDefaultSQL, which runs lifted,
// formats the server's default ('d') so parseCapture can tell a value of the
// client's from it; the capture's own statement_timeout row shows the
// lifted value and is ignored. restoreSQL is not lifted: a lift makes
// statement_timeout look set, so a reset one would not be restored; under a
// client's very short timeout the restore may fail instead (logged; the
// capture then records the server's values, as before restoreSQL).
const (
	captureGuardSQL   = `SELECT 't', pg_catalog.current_setting('statement_timeout'), pg_catalog.set_config('statement_timeout', '0', true)`
	captureDefaultSQL = `SELECT 'd', s.name, pg_catalog.set_config(s.name, s.reset_val, true) FROM pg_catalog.pg_settings s WHERE s.name = 'statement_timeout'
UNION ALL SELECT 'u', '', pg_catalog.set_config('statement_timeout', '0', true)`
)

// restoreSQL sets again each of the client's startup settings ($1 names,
// $2 values) that is no longer set on the server's session. pgtide applies
// them with SET, so a RESET, RESET ALL, SET ... TO DEFAULT or DISCARD ALL
// on the server returns them to the server's defaults, where PostgreSQL
// returns a session to its startup values. It runs ahead of the capture in
// the same round trip, so the capture reads the restored values, and the
// client gets the server's ParameterStatus for the reported ones before
// its ReadyForQuery, as from PostgreSQL. One row, which parseCapture skips.
// pg_settings does not list custom (x.y) settings: one of those counts as
// reset when it is empty, which is what RESET leaves (a client's own SET
// to the empty string is taken for a RESET too).
const restoreSQL = `SELECT pg_catalog.count(pg_catalog.set_config(r.k, r.v, false)) FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) AS r(k, v)
LEFT JOIN (SELECT pg_catalog.lower(name) AS k FROM pg_catalog.pg_settings WHERE source = 'session') AS s ON s.k = r.k
WHERE CASE WHEN pg_catalog.strpos(r.k, '.') > 0 THEN COALESCE(pg_catalog.current_setting(r.k, true), '') = '' ELSE s.k IS NULL END`

// captureRestoreLocked is restoreSQL for this client's startup settings;
// ok is false when it has none to restore. role and session_authorization
// are left out: they need an order and privileges of their own (syncQueries).
func (ss *session) captureRestoreLocked() (q pool.ParamQuery, ok bool) {
	if !ss.st.mayReset || ss.login == nil || len(ss.login.asked) == 0 {
		return q, false
	}
	var names, values textArray
	for k, v := range ss.login.asked {
		if k == "role" || k == "session_authorization" || unsyncable[k] {
			continue
		}
		names.add(k)
		values.add(v)
	}
	if names.n == 0 {
		return q, false
	}
	return pool.ParamQuery{SQL: restoreSQL, Args: []string{names.String(), values.String()}}, true
}

// textArray builds a text[] literal, every element quoted.
type textArray struct {
	b strings.Builder
	n int
}

func (a *textArray) add(k string) {
	if a.n == 0 {
		a.b.WriteByte('{')
	} else {
		a.b.WriteByte(',')
	}
	a.n++
	a.b.WriteByte('"')
	for i := 0; i < len(k); i++ {
		if k[i] == '"' || k[i] == '\\' {
			a.b.WriteByte('\\')
		}
		a.b.WriteByte(k[i])
	}
	a.b.WriteByte('"')
}

func (a *textArray) String() string {
	if a.n == 0 {
		return "{}"
	}
	return a.b.String() + "}"
}

// captured is a capture's answer.
type captured struct {
	settings map[string]string
	pins     uint8
	prepared bool // prepared statements exist (pgtide's own too, in transaction mode)
}

func parseCapture(rows [][]string, loginUser string) captured {
	c := captured{settings: map[string]string{}}
	guarded := false // captureGuardSQL ran first
	var clientST, defaultST string
	for _, r := range rows {
		if len(r) != 3 {
			continue
		}
		switch r[0] {
		case "s":
			if guarded && r[1] == "statement_timeout" {
				continue // lifted by captureGuardSQL
			}
			c.settings[strings.ToLower(r[1])] = r[2]
		case "t":
			guarded, clientST = true, r[1]
		case "d":
			defaultST = r[2]
		case "a":
			if r[2] != loginUser {
				c.settings["session_authorization"] = r[2]
			}
		case "x":
			c.prepared = true
		case "p":
			if len(r[1]) == 1 && r[1][0] >= '0' && r[1][0] < '0'+numPinReasons {
				c.pins |= 1 << (r[1][0] - '0')
			}
		}
	}
	if guarded && clientST != defaultST {
		c.settings["statement_timeout"] = clientST
	}
	return c
}

// pinPolicy is the policy in force for this client's pool (reloadable).
func (ss *session) pinPolicy() config.PinPolicy {
	cfg := ss.srv.Config()
	db, _ := cfg.ResolveDatabase(ss.dbName)
	return cfg.EffectivePinPolicy(db, cfg.Users[ss.userName])
}

// noteTagLocked looks at a CommandComplete tag (body, NUL-terminated) for
// commands that may change the session.
func (ss *session) noteTagLocked(body []byte) {
	if len(body) == 0 {
		return
	}
	switch body[0] {
	case 'S':
		if bytes.Equal(body, []byte("SET\x00")) {
			// Session mode restores after a SET only when the client's
			// text may have been a SET ... TO DEFAULT (setDefault): there
			// a restore is a round trip of its own, too dear for every SET.
			ss.st.check = true
			ss.st.mayReset = ss.st.mayReset || ss.mode != config.PoolSession || ss.st.setDefault
		}
	case 'R':
		if bytes.Equal(body, []byte("RESET\x00")) {
			ss.st.check, ss.st.mayReset = true, true
		}
	case 'D':
		switch {
		case bytes.HasPrefix(body, []byte("DISCARD")):
			ss.st.check, ss.st.mayReset = true, true
		case bytes.Equal(body, []byte("DO\x00")):
			ss.st.check = true
			ss.st.mayReset = ss.st.mayReset || ss.mode != config.PoolSession
		case bytes.HasPrefix(body, []byte("DROP ")) && ss.st.pins != 0:
			ss.st.check = true
		}
	case 'L':
		if bytes.Equal(body, []byte("LISTEN\x00")) {
			ss.st.check = true
		}
	case 'U':
		if bytes.Equal(body, []byte("UNLISTEN\x00")) {
			ss.st.check = true
		}
	case 'C':
		switch {
		case bytes.Equal(body, []byte("CALL\x00")):
			ss.st.check = true
			ss.st.mayReset = ss.st.mayReset || ss.mode != config.PoolSession
		case bytes.HasPrefix(body, []byte("CLOSE CURSOR")) && ss.st.pins != 0:
			ss.st.check = true
		}
	}
}

// noteQueryLocked looks at the text of a Query or Parse the client sent;
// it reports whether running it may change the session (the check is then
// raised by the caller when it runs). Custom parameter names it mentions
// are remembered for the capture, as pg_settings does not list them.
func (ss *session) noteQueryLocked(q []byte) bool {
	flag := false
	for i, j := nextWord(q, 0); i < len(q); i, j = nextWord(q, j) {
		w := q[i:j]
		switch w[0] | 0x20 {
		case 's':
			switch {
			case bytes.EqualFold(w, []byte("set")):
				ss.noteCustomLocked(afterSet(q[j:]))
			case bytes.EqualFold(w, []byte("set_config")):
				flag = true
				ss.noteCustomLocked(firstLiteral(q[j:]))
			}
		case 'r':
			if bytes.EqualFold(w, []byte("reset")) {
				ss.noteCustomLocked(afterSet(q[j:]))
			}
		case 't':
			if bytes.EqualFold(w, []byte("temp")) || bytes.EqualFold(w, []byte("temporary")) {
				flag = true
			}
		case 'h':
			if bytes.EqualFold(w, []byte("hold")) { // DECLARE ... WITH HOLD
				flag = true
			}
		case 'p':
			if bytes.EqualFold(w, []byte("pg_temp")) || containsFold(w, "advisory") {
				flag = true
			}
		}
	}
	return flag
}

// nextWord returns the bounds of the first word (identifier characters)
// of q at or after from; i == len(q) when there is none.
func nextWord(q []byte, from int) (i, j int) {
	i = from
	for i < len(q) && !identStart(q[i]) {
		i++
	}
	if i == len(q) {
		return i, i
	}
	j = i + 1
	for j < len(q) && identByte(q[j]) {
		j++
	}
	return i, j
}

// noteCustomLocked remembers name if it is a custom (x.y) parameter.
func (ss *session) noteCustomLocked(name string) {
	if strings.IndexByte(name, '.') <= 0 || len(name) > 200 {
		return
	}
	if ss.st.customs == nil {
		ss.st.customs = map[string]bool{}
	}
	if len(ss.st.customs) < 100 {
		ss.st.customs[strings.ToLower(name)] = true
	}
}

func identStart(c byte) bool {
	return c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z') || c >= 0x80
}

func identByte(c byte) bool { return identStart(c) || (c >= '0' && c <= '9') || c == '$' }

// containsFold reports whether w contains sub (lower-case ASCII), ignoring
// case; it compares only where the first byte matches.
func containsFold(w []byte, sub string) bool {
	for i := 0; i+len(sub) <= len(w); i++ {
		if w[i]|0x20 == sub[0] && bytes.EqualFold(w[i:i+len(sub)], []byte(sub)) {
			return true
		}
	}
	return false
}

// afterSet returns the parameter name after SET/RESET [SESSION|LOCAL],
// dotted parts joined, or "".
func afterSet(b []byte) string {
	var parts []string
	for {
		b = bytes.TrimLeft(b, " \t\r\n")
		if len(b) == 0 {
			break
		}
		var part string
		switch {
		case b[0] == '"':
			end := bytes.IndexByte(b[1:], '"')
			if end < 0 {
				return ""
			}
			part, b = string(b[1:1+end]), b[2+end:]
		case identStart(b[0]):
			j := 1
			for j < len(b) && identByte(b[j]) {
				j++
			}
			part, b = strings.ToLower(string(b[:j])), b[j:]
			if len(parts) == 0 && (part == "session" || part == "local") {
				continue
			}
		default:
			return ""
		}
		parts = append(parts, part)
		b = bytes.TrimLeft(b, " \t\r\n")
		if len(b) == 0 || b[0] != '.' {
			break
		}
		b = b[1:]
	}
	return strings.Join(parts, ".")
}

// firstLiteral returns the first '...' literal after set_config(, or "".
func firstLiteral(b []byte) string {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 || b[0] != '(' {
		return ""
	}
	b = bytes.TrimLeft(b[1:], " \t\r\n")
	if len(b) == 0 || b[0] != '\'' {
		return ""
	}
	end := bytes.IndexByte(b[1:], '\'')
	if end < 0 {
		return ""
	}
	return string(b[1 : 1+end])
}

// setsDefault reports whether q may hold a SET that returns a parameter
// to its default for the session: SET [SESSION] name {TO | =} DEFAULT,
// SET [SESSION] TIME ZONE {DEFAULT | LOCAL}, SET [SESSION] NAMES DEFAULT
// (not SET LOCAL: its value ends with the transaction). It does not parse
// SQL: the words are found in literals and comments too, and UPDATE ...
// SET col = DEFAULT matches. A false match costs a session a restore's
// round trip, and only when a SET tag follows (noteTagLocked).
func setsDefault(q []byte) bool {
	for i, j := nextWord(q, 0); i < len(q); i, j = nextWord(q, j) {
		if j-i == 3 && q[i]|0x20 == 's' && bytes.EqualFold(q[i:j], []byte("set")) && setToDefault(q[j:]) {
			return true
		}
	}
	return false
}

// setToDefault is setsDefault for the text after a SET.
func setToDefault(b []byte) bool {
	w, b := setToken(b)
	if isWord(w, "local") {
		return false
	}
	if isWord(w, "session") {
		w, b = setToken(b)
	}
	switch {
	case isWord(w, "time"):
		if w, b = setToken(b); !isWord(w, "zone") {
			return false
		}
		w, _ = setToken(b)
		return isWord(w, "default") || isWord(w, "local")
	case isWord(w, "names"):
		w, _ = setToken(b)
		return isWord(w, "default")
	}
	for { // name, dotted parts
		if len(w) == 0 || (w[0] != '"' && !identStart(w[0])) {
			return false
		}
		if w, b = setToken(b); len(w) != 1 || w[0] != '.' {
			break
		}
		w, b = setToken(b)
	}
	if !isWord(w, "to") && !(len(w) == 1 && w[0] == '=') {
		return false
	}
	w, _ = setToken(b)
	return isWord(w, "default")
}

// setToken returns the next token of b after blanks and comments: a word,
// a quoted identifier with its quotes, or one other byte; nil at the end.
func setToken(b []byte) (tok, rest []byte) {
	for len(b) > 0 {
		switch {
		case b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r' || b[0] == '\f':
			b = b[1:]
		case len(b) > 1 && b[0] == '-' && b[1] == '-':
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				return nil, nil
			}
			b = b[i+1:]
		case len(b) > 1 && b[0] == '/' && b[1] == '*':
			i := bytes.Index(b[2:], []byte("*/"))
			if i < 0 {
				return nil, nil
			}
			b = b[i+4:]
		case b[0] == '"':
			i := bytes.IndexByte(b[1:], '"')
			if i < 0 {
				return nil, nil
			}
			return b[:i+2], b[i+2:]
		case identStart(b[0]):
			j := 1
			for j < len(b) && identByte(b[j]) {
				j++
			}
			return b[:j], b[j:]
		default:
			return b[:1], b[1:]
		}
	}
	return nil, nil
}

// isWord reports whether token w is the unquoted word kw (lower-case).
func isWord(w []byte, kw string) bool {
	return len(w) == len(kw) && bytes.EqualFold(w, []byte(kw))
}

// defAnyStmt, a name no statement has (names end at a NUL), marks in
// defStmts a statement pgtide could not read: every Bind counts.
const defAnyStmt = "\x00"

// defStmtsMax bounds defStmts; past it, defAnyStmt stands for the rest.
const defStmtsMax = 1000

// noteSessionMsg looks at a message a session-mode client sent (body
// without its header; for a message streamed in pieces, what has
// arrived of it, and whole false) and reports whether running it may
// SET ... TO DEFAULT: a Query whose text may (setsDefault), a Bind of a
// statement whose text may. It keeps defStmts for the Bind: a statement
// is parsed once and bound again without its text (pgx's statement
// cache). Only whoever runs the client goroutine calls it.
func (ss *session) noteSessionMsg(typ byte, body []byte, whole bool) bool {
	switch typ {
	case wire.FeQuery:
		delete(ss.st.defStmts, "") // a simple query drops the unnamed statement
		return !whole || setsDefault(body)
	case wire.FeParse:
		name, query, ok := cstring(body)
		def := !whole || !ok || setsDefault(query)
		switch {
		case !ok:
			ss.noteDefStmt(defAnyStmt, true)
		default:
			ss.noteDefStmt(string(name), def)
		}
	case wire.FeBind:
		m := ss.st.defStmts
		if m == nil {
			return false
		}
		_, rest, ok := cstring(body) // the portal
		name, _, ok2 := cstring(rest)
		return !ok || !ok2 || m[string(name)] || m[defAnyStmt]
	case wire.FeClose:
		if len(body) > 0 && body[0] == 'S' && ss.st.defStmts != nil {
			if name, _, ok := cstring(body[1:]); ok {
				delete(ss.st.defStmts, string(name))
			}
		}
	}
	return false
}

// noteDefStmt records whether the statement name may SET ... TO DEFAULT.
func (ss *session) noteDefStmt(name string, def bool) {
	m := ss.st.defStmts
	if !def {
		delete(m, name)
		return
	}
	if m == nil {
		m = map[string]bool{}
		ss.st.defStmts = m
	}
	if _, ok := m[name]; !ok && len(m) >= defStmtsMax {
		name = defAnyStmt
	}
	m[name] = true
}

// noteParseLocked records a Parse of a named statement; noteBindLocked
// raises the check when a statement that may change state runs.
func (ss *session) noteParseLocked(st *stmt, query []byte) {
	if ss.noteQueryLocked(query) {
		if ss.st.flagged == nil {
			ss.st.flagged = map[*stmt]bool{}
		}
		ss.st.flagged[st] = true
	}
}

func (ss *session) noteUnnamedParseLocked(query []byte) { ss.st.unnamed = ss.noteQueryLocked(query) }

func (ss *session) noteBindLocked(st *stmt) {
	if st == nil {
		if ss.st.unnamed {
			ss.st.check = true
		}
		return
	}
	if ss.flaggedLocked(st) {
		ss.st.check = true
	}
}

// flaggedLocked reports whether running st may change the session: its
// text may, or it is an EXECUTE of a statement whose text may (a named
// Parse of "EXECUTE p", whose dep is p).
func (ss *session) flaggedLocked(st *stmt) bool {
	return ss.st.flagged[st] || st.dep != nil && ss.st.flagged[st.dep]
}

// execsFlaggedLocked reports whether a query text's EXECUTEs (sqlFx.execs)
// run a statement that may change the session: the markers are in the
// text the client prepared, not in "EXECUTE p".
func (ss *session) execsFlaggedLocked(fx *sqlFx) bool {
	if fx == nil {
		return false
	}
	for _, e := range fx.execs {
		if ss.flaggedLocked(e.st) {
			return true
		}
	}
	return false
}

// holdForCaptureLocked is called at a ReadyForQuery that ends a transaction
// with nothing outstanding: when the session may have changed, it holds the
// ReadyForQuery back (z, nil when the client is not to see it) and reports
// that the pump must capture the session's state first.
func (ss *session) holdForCaptureLocked(z []byte) bool {
	if !ss.st.check || ss.mode == config.PoolSession || ss.gone || ss.txStatus != wire.TxIdle {
		return false
	}
	ss.st.heldZ = append(ss.st.heldZ[:0], z...)
	return true
}

// holdForRestoreLocked is holdForCaptureLocked for session mode, where no
// capture runs (the server is the client's alone) but a RESET, RESET ALL,
// DISCARD ALL or SET ... TO DEFAULT (setsDefault) still returns the
// settings pgtide SET at login to the server's defaults: at a
// ReadyForQuery outside a transaction with nothing else outstanding, after
// such a command (inside a transaction block: at its end; after a
// ROLLBACK the restore finds nothing to set), it holds the ReadyForQuery
// back and reports that the pump must set them again first
// (sendRestoreLocked, restored). With requests pipelined behind, it waits
// for the next such ReadyForQuery: they are on the server already, ahead
// of anything pgtide sends, and run with the server's defaults.
func (ss *session) holdForRestoreLocked(z []byte) bool {
	if !ss.st.mayReset || ss.gone || !ss.q.empty() || ss.unsynced || ss.copyIn {
		return false
	}
	if _, ok := ss.captureRestoreLocked(); !ok {
		ss.st.mayReset = false
		return false
	}
	ss.st.heldZ = append(ss.st.heldZ[:0], z...)
	return true
}

// sendRestoreLocked writes restoreSQL to the server, under mu at a
// boundary as sendCaptureLocked, so nothing of the client's can reach the
// server before it. In session mode nothing re-parses the client's unnamed
// statement, which outlives a Sync: the restore is prepared under a name
// of pgtide's own, never used before, and closed in the same round trip.
// The Close follows a Sync of its own: when the restore fails, PostgreSQL
// skips all up to the next Sync, and a Close before it would leave the
// statement on the client's server. restored reads both ReadyForQuery.
func (ss *session) sendRestoreLocked(sc *pool.Conn) error {
	r, _ := ss.captureRestoreLocked()
	name := newStmtName() // stmt.go
	out, _ := (&pgproto3.Parse{Name: name, Query: r.SQL}).Encode(nil)
	b := pgproto3.Bind{PreparedStatement: name, Parameters: make([][]byte, len(r.Args))}
	for i, a := range r.Args {
		b.Parameters[i] = []byte(a)
	}
	out, _ = b.Encode(out)
	out, _ = (&pgproto3.Execute{}).Encode(out)
	out = wire.AppendFrame(out, wire.FeSync)
	out, _ = (&pgproto3.Close{ObjectType: 'S', Name: name}).Encode(out)
	out = wire.AppendFrame(out, wire.FeSync)
	ss.st.mayReset = false
	return ss.writeCheckLocked(sc, out)
}

// writeCheckLocked writes pgtide's own state check (the capture, the
// restore) to sc, under mu at a boundary, and marks it under way: a cancel
// request is held until its replies are read (session.cancel).
func (ss *session) writeCheckLocked(sc *pool.Conn, out []byte) error {
	ss.st.capturing = true
	ss.swmu.Lock()
	_, err := sc.Net.Write(out)
	ss.swmu.Unlock()
	return err
}

// restored reads restoreSQL's replies (session mode), up to the second
// ReadyForQuery (sendRestoreLocked), passes on the ParameterStatus,
// notices and notifications among them, then the held ReadyForQuery. It
// reports whether the pump is done with sc.
func (ss *session) restored(sc *pool.Conn, werr error) bool {
	if werr != nil {
		ss.serverStopped(sc, werr)
		return true
	}
	var out []byte
	var rerr error
	for ready := 0; ready < 2; {
		typ, body, err := sc.Reader.ReadMessage(64 << 20)
		if err != nil {
			if ss.woken(err) {
				continue
			}
			ss.serverStopped(sc, err)
			return true
		}
		switch typ {
		case wire.BeErrorResponse:
			rerr = pool.DecodeError(typ, body)
		case wire.BeParameterStatus:
			ss.mu.Lock()
			ss.parameterStatusLocked(sc, body)
			ss.mu.Unlock()
			out = wire.AppendFrame(out, typ, body)
		case wire.BeNoticeResponse, wire.BeNotification:
			if typ == wire.BeNotification {
				ss.notifyPID(sc, body)
			}
			out = wire.AppendFrame(out, typ, body)
		case wire.BeReadyForQuery:
			if len(body) > 0 {
				sc.TxStatus = body[0]
			}
			ready++
		}
	}
	if rerr != nil {
		ss.logger().Info().Err(rerr).Uint32("server_pid", sc.PID).Msg("could not set the client's startup settings again after a RESET")
	}
	ss.mu.Lock()
	z := ss.st.heldZ
	ss.st.heldZ = nil
	later := ss.st.cancelLater
	ss.st.capturing, ss.st.cancelLater = false, false
	ss.mu.Unlock()
	ss.toClient(append(out, z...))
	if later {
		go ss.cancel() // sent only if a request of the client's is still owed
	}
	return false
}

// sendCaptureLocked writes the capture to the server. It runs under mu,
// at a boundary, so no request of the client can be queued before it; the
// write completes before mu is released, so none can reach the server
// before it either.
func (ss *session) sendCaptureLocked(sc *pool.Conn) error {
	var out []byte
	r, restoring := ss.captureRestoreLocked()
	if restoring {
		out = pool.AppendParamQueries(out, []pool.ParamQuery{r})
		out = wire.AppendFrame(out, wire.FeSync)
	}
	qs := []pool.ParamQuery{{SQL: captureGuardSQL}, {SQL: captureDefaultSQL}, ss.captureQueryLocked()}
	if ss.st.pins == 0 && ss.pinPolicy() == config.PinRefuse {
		// Undone in the same round trip: harmless when nothing is there.
		for _, u := range pinUndo {
			qs = append(qs, pool.ParamQuery{SQL: u})
		}
	}
	out = pool.AppendParamQueries(out, qs)
	out = wire.AppendFrame(out, wire.FeSync)
	ss.st.restoring, ss.st.mayReset = restoring, false
	stateOf(sc).unnamed = nil
	return ss.writeCheckLocked(sc, out)
}

// settle reads the capture's replies (the pump owns the server's reader),
// applies them, and lets the client have its ReadyForQuery. It reports
// whether the pump is done with sc.
func (ss *session) settle(sc *pool.Conn, werr error) bool {
	if werr != nil {
		ss.serverStopped(sc, werr)
		return true
	}
	var rows [][]string
	var async []byte // notifications and notices that arrived meanwhile
	var serr, rerr error
	ss.mu.Lock()
	restoring := ss.st.restoring // restoreSQL's reply comes first, up to its own ReadyForQuery
	ss.mu.Unlock()
	for done := false; !done; {
		typ, body, err := sc.Reader.ReadMessage(64 << 20)
		if err != nil {
			if ss.woken(err) {
				continue // the client goroutine queued fake replies; they follow the ReadyForQuery
			}
			ss.captureLost(sc, err)
			return true
		}
		switch typ {
		case wire.BeDataRow:
			if r, ok := wire.ParseDataRow(body); ok {
				rows = append(rows, r)
			}
		case wire.BeErrorResponse:
			switch {
			case restoring:
				rerr = pool.DecodeError(typ, body)
			case serr == nil:
				serr = pool.DecodeError(typ, body)
			}
		case wire.BeNotification:
			ss.notifyPID(sc, body)
			async = wire.AppendFrame(async, typ, body)
		case wire.BeParameterStatus:
			ss.mu.Lock()
			ss.parameterStatusLocked(sc, body)
			ss.mu.Unlock()
			async = wire.AppendFrame(async, typ, body)
		case wire.BeReadyForQuery:
			if len(body) > 0 {
				sc.TxStatus = body[0]
			}
			done, restoring = !restoring, false
		}
	}
	if rerr != nil {
		// The client keeps the server's values for what could not be
		// set again; the capture below records them.
		ss.logger().Info().Err(rerr).Uint32("server_pid", sc.PID).Msg("could not set the client's startup settings again after a RESET")
	}
	ss.mu.Lock()
	z := ss.st.heldZ
	ss.st.heldZ = nil
	later := ss.st.cancelLater
	ss.st.capturing, ss.st.cancelLater = false, false
	if serr != nil || sc.TxStatus != wire.TxIdle {
		return ss.captureFailedLocked(sc, serr, append(async, z...), later)
	}
	got := parseCapture(rows, sc.LoginUser)
	ss.st.check = false
	ss.want = got.settings
	clear(sc.Applied)
	for k, v := range got.settings {
		g, ok := reportedParam(sc.Params, k)
		if !ok {
			g = v
		}
		sc.Applied[k] = pool.AppliedParam{Want: v, Got: g}
	}
	var refusal []byte
	pins := got.pins
	if ss.st.pins == 0 && pins != 0 && ss.pinPolicy() == config.PinRefuse {
		refusal = ss.refuseLocked(pins)
		pins = 0
	}
	ss.setPinsLocked(pins, sc)
	ss.mu.Unlock()
	ss.toClient(append(append(async, refusal...), z...))
	return ss.afterCapture(sc, later)
}

// afterCapture goes on once the capture's replies are read and the held
// ReadyForQuery went to the client: a cancel request held meanwhile goes
// to the client's request now, fake replies queued meanwhile follow, and
// the server goes back if the session is at a boundary. It reports whether
// the pump is done with sc.
func (ss *session) afterCapture(sc *pool.Conn, cancelLater bool) bool {
	if cancelLater {
		go ss.cancel() // sent only if a request of the client's is still owed
	}
	if ss.flushFakes(sc) {
		return true
	}
	return ss.atBoundary(sc)
}

// captureFailedLocked handles a capture the server answered with an
// error (a cancel, statement_timeout, lock_timeout, ...) or that left the
// server inside a transaction; out is what the client is owed now (the
// held ReadyForQuery). The session's state is unknown, so the server can
// be lent to no one else. It stays with the client, which is checked again
// at its next boundary, when the client is pinned to it or has sent more
// since (pipelined: that is on this server already, behind the capture,
// and the server is outside any transaction, so it runs as the client
// meant). Otherwise it is closed; the session then ends if anything of it
// is lost with it (DESIGN.md invariant 9). Called with mu held; releases
// it. It reports whether the pump is done with sc.
func (ss *session) captureFailedLocked(sc *pool.Conn, serr error, out []byte, cancelLater bool) bool {
	ss.logger().Info().Err(serr).Uint32("server_pid", sc.PID).Str("tx_status", string(sc.TxStatus)).
		Msg("session state check failed")
	if ss.sc != sc {
		ss.mu.Unlock()
		ss.toClient(out)
		return ss.atBoundary(sc)
	}
	idle := sc.TxStatus == wire.TxIdle
	owed := ss.st.pins != 0 || !ss.drainedLocked()
	if idle && owed {
		ss.mu.Unlock()
		ss.toClient(out)
		return ss.afterCapture(sc, cancelLater)
	}
	if owed {
		// Left inside a transaction that no one asked for: what the
		// client sent next would run in it. Never seen in practice.
		ss.mu.Unlock()
		ss.toClient(out)
		ss.serverStopped(sc, fmt.Errorf("session state check left the server in transaction status %q", sc.TxStatus))
		return true
	}
	ss.sc = nil
	ss.st.check = false
	ss.mu.Unlock()
	ss.toClient(out)
	sc.Pool().Discard(sc)
	return true
}

// captureLost handles a server that failed while pgtide read the capture.
// Its replies are unread, so it can only be closed: when the client left
// (finish woke the pump), here, since serverStopped would leave it to
// finish to clean and return.
func (ss *session) captureLost(sc *pool.Conn, err error) {
	ss.mu.Lock()
	gone := ss.gone
	if gone && ss.sc == sc {
		ss.sc = nil
	}
	ss.mu.Unlock()
	if !gone {
		ss.serverStopped(sc, err)
		return
	}
	sc.Pool().Discard(sc)
}

// refuseLocked counts a refusal and builds the client's error.
func (ss *session) refuseLocked(pins uint8) []byte {
	var what []string
	for i := 0; i < numPinReasons; i++ {
		if pins&(1<<i) != 0 {
			what = append(what, pinWhat[i])
			ss.counters.PinRefusals[i].Add(1)
		}
	}
	msg := fmt.Sprintf("%s is not supported in %s pooling mode with pin_policy \"refuse\": it outlives the transaction and would tie this client to one server connection; it has been released",
		strings.Join(what, " and "), ss.mode)
	ss.logger().Info().Str("refused", strings.Join(what, ", ")).Msg("session state refused")
	return wire.ErrorFrame("ERROR", codeFeatureNotSupported, msg)
}

// setPinsLocked records the pin reasons now in force.
func (ss *session) setPinsLocked(pins uint8, sc *pool.Conn) {
	old := ss.st.pins
	if old == pins {
		return
	}
	for i := 0; i < numPinReasons; i++ {
		bit := uint8(1 << i)
		switch {
		case pins&bit != 0 && old&bit == 0:
			ss.counters.Pinned[i].Add(1)
		case pins&bit == 0 && old&bit != 0:
			ss.counters.Pinned[i].Add(-1)
		}
	}
	ss.st.pins = pins
	switch {
	case old == 0:
		ss.logger().Info().Str("reason", pinString(pins)).Uint32("server_pid", sc.PID).
			Msg("client pinned to its server connection until the state is released or it disconnects")
	case pins == 0:
		ss.logger().Debug().Uint32("server_pid", sc.PID).Msg("client no longer pinned")
	}
}

func pinString(pins uint8) string {
	var s []string
	for i := 0; i < numPinReasons; i++ {
		if pins&(1<<i) != 0 {
			s = append(s, PinReasons[i])
		}
	}
	return strings.Join(s, ",")
}

// pinReason says why the client is pinned to its server ("" when it is
// not): reasons from PinReasons, comma-separated. For SHOW CLIENTS.
func (ss *session) pinReason() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return pinString(ss.st.pins)
}

// dropPins forgets the session's pins when it ends (the gauges).
func (ss *session) dropPins() {
	ss.mu.Lock()
	for i := 0; i < numPinReasons; i++ {
		if ss.st.pins&(1<<i) != 0 {
			ss.counters.Pinned[i].Add(-1)
		}
	}
	ss.st.pins = 0
	ss.mu.Unlock()
}

// departureReset runs, after any rollback, on the server of a client that
// leaves, before the server goes back to the pool: nothing the client left
// on it may reach the next borrower (issue 12 item 3). resetDone says
// whether the configured reset query already ran DISCARD ALL. It reports
// false when the server must be closed instead.
func (ss *session) departureReset(sc *pool.Conn, resetDone bool) bool {
	if resetDone {
		forgetServerState(sc)
		return true
	}
	ss.mu.Lock()
	need := ss.st.pins != 0 || ss.st.check
	ss.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ss.mode == config.PoolSession && !need {
		// Session mode tracks nothing: ask the server. A settings
		// difference from what pgtide applied, a pin or a prepared
		// statement needs a reset.
		ss.mu.Lock()
		q := ss.captureQueryLocked()
		ss.mu.Unlock()
		rows, err := sc.QueryParams(ctx, q)
		if err != nil {
			return false
		}
		got := parseCapture(rows, sc.LoginUser)
		need = got.pins != 0 || got.prepared || len(got.settings) != len(sc.Applied)
		for k, v := range got.settings {
			if a, ok := sc.Applied[k]; !ok || a.Want != v {
				need = true
			}
		}
	}
	if !need {
		return true
	}
	if err := sc.Exec(ctx, "DISCARD ALL"); err != nil || sc.TxStatus != wire.TxIdle {
		return false
	}
	forgetServerState(sc)
	return true
}

// forgetServerState records that DISCARD ALL ran on sc: no settings, no
// prepared statements.
func forgetServerState(sc *pool.Conn) {
	clear(sc.Applied)
	stateOf(sc).clear()
}
