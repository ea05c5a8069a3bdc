package integration

// Protocol transparency in transaction mode, by difference: each scenario
// is a sequence of rounds of two (or more) raw clients, sent straight to
// PostgreSQL and through pgtide with pool_size 1, so that every client of
// pgtide gets the same server and whatever one leaves on it (portals,
// statements, settings, a transaction) is seen by the next. The replies
// must be the same (prepSteps). Sequences xproto_test.go and
// txn_prepared_skip_test.go do not cover.

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// xdExec runs sql straight on PostgreSQL (setup between runs).
func xdExec(t *testing.T, url, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, sql).ReadAll(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// xdSteps runs prepSteps on a pool_size 1 transaction-mode pgtide. setup,
// when set, is SQL run straight on PostgreSQL first and again as the first
// step of each run (client A), so both runs start from the same table.
func xdSteps(t *testing.T, setup string, steps ...pstep) {
	t.Helper()
	e := prepEnv(t, 1, "")
	n := 0
	for _, s := range steps {
		n = max(n, s.c+1)
	}
	if setup != "" {
		xdExec(t, e.DirectURL(), setup) // the first run's DROP then finds the table too
		steps = append([]pstep{{0, r(1, xq(setup))}}, steps...)
	}
	prepSteps(t, e, n, steps...)
}

func xfc(oid uint32, args ...string) *pgproto3.FunctionCall {
	f := &pgproto3.FunctionCall{Function: oid, ResultFormatCode: 0}
	for _, a := range args {
		f.Arguments = append(f.Arguments, []byte(a))
	}
	f.ArgFormatCodes = []uint16{0}
	return f
}

// Portals across Syncs inside an explicit transaction: named and unnamed,
// row limits, Describe of a portal, Close, errors; then another client.
func TestTxnXdPortalsAcrossSyncs(t *testing.T) {
	xdSteps(t, "",
		pstep{0, r(1, xq("BEGIN"))},
		pstep{0, r(1, xparse("", "SELECT g, 'r' || g AS s FROM generate_series(1,6) g"), xbind("p1", ""), xdescP("p1"), xexec("p1", 2), xsync)},
		pstep{0, r(1, xparse("", "SELECT 'other' AS o"), xbind("", ""), xexec("", 0), xsync)},
		pstep{0, r(1, xdescP("p1"), xexec("p1", 2), xsync)},
		pstep{0, r(1, xbind("p2", ""), xexec("p2", 0), xexec("p1", 1), xsync)},
		pstep{0, r(1, xcloseP("p1"), xexec("p1", 0), xsync)}, // 34000, E
		pstep{0, r(1, xdescP("p2"), xsync)},
		pstep{0, r(1, xexec("p2", 0), xsync)},
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{1, r(1, xdescP("p2"), xsync)},
		pstep{1, r(1, xexec("p1", 0), xsync)},
		pstep{0, r(1, xdescP("p2"), xsync)},
		pstep{0, r(1, xbind("", ""), xexec("", 1), xsync)},
	)
}

// Several Executes in one implicit transaction, an error in the last:
// nothing is committed. Also with statements pgtide prepares again on the
// way (another client emptied the server with DISCARD ALL).
func TestTxnXdImplicitTransaction(t *testing.T) {
	xdSteps(t, "DROP TABLE IF EXISTS xd_impl; CREATE TABLE xd_impl (a int)",
		pstep{0, r(1, xparse("", "INSERT INTO xd_impl VALUES ($1)"), xbind("", "", "1"), xexec("", 0),
			xbind("", "", "2"), xexec("", 0), xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0), xsync)},
		pstep{1, r(1, xq("SELECT count(*) FROM xd_impl"))},
		pstep{0, r(1, xparse("ins", "INSERT INTO xd_impl VALUES ($1)"), xparse("div", "SELECT 10/$1::int AS q"), xsync)},
		pstep{1, r(1, xq("DISCARD ALL"))},
		pstep{0, r(1, xbind("", "ins", "3"), xexec("", 0), xbind("", "div", "5"), xexec("", 0),
			xbind("", "ins", "4"), xexec("", 0), xbind("", "div", "0"), xexec("", 0), xsync)},
		pstep{1, r(1, xq("SELECT count(*) FROM xd_impl"))},
		pstep{0, r(2, xbind("", "ins", "5"), xexec("", 0), xsync, xbind("", "div", "0"), xexec("", 0), xsync)},
		pstep{1, r(1, xq("SELECT a FROM xd_impl ORDER BY a"))},
		// A BEGIN inside the batch makes it an explicit block, whose
		// error leaves it failed past the Sync.
		pstep{0, r(1, xbind("", "ins", "6"), xexec("", 0), xparse("", "BEGIN"), xbind("", ""), xexec("", 0),
			xbind("", "ins", "7"), xexec("", 0), xbind("", "div", "0"), xexec("", 0), xsync)},
		pstep{0, r(1, xq("COMMIT"))},
		pstep{1, r(1, xq("SELECT a FROM xd_impl ORDER BY a"))},
	)
}

