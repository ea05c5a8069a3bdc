package integration

// Prepared statements in transaction mode, differential: each scenario runs
// straight against PostgreSQL and through pgtide with pool_size 1, so that
// every client of pgtide gets the same server and what one client leaves on
// it is seen by the next; the replies must be the same. Each test here
// failed before the fix its comment names (docs/reliability.md).

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

type prepClient []xround

func prepEnv(t *testing.T, poolSize int, extra string) *env {
	t.Helper()
	return newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		db.PoolMode = "transaction"
		db.PoolSize = poolSize
		c.Extra += extra
	})
}

func prepRun(t *testing.T, e *env, clients ...prepClient) {
	t.Helper()
	var want, got []string
	for i, c := range clients {
		w := xrun(t, e.DirectURL(), "", xcase{rounds: c}, nil)
		g := xrun(t, e.URL(), "", xcase{rounds: c}, nil)
		want = append(append(want, "-- client "+string(rune('A'+i))), w...)
		got = append(append(got, "-- client "+string(rune('A'+i))), g...)
	}
	for _, l := range want {
		if strings.HasPrefix(l, "!!") {
			t.Fatalf("directly against PostgreSQL: %s\n%s", l, strings.Join(want, "\n"))
		}
	}
	if !xequal(want, got) {
		t.Errorf("pgtide's replies differ from PostgreSQL's (- PostgreSQL only, + pgtide only):\n%s", xdiff(want, got))
	}
}

// A named Parse that PostgreSQL skips (an earlier message of the same
// batch failed) must leave no statement behind: neither under the client's
// name nor in pgtide's idea of what the server holds.
func TestTxnPreparedParseSkippedAfterError(t *testing.T) {
	e := prepEnv(t, 1, "")
	prepRun(t, e,
		prepClient{
			r(1, xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0),
				xparse("s1", "SELECT 4242 AS v"), xbind("", "s1"), xexec("", 0), xsync),
			// PostgreSQL never created s1: preparing it now works.
			r(1, xparse("s1", "SELECT 4242 AS v"), xbind("", "s1"), xexec("", 0), xsync),
		},
		// Another client, same server, same text.
		prepClient{
			r(1, xparse("t1", "SELECT 4242 AS v"), xbind("", "t1"), xexec("", 0), xsync),
		},
	)
}

// Same, another client only: the first client's skipped Parse must not make
// pgtide believe the server holds the statement.
func TestTxnPreparedParseSkippedPoisonsNoServer(t *testing.T) {
	e := prepEnv(t, 1, "")
	prepRun(t, e,
		prepClient{
			r(1, xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0),
				xparse("s1", "SELECT 4343 AS v"), xsync),
		},
		prepClient{
			r(1, xparse("t1", "SELECT 4343 AS v"), xbind("", "t1"), xexec("", 0), xsync),
		},
	)
}

// prepConn is one raw client.
type prepConn struct {
	t    *testing.T
	conn net.Conn
	fe   *pgproto3.Frontend
}

func prepDial(t *testing.T, url string) *prepConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), xDeadline)
	defer cancel()
	pc, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if err := pc.SyncConn(ctx); err != nil {
		t.Fatal(err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	c := &prepConn{t: t, conn: hc.Conn, fe: pgproto3.NewFrontend(hc.Conn, hc.Conn)}
	t.Cleanup(func() {
		_, _ = c.conn.Write([]byte{'X', 0, 0, 0, 4})
		_ = c.conn.Close()
	})
	return c
}

// round sends rd and returns the rendered replies.
func (c *prepConn) round(rd xround) (got []string) {
	for _, m := range rd.msgs {
		c.fe.Send(m)
	}
	_ = c.conn.SetDeadline(time.Now().Add(xDeadline))
	if err := c.fe.Flush(); err != nil {
		return []string{"!! write: " + err.Error()}
	}
	rfq := 0
	for {
		m, err := c.fe.Receive()
		if err != nil {
			return append(got, "!! read: "+err.Error())
		}
		s := xrender(m)
		got = append(got, s)
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			rfq++
		}
		if rd.until != "" {
			if strings.HasPrefix(s, rd.until) {
				return got
			}
		} else if rfq >= rd.rfq {
			return got
		}
	}
}

