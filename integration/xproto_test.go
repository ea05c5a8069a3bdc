package integration

// The transparency suite, in the style of SPQR's test/xproto: a table of
// frontend message sequences, each sent once straight to PostgreSQL and once
// through pgtide in every pool mode, asserting the client receives the same
// backend messages (DESIGN.md invariant 4: bytes from the server reach the
// client in order and unchanged, and what pgtide injects is never seen).
//
// The client is raw: pgconn authenticates, then the socket is hijacked and
// driven with a fresh pgproto3.Frontend, so every message the client sends
// and receives is exactly the table's.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// xround is one round trip: messages sent in one flush, then replies read
// until rfq ReadyForQuery messages have arrived, or (until != "") until a
// message whose rendering starts with until.
type xround struct {
	msgs  []pgproto3.FrontendMessage
	rfq   int
	until string
}

type xcase struct {
	name string
	// table: create the case's own table "T" (a int, b text) directly on
	// PostgreSQL first. Every run (direct, and each mode) gets a table of its
	// own; its real name is written as T in the queries and in the rendered
	// replies.
	table  bool
	rounds []xround
	// modes this case runs through pgtide in; nil means all three.
	modes []string
	// stmt, when set, is what statement mode must answer instead of what
	// PostgreSQL answers (transaction blocks are refused there).
	stmt []string
}

// Message builders.

func xq(sql string) *pgproto3.Query { return &pgproto3.Query{String: sql} }

func xparse(name, sql string, oids ...uint32) *pgproto3.Parse {
	return &pgproto3.Parse{Name: name, Query: sql, ParameterOIDs: oids}
}

func xbind(portal, stmt string, params ...string) *pgproto3.Bind {
	b := &pgproto3.Bind{DestinationPortal: portal, PreparedStatement: stmt}
	for _, p := range params {
		b.Parameters = append(b.Parameters, []byte(p))
	}
	return b
}

func xexec(portal string, maxRows uint32) *pgproto3.Execute {
	return &pgproto3.Execute{Portal: portal, MaxRows: maxRows}
}

func xdescS(name string) *pgproto3.Describe { return &pgproto3.Describe{ObjectType: 'S', Name: name} }
func xdescP(name string) *pgproto3.Describe { return &pgproto3.Describe{ObjectType: 'P', Name: name} }
func xcloseS(name string) *pgproto3.Close   { return &pgproto3.Close{ObjectType: 'S', Name: name} }
func xcloseP(name string) *pgproto3.Close   { return &pgproto3.Close{ObjectType: 'P', Name: name} }
func xcopy(s string) *pgproto3.CopyData     { return &pgproto3.CopyData{Data: []byte(s)} }

var (
	xsync     = &pgproto3.Sync{}
	xflush    = &pgproto3.Flush{}
	xcopyDone = &pgproto3.CopyDone{}
)

func xmsgs(m ...pgproto3.FrontendMessage) []pgproto3.FrontendMessage { return m }

// r is a round that waits for n ReadyForQuery.
func r(n int, m ...pgproto3.FrontendMessage) xround { return xround{msgs: m, rfq: n} }

// ru is a round that waits for a message starting with until.
func ru(until string, m ...pgproto3.FrontendMessage) xround {
	return xround{msgs: m, until: until}
}

// Statement mode refuses transaction blocks: the statement that opened one
// is rolled back unseen and the client gets this error, with status I.
const xStmtRefused = `Error ERROR 0A000 transaction blocks are not allowed in statement pooling mode`

