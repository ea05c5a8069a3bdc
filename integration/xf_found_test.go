package integration

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// A PREPARE in an unnamed Parse whose Execute the server answers after a
// Flush, before the client sent that batch's Sync, must be kept: the client
// holds the statement, as it does straight on PostgreSQL.
func TestSQLPrepareAfterFlush(t *testing.T) {
	steps := []xfStep{
		{0, []pgproto3.FrontendMessage{xparse("", "PREPARE q1 AS SELECT 'ext' AS q1"), xbind("", ""), xexec("", 0), xflush}},
		{0, []pgproto3.FrontendMessage{xsync}},
		{0, []pgproto3.FrontendMessage{xq("EXECUTE q1")}},
		{0, []pgproto3.FrontendMessage{xparse("", "DEALLOCATE q1"), xbind("", ""), xexec("", 0), xflush}},
		{0, []pgproto3.FrontendMessage{xsync}},
		{0, []pgproto3.FrontendMessage{xq("PREPARE q1 AS SELECT 'again' AS q1; EXECUTE q1")}},
	}
	xfCompareModes(t, steps)
}

// An error about a statement the client prepared under two names with the
// same text names the one it bound, as PostgreSQL's does.
func TestSameTextTwoNamesError(t *testing.T) {
	const q = "SELECT count(*) AS n FROM xf_c"
	steps := []xfStep{
		{0, []pgproto3.FrontendMessage{xparse("s1", q), xparse("s2", q), xsync}},
		{0, []pgproto3.FrontendMessage{xbind("", "s1", "7"), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xbind("", "s2", "7"), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xdescS("s1"), xbind("p1", "s1", "7"), xsync}},
	}
	xfCompareModes(t, steps)
}

// PREPARE then DEALLOCATE of one name in unnamed Parses that the server
// skips (an error came first) leave the client without that name, as on
// PostgreSQL; DEALLOCATE then PREPARE leave it the statement it had.
func TestSQLPrepareDeallocateSkipped(t *testing.T) {
	steps := []xfStep{
		{0, []pgproto3.FrontendMessage{xdescP("nosuch"), xparse("", "PREPARE q1 AS SELECT 'ext' AS q1"), xparse("", "DEALLOCATE q1"), xsync}},
		{0, []pgproto3.FrontendMessage{xq("PREPARE q1 AS SELECT 'a9' AS k; EXECUTE q1")}},
		{0, []pgproto3.FrontendMessage{xdescP("nosuch"), xparse("", "DEALLOCATE q1"), xparse("", "PREPARE q1 AS SELECT 'new' AS q1"), xsync}},
		{0, []pgproto3.FrontendMessage{xq("EXECUTE q1")}},
	}
	xfCompareModes(t, steps)
}

// A DEALLOCATE of a name whose PREPARE the server never ran (parsed in an
// unnamed Parse, replaced before it was executed) fails naming the
// client's statement, not pgtide's.
func TestSQLDeallocateUnranPrepareError(t *testing.T) {
	steps := []xfStep{
		{0, []pgproto3.FrontendMessage{xparse("", "PREPARE q1 AS SELECT 'ext' AS q1"), xparse("", "DEALLOCATE q1"), xbind("", ""), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xq("EXECUTE q1")}},
	}
	xfCompareModes(t, steps)
}

// An EXECUTE or DEALLOCATE behind a DEALLOCATE ALL in one simple Query, or
// one batch, fails naming the client's statement, not pgtide's.
func TestSQLExecuteAfterDeallocateAllError(t *testing.T) {
	steps := []xfStep{
		{0, []pgproto3.FrontendMessage{xq("PREPARE q3 AS SELECT 'a7' AS k")}},
		{0, []pgproto3.FrontendMessage{xq("DEALLOCATE ALL; DEALLOCATE ALL; EXECUTE q3")}},
		{0, []pgproto3.FrontendMessage{xq("PREPARE q3 AS SELECT 'a8' AS k")}},
		{0, []pgproto3.FrontendMessage{xq("DEALLOCATE ALL; EXECUTE q3")}},
		{0, []pgproto3.FrontendMessage{xq("PREPARE q3 AS SELECT 'a9' AS k")}},
		{0, []pgproto3.FrontendMessage{xparse("", "DEALLOCATE ALL"), xbind("", ""), xexec("", 0),
			xparse("", "EXECUTE q3"), xbind("", ""), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xq("PREPARE q3 AS SELECT 'a10' AS k")}},
		{0, []pgproto3.FrontendMessage{xq("DEALLOCATE ALL; DEALLOCATE q3")}},
	}
	xfCompareModes(t, steps)
}

