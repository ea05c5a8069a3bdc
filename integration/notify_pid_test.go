package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// The process ID of a NotificationResponse is the notifying backend's.
// Straight against PostgreSQL that is the PID the notifier was told at
// login (BackendKeyData: pgx's PgConn().PID(), libpq's PQbackendPID,
// asyncpg's get_server_pid()), and drivers' own tests compare the two.
// Through pgtide clients are told a PID pgtide made up, so pgtide puts that
// one in the notification wherever it knows exactly which client notified:
// the listener itself, and in session mode any client (one that left since
// included). The tests below run each case straight against PostgreSQL too,
// where the same invariant holds.

// waitNotification returns the next notification c receives, failing the
// test after 10 s.
func waitNotification(t *testing.T, c *pgx.Conn, what string) *pgconn.Notification {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := c.WaitForNotification(ctx)
	if err != nil {
		t.Fatalf("%s: no notification: %v", what, err)
	}
	return n
}

// mustExec runs sql on c.
func mustExec(t *testing.T, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.Exec(ctxT(t, 30*time.Second), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// wantNotifyPID checks a notification's channel, payload and process ID.
func wantNotifyPID(t *testing.T, n *pgconn.Notification, channel, payload string, pid uint32, who string) {
	t.Helper()
	if n.Channel != channel || n.Payload != payload {
		t.Fatalf("notification %+v, want channel %q payload %q", n, channel, payload)
	}
	if n.PID != pid {
		t.Fatalf("notification %q: pid %d, want %d (%s)", payload, n.PID, pid, who)
	}
}

// notifyBoth runs check straight against PostgreSQL, then through pgtide
// (e), each with the URL to connect to and whether it is pgtide's.
func notifyBoth(t *testing.T, e *env, check func(t *testing.T, url string, viaTide bool)) {
	t.Run("direct", func(t *testing.T) { check(t, e.DirectURL(), false) })
	t.Run("pgtide", func(t *testing.T) { check(t, e.URL(), true) })
}

// TestNotifyPIDSessionSelf: session mode, a client that LISTENs and
// NOTIFYs on one connection gets the PID it was told at login, as straight
// against PostgreSQL (where that is its backend's).
func TestNotifyPIDSessionSelf(t *testing.T) {
	e := newEnv(t, nil)
	notifyBoth(t, e, func(t *testing.T, url string, viaTide bool) {
		a := connect(t, url)
		told := a.PgConn().PID()
		real := uint32(queryInt(t, a, "SELECT pg_backend_pid()"))
		if viaTide == (told == real) {
			t.Fatalf("told pid %d, backend pid %d: via pgtide %v", told, real, viaTide)
		}
		mustExec(t, a, "LISTEN npid_self")
		mustExec(t, a, "NOTIFY npid_self, 'one'")
		wantNotifyPID(t, waitNotification(t, a, "own NOTIFY"), "npid_self", "one", told, "the listener's own")
		// In a transaction block, and by pg_notify in the extended protocol.
		mustExec(t, a, "BEGIN; NOTIFY npid_self, 'two'; COMMIT")
		wantNotifyPID(t, waitNotification(t, a, "own NOTIFY in a block"), "npid_self", "two", told, "the listener's own")
		if _, err := a.Exec(ctxT(t, 30*time.Second), "SELECT pg_notify('npid_self', $1)", "three"); err != nil {
			t.Fatal(err)
		}
		wantNotifyPID(t, waitNotification(t, a, "own pg_notify"), "npid_self", "three", told, "the listener's own")
	})
}

// TestNotifyPIDSessionOther: session mode, notifications from other
// clients carry the PID each notifier was told, also when the notifier
// disconnected right after its NOTIFY and before the listener read it; one
// from a backend pgtide does not lend keeps that backend's PID.
func TestNotifyPIDSessionOther(t *testing.T) {
	e := newEnv(t, nil)
	mon := super(t, e.pg, "postgres")
	notifyBoth(t, e, func(t *testing.T, url string, viaTide bool) {
		a := connect(t, url)
		mustExec(t, a, "LISTEN npid_other")

		b := connect(t, url)
		mustExec(t, b, "NOTIFY npid_other, 'b'")
		wantNotifyPID(t, waitNotification(t, a, "b's NOTIFY"), "npid_other", "b", b.PgConn().PID(), "b's")

		// c notifies and leaves while a is inside a transaction, so a's
		// backend sends the notification only at a's COMMIT, after c's
		// server went back to the pool (its reset ran) or its backend exited.
		mustExec(t, a, "BEGIN")
		c := connect(t, url)
		cTold := c.PgConn().PID()
		cReal := queryInt(t, c, "SELECT pg_backend_pid()")
		mustExec(t, c, "NOTIFY npid_other, 'c'")
		if err := c.Close(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		pgtest.WaitUntil(t, 10*time.Second, "c's backend released or gone", func() bool {
			var q string
			err := mon.QueryRow(ctxT(t, 5*time.Second), "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'idle'", cReal).Scan(&q)
			if !viaTide {
				return err == pgx.ErrNoRows
			}
			return err == nil && q == "DISCARD ALL"
		})
		mustExec(t, a, "COMMIT")
		wantNotifyPID(t, waitNotification(t, a, "c's NOTIFY"), "npid_other", "c", cTold, "c's, who left")

		// A backend that is not pgtide's: its own PID.
		d := connect(t, e.DirectURL())
		dReal := uint32(queryInt(t, d, "SELECT pg_backend_pid()"))
		mustExec(t, d, "NOTIFY npid_other, 'd'")
		wantNotifyPID(t, waitNotification(t, a, "d's NOTIFY"), "npid_other", "d", dReal, "a direct backend's")
	})
}

// TestNotifyPIDTxnPinnedSelf: transaction mode, a client pinned to its
// server by LISTEN gets its own NOTIFYs with the PID it was told, between
// transactions with other clients cycling through the pool. A NOTIFY from
// another transaction-mode client keeps the server's PID, as PgBouncer
// leaves it: that server may be another client's by the time the listener
// reads it.
func TestNotifyPIDTxnPinnedSelf(t *testing.T) {
	e, _ := stateEnv(t, 2, "")
	ctx := ctxT(t, 60*time.Second)
	a := connect(t, e.URL())
	b := connect(t, e.URL())
	told := a.PgConn().PID()
	churn := func() {
		for range 5 {
			queryInt(t, b, "SELECT 1")
		}
	}
	mustExec(t, a, "LISTEN npid_txn")
	churn()
	mustExec(t, a, "NOTIFY npid_txn, 'one'")
	wantNotifyPID(t, waitNotification(t, a, "own NOTIFY"), "npid_txn", "one", told, "the listener's own")
	churn()
	mustExec(t, a, "BEGIN; NOTIFY npid_txn, 'two'; COMMIT")
	wantNotifyPID(t, waitNotification(t, a, "own NOTIFY in a block"), "npid_txn", "two", told, "the listener's own")
	if _, err := a.Exec(ctx, "SELECT pg_notify('npid_txn', $1)", "three"); err != nil {
		t.Fatal(err)
	}
	wantNotifyPID(t, waitNotification(t, a, "own pg_notify"), "npid_txn", "three", told, "the listener's own")

	// Another client: the server's PID, the one that client's statement ran on.
	var real int64
	if err := b.QueryRow(ctx, "SELECT pg_backend_pid() FROM pg_notify('npid_txn', 'b')").Scan(&real); err != nil {
		t.Fatal(err)
	}
	wantNotifyPID(t, waitNotification(t, a, "b's NOTIFY"), "npid_txn", "b", uint32(real), "b's server's (transaction mode)")

	// LISTEN and NOTIFY in one transaction: delivered at its COMMIT, before
	// the pin starts.
	c := connect(t, e.URL())
	mustExec(t, c, "BEGIN; LISTEN npid_txn2; NOTIFY npid_txn2, 'c'; COMMIT")
	wantNotifyPID(t, waitNotification(t, c, "own NOTIFY with its LISTEN"), "npid_txn2", "c", c.PgConn().PID(), "the listener's own")
	mustExec(t, a, "UNLISTEN *")
	mustExec(t, c, "UNLISTEN *")
}

// TestNotifyPIDAsyncpg: asyncpg's add_listener callback gets the notifier's
// get_server_pid(), as asyncpg's own test_listeners checks: straight
// against PostgreSQL, through pgtide in session mode (the listener itself,
// another client, one that closed right after its NOTIFY), and through
// pgtide in transaction mode (the listener itself, pinned by its LISTEN).
func TestNotifyPIDAsyncpg(t *testing.T) {
	notifyPIDPy(t, needPython(t, "asyncpg", "python3-asyncpg"), "asyncpg_notify_pid.py")
}

// TestNotifyPIDPsycopg2: psycopg2's Notify.pid is the notifier's
// get_backend_pid(), as psycopg2's own test_notify checks with a notifier
// process that exits right after its NOTIFY: straight against PostgreSQL,
// through pgtide in session mode, and (the listener notifying itself)
// through pgtide in transaction mode.
func TestNotifyPIDPsycopg2(t *testing.T) {
	notifyPIDPy(t, needPython(t, "psycopg2", "python3-psycopg2"), "psycopg2_notify_pid.py")
}

// notifyPIDPy runs script straight against PostgreSQL, through pgtide in
// session mode (with clients notifying each other) and in transaction mode
// (the listener notifying itself).
func notifyPIDPy(t *testing.T, py, script string) {
	e := newEnv(t, nil)
	directDB := e.DB + "_direct"
	e.pg.Exec(t, fmt.Sprintf("CREATE DATABASE %s OWNER %s", directDB, e.User))
	t.Run("direct", func(t *testing.T) {
		runTxnPy(t, py, script, e.pg.Host, e.pg.Port, directDB, e.User, e.Pass, "PGT_CROSS=1")
	})
	t.Run("session", func(t *testing.T) {
		runTxnPy(t, py, script, e.tide.Host, e.tide.Port, e.DB, e.User, e.Pass, "PGT_CROSS=1")
	})
	t.Run("transaction", func(t *testing.T) {
		te := txnPyEnv(t, 2)
		runTxnPy(t, py, script, te.tide.Host, te.tide.Port, te.DB, te.User, te.Pass, "PGT_CROSS=0")
	})
}

// TestMintedPIDPositive: the process ID pgtide gives a client in
// BackendKeyData is positive as an int32, as PostgreSQL's are (drivers read
// it signed). Before, about half were negative: 32 logins all positive by
// chance was a 1 in 4 billion.
func TestMintedPIDPositive(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 32; i++ {
		c, err := pgconn.Connect(ctxT(t, 10*time.Second), e.URL())
		if err != nil {
			t.Fatal(err)
		}
		pid := int32(c.PID())
		c.Close(ctxT(t, 5*time.Second))
		if pid <= 0 {
			t.Fatalf("login %d was told process ID %d", i, pid)
		}
	}
}