// xcases. Every case runs directly and through pgtide in session,
// transaction and statement mode (the last two also "+shuffle", see
// xtargets), and must give the client PostgreSQL's replies, except:
//
//   - Statement mode has its own expected replies (xcase.stmt) where a
//     statement leaves a transaction block open, which statement pooling
//     refuses (pgtide rolls it back unseen, sends ERROR 0A000 and
//     ReadyForQuery I): simple_begin_commit, simple_begin_error_rollback,
//     simple_txn_in_one_query_error, ext_begin_commit. The statements that
//     follow then run outside a transaction, so COMMIT/ROLLBACK get
//     PostgreSQL's 25P01 warning.
//   - ext_portal_in_txn is skipped in statement mode: it needs a
//     transaction block to keep a portal across Syncs.
//   - sql_prepare_execute (SQL-level PREPARE) runs in session mode only:
//     a server-side SQL object cannot follow a client across servers, and
//     PgBouncer does not promise it either.
var xcases = []xcase{
	// ---- simple query protocol ----
	{name: "simple_select1", rounds: []xround{r(1, xq("SELECT 1"))}},
	{name: "simple_multi_statement", rounds: []xround{
		r(1, xq("SELECT 1 AS a; SELECT 'two' AS b, NULL::int AS c; SELECT generate_series(1,3) AS g")),
	}},
	{name: "simple_error_mid_string", rounds: []xround{r(1, xq("SELECT 1; SELECT 1/0; SELECT 2"))}},
	{name: "simple_empty_query", rounds: []xround{r(1, xq("")), r(1, xq(";"))}},
	{name: "simple_missing_relation", rounds: []xround{r(1, xq("SELECT * FROM T_missing"))}},
	{name: "simple_syntax_error", rounds: []xround{r(1, xq("SELEC 1"))}},
	{name: "simple_begin_commit", table: true, rounds: []xround{
		r(1, xq("BEGIN")),
		r(1, xq("INSERT INTO T VALUES (1, 'a')")),
		r(1, xq("SELECT a, b FROM T")),
		r(1, xq("COMMIT")),
		r(1, xq("SELECT count(*) FROM T")),
	}, stmt: []string{
		`CommandComplete BEGIN`, xStmtRefused, `ReadyForQuery I`,
		`CommandComplete INSERT 0 1`, `ReadyForQuery I`,
		`RowDescription [a:23:0 b:25:0]`, `DataRow ["1" "a"]`, `CommandComplete SELECT 1`, `ReadyForQuery I`,
		`Notice WARNING 25P01 there is no transaction in progress`, `CommandComplete COMMIT`, `ReadyForQuery I`,
		`RowDescription [count:20:0]`, `DataRow ["1"]`, `CommandComplete SELECT 1`, `ReadyForQuery I`,
	}},
	{name: "simple_begin_error_rollback", rounds: []xround{
		r(1, xq("BEGIN")),
		r(1, xq("SELECT 1/0")),
		r(1, xq("SELECT 1")), // 25P02, status E
		r(1, xq("ROLLBACK")),
		r(1, xq("SELECT 2")),
	}, stmt: []string{
		`CommandComplete BEGIN`, xStmtRefused, `ReadyForQuery I`,
		`Error ERROR 22012 division by zero`, `ReadyForQuery I`,
		`RowDescription [?column?:23:0]`, `DataRow ["1"]`, `CommandComplete SELECT 1`, `ReadyForQuery I`,
		`Notice WARNING 25P01 there is no transaction in progress`, `CommandComplete ROLLBACK`, `ReadyForQuery I`,
		`RowDescription [?column?:23:0]`, `DataRow ["2"]`, `CommandComplete SELECT 1`, `ReadyForQuery I`,
	}},
	// A whole transaction in one Query ends idle: allowed in every mode.
	{name: "simple_txn_in_one_query", table: true, rounds: []xround{
		r(1, xq("BEGIN; INSERT INTO T VALUES (1, 'x'); INSERT INTO T VALUES (2, 'y'); COMMIT; SELECT count(*) FROM T")),
	}},
	// An error inside a one-Query transaction skips its COMMIT and leaves
	// the session in a failed block (E). Statement mode cannot keep that
	// block: it rolls back unseen and refuses it, status I.
	{name: "simple_txn_in_one_query_error", rounds: []xround{
		r(1, xq("BEGIN; SELECT 1/0; COMMIT")),
		r(1, xq("ROLLBACK")),
	}, stmt: []string{
		`CommandComplete BEGIN`, `Error ERROR 22012 division by zero`, xStmtRefused, `ReadyForQuery I`,
		`Notice WARNING 25P01 there is no transaction in progress`, `CommandComplete ROLLBACK`, `ReadyForQuery I`,
	}},
	{name: "simple_notice_do", rounds: []xround{
		r(1, xq("DO $$ BEGIN RAISE NOTICE 'hi'; END $$")),
		r(1, xq("DO $$ BEGIN RAISE WARNING 'careful'; RAISE NOTICE 'and %', 2; END $$; SELECT 3")),
	}},
	{name: "simple_set_show_application_name", rounds: []xround{
		r(1, xq("SET application_name = 'xproto_app'")),
		r(1, xq("SHOW application_name")),
		r(1, xparse("", "SHOW application_name"), xbind("", ""), xdescP(""), xexec("", 0), xsync),
		r(1, xq("RESET application_name")),
		r(1, xq("SHOW application_name")),
	}},
	{name: "simple_set_timezone", rounds: []xround{
		r(1, xq("SET TimeZone = 'Asia/Tokyo'")),
		r(1, xq("SELECT '2024-01-01 00:00:00+00'::timestamptz::text AS ts")),
		r(1, xq("SET DateStyle = 'SQL, DMY'")),
		r(1, xq("SELECT '2024-01-31 12:00:00+00'::timestamptz::text AS ts")),
	}},

	// ---- extended query protocol ----
	{name: "ext_unnamed", rounds: []xround{
		r(1, xparse("", "SELECT $1::int + 1 AS n"), xbind("", "", "41"), xdescP(""), xexec("", 0), xsync),
	}},
	{name: "ext_sync_only", rounds: []xround{r(1, xsync), r(2, xsync, xsync)}},
	{name: "ext_named_round_trips", rounds: []xround{
		r(1, xparse("s1", "SELECT $1::text || '!' AS s"), xsync),
		r(1, xbind("", "s1", "hi"), xexec("", 0), xsync),
		r(1, xbind("", "s1", "again"), xdescP(""), xexec("", 0), xsync),
		r(1, xcloseS("s1"), xsync),
		r(1, xbind("", "s1", "gone"), xexec("", 0), xsync), // 26000
		r(1, xparse("s1", "SELECT 2 AS two"), xsync),       // the name is free again
		r(1, xbind("", "s1"), xdescP(""), xexec("", 0), xsync),
	}},
	{name: "ext_describe_stmt_unnamed", rounds: []xround{
		r(1, xparse("", "SELECT $1::int AS a, $2::text AS b"), xdescS(""), xsync),
	}},
	{name: "ext_describe_stmt_named", rounds: []xround{
		r(1, xparse("s1", "SELECT $1::int AS a, $2::text AS b", 23), xdescS("s1"), xsync),
		r(1, xdescS("s1"), xsync),
		r(1, xbind("", "s1", "7", "seven"), xexec("", 0), xsync),
	}},
	{name: "ext_describe_nodata", table: true, rounds: []xround{
		r(1, xparse("", "INSERT INTO T VALUES ($1, $2)"), xdescS(""), xbind("", "", "1", "one"), xdescP(""), xexec("", 0), xsync),
		r(1, xq("SELECT a, b FROM T")),
	}},
	{name: "ext_describe_missing", rounds: []xround{
		r(1, xdescP("nosuch"), xsync),
		r(1, xdescS("nosuch"), xsync),
	}},
	{name: "ext_row_limit", rounds: []xround{
		r(1, xparse("", "SELECT generate_series(1,5) AS g"), xbind("", ""), xexec("", 2), xexec("", 2), xexec("", 0), xsync),
	}},
	// Portal suspended and the server kept across round trips by Flush.
	{name: "ext_row_limit_flush", rounds: []xround{
		ru("PortalSuspended", xparse("", "SELECT generate_series(1,5) AS g"), xbind("", ""), xexec("", 2), xflush),
		ru("PortalSuspended", xexec("", 2), xflush),
		r(1, xexec("", 0), xsync),
	}},
	// A named portal survives Sync inside a transaction block.
	{name: "ext_portal_in_txn", rounds: []xround{
		r(1, xq("BEGIN")),
		r(1, xparse("", "SELECT generate_series(1,5) AS g"), xbind("p1", ""), xexec("p1", 2), xsync),
		r(1, xexec("p1", 2), xsync),
		r(1, xexec("p1", 0), xsync),
		r(1, xcloseP("p1"), xsync),
		r(1, xq("COMMIT")),
	}, modes: []string{"session", "transaction"}}, // statement mode: no transaction blocks, and portals die at Sync
	{name: "ext_close_portal", rounds: []xround{
		r(1, xparse("", "SELECT generate_series(1,3) AS g"), xbind("p1", ""), xexec("p1", 1), xcloseP("p1"), xexec("p1", 0), xsync),
	}},
	{name: "ext_close_missing_statement", rounds: []xround{r(1, xcloseS("nosuch"), xsync)}},
	{name: "ext_pipeline_3", rounds: []xround{
		r(3, xparse("", "SELECT $1::int * 10 AS x"),
			xbind("", "", "1"), xexec("", 0), xsync,
			xbind("", "", "2"), xexec("", 0), xsync,
			xbind("", "", "3"), xexec("", 0), xsync),
	}},
	{name: "ext_pipeline_3_parse_each", rounds: []xround{
		r(3, xparse("", "SELECT $1::int AS x"), xbind("", "", "1"), xexec("", 0), xsync,
			xparse("", "SELECT $1::text AS y"), xbind("", "", "two"), xexec("", 0), xsync,
			xparse("", "SELECT $1::int + 2 AS z"), xbind("", "", "1"), xexec("", 0), xsync),
	}},
	{name: "ext_pipeline_named", rounds: []xround{
		r(3, xparse("s1", "SELECT $1::int * 10 AS x"), xsync,
			xbind("", "s1", "4"), xexec("", 0), xsync,
			xparse("s2", "SELECT $1::text AS t"), xbind("", "s2", "five"), xexec("", 0), xbind("", "s1", "6"), xexec("", 0), xsync),
		r(1, xbind("", "s2", "again"), xexec("", 0), xsync),
	}},
	{name: "ext_pipeline_error_middle", rounds: []xround{
		r(3, xparse("", "SELECT 10/$1::int AS q"), xbind("", "", "1"), xexec("", 0), xsync,
			xbind("", "", "0"), xexec("", 0), xsync,
			xbind("", "", "5"), xexec("", 0), xsync),
	}},
	{name: "ext_error_before_sync", rounds: []xround{
		r(2, xparse("", "SELEC 1"), xbind("", ""), xdescP(""), xexec("", 0), xsync,
			xparse("", "SELECT 2 AS two"), xbind("", ""), xexec("", 0), xsync),
	}},
	{name: "ext_error_discards_named", rounds: []xround{
		// The Bind fails; the Parse of s2 after it is discarded, s1 stays.
		r(1, xparse("s1", "SELECT 1 AS one"), xbind("", "nosuch"), xparse("s2", "SELECT 2"), xexec("", 0), xsync),
		r(1, xbind("", "s1"), xexec("", 0), xsync),
		r(1, xbind("", "s2"), xexec("", 0), xsync), // 26000: s2 was never prepared
		r(1, xparse("s2", "SELECT 22 AS s2"), xbind("", "s2"), xexec("", 0), xsync),
	}},
	{name: "ext_parse_twice", rounds: []xround{
		r(2, xparse("s1", "SELECT 1 AS one"), xsync, xparse("s1", "SELECT 1 AS one"), xsync),
		r(1, xparse("s1", "SELECT 2 AS two"), xsync), // different text, same name: still 42P05
		r(1, xbind("", "s1"), xexec("", 0), xsync),
	}},
	{name: "ext_parse_twice_no_sync", rounds: []xround{
		r(1, xparse("s1", "SELECT 1 AS one"), xparse("s1", "SELECT 2 AS two"), xbind("", "s1"), xexec("", 0), xsync),
		r(1, xbind("", "s1"), xexec("", 0), xsync),
	}},
	{name: "ext_parse_error_named_then_reuse", rounds: []xround{
		r(1, xparse("s1", "SELEC 1"), xsync),
		r(1, xbind("", "s1"), xexec("", 0), xsync), // never created
		r(1, xparse("s1", "SELECT 1 AS one"), xsync),
		r(1, xbind("", "s1"), xexec("", 0), xsync),
	}},
	{name: "ext_bind_missing_statement", rounds: []xround{
		r(1, xbind("", "nosuch"), xexec("", 0), xsync),
	}},
	{name: "ext_bind_missing_unnamed", rounds: []xround{
		r(1, xbind("", ""), xexec("", 0), xsync),
	}},
	{name: "ext_bind_wrong_param_count", rounds: []xround{
		r(1, xparse("s1", "SELECT $1::int AS a"), xbind("", "s1"), xexec("", 0), xsync),
	}},
	{name: "ext_flush_without_sync", rounds: []xround{
		ru("RowDescription", xparse("", "SELECT 1 AS one"), xdescS(""), xflush),
		r(1, xsync),
		r(1, xbind("", ""), xexec("", 0), xsync),
	}},
	{name: "ext_flush_without_sync_named", rounds: []xround{
		ru("RowDescription", xparse("s1", "SELECT $1::int AS one"), xdescS("s1"), xflush),
		ru("CommandComplete", xbind("", "s1", "1"), xexec("", 0), xflush),
		r(1, xsync),
		r(1, xbind("", "s1", "2"), xexec("", 0), xsync),
	}},
	{name: "ext_deallocate_all", rounds: []xround{
		r(1, xparse("s1", "SELECT 1 AS one"), xsync),
		r(1, xq("DEALLOCATE ALL")),
		r(1, xbind("", "s1"), xexec("", 0), xsync), // 26000
		r(1, xparse("s1", "SELECT 2 AS two"), xbind("", "s1"), xexec("", 0), xsync),
	}},
	{name: "ext_notice", rounds: []xround{
		r(1, xparse("", "DO $$ BEGIN RAISE NOTICE 'hi'; END $$"), xbind("", ""), xexec("", 0), xsync),
	}},
	{name: "ext_simple_destroys_unnamed", rounds: []xround{
		r(1, xparse("", "SELECT 1 AS one"), xsync),
		r(1, xq("SELECT 2")),
		r(1, xbind("", ""), xexec("", 0), xsync), // 26000: a Query destroyed the unnamed statement
	}},
	{name: "ext_begin_commit", table: true, rounds: []xround{
		r(1, xparse("", "BEGIN"), xbind("", ""), xexec("", 0), xsync),
		r(1, xparse("", "INSERT INTO T VALUES ($1, 'e')"), xbind("", "", "5"), xexec("", 0), xsync),
		r(1, xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0), xsync), // status E
		r(1, xparse("", "SELECT 1"), xbind("", ""), xexec("", 0), xsync),   // 25P02
		r(1, xparse("", "ROLLBACK"), xbind("", ""), xexec("", 0), xsync),
		r(1, xq("SELECT count(*) FROM T")),
	}, stmt: []string{
		`ParseComplete`, `BindComplete`, `CommandComplete BEGIN`, xStmtRefused, `ReadyForQuery I`,
		`ParseComplete`, `BindComplete`, `CommandComplete INSERT 0 1`, `ReadyForQuery I`,
		`ParseComplete`, `Error ERROR 22012 division by zero`, `ReadyForQuery I`, // 1/0 is folded at Bind
		`ParseComplete`, `BindComplete`, `DataRow ["1"]`, `CommandComplete SELECT 1`, `ReadyForQuery I`,
		`ParseComplete`, `BindComplete`, `Notice WARNING 25P01 there is no transaction in progress`, `CommandComplete ROLLBACK`, `ReadyForQuery I`,
		`RowDescription [count:20:0]`, `DataRow ["1"]`, `CommandComplete SELECT 1`, `ReadyForQuery I`,
	}},

	// ---- COPY ----
	{name: "copy_in_simple", table: true, rounds: []xround{
		ru("CopyInResponse", xq("COPY T FROM STDIN")),
		r(1, xcopy("1\ta\n"), xcopy("2\tb\n3\t\\N\n"), xcopyDone),
		r(1, xq("SELECT a, b FROM T ORDER BY a")),
	}},
	{name: "copy_in_simple_one_flush", table: true, rounds: []xround{
		r(1, xq("COPY T FROM STDIN"), xcopy("1\ta\n"), xcopyDone),
		r(1, xq("SELECT a, b FROM T ORDER BY a")),
	}},
	{name: "copy_in_fail", table: true, rounds: []xround{
		ru("CopyInResponse", xq("COPY T FROM STDIN")),
		r(1, xcopy("1\ta\n"), &pgproto3.CopyFail{Message: "client gave up"}),
		r(1, xq("SELECT count(*) FROM T")),
	}},
	{name: "copy_in_bad_data", table: true, rounds: []xround{
		ru("CopyInResponse", xq("COPY T FROM STDIN")),
		r(1, xcopy("notanint\tx\n"), xcopyDone),
		r(1, xq("SELECT count(*) FROM T")),
	}},
	{name: "copy_out", rounds: []xround{
		r(1, xq("COPY (SELECT g, 'v' || g FROM generate_series(1,3) g) TO STDOUT")),
		r(1, xparse("", "COPY (SELECT 42) TO STDOUT"), xbind("", ""), xexec("", 0), xsync),
	}},
	// libpq in extended mode: Parse/Bind/Execute/Sync, then the data,
	// CopyDone and another Sync. PostgreSQL ignores the first Sync (it
	// arrives in copy-in mode), so only one ReadyForQuery comes.
	{name: "copy_in_extended", table: true, rounds: []xround{
		ru("CopyInResponse", xparse("", "COPY T FROM STDIN"), xbind("", ""), xexec("", 0), xsync),
		r(1, xcopy("1\ta\n2\tb\n"), xcopyDone, xsync),
		r(1, xq("SELECT a, b FROM T ORDER BY a")),
	}},
	{name: "copy_in_extended_one_flush", table: true, rounds: []xround{
		r(1, xparse("", "COPY T FROM STDIN"), xbind("", ""), xexec("", 0), xsync, xcopy("7\tz\n"), xcopyDone, xsync),
		r(1, xq("SELECT a, b FROM T ORDER BY a")),
	}},
	{name: "copy_in_extended_fail", table: true, rounds: []xround{
		ru("CopyInResponse", xparse("", "COPY T FROM STDIN"), xbind("", ""), xexec("", 0), xsync),
		r(1, xcopy("1\ta\n"), &pgproto3.CopyFail{Message: "nope"}, xsync),
		r(1, xq("SELECT count(*) FROM T")),
	}},
	{name: "copy_in_extended_bad_data", table: true, rounds: []xround{
		ru("CopyInResponse", xparse("", "COPY T FROM STDIN"), xbind("", ""), xexec("", 0), xsync),
		r(1, xcopy("bad\tx\n"), xcopyDone, xsync),
		r(1, xq("SELECT count(*) FROM T")),
	}},

	// SQL-level PREPARE lives on one server: transaction and statement
	// pooling cannot promise it (as with PgBouncer), so session mode only.
	{name: "sql_prepare_execute", rounds: []xround{
		r(1, xq("PREPARE p(int) AS SELECT $1 + 1 AS n")),
		r(1, xq("EXECUTE p(1)")),
		r(1, xq("DEALLOCATE p")),
	}, modes: []string{"session"}},
}