// Simple Query strings with transaction control inside them.
func TestTxnXdMultiStatementTxnControl(t *testing.T) {
	xdSteps(t, "DROP TABLE IF EXISTS xd_multi; CREATE TABLE xd_multi (a int)",
		pstep{0, r(1, xq("SELECT 1; BEGIN; SELECT 2"))},
		pstep{0, r(1, xq("INSERT INTO xd_multi VALUES (1)"))},
		pstep{0, r(1, xq("COMMIT; BEGIN; INSERT INTO xd_multi VALUES (2)"))},
		pstep{0, r(1, xq("ROLLBACK; SELECT count(*) FROM xd_multi"))},
		pstep{1, r(1, xq("SELECT count(*) FROM xd_multi"))},
		pstep{0, r(1, xq("BEGIN; INSERT INTO xd_multi VALUES (3); SELECT 1/0; COMMIT"))},
		pstep{0, r(1, xq("COMMIT"))},
		pstep{0, r(1, xq("INSERT INTO xd_multi VALUES (4); SELECT 1/0"))},
		pstep{1, r(1, xq("SELECT count(*) FROM xd_multi"))},
		pstep{0, r(1, xq("BEGIN; COMMIT; BEGIN"))},
		pstep{0, r(1, xq("INSERT INTO xd_multi VALUES (5); COMMIT AND CHAIN; INSERT INTO xd_multi VALUES (6)"))},
		pstep{0, r(1, xq("SHOW transaction_isolation"))},
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{1, r(1, xq("SELECT a FROM xd_multi ORDER BY a"))},
		pstep{0, r(1, xq("BEGIN; SELECT 1; ROLLBACK; SELECT 2; BEGIN ISOLATION LEVEL SERIALIZABLE; SHOW transaction_isolation; COMMIT"))},
		pstep{1, r(1, xq("BEGIN; SHOW transaction_isolation; COMMIT"))},
		pstep{0, r(1, xq(""))},
		pstep{0, r(1, xq("BEGIN"))},
		pstep{0, r(1, xq(";"))},
		pstep{0, r(1, xq("SELECT 1/0"))},
		pstep{0, r(1, xq(""))},
		pstep{0, r(1, xq("ROLLBACK"))},
	)
}

// Savepoints, in simple and extended protocol, with errors; ROLLBACK TO
// and RELEASE as named statements in a failed transaction.
func TestTxnXdSavepoints(t *testing.T) {
	xdSteps(t, "DROP TABLE IF EXISTS xd_sp; CREATE TABLE xd_sp (a int)",
		pstep{0, r(1, xq("BEGIN; SAVEPOINT a; INSERT INTO xd_sp VALUES (1); SAVEPOINT b"))},
		pstep{0, r(1, xq("SELECT 1/0"))},
		pstep{0, r(1, xq("INSERT INTO xd_sp VALUES (99)"))},
		pstep{0, r(1, xq("ROLLBACK TO b"))},
		pstep{0, r(1, xq("INSERT INTO xd_sp VALUES (2); RELEASE a"))},
		pstep{0, r(1, xq("COMMIT"))},
		pstep{1, r(1, xq("SELECT a FROM xd_sp ORDER BY a"))},
		// Extended: the savepoint commands as named statements.
		pstep{0, r(1, xparse("sp", "SAVEPOINT s1"), xparse("rb", "ROLLBACK TO SAVEPOINT s1"), xparse("rel", "RELEASE s1"),
			xparse("ins", "INSERT INTO xd_sp VALUES ($1)"), xsync)},
		pstep{0, r(1, xq("BEGIN"))},
		pstep{0, r(1, xbind("", "sp"), xexec("", 0), xbind("", "ins", "3"), xexec("", 0), xsync)},
		pstep{0, r(1, xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0), xsync)},
		pstep{0, r(1, xbind("", "rel"), xexec("", 0), xsync)}, // 25P02
		pstep{0, r(1, xparse("rel2", "RELEASE s1"), xsync)},   // 25P02: not an exit statement
		pstep{0, r(1, xparse("rb2", "ROLLBACK TO s1"), xbind("", "rb2"), xexec("", 0), xsync)},
		pstep{0, r(1, xbind("", "ins", "4"), xexec("", 0), xbind("", "rel"), xexec("", 0), xsync)},
		pstep{0, r(1, xbind("", "rb"), xexec("", 0), xsync)}, // no such savepoint now
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{1, r(1, xq("SELECT a FROM xd_sp ORDER BY a"))},
	)
}