// A Close the server skipped (an error came first) of a statement that a
// DISCARD ALL ahead of it in the same batch had dropped leaves the name
// dropped, as on PostgreSQL: pgtide gave the name back (the undo of a
// skipped Close), and a later Bind of it ran the DISCARD ALL again where
// PostgreSQL answers 26000. Found by the random tester (seed 700027).
func TestSkippedCloseAfterDiscardAll(t *testing.T) {
	steps := []xfStep{
		{0, []pgproto3.FrontendMessage{xparse("s2", "DISCARD ALL"), xbind("", "s2"), xexec("", 2),
			xparse("s1", "COMMIT"), xbind("", "s1", "1"), xcloseS("s2"), xsync}},
		{0, []pgproto3.FrontendMessage{xbind("", "s2"), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xdescS("s1"), xsync}},
	}
	xfCompareModes(t, steps)
}

// xfCompareModes runs steps against PostgreSQL and through pgtide (pool
// size 1) in transaction and in statement mode, and compares the replies.
func xfCompareModes(t *testing.T, steps []xfStep) {
	t.Helper()
	xfCompareIn(t, steps, xfTxn, xfStatement)
}

// xfCompareIn is xfCompareModes in the given modes.
func xfCompareIn(t *testing.T, steps []xfStep, modes ...xfMode) {
	t.Helper()
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, func(c *tideConf, db *dbConf) {
				c.PoolMode, db.PoolMode, db.PoolSize = string(mode), string(mode), 1
			})
			want, _ := xfRun(t, e.DirectURL(), "", steps, mode)
			got, _ := xfRun(t, e.URL(), "", steps, mode)
			if !xequal(want, got) {
				t.Errorf("pgtide's replies differ from PostgreSQL's (- PostgreSQL only, + pgtide only):\n%s", xdiff(want, got))
			}
		})
	}
}

// A Close of a statement name the client does not have, then Flush, inside
// a failed transaction block, is answered at the Flush, as PostgreSQL
// answers it. Found by the random tester (seed 700112): pgtide sent nothing
// and the client waited for good.
func TestCloseUnknownFlushInFailedBlock(t *testing.T) {
	steps := []xfStep{
		{0, []pgproto3.FrontendMessage{xq("BEGIN")}},
		{0, []pgproto3.FrontendMessage{xq("SELECT 1/0")}},
		{0, []pgproto3.FrontendMessage{xcloseS("s2"), xflush}},
		{0, []pgproto3.FrontendMessage{xsync}},
		{0, []pgproto3.FrontendMessage{xq("ROLLBACK")}},
		// The same in a transaction that did not fail, of a statement the
		// client has, then of the one it just closed.
		{0, []pgproto3.FrontendMessage{xq("BEGIN")}},
		{0, []pgproto3.FrontendMessage{xparse("s1", "SELECT 1 AS one"), xsync}},
		{0, []pgproto3.FrontendMessage{xcloseS("s1"), xflush}},
		{0, []pgproto3.FrontendMessage{xcloseS("s1"), xflush}},
		{0, []pgproto3.FrontendMessage{xbind("", "s1"), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xq("COMMIT")}},
	}
	xfCompareIn(t, steps, xfTxn) // statement mode has no transaction blocks
}