// xrender turns a backend message into the compact string compared.
func xrender(m pgproto3.BackendMessage) string {
	switch m := m.(type) {
	case *pgproto3.ParseComplete:
		return "ParseComplete"
	case *pgproto3.BindComplete:
		return "BindComplete"
	case *pgproto3.CloseComplete:
		return "CloseComplete"
	case *pgproto3.NoData:
		return "NoData"
	case *pgproto3.EmptyQueryResponse:
		return "EmptyQueryResponse"
	case *pgproto3.PortalSuspended:
		return "PortalSuspended"
	case *pgproto3.CopyDone:
		return "CopyDone"
	case *pgproto3.ReadyForQuery:
		return "ReadyForQuery " + string(m.TxStatus)
	case *pgproto3.CommandComplete:
		return "CommandComplete " + string(m.CommandTag)
	case *pgproto3.ParameterDescription:
		return fmt.Sprintf("ParameterDescription %v", m.ParameterOIDs)
	case *pgproto3.RowDescription:
		f := make([]string, len(m.Fields))
		for i, fd := range m.Fields {
			f[i] = fmt.Sprintf("%s:%d:%d", fd.Name, fd.DataTypeOID, fd.Format)
		}
		return "RowDescription [" + strings.Join(f, " ") + "]"
	case *pgproto3.DataRow:
		v := make([]string, len(m.Values))
		for i, b := range m.Values {
			if b == nil {
				v[i] = "NULL"
			} else {
				v[i] = fmt.Sprintf("%q", b)
			}
		}
		return "DataRow [" + strings.Join(v, " ") + "]"
	case *pgproto3.ErrorResponse:
		s := fmt.Sprintf("Error %s %s %s", m.Severity, m.Code, m.Message)
		if m.Position != 0 {
			s += fmt.Sprintf(" @%d", m.Position)
		}
		return s
	case *pgproto3.NoticeResponse:
		return fmt.Sprintf("Notice %s %s %s", m.Severity, m.Code, m.Message)
	case *pgproto3.ParameterStatus:
		return fmt.Sprintf("ParameterStatus %s=%s", m.Name, m.Value)
	case *pgproto3.CopyInResponse:
		return fmt.Sprintf("CopyInResponse %d %v", m.OverallFormat, m.ColumnFormatCodes)
	case *pgproto3.CopyOutResponse:
		return fmt.Sprintf("CopyOutResponse %d %v", m.OverallFormat, m.ColumnFormatCodes)
	case *pgproto3.CopyData:
		return fmt.Sprintf("CopyData %q", m.Data)
	case *pgproto3.NotificationResponse:
		return fmt.Sprintf("Notification %s %q", m.Channel, m.Payload) // the PID differs
	}
	return fmt.Sprintf("%T", m)
}