// Transaction characteristics: SET TRANSACTION, BEGIN ISOLATION LEVEL,
// SET SESSION CHARACTERISTICS; the other client must get the defaults.
// SET TRANSACTION marks transaction_isolation and transaction_read_only
// source 'session' in pg_settings for the rest of the backend's life; the
// session-state capture took them for settings of the client's and set
// them again on the next server it got, in a transaction that had already
// run a query: FATAL 25001 "SET TRANSACTION ISOLATION LEVEL must be called
// before any query" once the client's default isolation differed, and the
// client was disconnected.
func TestTxnXdIsolation(t *testing.T) {
	show := "SHOW transaction_isolation; SHOW transaction_read_only; SHOW default_transaction_isolation; SHOW default_transaction_read_only"
	xdSteps(t, "",
		pstep{0, r(1, xq("BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY; "+show))},
		pstep{0, r(1, xq("COMMIT"))},
		pstep{1, r(1, xq("BEGIN; "+show+"; COMMIT"))},
		pstep{0, r(1, xq("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))},
		pstep{0, r(1, xq(show))},
		pstep{0, r(1, xq("CREATE TABLE xd_ro (a int)"))},
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{1, r(1, xq(show))},
		pstep{0, r(1, xparse("", "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ"), xbind("", ""), xexec("", 0), xsync)},
		pstep{1, r(1, xq(show))},
		pstep{0, r(1, xq(show))},
		pstep{0, r(1, xq("BEGIN; SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; ROLLBACK"))},
		pstep{0, r(1, xq(show))},
		pstep{0, r(1, xq("BEGIN; SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; COMMIT"))},
		pstep{1, r(1, xq(show))},
		pstep{0, r(1, xq(show))},
		pstep{0, r(1, xq("START TRANSACTION ISOLATION LEVEL READ COMMITTED; "+show+"; COMMIT"))},
		pstep{0, r(1, xq("SET default_transaction_isolation TO DEFAULT"))},
		pstep{0, r(1, xq(show))},
		pstep{0, r(1, xq("RESET ALL"))},
		pstep{0, r(1, xq(show))},
		pstep{1, r(1, xq(show))},
	)
}

// DISCARD ALL, RESET ALL, DEALLOCATE ALL, DISCARD PLANS/TEMP/SEQUENCES by
// the client, simple and extended, inside and outside a transaction.
func TestTxnXdDiscard(t *testing.T) {
	xdSteps(t, "",
		pstep{0, r(1, xparse("s1", "SELECT 1 AS one"), xsync)},
		pstep{0, r(1, xq("PREPARE q1 AS SELECT 2 AS two"))},
		pstep{0, r(1, xq("SET work_mem = '1111kB'; SET search_path = pg_catalog, public"))},
		pstep{1, r(1, xparse("t1", "SELECT 1 AS one"), xsync)},
		pstep{0, r(1, xq("BEGIN; DISCARD ALL"))},
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{0, r(1, xbind("", "s1"), xexec("", 0), xsync)},
		pstep{0, r(1, xq("EXECUTE q1; SHOW work_mem"))},
		pstep{0, r(1, xq("DISCARD ALL"))},
		pstep{0, r(1, xbind("", "s1"), xexec("", 0), xsync)},
		pstep{0, r(1, xq("EXECUTE q1"))},
		pstep{0, r(1, xq("SHOW work_mem; SHOW search_path"))},
		pstep{1, r(1, xbind("", "t1"), xexec("", 0), xsync)},
		pstep{1, r(1, xq("SHOW work_mem"))},
		pstep{0, r(2, xparse("s1", "SELECT 3 AS three"), xq("PREPARE q1 AS SELECT 4 AS four"), xsync)},
		pstep{0, r(1, xparse("", "DEALLOCATE ALL"), xbind("", ""), xexec("", 0), xsync)},
		pstep{0, r(1, xbind("", "s1"), xexec("", 0), xsync)},
		pstep{0, r(1, xq("EXECUTE q1"))},
		pstep{1, r(1, xbind("", "t1"), xexec("", 0), xsync)},
		pstep{0, r(1, xparse("s1", "SELECT 5 AS five"), xsync)},
		pstep{0, r(1, xq("SET work_mem = '2222kB'"))},
		pstep{0, r(1, xparse("", "RESET ALL"), xbind("", ""), xexec("", 0), xsync)},
		pstep{0, r(1, xq("SHOW work_mem"))},
		pstep{0, r(1, xparse("", "DISCARD ALL"), xbind("", ""), xexec("", 0), xsync)},
		pstep{0, r(1, xbind("", "s1"), xexec("", 0), xsync)},
		pstep{0, r(1, xq("DISCARD PLANS; DISCARD SEQUENCES; DISCARD TEMP"))},
		pstep{0, r(1, xq("SELECT 1; DISCARD ALL"))},
		pstep{1, r(1, xbind("", "t1"), xexec("", 0), xsync)},
	)
}

// The function-call protocol (FunctionCall 'F'), alone, with errors,
// inside a transaction and in an open extended batch.
func TestTxnXdFunctionCall(t *testing.T) {
	const int4pl, int4div = 177, 154
	xdSteps(t, "",
		pstep{0, r(1, xfc(int4pl, "2", "3"))},
		pstep{0, r(1, xfc(int4div, "1", "0"))},
		pstep{0, r(1, xq("BEGIN"))},
		pstep{0, r(1, xfc(int4pl, "20", "22"))},
		pstep{0, r(1, xfc(int4div, "1", "0"))},
		pstep{0, r(1, xfc(int4pl, "1", "1"))}, // 25P02
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{1, r(1, xfc(int4pl, "7", "8"))},
		pstep{0, r(2, xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0), xfc(int4pl, "1", "2"), xsync, xfc(int4pl, "3", "4"))},
		pstep{0, r(2, xfc(int4pl, "5", "6"), xparse("", "SELECT 5 AS five"), xbind("", ""), xexec("", 0), xsync)},
		pstep{0, r(1, xfc(99999999, "1"))},
	)
}

// Parameter types and formats: the same text with different parameter
// types is a different statement; binary parameters and results.
func TestTxnXdParamTypesAndFormats(t *testing.T) {
	bin := func(portal, stmt string, pf []int16, rf []int16, params ...[]byte) *pgproto3.Bind {
		return &pgproto3.Bind{DestinationPortal: portal, PreparedStatement: stmt, ParameterFormatCodes: pf, Parameters: params, ResultFormatCodes: rf}
	}
	xdSteps(t, "",
		pstep{0, r(1, xparse("s1", "SELECT $1 AS x, $2 AS y, $3 AS z", 23, 25, 20), xdescS("s1"), xsync)},
		pstep{1, r(1, xparse("s1", "SELECT $1 AS x, $2 AS y, $3 AS z", 25, 25, 25), xdescS("s1"), xsync)},
		pstep{1, r(1, xparse("s2", "SELECT $1 AS x, $2 AS y, $3 AS z"), xdescS("s2"), xsync)},
		pstep{0, r(1, bin("", "s1", []int16{1, 0, 1}, []int16{1}, []byte{0, 0, 0, 7}, []byte("seven"), []byte{0, 0, 0, 0, 0, 0, 0, 8}), xdescP(""), xexec("", 0), xsync)},
		pstep{1, r(1, bin("", "s1", []int16{0}, []int16{0, 1, 0}, []byte("a"), []byte("b"), []byte("c")), xdescP(""), xexec("", 0), xsync)},
		pstep{0, r(1, bin("", "s1", []int16{1}, nil, []byte{0, 0, 7}, []byte("x"), []byte{0, 0, 0, 0, 0, 0, 0, 1}), xexec("", 0), xsync)}, // bad binary int4
		pstep{0, r(1, bin("", "s1", []int16{0, 0}, nil, []byte("1"), []byte("x"), []byte("2")), xexec("", 0), xsync)},                     // 2 formats for 3 params
		pstep{0, r(1, bin("", "s1", nil, []int16{2}, []byte("1"), []byte("x"), []byte("2")), xexec("", 0), xsync)},                        // bad result format
		pstep{1, r(1, xdescS("s2"), xdescS("s1"), xsync)},
	)
}

// COPY TO with an error halfway, simple and extended, in and out of a
// transaction; COPY FROM started by an Execute behind a Flush.
func TestTxnXdCopyErrors(t *testing.T) {
	xdSteps(t, "DROP TABLE IF EXISTS xd_copy; CREATE TABLE xd_copy (a int)",
		pstep{0, r(1, xq("COPY (SELECT 10/(g-3) FROM generate_series(1,5) g) TO STDOUT"))},
		pstep{1, r(1, xq("SELECT 1"))},
		pstep{0, r(1, xparse("", "COPY (SELECT 10/(g-3) FROM generate_series(1,5) g) TO STDOUT"), xbind("", ""), xexec("", 0), xsync)},
		pstep{0, r(1, xq("BEGIN; COPY (SELECT 10/(g-2) FROM generate_series(1,5) g) TO STDOUT; SELECT 1"))},
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{0, ru("CopyInResponse", xparse("", "COPY xd_copy FROM STDIN"), xbind("", ""), xexec("", 0), xflush)},
		pstep{0, r(1, xcopy("1\n2\n"), xcopyDone, xsync)},
		pstep{1, r(1, xq("SELECT count(*) FROM xd_copy"))},
		pstep{0, ru("CopyInResponse", xq("BEGIN"), xq("COPY xd_copy FROM STDIN"))},
		pstep{0, r(1, xcopy("3\n"), xcopy("x\n"), xcopyDone)},
		pstep{0, r(1, xq("SELECT 1"))},
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{0, r(1, xq("COPY xd_copy FROM STDIN"), xcopy("4\n"), xcopyDone, xq("SELECT count(*) FROM xd_copy"))},
		pstep{1, r(1, xq("SELECT a FROM xd_copy ORDER BY a"))},
	)
}

// A named Parse pipelined behind something that fails the transaction
// (a Query, or a Sync ending a failed block): PostgreSQL answers it 25P02
// and creates nothing. pgtide answered ParseComplete itself when the
// server already had the statement (42P05 for a name in use), and the
// client could then bind a statement PostgreSQL never created.
func TestTxnXdParseAfterPipelinedFailure(t *testing.T) {
	xdSteps(t, "",
		pstep{0, r(1, xparse("s1", "SELECT 11 AS v"), xsync)},
		pstep{0, r(1, xq("BEGIN"))},
		pstep{0, r(2, xq("SELECT 1/0"), xparse("s2", "SELECT 11 AS v"), xbind("", "s2"), xexec("", 0), xsync)},
		pstep{0, r(2, xsync, xparse("s3", "SELECT 11 AS v"), xsync)},
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{0, r(1, xbind("", "s2"), xexec("", 0), xsync)},
		pstep{0, r(1, xbind("", "s3"), xexec("", 0), xsync)},
		pstep{1, r(1, xparse("s2", "SELECT 11 AS v"), xbind("", "s2"), xexec("", 0), xsync)},
		// A duplicate name: 25P02 too, where the transaction is failed.
		pstep{0, r(1, xq("BEGIN"))},
		pstep{0, r(2, xq("SELECT 1/0"), xparse("s1", "SELECT 12 AS v"), xsync)},
		pstep{0, r(2, xq("ROLLBACK"), xparse("s1", "SELECT 12 AS v"), xsync)}, // 42P05
		// Not failed: what pgtide adds must not show, and must leave the
		// client's unnamed statement usable.
		pstep{0, r(1, xparse("", "SELECT 'unnamed' AS u"), xsync)},
		pstep{0, r(2, xq("SELECT 1"), xparse("s4", "SELECT 11 AS v"), xbind("", "s4"), xexec("", 0), xbind("", ""), xexec("", 0), xsync)},
		pstep{0, r(1, xq("BEGIN"))},
		pstep{0, r(1, xq("SELECT 1/0"))},
		pstep{0, r(2, xq("ROLLBACK"), xparse("s5", "SELECT 11 AS v"), xbind("", "s5"), xexec("", 0), xsync)},
		pstep{0, r(2, xsync, xparse("s6", "SELECT 11 AS v"), xbind("", ""), xexec("", 0), xsync)},
		pstep{1, r(1, xbind("", "s2"), xexec("", 0), xsync)},
	)
}

// The unnamed statement after a Parse of it failed: PostgreSQL dropped the
// old one first, so there is none, on whichever server the client gets
// next (pgtide parsed the failed text again there, and the client got its
// syntax error instead of 26000). And an unnamed Parse pipelined after a
// batch whose error skips an earlier unnamed Parse must stay the client's.
func TestTxnXdUnnamedAfterFailedParse(t *testing.T) {
	xdSteps(t, "",
		pstep{0, r(1, xparse("", "SELECT 1 AS one"), xsync)},
		pstep{0, r(1, xparse("", "SELEC 2"), xsync)},
		pstep{1, r(1, xparse("", "SELECT 'B' AS b"), xsync)},
		pstep{0, r(1, xbind("", ""), xexec("", 0), xsync)},
		pstep{0, r(1, xdescS(""), xsync)},
		// Skipped after an error, then parsed again behind the Sync.
		pstep{0, r(2, xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0), xparse("", "SELECT 2 AS two"), xsync,
			xparse("", "SELECT 3 AS three"), xsync)},
		pstep{0, r(1, xbind("", ""), xexec("", 0), xsync)},
		pstep{1, r(1, xparse("", "SELECT 'B' AS b"), xsync)},
		pstep{0, r(1, xbind("", ""), xexec("", 0), xsync)},
		// A failed Parse, then a good one in the same pipeline.
		pstep{0, r(2, xparse("", "SELEC 4"), xsync, xparse("", "SELECT 5 AS five"), xsync)},
		pstep{0, r(1, xbind("", ""), xexec("", 0), xsync)},
		pstep{1, r(1, xparse("", "SELECT 'B' AS b"), xsync)},
		pstep{0, r(1, xbind("", ""), xexec("", 0), xsync)},
		// Failed in a failed transaction block (25P02): dropped all the same.
		pstep{0, r(1, xq("BEGIN"))},
		pstep{0, r(1, xq("SELECT 1/0"))},
		pstep{0, r(1, xparse("", "SELECT 6 AS six"), xsync)},
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{0, r(1, xbind("", ""), xexec("", 0), xsync)},
	)
}

// Requests pipelined behind DEALLOCATE ALL / DISCARD ALL run after it on
// the server. pgtide booked what they prepare when it read them, then
// forgot it all at the DEALLOCATE ALL's reply: the client's names (its
// next Bind or EXECUTE got 26000 from pgtide), and that the server has the
// statement (the next client to prepare the same text there got 42P05,
// and every one after it). A Bind sent under pgtide's name got the
// server's 26000 naming pgtide's statement.
func TestTxnXdPipelinedBehindDeallocateAll(t *testing.T) {
	xdSteps(t, "",
		pstep{0, r(2, xparse("s1", "SELECT 1 AS one"), xq("PREPARE q1 AS SELECT 2 AS two"), xsync)},
		pstep{0, r(2, xq("DEALLOCATE ALL"), xbind("", "s1"), xexec("", 0), xsync)},
		pstep{0, r(2, xq("DEALLOCATE ALL"), xparse("s1", "SELECT 3 AS three"), xbind("", "s1"), xexec("", 0), xsync)},
		pstep{0, r(1, xbind("", "s1"), xexec("", 0), xsync)},
		pstep{0, r(2, xparse("", "DEALLOCATE ALL"), xbind("", ""), xexec("", 0), xsync,
			xparse("s2", "SELECT 6 AS six"), xbind("", "s2"), xexec("", 0), xsync)},
		pstep{1, r(1, xparse("t6", "SELECT 6 AS six"), xbind("", "t6"), xexec("", 0), xsync)},
		pstep{0, r(1, xbind("", "s2"), xexec("", 0), xsync)},
		pstep{0, r(3, xq("DISCARD ALL"), xq("PREPARE q1 AS SELECT 5 AS five"), xq("EXECUTE q1"))},
		pstep{0, r(1, xq("EXECUTE q1"))},
		pstep{0, r(2, xq("DISCARD ALL; SELECT 1"), xq("EXECUTE q1"))}, // refused: q1 stays
		pstep{0, r(1, xq("EXECUTE q1"))},
	)
}

// Transaction-scoped state that must not outlive its transaction nor pin
// the server (with pool_size 1 a pin would keep client B waiting): cursors
// without HOLD, ON COMMIT DROP temporary tables, transaction-level advisory
// locks, LOCK, SET LOCAL, and a SET rolled back with its implicit
// transaction.
func TestTxnXdTransactionScopedState(t *testing.T) {
	xdSteps(t, "DROP TABLE IF EXISTS xd_scoped; CREATE TABLE xd_scoped (a int); INSERT INTO xd_scoped SELECT generate_series(1,5)",
		pstep{0, r(1, xq("BEGIN; DECLARE c CURSOR FOR SELECT a FROM xd_scoped ORDER BY a"))},
		pstep{0, r(1, xq("FETCH 2 FROM c"))},
		pstep{0, r(1, xparse("", "FETCH 2 FROM c"), xbind("", ""), xexec("", 0), xsync)},
		pstep{0, r(1, xq("COMMIT"))},
		pstep{1, r(1, xq("FETCH 1 FROM c"))},
		pstep{0, r(1, xq("BEGIN; CREATE TEMP TABLE xd_tmp (a int) ON COMMIT DROP; INSERT INTO xd_tmp VALUES (1); SELECT pg_advisory_xact_lock(4242); LOCK xd_scoped IN SHARE MODE; SET LOCAL work_mem = '3333kB'; COMMIT"))},
		pstep{1, r(1, xq("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'; SHOW work_mem; SELECT to_regclass('pg_temp.xd_tmp') IS NULL AS gone"))},
		pstep{0, r(1, xparse("", "SET work_mem = '4444kB'"), xbind("", ""), xexec("", 0), xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0), xsync)},
		pstep{0, r(1, xq("SHOW work_mem"))},
		pstep{1, r(1, xq("SHOW work_mem"))},
		pstep{0, r(1, xq("SET work_mem = '5555kB'; SELECT 1/0"))},
		pstep{0, r(1, xq("SHOW work_mem"))},
		pstep{0, r(1, xq("BEGIN; SET work_mem = '6666kB'; SAVEPOINT a; SET work_mem = '7777kB'; ROLLBACK TO a; COMMIT"))},
		pstep{1, r(1, xq("SHOW work_mem"))},
		pstep{0, r(1, xq("SHOW work_mem"))},
	)
}

