package integration

import (
	"errors"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// waitRefused polls until a new connection through pgtide fails (the
// shutdown signal has been handled), and returns that error.
func waitRefused(t *testing.T, e *env) error {
	t.Helper()
	var refusal error
	if !pgtest.Eventually(5*time.Second, func() bool {
		refusal = connectErr(t, e.URL())
		return refusal != nil
	}) {
		t.Fatalf("new connections still accepted 5 s after the shutdown signal")
	}
	return refusal
}

func TestSIGINTSafeShutdown(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t, 60*time.Second)
	a := connect(t, e.URL())
	if _, err := a.Exec(ctx, "CREATE TABLE sigint_t (id int)"); err != nil {
		t.Fatal(err)
	}
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO sigint_t VALUES (1)"); err != nil {
		t.Fatal(err)
	}

	if err := e.tide.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	refusal := waitRefused(t, e)
	t.Logf("connect after SIGINT: %v", refusal)
	if _, err := e.tide.Wait(300 * time.Millisecond); !errors.Is(err, pgtest.ErrStillRunning) {
		t.Fatalf("pgtide exited after SIGINT while a client was inside a transaction")
	}
	// The transaction in flight goes on and commits.
	if _, err := tx.Exec(ctx, "INSERT INTO sigint_t VALUES (2)"); err != nil {
		t.Fatalf("statement in the open transaction after SIGINT: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("COMMIT after SIGINT: %v", err)
	}
	code, err := e.tide.Wait(10 * time.Second)
	if err != nil {
		t.Fatalf("pgtide still running 10 s after the last transaction ended (SIGINT)")
	}
	if code != 0 {
		t.Fatalf("pgtide exit code %d after SIGINT, want 0", code)
	}
	mon := super(t, e.pg, e.DB)
	if n := queryInt(t, mon, "SELECT count(*) FROM sigint_t"); n != 2 {
		t.Fatalf("%d rows committed, want 2", n)
	}
}

func TestSIGTERMWaitsForClients(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t, 60*time.Second)
	a := connect(t, e.URL())
	if n := queryInt(t, a, "SELECT 1"); n != 1 {
		t.Fatal(n)
	}
	if err := e.tide.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitRefused(t, e)
	// The connected client keeps working, transactions included.
	if n := queryInt(t, a, "SELECT 2"); n != 2 {
		t.Fatal(n)
	}
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatalf("BEGIN after SIGTERM: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("COMMIT after SIGTERM: %v", err)
	}
	if _, err := e.tide.Wait(time.Second); !errors.Is(err, pgtest.ErrStillRunning) {
		t.Fatalf("pgtide exited after SIGTERM while a client was still connected")
	}
	if n := queryInt(t, a, "SELECT 3"); n != 3 {
		t.Fatal(n)
	}
	a.Close(ctx)
	start := time.Now()
	code, err := e.tide.Wait(5 * time.Second)
	if err != nil {
		t.Fatalf("pgtide still running 5 s after the last client left (SIGTERM)")
	}
	t.Logf("exited %v after the last client left", time.Since(start))
	if code != 0 {
		t.Fatalf("pgtide exit code %d after SIGTERM, want 0", code)
	}
}

func TestSIGTERMShutdownTimeout(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) { c.ShutdownTimeout = "1s" })
	a := connect(t, e.URL())
	if n := queryInt(t, a, "SELECT 1"); n != 1 {
		t.Fatal(n)
	}
	start := time.Now()
	if err := e.tide.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := e.tide.Wait(6 * time.Second)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("pgtide with shutdown_timeout 1s still running 6 s after SIGTERM with a client connected")
	}
	t.Logf("exited with code %d %v after SIGTERM", code, took)
	if took < 800*time.Millisecond {
		t.Fatalf("pgtide exited %v after SIGTERM with a client connected; want it to wait ~shutdown_timeout (1s)", took)
	}
	if took > 2500*time.Millisecond {
		t.Fatalf("pgtide took %v to exit with shutdown_timeout 1s", took)
	}
	ctx := ctxT(t, 5*time.Second)
	if _, err := a.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatalf("client connection still works after pgtide exited")
	}
}

func TestSecondSignalExitsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		first  syscall.Signal // 0: none
		second syscall.Signal
	}{
		{"SIGINT_SIGINT", syscall.SIGINT, syscall.SIGINT},
		{"SIGTERM_SIGTERM", syscall.SIGTERM, syscall.SIGTERM},
		{"SIGINT_SIGTERM", syscall.SIGINT, syscall.SIGTERM},
		{"SIGTERM_SIGQUIT", syscall.SIGTERM, syscall.SIGQUIT},
		{"SIGQUIT", 0, syscall.SIGQUIT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *tideConf, db *dbConf) { c.ShutdownTimeout = "60s" })
			ctx := ctxT(t, 30*time.Second)
			a := connect(t, e.URL())
			tx, err := a.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			if tc.first != 0 {
				if err := e.tide.Signal(tc.first); err != nil {
					t.Fatal(err)
				}
				waitRefused(t, e)
				if e.tide.Exited() {
					t.Fatalf("pgtide exited on the first %v with a transaction open", tc.first)
				}
			}
			start := time.Now()
			if err := e.tide.Signal(tc.second); err != nil {
				t.Fatal(err)
			}
			code, err := e.tide.Wait(5 * time.Second)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("pgtide still running 5 s after %v (client in a transaction)", tc.second)
			}
			t.Logf("exited with code %d %v after %v", code, took, tc.second)
			if took > 500*time.Millisecond {
				t.Fatalf("pgtide took %v to exit after %v; want it to exit at once (< 500ms)", took, tc.second)
			}
			if _, err := tx.Exec(ctx, "SELECT 1"); err == nil {
				t.Fatalf("client's connection still works after pgtide exited")
			}
		})
	}
}

