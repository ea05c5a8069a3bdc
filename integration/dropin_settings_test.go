package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestDatabaseServerLifetime: a [databases.NAME] server_lifetime retires
// that database's server connections at its own lifetime, while another
// database (the same PostgreSQL database under a second name) keeps the
// global server_lifetime and its server.
func TestDatabaseServerLifetime(t *testing.T) {
	var global string
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.Extra = "server_lifetime = \"1h\"\n"
		db.PoolSize = 1
		db.Extra = "server_lifetime = \"300ms\"\n"
		global = db.Name + "_global"
		c.Databases = append(c.Databases, dbConf{Name: global, DBName: db.Name, PoolSize: 1, Extra: "server_lifetime = \"\"\n"})
	})
	short := connect(t, e.URL())
	long := connect(t, e.tide.ConnString(global, e.User, e.Pass))
	mon := super(t, e.pg, e.DB)

	pidShort := queryInt(t, short, "SELECT pg_backend_pid()")
	pidLong := queryInt(t, long, "SELECT pg_backend_pid()")
	if pidShort == pidLong {
		t.Fatalf("both databases got backend %d: one pool?", pidShort)
	}
	// The short-lived database's server is retired and replaced.
	pgtest.WaitUntil(t, 20*time.Second, "a new server for the database with server_lifetime 300ms", func() bool {
		return queryInt(t, short, "SELECT pg_backend_pid()") != pidShort
	})
	pgtest.WaitUntil(t, 10*time.Second, "the retired backend to close", func() bool {
		return queryInt(t, mon, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pidShort) == 0
	})
	// The other database, on the global 1h, keeps its server.
	if got := queryInt(t, long, "SELECT pg_backend_pid()"); got != pidLong {
		t.Fatalf("database with the global server_lifetime moved from backend %d to %d", pidLong, got)
	}
	if n := queryInt(t, mon, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pidLong); n != 1 {
		t.Fatalf("backend %d of the global-lifetime database is gone", pidLong)
	}
}

// noticeConn connects with pgx through pgtide and records every notice.
type noticeConn struct {
	*pgx.Conn
	mu      sync.Mutex
	notices []*pgconn.Notice
}

func connectNotices(t *testing.T, url string) *noticeConn {
	t.Helper()
	nc := &noticeConn{}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		nc.mu.Lock()
		nc.notices = append(nc.notices, n)
		nc.mu.Unlock()
	}
	c, err := pgx.ConnectConfig(ctxT(t, 15*time.Second), cfg)
	if err != nil {
		t.Fatalf("connect %s: %v", redact(url), err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	nc.Conn = c
	return nc
}

func (nc *noticeConn) count() int {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	return len(nc.notices)
}

func (nc *noticeConn) all() []pgconn.Notice {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	out := make([]pgconn.Notice, len(nc.notices))
	for i, n := range nc.notices {
		out[i] = *n
	}
	return out
}

// TestQueryWaitNotify: with pool_size 1 and one client holding the server
// in a transaction, a second client's query waits; past query_wait_notify
// its driver gets one NOTICE (severity NOTICE, SQLSTATE 00000, PgBouncer's
// text) while the query still waits, and the query then completes. A second
// wait gets a notice of its own. After a reload to query_wait_notify = "0",
// a wait that runs into query_wait_timeout gets none.
func TestQueryWaitNotify(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.Extra = "query_wait_notify = \"200ms\"\nquery_wait_timeout = \"30s\"\n"
		db.PoolSize = 1
	})
	ctx := ctxT(t, 60*time.Second)
	holder := connect(t, e.URL())
	waiter := connectNotices(t, e.URL())

	waitOnce := func(round int) {
		t.Helper()
		tx, err := holder.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		before := waiter.count()
		done := make(chan error, 1)
		var got int
		go func() { done <- waiter.QueryRow(ctx, "SELECT 42").Scan(&got) }()
		// The notice arrives while the query still waits for the server.
		pgtest.WaitUntil(t, 20*time.Second, "the query_wait_notify NOTICE", func() bool {
			select {
			case err := <-done:
				t.Fatalf("round %d: the waiting query ended (%v, %d) before any notice", round, err, got)
			default:
			}
			return waiter.count() > before
		})
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil || got != 42 {
			t.Fatalf("round %d: waiting query: %d, %v", round, got, err)
		}
		ns := waiter.all()
		if len(ns) != before+1 {
			t.Fatalf("round %d: %d notices for one wait, want 1: %+v", round, len(ns)-before, ns[before:])
		}
		n := ns[before]
		if n.Severity != "NOTICE" || n.SeverityUnlocalized != "NOTICE" || n.Code != "00000" ||
			n.Message != "No server connection available in postgres backend, client being queued" {
			t.Fatalf("round %d: notice %+v", round, n)
		}
	}
	waitOnce(1)
	// A query that does not wait is not told anything.
	if v := queryInt(t, waiter.Conn, "SELECT 7"); v != 7 || waiter.count() != 1 {
		t.Fatalf("after a query that did not wait: %d, %d notices", v, waiter.count())
	}
	waitOnce(2) // once per wait, not once per session

	// Off: reloaded to "0" (live), with a short query_wait_timeout that
	// ends the wait well past the 200ms the notice came at before.
	conf := e.conf
	conf.Extra = "query_wait_notify = \"0\"\nquery_wait_timeout = \"1s\"\n"
	reloadTo(t, e, conf, "debug")
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	var got int
	err = waiter.QueryRow(ctx, "SELECT 42").Scan(&got)
	if sqlState(err) != "57014" {
		t.Fatalf("waiting with query_wait_timeout 1s: %v (SQLSTATE %q), want 57014", err, sqlState(err))
	}
	if n := waiter.count(); n != 2 {
		t.Fatalf("query_wait_notify \"0\": %d notices in all, want the 2 of before: %+v", n, waiter.all())
	}
}