// Statement names used behind a DEALLOCATE ALL or DISCARD ALL that the
// server has not answered yet resolve as PostgreSQL resolves them, after it
// ran: a Parse of a name it dropped succeeds, a Bind or Describe of one
// fails with 26000, a second Parse of a name made again fails with 42P05.
// Before, pgtide decided when it read them, as if the drop had not run: a
// Parse was refused with 42P05, and a Bind ran the dropped statement. Found
// by the random tester (seeds 701628, 703651, 702572).
func TestNamesBehindPendingDrop(t *testing.T) {
	steps := []xfStep{
		// A named statement that runs DEALLOCATE ALL, then a Parse of its own name.
		{0, []pgproto3.FrontendMessage{xparse("s2", "DEALLOCATE ALL"), xbind("", "s2"), xexec("", 1), xparse("s2", "SELECT 2 AS two"), xsync}},
		{0, []pgproto3.FrontendMessage{xbind("", "s2"), xexec("", 0), xsync}},
		// DISCARD ALL in an unnamed statement, then two Parses of one name.
		{0, []pgproto3.FrontendMessage{xparse("s3", "SELECT 3 AS three"), xsync}},
		{0, []pgproto3.FrontendMessage{xparse("", "DISCARD ALL"), xbind("", ""), xexec("", 0),
			xparse("s3", "SELECT 33 AS n"), xparse("s3", "SELECT 333 AS n"), xsync}},
		{0, []pgproto3.FrontendMessage{xbind("", "s3"), xexec("", 0), xsync}},
		// A Bind and a Describe of a statement behind a DEALLOCATE ALL: 26000.
		{0, []pgproto3.FrontendMessage{xparse("s1", "SELECT 1 AS one"), xsync}},
		{0, []pgproto3.FrontendMessage{xparse("d", "DEALLOCATE ALL"), xbind("", "d"), xexec("", 0), xdescS("s1"), xsync}},
		{0, []pgproto3.FrontendMessage{xparse("s1", "SELECT 1 AS one"), xsync}},
		{0, []pgproto3.FrontendMessage{xparse("", "DEALLOCATE ALL"), xbind("", ""), xexec("", 0), xbind("", "s1"), xexec("", 0), xsync}},
		// The same behind a simple Query pipelined ahead, and behind an
		// open extended batch (no Sync yet: pgtide flushes to get the reply).
		{0, []pgproto3.FrontendMessage{xparse("s4", "SELECT 4 AS four"), xsync}},
		{0, []pgproto3.FrontendMessage{xq("DEALLOCATE ALL"), xparse("s4", "SELECT 44 AS n"), xbind("", "s4"), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xparse("", "DISCARD ALL"), xbind("", ""), xexec("", 0), xflush}},
		{0, []pgproto3.FrontendMessage{xparse("s4", "SELECT 444 AS n"), xbind("", "s4"), xexec("", 0), xsync}},
		// A DEALLOCATE ALL that fails leaves the names: the Parse behind it
		// is skipped, and the name still holds its statement.
		{0, []pgproto3.FrontendMessage{xq("BEGIN")}},
		{0, []pgproto3.FrontendMessage{xq("SELECT 1/0")}},
		{0, []pgproto3.FrontendMessage{xq("DEALLOCATE ALL"), xparse("s4", "SELECT 4444 AS n"), xsync}},
		{0, []pgproto3.FrontendMessage{xq("ROLLBACK")}},
		{0, []pgproto3.FrontendMessage{xbind("", "s4"), xexec("", 0), xsync}},
	}
	xfCompareIn(t, steps, xfTxn)
	xfCompareIn(t, steps[:13], xfStatement) // statement mode has no transaction blocks
}

// A SET in a simple query whose ReadyForQuery comes while a reply pgtide
// gives itself is still queued behind it (a Close of the unnamed statement,
// pipelined with Flush) stays with its client: the next client of the
// server sees the default. Before, the server went back to the pool when
// that reply was written, without the check that carries the setting to
// the client and resets the server: the next client got work_mem 1320kB.
// Found by the random tester in statement mode (seed 730462).
func TestSetBeforeQueuedFakeStaysWithClient(t *testing.T) {
	steps := []xfStep{
		{1, []pgproto3.FrontendMessage{xq("SET work_mem = '1320kB'; SELECT 9 AS n; PREPARE q2 AS SELECT 'b9' AS k"), xcloseS(""), xflush}},
		{1, []pgproto3.FrontendMessage{xsync}},
		{0, []pgproto3.FrontendMessage{xq("SELECT current_setting('work_mem') AS wm")}},
		{1, []pgproto3.FrontendMessage{xq("SELECT current_setting('work_mem') AS wm")}},
	}
	xfCompareModes(t, steps)
}