// xsubst returns msg with every "T" table placeholder in SQL replaced.
func xsubst(msg pgproto3.FrontendMessage, table string) pgproto3.FrontendMessage {
	if table == "" {
		return msg
	}
	switch m := msg.(type) {
	case *pgproto3.Query:
		c := *m
		c.String = xsubstSQL(m.String, table)
		return &c
	case *pgproto3.Parse:
		c := *m
		c.Query = xsubstSQL(m.Query, table)
		return &c
	}
	return msg
}

// xsubstSQL replaces the word T (as in "FROM T", "INTO T", "COPY T",
// "T_missing") by the run's table name.
func xsubstSQL(sql, table string) string {
	for _, w := range []string{" T ", " T)", " T_missing"} {
		sql = strings.ReplaceAll(sql, w, strings.Replace(w, "T", table, 1))
	}
	if strings.HasSuffix(sql, " T") {
		sql = sql[:len(sql)-1] + table
	}
	return sql
}

const xDeadline = 5 * time.Second

// xrun connects to url, runs c's rounds and returns the rendered replies,
// followed by the replies to a sentinel query (which catches anything
// left over or missing at the end). With a shuffler, every round that
// starts with the client between transactions runs on the other server.
func xrun(t *testing.T, url, table string, c xcase, sh *xshuffler) (got []string) {
	t.Helper()
	if sh != nil {
		if err := sh.start(); err != nil {
			sh.close()
			return append(got, "!! shuffle: "+err.Error())
		}
		ok := false
		defer func() {
			// Runs after the client is gone (deferred earlier, runs later).
			if ok {
				if err := sh.end(); err != nil {
					t.Errorf("shuffle: %v", err)
				}
			}
			if !ok || t.Failed() {
				sh.close() // holders in an unknown state: start afresh next time
			}
		}()
		defer func() { ok = len(got) > 0 && !strings.HasPrefix(got[len(got)-1], "!!") }()
	}
	ctx, cancel := context.WithTimeout(context.Background(), xDeadline)
	defer cancel()
	pc, err := pgconn.Connect(ctx, url)
	if err != nil {
		return append(got, fmt.Sprintf("!! connect %s: %v", redact(url), err))
	}
	if err := pc.SyncConn(ctx); err != nil {
		return append(got, fmt.Sprintf("!! SyncConn: %v", err))
	}
	hc, err := pc.Hijack()
	if err != nil {
		return append(got, fmt.Sprintf("!! Hijack: %v", err))
	}
	conn := hc.Conn
	defer func() {
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = conn.Write([]byte{'X', 0, 0, 0, 4})
		_ = conn.Close()
	}()
	fe := pgproto3.NewFrontend(conn, conn)

	rounds := append(append([]xround(nil), c.rounds...), r(1, xq("SELECT 'xproto-end' AS sentinel")))
	for ri, rd := range rounds {
		if sh != nil && ri > 0 && len(got) > 0 && got[len(got)-1] == "ReadyForQuery I" {
			if err := sh.swap(); err != nil {
				return append(got, fmt.Sprintf("!! round %d: shuffle: %v (the client's server was not given back to the pool)", ri, err))
			}
		}
		for _, m := range rd.msgs {
			fe.Send(xsubst(m, table))
		}
		_ = conn.SetWriteDeadline(time.Now().Add(xDeadline))
		if err := fe.Flush(); err != nil {
			return append(got, fmt.Sprintf("!! round %d: write: %v", ri, err))
		}
		_ = conn.SetReadDeadline(time.Now().Add(xDeadline))
		rfq := 0
		for {
			m, err := fe.Receive()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return append(got, fmt.Sprintf("!! round %d: no reply within %v (waiting for %s)", ri, xDeadline, xwaitingFor(rd, rfq)))
				}
				return append(got, fmt.Sprintf("!! round %d: read: %v", ri, err))
			}
			s := xrender(m)
			if table != "" {
				s = strings.ReplaceAll(s, table, "T")
			}
			got = append(got, s)
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				rfq++
			}
			if rd.until != "" {
				if strings.HasPrefix(s, rd.until) {
					break
				}
			} else if rfq >= rd.rfq {
				break
			}
		}
	}
	return got
}