// A named Parse skipped after an error, then a Bind and a Describe of its
// name pipelined behind the Sync: PostgreSQL answers 26000 naming the
// client's statement. pgtide had sent them under its own name, and the
// server's 26000 reached the client naming "pgtide_<n>". (Found by
// TestTxnXFuzz.)
func TestTxnXdUseAfterSkippedParseNamesClientStmt(t *testing.T) {
	xdSteps(t, "",
		pstep{0, r(2, xdescP("nosuch"), xparse("s1", "SELECT 1 AS one"), xsync, xbind("", "s1"), xexec("", 0), xsync)},
		pstep{0, r(2, xdescP("nosuch"), xparse("s2", "SELECT 2 AS two"), xsync, xdescS("s2"), xsync)},
		pstep{0, r(1, xparse("s1", "SELECT 3 AS three"), xbind("", "s1"), xexec("", 0), xsync)},
	)
}

// An error's position in a query text whose statement names pgtide
// rewrote (PREPARE, EXECUTE, DEALLOCATE name): PostgreSQL counts it in the
// client's text. pgtide passed on the server's, counted in its rewritten
// text, where "pgtide_<n>" is longer than the client's name. (Found by
// TestTxnXFuzz.)
func TestTxnXdErrorPositionAfterRewrittenName(t *testing.T) {
	xdSteps(t, "",
		pstep{0, r(1, xq("PREPARE q1(int) AS SELECT $1 * 5 AS k; SELECT * FROM xd_nosuch"))},
		pstep{0, r(1, xq("EXECUTE q1(2); EXECUTE q1 (3); SELECT nosuchcol FROM pg_class"))},
		pstep{0, r(1, xq("EXECUTE q1 q1"))},
		pstep{0, r(1, xparse("", "EXECUTE q1 q1"), xsync)},
		pstep{1, r(1, xq("SELECT 1"))},
		pstep{0, r(1, xq("DEALLOCATE q1; SELECT 1 +"))},
		pstep{0, r(1, xq("PREPARE \"qé\" AS SELECT 1; EXECUTE \"qé\"; SELECT 'é' + "))},
	)
}