// A named statement whose text is EXECUTE of another runs the statement the
// name has when it is described or run, as PostgreSQL looks it up then: one
// prepared after the Parse, dropped and prepared again, or dropped (26000).
// Found by the random tester (seeds 750052, 750333, 750345): pgtide bound
// the name when it read the Parse.
func TestNamedExecuteLooksUpAtUse(t *testing.T) {
	steps := []xfStep{
		{0, []pgproto3.FrontendMessage{xparse("s1", "EXECUTE q1"), xsync}},
		{0, []pgproto3.FrontendMessage{xdescS("s1"), xsync}},
		{0, []pgproto3.FrontendMessage{xq("PREPARE q1 AS SELECT 1 AS a")}},
		{0, []pgproto3.FrontendMessage{xdescS("s1"), xbind("", "s1"), xexec("", 0), xsync}},
		{1, []pgproto3.FrontendMessage{xq("SELECT 'b' AS who")}},
		{0, []pgproto3.FrontendMessage{xq("DEALLOCATE q1; PREPARE q1 AS SELECT 'two' AS b")}},
		{0, []pgproto3.FrontendMessage{xdescS("s1"), xbind("", "s1"), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xparse("q2", "SELECT $1::int * 3 AS k"), xparse("s2", "EXECUTE q2(4)"), xbind("", "s2"), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xcloseS("q2"), xparse("q2", "SELECT $1::int * 5 AS k"), xbind("", "s2"), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xq("DEALLOCATE q1")}},
		{0, []pgproto3.FrontendMessage{xbind("", "s1"), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xq("EXECUTE s2")}},
	}
	xfCompareModes(t, steps)
}

// A Close of a statement that the server skips (an error came first, up to
// that batch's Sync) leaves the statement there, so a Parse of the same name
// pipelined behind the Sync gets 42P05 and a Bind runs the old statement,
// as PostgreSQL answers. pgtide took the name as gone when it read the Close.
func TestSkippedCloseThenSameName(t *testing.T) {
	steps := []xfStep{
		{0, []pgproto3.FrontendMessage{xparse("s1", "SELECT 1 AS a"), xsync}},
		{0, []pgproto3.FrontendMessage{xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0), xcloseS("s1"), xsync,
			xparse("s1", "SELECT 2 AS b"), xbind("", "s1"), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xbind("", "s1"), xexec("", 0), xsync}},
		{1, []pgproto3.FrontendMessage{xq("SELECT 'b' AS who")}},
		{0, []pgproto3.FrontendMessage{xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0), xcloseS("s1"), xsync,
			xbind("", "s1"), xexec("", 0), xdescS("s1"), xsync}},
		// Not skipped: the name is gone, and a Parse of it is a new statement.
		{0, []pgproto3.FrontendMessage{xparse("", "SELECT 1"), xbind("", ""), xexec("", 0), xcloseS("s1"), xsync,
			xparse("s1", "SELECT 3 AS c"), xbind("", "s1"), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xcloseS("s1"), xparse("s1", "SELECT 4 AS d"), xbind("", "s1"), xexec("", 0), xsync}},
	}
	xfCompareModes(t, steps)
}

