package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestTxnQueryAfterFlushReleasesServer: asyncpg's copy_records_to_table
// prepares its introspection query with Parse, Describe and Flush (no
// Sync), then runs COPY ... FROM STDIN as a simple Query. PostgreSQL ran
// the Query, so nothing before it failed, and the Query's end ended the
// implicit transaction of the messages before it: at its ReadyForQuery the
// server is idle as after a Sync. pgtide kept waiting for a Sync that
// asyncpg never sends (its pool's reset on release is a simple Query too),
// so the client held its server until it disconnected and every other
// client of a pool of 1 waited for query_wait_timeout. Each sequence runs
// against PostgreSQL directly and through pgtide; after it, another client
// must get a server, and the prepared statement must still run.
func TestTxnQueryAfterFlushReleasesServer(t *testing.T) {
	e := drvTxnEnv(t, 1)
	ctx := ctxT(t, 60*time.Second)
	setup := connect(t, e.DirectURL())
	if _, err := setup.Exec(ctx, "CREATE TABLE qaf (id int)"); err != nil {
		t.Fatal(err)
	}
	for _, seq := range []struct {
		name string
		run  func(t *testing.T, c net.Conn, fe *pgproto3.Frontend)
	}{
		{"copy", func(t *testing.T, c net.Conn, fe *pgproto3.Frontend) {
			send(t, c, xq("COPY qaf FROM STDIN"))
			if _, err := readUntil(t, c, fe, 5*time.Second, 'G'); err != nil {
				t.Fatal(err)
			}
			send(t, c, xcopy("1\n"), &pgproto3.CopyDone{})
		}},
		{"query", func(t *testing.T, c net.Conn, fe *pgproto3.Frontend) {
			send(t, c, xq("SELECT 2"))
		}},
	} {
		for _, target := range []struct{ name, url string }{{"direct", e.DirectURL()}, {"pgtide", e.URL()}} {
			t.Run(seq.name+"/"+target.name, func(t *testing.T) {
				c, fe := rawLogin(t, target.url)
				send(t, c, xparse("intro", "SELECT id FROM qaf LIMIT 1"), xdescS("intro"), &pgproto3.Flush{})
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				for { // ParseComplete, ParameterDescription, RowDescription
					m, err := fe.Receive()
					if err != nil {
						t.Fatal(err)
					}
					if _, ok := m.(*pgproto3.RowDescription); ok {
						break
					}
				}
				_ = c.SetReadDeadline(time.Time{})
				seq.run(t, c, fe)
				z, err := readUntil(t, c, fe, 5*time.Second, 'Z')
				if err != nil {
					t.Fatal(err)
				}
				if st := z.(*pgproto3.ReadyForQuery).TxStatus; st != 'I' {
					t.Fatalf("status %q after the query", st)
				}
				other := connect(t, target.url)
				octx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				if _, err := other.Exec(octx, "SELECT 1"); err != nil {
					t.Fatalf("another client, while the first is idle: %v", err)
				}
				send(t, c, xbind("", "intro"), xexec("", 0), &pgproto3.Sync{})
				if _, err := readUntil(t, c, fe, 5*time.Second, 'Z'); err != nil {
					t.Fatalf("the prepared statement afterwards: %v", err)
				}
			})
		}
	}
}