// pstep is one round of one client (0, 1, ...), in order.
type pstep struct {
	c  int
	rd xround
}

func prepSteps(t *testing.T, e *env, nclients int, steps ...pstep) {
	t.Helper()
	run := func(url string) (out []string) {
		cs := make([]*prepConn, nclients)
		for i := range cs {
			cs[i] = prepDial(t, url)
		}
		for i, s := range steps {
			out = append(out, fmt.Sprintf("-- step %d client %c", i, 'A'+s.c))
			out = append(out, cs[s.c].round(s.rd)...)
		}
		for _, c := range cs {
			out = append(out, c.round(r(1, xq("SELECT 'end' AS sentinel")))...)
		}
		return out
	}
	want := run(e.DirectURL())
	for _, l := range want {
		if strings.HasPrefix(l, "!!") {
			t.Fatalf("directly against PostgreSQL: %s\n%s", l, strings.Join(want, "\n"))
		}
	}
	got := run(e.URL())
	if !xequal(want, got) {
		t.Errorf("pgtide's replies differ from PostgreSQL's (- PostgreSQL only, + pgtide only):\n%s", xdiff(want, got))
	}
}

// In a failed transaction, Binds of two statements the server lacks: pgtide
// prepares both again first; the first re-Parse fails (25P02), the second
// is skipped by the server, but pgtide books it as prepared.
func TestTxnPreparedReparseInFailedTxn(t *testing.T) {
	e := prepEnv(t, 1, "")
	prepSteps(t, e, 2,
		pstep{0, r(1, xparse("s1", "SELECT 6101 AS v"), xparse("s2", "SELECT 6102 AS v"), xsync)},
		// Another client empties the server (pgtide forgets what it had).
		pstep{1, r(1, xq("DISCARD ALL"))},
		pstep{0, r(1, xq("BEGIN"))},
		pstep{0, r(1, xq("SELECT 1/0"))},
		pstep{0, r(1, xbind("", "s1"), xexec("", 0), xbind("", "s2"), xexec("", 0), xsync)},
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{0, r(1, xbind("", "s2"), xexec("", 0), xsync)},
		pstep{0, r(1, xbind("", "s1"), xexec("", 0), xsync)},
	)
}

// Close of a statement that PostgreSQL skips (an earlier message of the
// batch failed): the statement still exists.
func TestTxnPreparedCloseSkippedAfterError(t *testing.T) {
	e := prepEnv(t, 1, "")
	prepSteps(t, e, 1,
		pstep{0, r(1, xparse("s1", "SELECT 6201 AS v"), xsync)},
		pstep{0, r(1, xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0), xcloseS("s1"), xsync)},
		pstep{0, r(1, xbind("", "s1"), xexec("", 0), xsync)},
	)
}

// A Parse in a failed transaction fails with 25P02 in PostgreSQL, even when
// pgtide's server already has the text.
func TestTxnPreparedParseInFailedTxn(t *testing.T) {
	e := prepEnv(t, 1, "")
	prepSteps(t, e, 1,
		pstep{0, r(1, xparse("s1", "SELECT 6301 AS v"), xsync)},
		pstep{0, r(1, xq("BEGIN"))},
		pstep{0, r(1, xq("SELECT 1/0"))},
		pstep{0, r(1, xparse("s2", "SELECT 6301 AS v"), xsync)},
		pstep{0, r(1, xq("ROLLBACK"))},
		pstep{0, r(1, xparse("s2", "SELECT 6301 AS v"), xbind("", "s2"), xexec("", 0), xsync)},
	)
}

// Eviction under max_prepared_statements in a batch the server skips after
// an error: the eviction's Close does not run, yet pgtide forgets the
// statement, and preparing it again later collides.
func TestTxnPreparedEvictSkippedAfterError(t *testing.T) {
	e := prepEnv(t, 1, "max_prepared_statements = 2\n")
	prepSteps(t, e, 1,
		pstep{0, r(1, xparse("a", "SELECT 6401 AS a"), xparse("b", "SELECT 6402 AS b"), xsync)},
		pstep{0, r(1, xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0), xparse("c", "SELECT 6403 AS c"), xsync)},
		pstep{0, r(1, xbind("", "a"), xexec("", 0), xsync)},
		pstep{0, r(1, xbind("", "b"), xexec("", 0), xsync)},
	)
}

