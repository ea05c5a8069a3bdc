package integration

import (
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// reloadTo writes conf (with log_level replaced by level) to pgtide's config
// file, sends SIGHUP and waits for the reload to be applied.
func reloadTo(t *testing.T, e *env, conf tideConf, level string) {
	t.Helper()
	text := strings.Replace(conf.TOML(e.pg.Port), `log_level = "debug"`, fmt.Sprintf("log_level = %q", level), 1)
	e.rewriteConfig(t, text)
	before := strings.Count(e.tide.Logs(), "configuration reloaded")
	if err := e.tide.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if level == "warn" || level == "error" {
		// "configuration reloaded" is an info line: nothing to wait for.
		time.Sleep(500 * time.Millisecond)
		return
	}
	if !pgtest.Eventually(5*time.Second, func() bool { return strings.Count(e.tide.Logs(), "configuration reloaded") > before }) {
		t.Fatalf("reload not applied within 5 s:\n%s", e.tide.Logs())
	}
}

// serverConns counts the server connections of (db, user) on PostgreSQL.
func serverConns(t *testing.T, mon *pgx.Conn, db, user string) int64 {
	return queryInt(t, mon, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2", db, user)
}

// TestReloadLive drives one pgtide through a series of SIGHUP reloads while
// clients stay connected (one of them inside a transaction the whole time)
// and checks what each change does, as docs/reload.md describes it.
func TestReloadLive(t *testing.T) {
	T := t // clients that outlive a subtest are connected on T
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.DefaultPoolSize = 2
	})
	conf := e.conf
	conf.Users = map[string]string{e.User: e.Pass}
	ctx := ctxT(t, 60*time.Second)
	mon := super(t, e.pg, e.DB)

	// Clients that must survive every reload below.
	a := connect(t, e.URL())
	queryInt(t, a, "SELECT 1")
	inTx := connect(t, e.URL())
	if _, err := inTx.Exec(ctx, "CREATE TABLE reload_live (id int)"); err != nil {
		t.Fatal(err)
	}
	tx, err := inTx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	step := 0
	survivors := func(t *testing.T) {
		t.Helper()
		step++
		if n := queryInt(t, a, "SELECT $1::int", step); n != int64(step) {
			t.Fatalf("client a after reload: %d", n)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO reload_live VALUES ($1)", step); err != nil {
			t.Fatalf("open transaction after reload: %v", err)
		}
	}
	sleepers := func(n int, d string) *sync.WaitGroup {
		var wg sync.WaitGroup
		for range n {
			c := connect(t, e.URL())
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.Exec(ctx, "SELECT pg_sleep("+d+")"); err != nil {
					t.Errorf("pg_sleep: %v", err)
				}
			}()
		}
		return &wg
	}

	t.Run("pool_size_up", func(t *testing.T) {
		conf.DefaultPoolSize = 4
		reloadTo(t, e, conf, "debug")
		survivors(t)
		// The open transaction holds one server; three sleepers get the rest.
		wg := sleepers(3, "1")
		if !pgtest.Eventually(3*time.Second, func() bool { return serverConns(t, mon, e.DB, e.User) == 4 }) {
			t.Fatalf("pool_size 4: %d server connections, want 4", serverConns(t, mon, e.DB, e.User))
		}
		wg.Wait()
	})

	t.Run("pool_size_down", func(t *testing.T) {
		conf.DefaultPoolSize = 2
		reloadTo(t, e, conf, "debug")
		survivors(t)
		// Surplus idle servers are closed by the pool's sweep (every second).
		if !pgtest.Eventually(4*time.Second, func() bool { return serverConns(t, mon, e.DB, e.User) <= 2 }) {
			t.Fatalf("pool_size 2: still %d server connections", serverConns(t, mon, e.DB, e.User))
		}
		wg := sleepers(3, "0.3")
		peak := int64(0)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		for {
			peak = max(peak, serverConns(t, mon, e.DB, e.User))
			select {
			case <-done:
			case <-time.After(50 * time.Millisecond):
				continue
			}
			break
		}
		if peak > 2 {
			t.Fatalf("pool_size 2: %d server connections at peak", peak)
		}
	})

	// A second and a third database on the same PostgreSQL.
	db2, db3 := e.DB+"_b", e.DB+"_c"
	pgtest.CreateDatabase(t, e.pg, db2, e.User)
	pgtest.CreateDatabase(t, e.pg, db3, e.User)
	url2 := e.tide.ConnString(db2, e.User, e.Pass)
	var c2, c2tx *pgx.Conn
	var tx2 pgx.Tx

	t.Run("database_added", func(t *testing.T) {
		if code := sqlState(connectErr(t, url2)); code != "3D000" {
			t.Fatalf("before the reload: SQLSTATE %q, want 3D000", code)
		}
		conf.Databases = append(conf.Databases, dbConf{Name: db2})
		reloadTo(t, e, conf, "debug")
		survivors(t)
		c2 = connect(T, url2)
		if got := queryString(t, c2, "SELECT current_database()"); got != db2 {
			t.Fatalf("current_database() = %s, want %s", got, db2)
		}
	})

	t.Run("database_repointed", func(t *testing.T) {
		conf.Databases[len(conf.Databases)-1].DBName = db3
		reloadTo(t, e, conf, "debug")
		survivors(t)
		// The connected client is not dropped; its next transaction (and
		// its cached prepared statement) goes to the new target.
		if got := queryString(t, c2, "SELECT current_database()"); got != db3 {
			t.Fatalf("connected client after repoint: current_database() = %s, want %s", got, db3)
		}
		c := connect(t, url2)
		if got := queryString(t, c, "SELECT current_database()"); got != db3 {
			t.Fatalf("new client after repoint: current_database() = %s, want %s", got, db3)
		}
		c2tx = connect(T, url2)
		if tx2, err = c2tx.Begin(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := tx2.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("database_removed", func(t *testing.T) {
		conf.Databases = conf.Databases[:len(conf.Databases)-1]
		reloadTo(t, e, conf, "debug")
		survivors(t)
		// An idle client of the removed database gets an error on its next
		// transaction; one inside a transaction finishes it first.
		_, err := c2.Exec(ctx, "SELECT 1")
		if code := sqlState(err); code != "57P01" || !strings.Contains(err.Error(), "removed") {
			t.Fatalf("idle client of a removed database: %v; want 57P01 saying it was removed", err)
		}
		if _, err := tx2.Exec(ctx, "SELECT 2"); err != nil {
			t.Fatalf("transaction open when its database was removed: %v", err)
		}
		if err := tx2.Commit(ctx); err != nil {
			t.Fatalf("COMMIT of a transaction open when its database was removed: %v", err)
		}
		if _, err := c2tx.Exec(ctx, "SELECT 1"); sqlState(err) != "57P01" {
			t.Fatalf("after its transaction: %v; want 57P01", err)
		}
		if code := sqlState(connectErr(t, url2)); code != "3D000" {
			t.Fatalf("new client of a removed database: SQLSTATE %q, want 3D000", code)
		}
	})

	// A second user, with a role of its own.
	u2 := e.User + "_b"
	pw1, pw2 := "Pw1-"+u2+fmt.Sprint(time.Now().UnixNano()), "Pw2-"+u2+fmt.Sprint(time.Now().UnixNano())
	e.secrets = append(e.secrets, pw1, pw2)
	pgtest.CreateRole(t, e.pg, u2, pw1)
	e.pg.Exec(t, fmt.Sprintf("GRANT ALL ON DATABASE %s TO %s", e.DB, u2))
	var c3 *pgx.Conn

	t.Run("user_added", func(t *testing.T) {
		if code := sqlState(connectErr(t, e.tide.ConnString(e.DB, u2, pw1))); code != "28P01" {
			t.Fatalf("before the reload: SQLSTATE %q, want 28P01", code)
		}
		conf.Users = map[string]string{e.User: e.Pass, u2: pw1}
		reloadTo(t, e, conf, "debug")
		survivors(t)
		c3 = connect(T, e.tide.ConnString(e.DB, u2, pw1))
		if got := queryString(t, c3, "SELECT current_user"); got != u2 {
			t.Fatalf("current_user = %s", got)
		}
	})

	t.Run("password_changed", func(t *testing.T) {
		e.pg.Exec(t, fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", u2, pw2))
		conf.Users = map[string]string{e.User: e.Pass, u2: pw2}
		reloadTo(t, e, conf, "debug")
		survivors(t)
		if got := queryString(t, c3, "SELECT current_user"); got != u2 {
			t.Fatalf("connected client after the password change: current_user = %s", got)
		}
		if code := sqlState(connectErr(t, e.tide.ConnString(e.DB, u2, pw1))); code != "28P01" {
			t.Fatalf("old password after the change: SQLSTATE %q, want 28P01", code)
		}
		c := connect(t, e.tide.ConnString(e.DB, u2, pw2))
		queryInt(t, c, "SELECT 1")
		c.Close(ctx)
	})

	t.Run("user_removed", func(t *testing.T) {
		conf.Users = map[string]string{e.User: e.Pass}
		reloadTo(t, e, conf, "debug")
		survivors(t)
		_, err := c3.Exec(ctx, "SELECT 1")
		if code := sqlState(err); code != "57P01" || !strings.Contains(err.Error(), "removed") {
			t.Fatalf("client of a removed user: %v; want 57P01 saying it was removed", err)
		}
		if code := sqlState(connectErr(t, e.tide.ConnString(e.DB, u2, pw2))); code != "28P01" {
			t.Fatalf("removed user logging in: SQLSTATE %q, want 28P01", code)
		}
	})

	t.Run("log_level", func(t *testing.T) {
		reloadTo(t, e, conf, "warn")
		mark := len(e.tide.Logs())
		c := connect(t, e.URL())
		queryInt(t, c, "SELECT 1")
		c.Close(ctx)
		survivors(t)
		// Lines that must not come give no condition to wait on.
		time.Sleep(100 * time.Millisecond)
		if logs := e.tide.Logs()[mark:]; strings.Contains(logs, `"level":"info"`) || strings.Contains(logs, `"level":"debug"`) {
			t.Fatalf("info/debug lines logged at log_level warn:\n%s", logs)
		}
		reloadTo(t, e, conf, "debug")
		mark = len(e.tide.Logs())
		c = connect(t, e.URL())
		queryInt(t, c, "SELECT 1")
		c.Close(ctx)
		if !pgtest.Eventually(2*time.Second, func() bool {
			logs := e.tide.Logs()[mark:]
			return strings.Contains(logs, "client connected") && strings.Contains(logs, "client disconnected")
		}) {
			t.Fatalf("no client connected/disconnected lines back at log_level debug:\n%s", e.tide.Logs()[mark:])
		}
	})

	t.Run("max_client_conn", func(t *testing.T) {
		conf.MaxClientConn = 1
		reloadTo(t, e, conf, "debug")
		survivors(t)
		if code := sqlState(connectErr(t, e.URL())); code != "53300" {
			t.Fatalf("max_client_conn 1 with clients connected: SQLSTATE %q, want 53300", code)
		}
		conf.MaxClientConn = 100
		reloadTo(t, e, conf, "debug")
		survivors(t)
		if err := connectErr(t, e.URL()); err != nil {
			t.Fatalf("max_client_conn raised again: %v", err)
		}
	})

	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("COMMIT of the transaction open through every reload: %v", err)
	}
	if n := queryInt(t, a, "SELECT count(*) FROM reload_live"); n != int64(step) {
		t.Fatalf("%d rows, want %d", n, step)
	}
	if e.tide.Exited() {
		t.Fatal("pgtide exited")
	}
}