// TestTxnShortStatementTimeoutKept: a client sets a short statement_timeout
// in a transaction of its own. pgtide's state check after that transaction
// ran under it; when it timed out, the server was closed and the client's
// SET was silently forgotten: its next statements ran with no timeout at
// all (on a busy machine: always at 1ms, now and then at 3-5ms). Here the
// check is made slower than the client's 5ms every time: another session
// holds an ACCESS EXCLUSIVE lock on pg_proc (which the check reads and the
// client's SET does not) until the SET has been answered or a backend has
// waited for a lock for 100ms. Each round is compared with PostgreSQL directly; another
// client takes the one server between the client's statements.
func TestTxnShortStatementTimeoutKept(t *testing.T) {
	e := drvTxnEnv(t, 1)
	ctx := ctxT(t, 60*time.Second)
	locker := super(t, e.pg, e.DB)
	watcher := super(t, e.pg, e.DB)
	// A backend that has waited for the lock for 20 times the client's timeout.
	const waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND clock_timestamp() - query_start > interval '100ms'"
	run := func(t *testing.T, url string) []string {
		c := connect(t, url)
		other := connect(t, url)
		var out []string
		for i := 0; i < 4; i++ {
			var n int
			if err := watcher.QueryRow(ctx, waiting).Scan(&n); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			var tx pgx.Tx
			if i > 0 { // round 0 runs the check once unhindered (warm catalog caches)
				var err error
				if tx, err = locker.Begin(ctx); err != nil {
					t.Fatal(err)
				}
				if _, err := tx.Exec(ctx, "LOCK TABLE pg_catalog.pg_proc IN ACCESS EXCLUSIVE MODE"); err != nil {
					t.Fatal(err)
				}
			}
			go func() {
				_, err := c.Exec(ctx, "SET statement_timeout = '5ms'")
				done <- err
			}()
			var setErr error
			answered := false
			pgtest.WaitUntil(t, 20*time.Second, "the SET answered, or a backend waiting for the lock on pg_proc for 100ms", func() bool {
				select {
				case setErr = <-done:
					answered = true
					return true
				default:
				}
				var n int
				if err := watcher.QueryRow(ctx, waiting).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n > 0
			})
			if tx != nil {
				if err := tx.Rollback(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if !answered {
				setErr = <-done
			}
			if setErr != nil {
				t.Fatalf("round %d: SET statement_timeout: %v", i, setErr)
			}
			if _, err := other.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			var st string
			if err := c.QueryRow(ctx, "SHOW statement_timeout").Scan(&st); err != nil {
				t.Fatal(err)
			}
			_, err := c.Exec(ctx, "SELECT pg_sleep(0.1)")
			out = append(out, fmt.Sprintf("round %d: statement_timeout=%s, pg_sleep(0.1): %s", i, st, sqlState(err)))
			if _, err := c.Exec(ctx, "RESET statement_timeout"); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	var direct, tide []string
	t.Run("direct", func(t *testing.T) { direct = run(t, e.DirectURL()) })
	t.Run("pgtide", func(t *testing.T) { tide = run(t, e.URL()) })
	if strings.Join(direct, "\n") != strings.Join(tide, "\n") {
		t.Errorf("differs:\nPostgreSQL:\n  %s\npgtide:\n  %s", strings.Join(direct, "\n  "), strings.Join(tide, "\n  "))
	}
}

// resetView is what a client sees of its settings: each value its queries
// run with, and each reported parameter as it was last told (ParameterStatus).
func resetView(ctx context.Context, t *testing.T, c *pgx.Conn) string {
	t.Helper()
	var b strings.Builder
	for _, p := range []string{"search_path", "work_mem", "statement_timeout", "TimeZone", "DateStyle", "application_name", "IntervalStyle"} {
		var v string
		if err := c.QueryRow(ctx, "SELECT current_setting($1)", p).Scan(&v); err != nil {
			t.Fatalf("current_setting(%s): %v", p, err)
		}
		fmt.Fprintf(&b, "%s=%q ", p, v)
	}
	for _, p := range []string{"TimeZone", "DateStyle", "application_name", "IntervalStyle"} {
		fmt.Fprintf(&b, "told %s=%q ", p, c.PgConn().ParameterStatus(p))
	}
	return b.String()
}

// TestTxnResetRestoresStartupSettings: a client that set parameters in its
// startup packet (asyncpg's server_settings, libpq's options=-c ...,
// application_name) and later runs RESET ALL, RESET x, SET x TO DEFAULT or
// DISCARD ALL gets its startup values back in PostgreSQL, which keeps them
// as the session's defaults. asyncpg's pool runs "SELECT
// pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;" on every
// release, and Npgsql sends DISCARD ALL, so this happens all the time.
// Before the fix, through pgtide the values fell back to the pooled
// server's defaults (search_path, work_mem), and the client was told the
// server's TimeZone, DateStyle and application_name while its queries kept
// running with its own.
func TestTxnResetRestoresStartupSettings(t *testing.T) {
	e := drvTxnEnv(t, 1)
	ctx := ctxT(t, 60*time.Second)
	run := func(t *testing.T, url string) []string {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeExec // DISCARD ALL drops named statements, directly too
		for k, v := range map[string]string{
			"search_path": "pg_catalog, public", "work_mem": "7MB", "TimeZone": "Asia/Tokyo",
			"DateStyle": "SQL, DMY", "application_name": "appA", "IntervalStyle": "iso_8601", "statement_timeout": "10min",
		} {
			cfg.RuntimeParams[k] = v
		}
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		other := connect(t, url) // takes the one server between c's transactions
		var out []string
		step := func(sqls ...string) {
			for _, q := range sqls {
				if _, err := c.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			if _, err := other.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			out = append(out, strings.Join(sqls, "; ")+" => "+resetView(ctx, t, c))
		}
		step()
		step("SET search_path = public", "SET work_mem = '9MB'", "SET TimeZone = 'Europe/Paris'",
			"SET DateStyle = 'ISO, MDY'", "SET application_name = 'changed'", "SET IntervalStyle = 'postgres'",
			"SET statement_timeout = '5min'")
		step("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;") // asyncpg's pool reset
		step("SET TimeZone = 'Europe/Paris'", "SET work_mem = '9MB'")
		step("RESET TimeZone", "SET work_mem TO DEFAULT")
		step("SET statement_timeout = 0")
		step("RESET statement_timeout")
		step("SET search_path = public", "SET DateStyle = 'ISO, MDY'")
		step("DISCARD ALL")
		step("BEGIN", "SET application_name = 'in txn'", "RESET ALL", "COMMIT")
		return out
	}
	var direct, tide []string
	t.Run("direct", func(t *testing.T) { direct = run(t, e.DirectURL()) })
	t.Run("pgtide", func(t *testing.T) { tide = run(t, e.URL()) })
	for i := range direct {
		if i >= len(tide) || direct[i] != tide[i] {
			got := "(nothing)"
			if i < len(tide) {
				got = tide[i]
			}
			t.Errorf("step %d differs:\nPostgreSQL: %s\npgtide:     %s", i, direct[i], got)
		}
	}
}