func xwaitingFor(rd xround, rfq int) string {
	if rd.until != "" {
		return rd.until
	}
	return fmt.Sprintf("ReadyForQuery %d of %d", rfq+1, rd.rfq)
}

// xdiff is a line diff (LCS): " " same, "-" only in want, "+" only in got.
func xdiff(want, got []string) string {
	n, m := len(want), len(got)
	l := make([][]int, n+1)
	for i := range l {
		l[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if want[i] == got[j] {
				l[i][j] = l[i+1][j+1] + 1
			} else {
				l[i][j] = max(l[i+1][j], l[i][j+1])
			}
		}
	}
	var b strings.Builder
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && want[i] == got[j]:
			fmt.Fprintf(&b, "    %s\n", want[i])
			i, j = i+1, j+1
		case j < m && (i == n || l[i][j+1] >= l[i+1][j]):
			fmt.Fprintf(&b, "  + %s\n", got[j])
			j++
		default:
			fmt.Fprintf(&b, "  - %s\n", want[i])
			i++
		}
	}
	return b.String()
}

func xequal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// xworld is the shared setup: one role and database on the shared
// PostgreSQL, and one pgtide per pool mode (pool_size 2) in front of it.
type xworld struct {
	pg             *pgtest.Postgres
	db, user, pass string
	tides          map[string]*pgtest.Pgtide
	direct         string

	top       *testing.T // owns the pgtides (a restarted one too)
	mu        sync.Mutex
	shufflers map[string]*xshuffler
	cleanup   []func()
}