// A named Parse that evicts (max_prepared_statements) after pass-through
// messages of the same batch (an Execute, an unnamed Parse): the
// eviction's Close must reach the server in its place, or its
// CloseComplete is matched against the wrong request.
func TestTxnPreparedEvictCloseOrder(t *testing.T) {
	e := prepEnv(t, 1, "max_prepared_statements = 1\n")
	prepSteps(t, e, 1,
		pstep{0, r(1, xparse("a", "SELECT 6501 AS a"), xsync)},
		pstep{0, r(1, xbind("", "a"), xexec("", 0),
			xparse("b", "SELECT 6502 AS b"), xbind("", "b"), xexec("", 0), xsync)},
		pstep{0, r(1, xbind("", "a"), xexec("", 0), xsync)},
	)
}

// SQL DEALLOCATE in a simple Query that PostgreSQL skips (an earlier
// extended message failed before the Sync): the statement still exists.
func TestTxnPreparedSQLDeallocateSkipped(t *testing.T) {
	e := prepEnv(t, 1, "")
	prepSteps(t, e, 1,
		pstep{0, r(1, xq("PREPARE p AS SELECT 6601 AS v"))},
		pstep{0, r(1, xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0), xq("DEALLOCATE p"), xsync)},
		pstep{0, r(1, xq("EXECUTE p"))},
	)
}

// Session state following the client: odd values, rollback, SET LOCAL,
// session characteristics; a second client on the same server sees none.
func TestTxnStateDifferential(t *testing.T) {
	e := prepEnv(t, 1, "")
	prepSteps(t, e, 2,
		pstep{0, r(1, xq(`SET search_path TO "we""ird", public`))},
		pstep{0, r(1, xq(`SET application_name = 'it''s \ odd'`))},
		pstep{1, r(1, xq(`SHOW search_path; SHOW application_name`))},
		pstep{0, r(1, xq(`SHOW search_path; SHOW application_name`))},
		pstep{0, r(1, xq(`BEGIN; SET statement_timeout = 4321; SET application_name = 'rolled'`))},
		pstep{0, r(1, xq(`ROLLBACK`))},
		pstep{0, r(1, xq(`SHOW statement_timeout; SHOW application_name`))},
		pstep{0, r(1, xq(`BEGIN; SET LOCAL work_mem = '1234kB'; SHOW work_mem; COMMIT`))},
		pstep{0, r(1, xq(`SHOW work_mem`))},
		pstep{0, r(1, xq(`SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE`))},
		pstep{1, r(1, xq(`BEGIN; SHOW transaction_isolation; COMMIT`))},
		pstep{0, r(1, xq(`BEGIN; SHOW transaction_isolation; COMMIT`))},
		pstep{0, r(1, xq(`SET my.var = 'a''b"c'`))},
		pstep{1, r(1, xq(`SELECT current_setting('my.var', true) IS NULL OR current_setting('my.var', true) = '' AS clean`))},
		pstep{0, r(1, xq(`SELECT current_setting('my.var')`))},
		pstep{0, r(1, xq(`SET intervalstyle = 'iso_8601'; SET datestyle = 'German, DMY'`))},
		pstep{1, r(1, xq(`SHOW intervalstyle; SHOW datestyle`))},
		pstep{0, r(1, xq(`SHOW intervalstyle; SHOW datestyle`))},
		pstep{0, r(1, xq(`RESET datestyle`))},
		pstep{0, r(1, xq(`SHOW datestyle`))},
	)
}