// A failed transaction block ended (or rolled back to a savepoint) by an
// Execute, with no Sync yet: a named Parse the client sends then is not in
// a failed block. pgtide, still reading the last ReadyForQuery's 'E',
// answered 25P02 where PostgreSQL answers 42P05 or parses it (random
// tester, seed 710691).
func TestParseAfterExecuteEndsFailedBlock(t *testing.T) {
	steps := []xfStep{
		{0, []pgproto3.FrontendMessage{xparse("s1", "SELECT 1 AS a"), xsync}},
		{0, []pgproto3.FrontendMessage{xq("BEGIN")}},
		{0, []pgproto3.FrontendMessage{xq("SELECT 1/0")}},
		{0, []pgproto3.FrontendMessage{xparse("", "COMMIT"), xbind("", ""), xexec("", 0), xflush}},
		{0, []pgproto3.FrontendMessage{xparse("s1", "SELECT 2 AS b"), xflush}},
		{0, []pgproto3.FrontendMessage{xsync}},
		{0, []pgproto3.FrontendMessage{xq("BEGIN; SAVEPOINT sp")}},
		{0, []pgproto3.FrontendMessage{xq("SELECT 1/0")}},
		{0, []pgproto3.FrontendMessage{xparse("", "ROLLBACK TO SAVEPOINT sp"), xbind("", ""), xexec("", 0), xflush}},
		{0, []pgproto3.FrontendMessage{xparse("s2", "SELECT 5 AS e"), xbind("", "s2"), xexec("", 0), xflush}},
		{0, []pgproto3.FrontendMessage{xsync}},
		{0, []pgproto3.FrontendMessage{xq("COMMIT")}},
		{0, []pgproto3.FrontendMessage{xbind("", "s2"), xexec("", 0), xsync}},
	}
	xfCompareIn(t, steps, xfTxn) // statement mode has no transaction blocks
}

// A named statement whose text EXECUTEs another, bound behind a DEALLOCATE
// ALL that a pipelined COPY keeps pgtide from waiting for: the server's
// 26000 names the client's statement, never pgtide's (random tester, seed
// 710740: "pgtide_<n>" reached the client).
func TestExecuteBehindDeallocateAllNamesClientStmt(t *testing.T) {
	steps := []xfStep{
		{0, []pgproto3.FrontendMessage{xq("PREPARE q1 AS SELECT 'a7' AS k")}},
		{0, []pgproto3.FrontendMessage{xparse("s1", "EXECUTE q1"), xbind("", "s1"), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xparse("", "COPY xf_c FROM STDIN"), xbind("", ""), xexec("", 0), xcopy("39\ta39\n"), xcopyDone,
			xparse("", "DEALLOCATE ALL"), xbind("", ""), xexec("", 1), xparse("s2", "EXECUTE q1"), xbind("", "s2"), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xbind("", "s2"), xexec("", 2), xsync}},
		{0, []pgproto3.FrontendMessage{xbind("", "s1"), xexec("", 2), xsync}},
	}
	xfCompareIn(t, steps, xfTxn)
}

// A PREPARE in an unnamed Parse that is never executed (Sync, no Execute),
// then the same PREPARE again, executed, in the same pipeline: PostgreSQL
// prepares the name the second time. pgtide had booked it at the first
// Parse, took the second for a duplicate (PostgreSQL's 42P05, left to the
// server) and dropped the name when the first turned out not to have run:
// the client's EXECUTE got 26000 (random tester, seed 810002).
func TestPrepareAfterUnexecutedPrepare(t *testing.T) {
	p := xparse("", "PREPARE q1 AS SELECT 'ext' AS q1")
	steps := []xfStep{
		{0, []pgproto3.FrontendMessage{p, xflush}},
		{0, []pgproto3.FrontendMessage{xflush, xsync, p, xbind("", ""), xexec("", 0), xsync}},
		{0, []pgproto3.FrontendMessage{xq("EXECUTE q1")}},
		{1, []pgproto3.FrontendMessage{xq("SELECT 'b' AS who")}},
		{0, []pgproto3.FrontendMessage{xq("PREPARE q2 AS SELECT 1/0; EXECUTE q2"), xq("PREPARE q2 AS SELECT 2 AS two")}},
		{0, []pgproto3.FrontendMessage{xq("EXECUTE q2; EXECUTE q1")}},
	}
	xfCompareModes(t, steps)
}