func newXworld(t *testing.T) *xworld {
	t.Helper()
	pg := pgtest.Shared(t)
	pgtest.BuildPgtide(t)
	w := &xworld{pg: pg, tides: map[string]*pgtest.Pgtide{}, shufflers: map[string]*xshuffler{}}
	w.user = uniqueName(t, "u")
	w.db = uniqueName(t, "d")
	w.pass = "Pw-" + w.user + "-" + fmt.Sprint(time.Now().UnixNano())
	pgtest.CreateRole(t, pg, w.user, w.pass)
	pgtest.CreateDatabase(t, pg, w.db, w.user)
	w.direct = pg.ConnString(w.db, w.user, w.pass)
	w.top = t
	var wg sync.WaitGroup
	for _, tg := range xtargets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.startTide(tg.name, tg.mode)
		}()
	}
	wg.Wait()
	if len(w.tides) != len(xtargets) {
		t.FailNow()
	}
	// Registered after the pgtides' cleanups, so it runs before them: the
	// holders leave before pgtide waits for its clients at shutdown.
	t.Cleanup(func() {
		for _, f := range w.cleanup {
			f()
		}
	})
	return w
}

// startTide starts (or replaces) the pgtide of one target: pool_size 2, so
// that two clients are enough to make servers change hands.
func (w *xworld) startTide(target, mode string) {
	conf := defaultConf()
	conf.PoolMode = mode
	conf.DefaultPoolSize = 2
	conf.ShutdownTimeout = "1s"
	conf.Databases = []dbConf{{Name: w.db, PoolSize: 2}}
	conf.Users[w.user] = w.pass
	tide := pgtest.StartPgtide(w.top, conf.TOML(w.pg.Port))
	w.mu.Lock()
	w.tides[target] = tide
	w.mu.Unlock()
}

// url is the connection URL for a target ("direct" is PostgreSQL itself).
func (w *xworld) url(target string) string {
	if target == "direct" {
		return w.direct
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tides[target].ConnString(w.db, w.user, w.pass)
}

// createTable makes the case's table straight on PostgreSQL (committed, so
// every pooled server sees it).
func (w *xworld) createTable(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, w.direct)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, fmt.Sprintf("CREATE TABLE %s (a int, b text)", name)).ReadAll(); err != nil {
		t.Fatalf("create table %s: %v", name, err)
	}
}

// xtargets are the ways a case runs through pgtide. "+shuffle" runs force
// every round that starts between transactions onto the other of the two
// servers (see xshuffler), so state a client left on one server (named
// statements, the unnamed statement, SET parameters) must follow it.
var xtargets = []struct{ name, mode string }{
	{"session", "session"},
	{"transaction", "transaction"},
	{"transaction+shuffle", "transaction"},
	{"statement", "statement"},
	{"statement+shuffle", "statement"},
}