// An EXECUTE of a SQL-prepared statement the server lacks (another client
// ran DISCARD ALL there), pipelined behind a Query that fails the
// transaction: pgtide prepares the statement again first, in a batch of
// its own that fails with 25P02 too. PostgreSQL sends one 25P02 for the
// EXECUTE; the client got two. (Found by TestTxnXFuzz.)
func TestTxnXdReprepareInFailedTxnOneError(t *testing.T) {
	xdSteps(t, "",
		pstep{0, r(1, xq("PREPARE q3 AS SELECT 3 AS three"))},
		pstep{1, r(1, xq("DISCARD ALL"))},
		pstep{0, r(2, xq("BEGIN; SELECT 1/0"), xq("EXECUTE q3"))},
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{0, r(1, xq("EXECUTE q3"))},
		pstep{1, r(1, xq("DISCARD ALL"))},
		pstep{0, r(3, xq("BEGIN"), xq("SELECT 1/0"), xq("EXECUTE q3; SELECT 1"))},
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{0, r(1, xq("EXECUTE q3"))},
	)
}

// A SQL PREPARE run by an unnamed Parse, Bind and Execute sent with Flush,
// its Sync sent only after the reply: PostgreSQL has the statement. pgtide
// saw its PREPARE tag before the Sync was queued, had nothing to confirm
// it against, and took the name back at the Sync's ReadyForQuery: the
// client's EXECUTE got 26000 and a second PREPARE of the name ran where
// PostgreSQL answers 42P05. DEALLOCATE the same way. (Found by
// TestTxnXFuzz, seed 8012.)
func TestTxnXdSQLPrepareConfirmedBeforeSync(t *testing.T) {
	xdSteps(t, "",
		pstep{0, ru("CommandComplete", xparse("", "PREPARE q1 AS SELECT 1 AS one"), xbind("", ""), xexec("", 0), xflush)},
		pstep{0, r(1, xsync)},
		pstep{0, r(1, xq("PREPARE q1 AS SELECT 2 AS two"))},
		pstep{0, r(1, xq("EXECUTE q1"))},
		pstep{1, r(1, xq("DISCARD ALL"))},
		pstep{0, r(1, xq("EXECUTE q1"))},
		pstep{0, ru("CommandComplete", xparse("", "DEALLOCATE q1"), xbind("", ""), xexec("", 0), xflush)},
		pstep{0, r(1, xsync)},
		pstep{0, r(1, xq("EXECUTE q1"))},
		pstep{0, r(1, xq("PREPARE q1 AS SELECT 3 AS three; EXECUTE q1"))},
	)
}