// TestTransactionTimeout: a client whose transaction has been open longer
// than transaction_timeout is closed with FATAL 25P04, whether it sits idle
// inside the transaction or runs a long statement in it; what it did is not
// committed, no backend is left in the transaction or running the
// statement, and the next client (pool_size 1) gets a clean server. A client
// that stays connected outside a transaction all along, longer than the
// limit, is not touched.
func TestTransactionTimeout(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.Extra = "transaction_timeout = \"500ms\"\n"
		db.PoolSize = 1
	})
	ctx := ctxT(t, 90*time.Second)
	setup := connect(t, e.DirectURL())
	if _, err := setup.Exec(ctx, "CREATE TABLE txn_timeout (x int)"); err != nil {
		t.Fatal(err)
	}
	mon := super(t, e.pg, e.DB)
	// A transaction that ends in time is untouched; the client then
	// idles outside any transaction past the limit (the whole test).
	bystander := connect(t, e.URL())
	if err := pgx.BeginFunc(ctx, bystander, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "SELECT 1")
		return err
	}); err != nil {
		t.Fatalf("a short transaction: %v", err)
	}

	timedOut := func(t *testing.T, err error) {
		t.Helper()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "25P04" || pe.Severity != "FATAL" ||
			pe.Message != "terminating connection due to transaction timeout" {
			t.Fatalf("want FATAL 25P04 terminating connection due to transaction timeout, got %v", err)
		}
	}
	clean := func(t *testing.T, what string, x int) int64 {
		t.Helper()
		pgtest.WaitUntil(t, 15*time.Second, what+": no backend left in a transaction or running a statement", func() bool {
			return queryInt(t, mon, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()
				AND (xact_start IS NOT NULL OR state = 'active')`, e.DB) == 0
		})
		next := connect(t, e.URL())
		if n := queryInt(t, next, "SELECT count(*) FROM txn_timeout WHERE x = $1", x); n != 0 {
			t.Fatalf("%s: the timed-out transaction's row is committed", what)
		}
		if st := next.PgConn().TxStatus(); st != 'I' {
			t.Fatalf("%s: next client's TxStatus %q, want I", what, st)
		}
		pid := queryInt(t, next, "SELECT pg_backend_pid()")
		next.Close(ctx)
		return pid
	}

	t.Run("idle_in_transaction", func(t *testing.T) {
		c := connect(t, e.URL())
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO txn_timeout VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		var pid int64
		if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		// The client reads without sending anything: the FATAL comes to it.
		timedOut(t, c.PgConn().WaitForNotification(ctxT(t, 20*time.Second)))
		// Rolled back, not closed: the same server serves the next client.
		if got := clean(t, "idle", 1); got != pid {
			t.Fatalf("next client served by backend %d, want the rolled-back %d (pool_size 1)", got, pid)
		}
	})

	t.Run("running_statement", func(t *testing.T) {
		c := connect(t, e.URL())
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO txn_timeout VALUES (2)"); err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, "SELECT pg_sleep(60)")
		timedOut(t, err)
		clean(t, "running", 2)
	})

	t.Run("single_statement", func(t *testing.T) {
		// A statement outside BEGIN is a transaction of its own.
		c := connect(t, e.URL())
		_, err := c.Exec(ctx, "SELECT pg_sleep(60)")
		timedOut(t, err)
		clean(t, "single statement", 3)
	})

	if n := queryInt(t, bystander, "SELECT 1"); n != 1 {
		t.Fatalf("bystander: %d", n)
	}
}

// TestServerFastClose: in session mode with server_fast_close, RECONNECT
// closes an idle client together with its (retired) server at once, and a
// client inside a transaction when its transaction ends, not before: what
// it commits is committed. A new client gets a new server. With the
// setting off (reloaded to false), an idle session-mode client keeps its
// retired server until it leaves, as before.
func TestServerFastClose(t *testing.T) {
	admPass := "Adm-" + fmt.Sprint(time.Now().UnixNano())
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "session"
		c.Extra = "server_fast_close = true\nadmin_users = [\"adm\"]\n"
		c.Users["adm"] = admPass
	})
	e.secrets = append(e.secrets, admPass)
	ctx := ctxT(t, 60*time.Second)
	setup := connect(t, e.DirectURL())
	if _, err := setup.Exec(ctx, "CREATE TABLE fast_close (x int)"); err != nil {
		t.Fatal(err)
	}
	mon := super(t, e.pg, e.DB)
	adm := console(t, e.tide.ConnString("pgtide", "adm", admPass))
	backendGone := func(pid int64) func() bool {
		return func() bool {
			return queryInt(t, mon, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 0
		}
	}
	closed := func(t *testing.T, err error) {
		t.Helper()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57P01" || pe.Severity != "FATAL" ||
			pe.Message != "database configuration changed: server connection closed (server_fast_close)" {
			t.Fatalf("want FATAL 57P01 database configuration changed ... (server_fast_close), got %v", err)
		}
	}

	idle := connect(t, e.URL())
	pidIdle := queryInt(t, idle, "SELECT pg_backend_pid()")
	inTx := connect(t, e.URL())
	tx, err := inTx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO fast_close VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	var pidTx int64
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pidTx); err != nil {
		t.Fatal(err)
	}

	mustAdmin(t, adm, "RECONNECT "+e.DB)

	// Between transactions: closed at once, and its server with it.
	closed(t, idle.PgConn().WaitForNotification(ctxT(t, 20*time.Second)))
	pgtest.WaitUntil(t, 10*time.Second, "the idle client's retired server to close", backendGone(pidIdle))
	// Inside a transaction: it goes on, and commits.
	if _, err := tx.Exec(ctx, "INSERT INTO fast_close VALUES (2)"); err != nil {
		t.Fatalf("the transaction was cut short: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("COMMIT: %v", err)
	}
	closed(t, inTx.PgConn().WaitForNotification(ctxT(t, 20*time.Second)))
	pgtest.WaitUntil(t, 10*time.Second, "the transaction's retired server to close", backendGone(pidTx))
	next := connect(t, e.URL())
	if n := queryInt(t, next, "SELECT count(*) FROM fast_close"); n != 2 {
		t.Fatalf("%d rows committed, want the transaction's 2", n)
	}
	if pid := queryInt(t, next, "SELECT pg_backend_pid()"); pid == pidIdle || pid == pidTx {
		t.Fatalf("new client served by retired backend %d", pid)
	}

	// Off: the idle session-mode client keeps its server after RECONNECT.
	conf := e.conf
	conf.Extra = "server_fast_close = false\nadmin_users = [\"adm\"]\n"
	reloadTo(t, e, conf, "debug")
	before := queryInt(t, next, "SELECT pg_backend_pid()")
	mustAdmin(t, adm, "RECONNECT "+e.DB) // returns after any fast close was decided
	if after := queryInt(t, next, "SELECT pg_backend_pid()"); after != before {
		t.Fatalf("server_fast_close false: the session moved from backend %d to %d", before, after)
	}
}