func TestXproto(t *testing.T) {
	w := newXworld(t)
	for _, target := range []string{"transaction+shuffle", "statement+shuffle"} {
		t.Run("shuffle_sanity_"+target[:strings.IndexByte(target, '+')], func(t *testing.T) { xshuffleSanity(t, w, target) })
	}
	for ci, c := range xcases {
		t.Run(c.name, func(t *testing.T) {
			table := func(target int) string {
				if !c.table {
					return ""
				}
				name := fmt.Sprintf("xpt%d_%d", ci, target)
				w.createTable(t, name)
				return name
			}
			want := xrun(t, w.url("direct"), table(0), c, nil)
			for _, l := range want {
				if strings.HasPrefix(l, "!!") {
					t.Fatalf("directly against PostgreSQL: %s\n%s", l, strings.Join(want, "\n"))
				}
			}
			if os.Getenv("XPROTO_SHOW") != "" {
				t.Logf("PostgreSQL:\n  %s", strings.Join(want, "\n  "))
			}
			for ti, tg := range xtargets {
				if c.modes != nil && !containsStr(c.modes, tg.mode) {
					continue
				}
				exp, src := want, "PostgreSQL"
				if tg.mode == "statement" && c.stmt != nil {
					exp = append(append([]string(nil), c.stmt...), want[len(want)-4:]...) // + the sentinel's replies
					src = "statement-mode expectation"
				}
				var sh *xshuffler
				if strings.HasSuffix(tg.name, "+shuffle") {
					sh = w.shuffler(t, tg.name)
				}
				got := xrun(t, w.url(tg.name), table(ti+1), c, sh)
				if !xequal(exp, got) {
					t.Errorf("%s: pgtide's replies differ from %s (- %s only, + pgtide only):\n%s",
						tg.name, src, src, xdiff(exp, got))
				}
				if sh != nil && sh.closed {
					// A shuffle step failed: a server was not given back.
					// What that leaves behind (see the report) must not
					// fail the next cases: give them a fresh pgtide.
					w.startTide(tg.name, tg.mode)
				}
			}
		})
	}
}

// xshuffleSanity checks the shuffler does what the +shuffle runs rely on:
// consecutive queries of one client run on alternating servers.
func xshuffleSanity(t *testing.T, w *xworld, target string) {
	c := xcase{rounds: []xround{
		r(1, xq("SELECT pg_backend_pid()")),
		r(1, xq("SELECT pg_backend_pid()")),
		r(1, xq("SELECT pg_backend_pid()")),
		r(1, xq("SELECT pg_backend_pid()")),
	}}
	got := xrun(t, w.url(target), "", c, w.shuffler(t, target))
	var pids []string
	for _, l := range got {
		if strings.HasPrefix(l, "!!") {
			t.Fatalf("%s\n%s", l, strings.Join(got, "\n"))
		}
		if strings.HasPrefix(l, "DataRow") && !strings.Contains(l, "xproto-end") {
			pids = append(pids, l)
		}
	}
	if len(pids) != 4 {
		t.Fatalf("want 4 rows, got:\n%s", strings.Join(got, "\n"))
	}
	for i := 1; i < len(pids); i++ {
		if pids[i] == pids[i-1] {
			t.Fatalf("shuffled queries %d and %d ran on the same backend: %v", i, i+1, pids)
		}
	}
}

// xholder is a client of pgtide that can hold one server: an unnamed Parse
// followed by Flush (no Sync) keeps the server attached in every pool mode
// until the Sync that release sends.
type xholder struct {
	conn net.Conn
	fe   *pgproto3.Frontend
}

func newXholder(t *testing.T, url string) *xholder {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatalf("holder connect: %v", err)
	}
	if err := pc.SyncConn(ctx); err != nil {
		t.Fatal(err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	return &xholder{conn: hc.Conn, fe: pgproto3.NewFrontend(hc.Conn, hc.Conn)}
}

func (h *xholder) roundTrip(until string, msgs ...pgproto3.FrontendMessage) error {
	for _, m := range msgs {
		h.fe.Send(m)
	}
	// A server given back at a transaction boundary is free within
	// milliseconds; one that is not would make every case wait long.
	_ = h.conn.SetDeadline(time.Now().Add(time.Second))
	if err := h.fe.Flush(); err != nil {
		return err
	}
	for {
		m, err := h.fe.Receive()
		if err != nil {
			return err
		}
		s := xrender(m)
		if strings.HasPrefix(s, "Error") {
			return errors.New(s)
		}
		if strings.HasPrefix(s, until) {
			return nil
		}
	}
}

func (h *xholder) hold() error {
	if err := h.roundTrip("ParseComplete", xparse("", "SELECT 1"), xflush); err != nil {
		return fmt.Errorf("holder: taking a server: %w", err)
	}
	return nil
}

func (h *xholder) release() error {
	if err := h.roundTrip("ReadyForQuery", xsync); err != nil {
		return fmt.Errorf("holder: giving back its server: %w", err)
	}
	return nil
}

// xshuffler makes a pool_size 2 pool alternate the servers a client gets.
// One holder always keeps a server; to move the client, the other holder
// takes the only idle server (the one the client just gave back) and then
// the first holder frees its own, which the client's next transaction
// must use.
type xshuffler struct {
	h      [2]*xholder
	cur    int  // which holder holds a server
	closed bool // a step failed and the holders were closed
}

func (sh *xshuffler) start() error { return sh.h[sh.cur].hold() }

func (sh *xshuffler) swap() error {
	other := 1 - sh.cur
	if err := sh.h[other].hold(); err != nil {
		return err
	}
	if err := sh.h[sh.cur].release(); err != nil {
		return err
	}
	sh.cur = other
	return nil
}

func (sh *xshuffler) end() error { return sh.h[sh.cur].release() }

func (w *xworld) shuffler(t *testing.T, target string) *xshuffler {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if sh := w.shufflers[target]; sh != nil {
		if !sh.closed {
			return sh
		}
	}
	sh := &xshuffler{}
	for i := range sh.h {
		sh.h[i] = newXholder(t, w.tides[target].ConnString(w.db, w.user, w.pass))
	}
	w.shufflers[target] = sh
	w.cleanup = append(w.cleanup, sh.close)
	return sh
}

// close disconnects both holders, which gives back whatever they held or
// waited for.
func (sh *xshuffler) close() {
	if sh.closed {
		return
	}
	sh.closed = true
	for _, h := range sh.h {
		_ = h.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = h.conn.Write([]byte{'X', 0, 0, 0, 4})
		_ = h.conn.Close()
	}
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestXprotoStmtNameCollision: several clients of one transaction-mode pool
// (pool_size 2, so servers pass between them) prepare DIFFERENT SQL under the
// SAME protocol-level name "s1" at the same time, and each must only ever
// see its own statement's results: the bug PgBouncer 1.18-era poolers had
// with asyncpg, where client-chosen names collided on a shared server.
func TestXprotoStmtNameCollision(t *testing.T) {
	w := newXworld(t)
	const clients, iters = 4, 40
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := make(chan struct{})
	servers := make([]map[string]bool, clients+1) // backends each client ran on
	var ready sync.WaitGroup
	for k := 1; k <= clients; k++ {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			errs <- xcollisionClient(w.url("transaction"), k, iters, &ready, start, &servers[k])
		}()
	}
	ready.Wait()
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}
	// The collision needs two clients' statements on one server: some
	// backend must have served more than one client, or nothing was tested.
	users := map[string]int{}
	for _, pids := range servers[1:] {
		for pid := range pids {
			users[pid]++
		}
	}
	shared := false
	for _, n := range users {
		shared = shared || n > 1
	}
	t.Logf("clients per backend: %v", users)
	if !shared {
		t.Fatalf("no backend served two clients (%v): no multiplexing happened", users)
	}
}