// DEALLOCATE ALL (or DISCARD ALL) and a SQL PREPARE behind it, both run by
// unnamed Parses in one batch sent with Flush: PostgreSQL has the new
// statement. At the DEALLOCATE ALL's reply pgtide forgot every name and
// booked again what the requests queued behind it prepare, but not the
// PREPAREs still waiting for the batch's Sync, which had not come: the
// client's EXECUTE got 26000 from pgtide. (Found reading forgetAllLocked
// while analysing TestTxnXFuzz seed 8012.)
func TestTxnXdSQLPrepareFlushedBehindDeallocateAll(t *testing.T) {
	xdSteps(t, "",
		pstep{0, r(1, xq("PREPARE q0 AS SELECT 0 AS zero"))},
		pstep{0, ru("CommandComplete PREPARE", xparse("", "DEALLOCATE ALL"), xbind("", ""), xexec("", 0),
			xparse("", "PREPARE q1 AS SELECT 2 AS two"), xbind("", ""), xexec("", 0), xflush)},
		pstep{0, r(1, xsync)},
		pstep{0, r(1, xq("EXECUTE q1"))},
		pstep{1, r(1, xq("DISCARD ALL"))},
		pstep{0, r(1, xq("EXECUTE q1"))},
		pstep{0, ru("CommandComplete PREPARE", xparse("", "DISCARD ALL"), xbind("", ""), xexec("", 0),
			xparse("", "PREPARE q2 AS SELECT 3 AS three"), xbind("", ""), xexec("", 0), xflush)},
		pstep{0, r(1, xsync)},
		pstep{0, r(1, xq("EXECUTE q2"))},
		pstep{0, r(1, xq("EXECUTE q0"))},
	)
}