func TestSIGHUPReload(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t, 60*time.Second)
	// A second database, not yet in pgtide's config.
	db2 := e.DB + "_two"
	pgtest.CreateDatabase(t, e.pg, db2, e.User)
	url2 := e.tide.ConnString(db2, e.User, e.Pass)
	if code := sqlState(connectErr(t, url2)); code != "3D000" {
		t.Fatalf("database %s before reload: SQLSTATE %q, want 3D000", db2, code)
	}

	a := connect(t, e.URL())
	if _, err := a.Exec(ctx, "CREATE TABLE reload_t (id int); INSERT INTO reload_t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO reload_t VALUES (2)"); err != nil {
		t.Fatal(err)
	}

	good := e.conf
	good.Databases = append(append([]dbConf(nil), e.conf.Databases...), dbConf{Name: db2})
	e.rewriteConfig(t, good.TOML(e.pg.Port))
	if err := e.tide.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	if !pgtest.Eventually(5*time.Second, func() bool { lastErr = connectErr(t, url2); return lastErr == nil }) {
		t.Fatalf("database %s added by SIGHUP reload not reachable after 5 s: %v", db2, lastErr)
	}
	c2 := connect(t, url2)
	if got := queryString(t, c2, "SELECT current_database()"); got != db2 {
		t.Fatalf("connected to %s, current_database() = %s", db2, got)
	}
	// The client connected before the reload was not dropped, nor its transaction.
	if _, err := tx.Exec(ctx, "INSERT INTO reload_t VALUES (3)"); err != nil {
		t.Fatalf("open transaction after reload: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("COMMIT after reload: %v", err)
	}
	if n := queryInt(t, a, "SELECT count(*) FROM reload_t"); n != 3 {
		t.Fatalf("count = %d, want 3", n)
	}
	if e.tide.Exited() {
		t.Fatalf("pgtide exited on SIGHUP")
	}

	// Broken configs: the old one (with both databases) keeps running, and the
	// log says why.
	for _, bad := range []struct {
		name, text string
		mention    *regexp.Regexp // what the log must say
	}{
		{"syntax", good.TOML(e.pg.Port) + "\n[databases.broken\nhost = \n", regexp.MustCompile(`(?i)"level":"(error|warn)"`)},
		{"unknown_key", good.TOML(e.pg.Port) + "\n[databases.extra]\nhost = \"127.0.0.1\"\nbogus_key_xyz = 1\n", regexp.MustCompile(`bogus_key_xyz`)},
		{"bad_value", strings.Replace(good.TOML(e.pg.Port), "default_pool_size = 20", "default_pool_size = \"many\"", 1), regexp.MustCompile(`default_pool_size`)},
	} {
		t.Run(bad.name, func(t *testing.T) {
			before := len(e.tide.Logs())
			e.rewriteConfig(t, bad.text)
			if err := e.tide.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			var newLogs string
			if !pgtest.Eventually(5*time.Second, func() bool {
				newLogs = e.tide.Logs()[before:]
				return bad.mention.MatchString(newLogs) && regexp.MustCompile(`(?i)"level":"(error|warn)"`).MatchString(newLogs)
			}) {
				t.Fatalf("no error/warn log matching %q within 5 s of SIGHUP with a broken config; new output:\n%s", bad.mention, newLogs)
			}
			if e.tide.Exited() {
				t.Fatalf("pgtide exited on SIGHUP with a broken config")
			}
			for _, u := range []string{e.URL(), url2} {
				if err := connectErr(t, u); err != nil {
					t.Fatalf("after a bad reload, %s: %v", redact(u), err)
				}
			}
			if n := queryInt(t, a, "SELECT count(*) FROM reload_t"); n != 3 {
				t.Fatalf("existing client after a bad reload: count = %d", n)
			}
			// The config with "extra" must not have been half-applied.
			if code := sqlState(connectErr(t, e.tide.ConnString("extra", e.User, e.Pass))); code != "3D000" {
				t.Fatalf("database from the rejected config: SQLSTATE %q, want 3D000", code)
			}
		})
	}
	// And a good config after the bad ones still applies: drop db2 again.
	e.rewriteConfig(t, e.conf.TOML(e.pg.Port))
	if err := e.tide.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !pgtest.Eventually(5*time.Second, func() bool { return sqlState(connectErr(t, url2)) == "3D000" }) {
		t.Fatalf("database %s still reachable 5 s after a reload that removed it", db2)
	}
	if err := connectErr(t, e.URL()); err != nil {
		t.Fatalf("after the last reload: %v", err)
	}
}