func xcollisionClient(url string, k, iters int, ready *sync.WaitGroup, start chan struct{}, servers *map[string]bool) error {
	connected := false
	defer func() {
		if !connected {
			ready.Done()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("client %d: connect: %v", k, err)
	}
	if err := pc.SyncConn(ctx); err != nil {
		return err
	}
	hc, err := pc.Hijack()
	if err != nil {
		return err
	}
	conn := hc.Conn
	defer conn.Close()
	fe := pgproto3.NewFrontend(conn, conn)
	connected = true
	ready.Done()
	<-start // every client logged in: they all run at once

	pids := map[string]bool{}
	// roundTrip sends msgs and returns the rendered replies up to one RFQ.
	roundTrip := func(msgs ...pgproto3.FrontendMessage) ([]string, error) {
		for _, m := range msgs {
			fe.Send(m)
		}
		if err := fe.Flush(); err != nil {
			return nil, err
		}
		_ = conn.SetReadDeadline(time.Now().Add(xDeadline))
		var out []string
		for {
			m, err := fe.Receive()
			if err != nil {
				return out, err
			}
			if dr, ok := m.(*pgproto3.DataRow); ok && len(dr.Values) == 3 {
				// The third column is the backend's PID: which server ran it.
				pids[string(dr.Values[2])] = true
				m = &pgproto3.DataRow{Values: dr.Values[:2]}
			}
			out = append(out, xrender(m))
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				return out, nil
			}
		}
	}
	expect := func(what string, got []string, err error, want ...string) error {
		if err != nil || !xequal(got, want) {
			return fmt.Errorf("client %d, %s: err %v\n%s", k, what, err, xdiff(want, got))
		}
		return nil
	}
	// Generation g of client k's statement s1: its own column name and values.
	sql := func(g int) string {
		return fmt.Sprintf("SELECT $1::int * %d AS c%d_g%d, 'client %d gen %d'::text AS who, pg_backend_pid() AS pid", k, k, g, k, g)
	}
	for g := 0; g < 2; g++ {
		got, err := roundTrip(xparse("s1", sql(g)), xdescS("s1"), xsync)
		if e := expect(fmt.Sprintf("prepare gen %d", g), got, err,
			"ParseComplete", "ParameterDescription [23]",
			fmt.Sprintf("RowDescription [c%d_g%d:23:0 who:25:0 pid:23:0]", k, g), "ReadyForQuery I"); e != nil {
			return e
		}
		for i := 1; i <= iters/2; i++ {
			msgs := xmsgs(xbind("", "s1", fmt.Sprint(i)), xexec("", 0), xsync)
			if i%5 == 0 { // sometimes with a Describe of the statement too
				msgs = xmsgs(xdescS("s1"), xbind("", "s1", fmt.Sprint(i)), xexec("", 0), xsync)
			}
			got, err := roundTrip(msgs...)
			want := []string{"BindComplete", fmt.Sprintf("DataRow [%q %q]", fmt.Sprint(i*k), fmt.Sprintf("client %d gen %d", k, g)),
				"CommandComplete SELECT 1", "ReadyForQuery I"}
			if i%5 == 0 {
				want = append([]string{"ParameterDescription [23]", fmt.Sprintf("RowDescription [c%d_g%d:23:0 who:25:0 pid:23:0]", k, g)}, want...)
			}
			if e := expect(fmt.Sprintf("gen %d iteration %d", g, i), got, err, want...); e != nil {
				return e
			}
		}
		// Re-prepare s1 with other SQL: the old mapping must not survive.
		got, err = roundTrip(xcloseS("s1"), xsync)
		if e := expect("close", got, err, "CloseComplete", "ReadyForQuery I"); e != nil {
			return e
		}
	}
	_, _ = conn.Write([]byte{'X', 0, 0, 0, 4})
	*servers = pids
	return nil
}