// Two names for one statement text: a server error about the statement
// a Bind names (wrong parameter count) must name the statement the client
// bound. pgtide renamed pgtide's name to whichever of the client's names
// for it came first in a map walk. (Found by TestTxnXFuzz, seed 12252.)
func TestTxnXdErrorNamesBoundStmtOfTwo(t *testing.T) {
	steps := []pstep{{0, r(1, xparse("s3", "SELECT 1 AS one"), xparse("s2", "SELECT 1 AS one"), xsync)}}
	for range 6 { // map order is random: each round had even odds
		steps = append(steps,
			pstep{0, r(1, xbind("", "s2", "1"), xexec("", 0), xsync)},
			pstep{0, r(1, xbind("", "s3", "1"), xexec("", 0), xsync)},
			pstep{0, r(1, xdescS("s2"), xbind("", "s2", "1"), xsync)})
	}
	xdSteps(t, "", steps...)
}

// A PREPARE of a name the client has (PostgreSQL: 42P05), with a
// DEALLOCATE or Close of the name pipelined behind it: pgtide let the
// server answer the PREPARE about its own statement, and renamed the
// server's error by the client's names, but the DEALLOCATE or Close had
// already taken the name when pgtide read it: the client saw 42P05 naming
// "pgtide_<n>". (Found by TestTxnXFuzz, seed 12377.)
func TestTxnXdDuplicatePrepareBehindDeallocateNamesClientStmt(t *testing.T) {
	xdSteps(t, "",
		pstep{0, r(1, xq("PREPARE q1 AS SELECT 1 AS one"))},
		pstep{0, r(1, xparse("", "PREPARE q1 AS SELECT 2 AS two"), xbind("", ""), xexec("", 0), xparse("", "DEALLOCATE q1"), xsync)},
		pstep{0, r(1, xq("EXECUTE q1"))},
		pstep{0, r(2, xq("PREPARE q1 AS SELECT 3 AS three"), xq("DEALLOCATE q1"))},
		pstep{0, r(1, xq("EXECUTE q1"))},
		pstep{0, r(1, xparse("s1", "SELECT 4 AS four"), xsync)},
		pstep{0, r(2, xq("PREPARE s1 AS SELECT 5 AS five"), xcloseS("s1"), xsync)},
		pstep{0, r(1, xbind("", "s1"), xexec("", 0), xsync)},
	)
}

// A named Parse that fails (a syntax error, or 25P02 behind a Query that
// found the transaction failed), with a Close of its name behind it in the
// same batch: PostgreSQL creates nothing and skips the Close. pgtide took
// the Parse's booking back first, then undid the skipped Close, which put
// the name back: the client's next Parse of it got 42P05 and a Bind went
// to a statement PostgreSQL never made. (Found by TestTxnXFuzz, seed 30113.)
func TestTxnXdFailedParseThenCloseLeavesNoName(t *testing.T) {
	xdSteps(t, "",
		pstep{0, r(1, xparse("s1", "SELEC 1"), xcloseS("s1"), xsync)},
		pstep{0, r(1, xparse("s1", "SELECT 1 AS one"), xbind("", "s1"), xexec("", 0), xsync)},
		pstep{0, r(1, xq("BEGIN"))},
		pstep{0, r(1, xq("SELECT 1/0"))},
		pstep{0, r(2, xq("SELECT 1"), xparse("s2", "SELECT 2 AS two"), xcloseS("s2"), xsync)},
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{0, r(1, xparse("s2", "SELECT 3 AS three"), xbind("", "s2"), xexec("", 0), xsync)},
	)
}