// Pipelines: a simple Query inside an open extended batch; errors with
// several Syncs in flight; Flush without Sync then more.
func TestTxnPipelinesDifferential(t *testing.T) {
	e := prepEnv(t, 1, "")
	prepSteps(t, e, 2,
		pstep{0, r(2, xparse("", "SELECT 6701"), xbind("", ""), xexec("", 0), xq("SELECT 6702"), xsync)},
		pstep{0, r(3, xparse("n1", "SELECT 6703 AS v"), xbind("", "n1"), xexec("", 0), xsync,
			xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0), xbind("", "n1"), xexec("", 0), xsync,
			xbind("", "n1"), xexec("", 0), xsync)},
		pstep{0, ru("ParseComplete", xparse("n2", "SELECT 6704 AS v"), xflush)},
		pstep{0, r(1, xbind("", "n2"), xexec("", 0), xsync)},
		pstep{0, r(2, xq("BEGIN"), xparse("n3", "SELECT 6706 AS v"), xbind("p", "n3"), xexec("p", 0), xsync, xq("COMMIT"))},
		pstep{1, r(1, xbind("", "n3"), xexec("", 0), xsync)},
	)
}

// An unnamed Parse that PostgreSQL skips (an earlier message failed): the
// server's unnamed statement is still the previous one, another client's.
func TestTxnPreparedUnnamedSkipped(t *testing.T) {
	e := prepEnv(t, 1, "")
	prepSteps(t, e, 2,
		pstep{0, r(1, xparse("", "SELECT 'A-only' AS a"), xbind("", ""), xexec("", 0), xsync)},
		pstep{1, r(1, xparse("bad", "SELEC"), xparse("", "SELECT 'B' AS b"), xsync)},
		pstep{1, r(1, xbind("", ""), xexec("", 0), xsync)},
	)
}

// Another client's Close of the unnamed statement destroys the server's
// unnamed statement, which pgtide still books as the first client's.
func TestTxnPreparedUnnamedClosedByOtherClient(t *testing.T) {
	e := prepEnv(t, 1, "")
	prepSteps(t, e, 2,
		pstep{0, r(1, xparse("", "SELECT 'A' AS a"), xsync)},
		pstep{1, r(1, xcloseS(""), xsync)},
		pstep{0, r(1, xbind("", ""), xexec("", 0), xsync)},
	)
}

// othersStatement starts two clients of one pool of size 1; client A
// prepares a statement with SQL PREPARE and client B finds pgtide's
// server-side name for it in pg_prepared_statements.
func othersStatement(t *testing.T) (ctx context.Context, b *pgconn.PgConn, name string) {
	e := prepEnv(t, 1, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	a, err := pgconn.Connect(ctx, e.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	b, err = pgconn.Connect(ctx, e.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	if _, err := a.Exec(ctx, "PREPARE secret AS SELECT 'A-only'::text").ReadAll(); err != nil {
		t.Fatal(err)
	}
	res, err := b.Exec(ctx, "SELECT name FROM pg_prepared_statements WHERE statement LIKE '%A-only%'").ReadAll()
	if err != nil || len(res) == 0 || len(res[0].Rows) == 0 {
		t.Fatalf("lookup: %v %v", err, res)
	}
	name = string(res[0].Rows[0][0])
	t.Logf("client B sees client A's statement as %q", name)
	return ctx, b, name
}

// A client can run another client's SQL-prepared statement by pgtide's
// server-side name (EXECUTE is not guarded as DEALLOCATE and Bind are).
func TestTxnPreparedExecuteOthersStatement(t *testing.T) {
	ctx, b, name := othersStatement(t)
	res, err := b.Exec(ctx, "EXECUTE "+name).ReadAll()
	if err == nil && len(res) > 0 && len(res[0].Rows) > 0 {
		t.Errorf("client B ran client A's statement %s: %q (PostgreSQL: 26000, it is not B's)", name, res[0].Rows[0][0])
	}
}

// The same through a named Parse whose text is EXECUTE of pgtide's name:
// the statement's text reached the server unchanged and ran client A's.
func TestTxnPreparedNamedExecuteOthersStatement(t *testing.T) {
	ctx, b, name := othersStatement(t)
	// PostgreSQL prepares an EXECUTE of a name it lacks (the name is
	// looked up when it runs).
	if _, err := b.Prepare(ctx, "peek", "EXECUTE "+name, nil); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	rr := b.ExecPrepared(ctx, "peek", nil, nil, nil).Read()
	if rr.Err == nil && len(rr.Rows) > 0 {
		t.Errorf("client B ran client A's statement %s through a named Parse: %q (PostgreSQL: 26000, it is not B's)", name, rr.Rows[0][0])
	}
}
