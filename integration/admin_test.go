package integration

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// adminEnv is an env whose pgtide has an admin user and a stats user.
type adminEnv struct {
	*env
	admPass, statPass string
}

func newAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	stamp := fmt.Sprint(time.Now().UnixNano())
	a := &adminEnv{admPass: "Adm-" + stamp, statPass: "Stat-" + stamp}
	a.env = newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		db.PoolSize = 1
		c.Extra = "admin_users = [\"adm\"]\nstats_users = [\"stat\"]\n"
		c.Users["adm"] = a.admPass
		c.Users["stat"] = a.statPass
	})
	a.secrets = append(a.secrets, a.admPass, a.statPass)
	return a
}

func (a *adminEnv) adminURL() string { return a.tide.ConnString("pgtide", "adm", a.admPass) }

// console opens a raw connection to the admin console.
func console(t *testing.T, url string) *pgconn.PgConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatalf("admin console connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

type adminRow map[string]string

// adminRun runs a console command and returns its rows by column name.
func adminRun(t *testing.T, c *pgconn.PgConn, sql string) ([]adminRow, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	return rowsByName(res), nil
}

// rowsByName is each row of res by column name.
func rowsByName(res []*pgconn.Result) []adminRow {
	var out []adminRow
	for _, r := range res {
		for _, row := range r.Rows {
			m := adminRow{}
			for i, f := range r.FieldDescriptions {
				m[f.Name] = string(row[i])
			}
			out = append(out, m)
		}
	}
	return out
}

func mustAdmin(t *testing.T, c *pgconn.PgConn, sql string) []adminRow {
	t.Helper()
	rows, err := adminRun(t, c, sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return rows
}

func findRow(rows []adminRow, key, val string) adminRow {
	for _, r := range rows {
		if r[key] == val {
			return r
		}
	}
	return nil
}

func atoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

func TestAdminConsole(t *testing.T) {
	a := newAdminEnv(t)
	adm := console(t, a.adminURL())
	ctx := ctxT(t, 60*time.Second)

	client := connect(t, a.URL()+"&application_name=regular")
	for range 5 {
		queryInt(t, client, "select 1")
	}
	tx, err := client.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "select 2"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	pid1 := queryInt(t, client, "select pg_backend_pid()")

	t.Run("psql", func(t *testing.T) {
		psql := needBinary(t, "psql", "postgresql-client")
		r := runPsql(t, psql, urlNoPassword(a.tide.Host, a.tide.Port, "pgtide", "adm"), a.admPass, "-c", "SHOW POOLS")
		if r.code != 0 || !strings.Contains(r.stdout, "cl_active") || !strings.Contains(r.stdout, a.DB) {
			t.Fatalf("psql SHOW POOLS: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		r = runPsql(t, psql, urlNoPassword(a.tide.Host, a.tide.Port, "pgtide", "adm"), a.admPass, "-c", "show help")
		if r.code != 0 || !strings.Contains(r.stderr+r.stdout, "SHOW HELP") {
			t.Fatalf("psql SHOW HELP: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("show", func(t *testing.T) {
		pools := mustAdmin(t, adm, "SHOW POOLS")
		p := findRow(pools, "database", a.DB)
		if p == nil || p["user"] != a.User || p["pool_mode"] != "transaction" || p["cl_active"] != "1" {
			t.Fatalf("SHOW POOLS: no row for %s/%s in transaction mode with 1 client: %v", a.DB, a.User, pools)
		}
		stats := findRow(mustAdmin(t, adm, "SHOW STATS;"), "database", a.DB)
		if stats == nil || atoi(t, stats["total_query_count"]) < 7 || atoi(t, stats["total_xact_count"]) < 7 ||
			atoi(t, stats["total_received"]) == 0 || atoi(t, stats["total_sent"]) == 0 {
			t.Fatalf("SHOW STATS for %s: %v", a.DB, stats)
		}
		for _, col := range []string{"total_xact_time", "total_query_time", "total_wait_time", "avg_xact_count",
			"avg_query_count", "avg_recv", "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time"} {
			if _, ok := stats[col]; !ok {
				t.Errorf("SHOW STATS has no %s column", col)
			}
		}
		if r := findRow(mustAdmin(t, adm, "show stats_totals"), "database", a.DB); r == nil || atoi(t, r["query_count"]) < 7 {
			t.Errorf("SHOW STATS_TOTALS: %v", r)
		}
		if r := findRow(mustAdmin(t, adm, "show stats_averages"), "database", a.DB); r == nil {
			t.Errorf("SHOW STATS_AVERAGES has no row for %s", a.DB)
		}

		clients := mustAdmin(t, adm, "SHOW CLIENTS")
		c := findRow(clients, "application_name", "regular")
		if c == nil || c["user"] != a.User || c["database"] != a.DB || c["state"] != "idle" || c["addr"] != "127.0.0.1" {
			t.Fatalf("SHOW CLIENTS: the test client is missing or wrong: %v", clients)
		}
		if findRow(clients, "database", "pgtide") == nil {
			t.Errorf("SHOW CLIENTS does not list the console itself: %v", clients)
		}

		servers := mustAdmin(t, adm, "SHOW SERVERS")
		sv := findRow(servers, "remote_pid", fmt.Sprint(pid1))
		if sv == nil || sv["database"] != a.DB || sv["state"] != "idle" || sv["port"] != fmt.Sprint(a.pg.Port) {
			t.Fatalf("SHOW SERVERS: no idle server with pid %d: %v", pid1, servers)
		}

		dbs := mustAdmin(t, adm, "SHOW DATABASES")
		d := findRow(dbs, "name", a.DB)
		if d == nil || d["port"] != fmt.Sprint(a.pg.Port) || d["pool_size"] != "1" || d["paused"] != "0" || d["disabled"] != "0" {
			t.Fatalf("SHOW DATABASES: %v", dbs)
		}

		conf := mustAdmin(t, adm, "SHOW CONFIG")
		if r := findRow(conf, "key", "pool_mode"); r == nil || r["value"] != "transaction" || r["default"] != "session" {
			t.Errorf("SHOW CONFIG pool_mode: %v", r)
		}
		if r := findRow(conf, "key", "listen"); r == nil || r["changeable"] != "no" {
			t.Errorf("SHOW CONFIG listen: %v", r)
		}

		users := mustAdmin(t, adm, "SHOW USERS")
		if findRow(users, "name", "adm") == nil || findRow(users, "name", a.User) == nil {
			t.Errorf("SHOW USERS: %v", users)
		}

		v := mustAdmin(t, adm, "show version")
		if len(v) != 1 || !strings.HasPrefix(v[0]["version"], "pgtide ") {
			t.Errorf("SHOW VERSION: %v", v)
		}
		for _, sub := range []string{"HELP", "LISTS", "STATE"} {
			mustAdmin(t, adm, "SHOW "+sub)
		}

		// No secret in anything the console shows (invariant 7).
		all := fmt.Sprint(pools, stats, clients, servers, dbs, conf, users,
			mustAdmin(t, adm, "SHOW LISTS; SHOW STATE"))
		for _, s := range a.secrets {
			if strings.Contains(all, s) {
				t.Fatalf("admin console output contains a password")
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		if _, err := adminRun(t, adm, "SHOW TABLES"); sqlState(err) != "42601" {
			t.Errorf("SHOW TABLES: %v; want 42601", err)
		}
		// Extended protocol is refused, and the console stays usable.
		_, err := adm.Prepare(ctx, "", "SHOW POOLS", nil)
		if sqlState(err) != "0A000" {
			t.Errorf("Prepare on the console: %v; want 0A000", err)
		}
		mustAdmin(t, adm, "SHOW VERSION")

		// A regular user may not open the console.
		_, err = pgconn.Connect(ctx, a.tide.ConnString("pgtide", a.User, a.Pass))
		if sqlState(err) != "28000" {
			t.Errorf("console login as %s: %v; want 28000", a.User, err)
		}
		// A wrong password is still a password failure.
		_, err = pgconn.Connect(ctx, a.tide.ConnString("pgtide", "adm", "wrong"))
		if sqlState(err) != "28P01" {
			t.Errorf("console login with a wrong password: %v; want 28P01", err)
		}

		stat := console(t, a.tide.ConnString("pgtide", "stat", a.statPass))
		if rows := mustAdmin(t, stat, "SHOW POOLS"); findRow(rows, "database", a.DB) == nil {
			t.Errorf("stats user SHOW POOLS: %v", rows)
		}
		for _, cmd := range []string{"PAUSE", "RELOAD", "KILL_CLIENT 1", "SHUTDOWN"} {
			if _, err := adminRun(t, stat, cmd); sqlState(err) != "42501" || !strings.Contains(err.Error(), "admin access needed") {
				t.Errorf("stats user %s: %v; want 42501 admin access needed", cmd, err)
			}
		}
		if _, err := adminRun(t, adm, "PAUSE nosuchdb"); sqlState(err) != "42704" {
			t.Errorf("PAUSE nosuchdb: %v; want 42704", err)
		}
		if _, err := adminRun(t, adm, "KILL_CLIENT 999999"); sqlState(err) != "42704" {
			t.Errorf("KILL_CLIENT 999999: %v; want 42704", err)
		}
	})

	t.Run("pause_resume", func(t *testing.T) {
		mustAdmin(t, adm, "PAUSE "+a.DB)
		if d := findRow(mustAdmin(t, adm, "SHOW DATABASES"), "name", a.DB); d["paused"] != "1" {
			t.Fatalf("SHOW DATABASES after PAUSE: %v", d)
		}
		done := make(chan error, 1)
		go func() {
			var n int
			done <- client.QueryRow(ctx, "select 42").Scan(&n)
		}()
		select {
		case err := <-done:
			t.Fatalf("query ran while the database was paused (err %v)", err)
		case <-time.After(300 * time.Millisecond):
		}
		c := findRow(mustAdmin(t, adm, "SHOW CLIENTS"), "application_name", "regular")
		if c["state"] != "waiting" {
			t.Errorf("SHOW CLIENTS state of the paused client = %q; want waiting", c["state"])
		}
		if p := findRow(mustAdmin(t, adm, "SHOW POOLS"), "database", a.DB); p["cl_waiting"] != "1" {
			t.Errorf("SHOW POOLS cl_waiting = %q; want 1", p["cl_waiting"])
		}
		mustAdmin(t, adm, "RESUME "+a.DB)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("query after RESUME: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("query still waiting 5 s after RESUME")
		}
	})

	t.Run("pause_waits_for_transaction", func(t *testing.T) {
		tx, err := client.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
		paused := make(chan error, 1)
		other := console(t, a.adminURL())
		go func() { _, err := adminRun(t, other, "PAUSE"); paused <- err }()
		select {
		case err := <-paused:
			t.Fatalf("PAUSE returned while a transaction held a server (err %v)", err)
		case <-time.After(300 * time.Millisecond):
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-paused:
			if err != nil {
				t.Fatalf("PAUSE: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("PAUSE did not return after the transaction ended")
		}
		if st := findRow(mustAdmin(t, adm, "SHOW STATE"), "key", "paused"); st["value"] != "yes" {
			t.Errorf("SHOW STATE paused = %v", st)
		}
		mustAdmin(t, adm, "RESUME")
		queryInt(t, client, "select 1")
	})

	t.Run("disable_enable", func(t *testing.T) {
		mustAdmin(t, adm, "DISABLE "+a.DB)
		_, err := pgx.Connect(ctx, a.URL())
		if sqlState(err) != "57P03" || !strings.Contains(err.Error(), "disabled") {
			t.Fatalf("login to a disabled database: %v; want 57P03 ... disabled", err)
		}
		queryInt(t, client, "select 1") // connected clients keep working
		mustAdmin(t, adm, "ENABLE "+a.DB)
		c := connect(t, a.URL())
		queryInt(t, c, "select 1")
		c.Close(ctx)
	})

	t.Run("kill_client", func(t *testing.T) {
		victim := connect(t, a.URL()+"&application_name=victim")
		queryInt(t, victim, "select 1")
		row := findRow(mustAdmin(t, adm, "SHOW CLIENTS"), "application_name", "victim")
		if row == nil || row["id"] == "" || row["ptr"] != row["id"] {
			t.Fatalf("SHOW CLIENTS has no victim row with an id: %v", row)
		}
		mustAdmin(t, adm, "KILL_CLIENT "+row["id"])
		var n int
		if err := victim.QueryRow(ctx, "select 1").Scan(&n); err == nil {
			t.Fatal("killed client could still run a query")
		}
		if !pgtest.Eventually(3*time.Second, func() bool {
			return findRow(mustAdmin(t, adm, "SHOW CLIENTS"), "application_name", "victim") == nil
		}) {
			t.Fatal("killed client still listed by SHOW CLIENTS")
		}
		queryInt(t, client, "select 1") // others are unaffected
	})

	t.Run("reconnect", func(t *testing.T) {
		before := queryInt(t, client, "select pg_backend_pid()")
		mustAdmin(t, adm, "RECONNECT "+a.DB)
		mustAdmin(t, adm, "WAIT_CLOSE "+a.DB)
		after := queryInt(t, client, "select pg_backend_pid()")
		if after == before {
			t.Fatalf("RECONNECT: same server pid %d before and after", before)
		}
		// A server lent during RECONNECT is closed when released.
		tx, err := client.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var inTx int64
		if err := tx.QueryRow(ctx, "select pg_backend_pid()").Scan(&inTx); err != nil {
			t.Fatal(err)
		}
		mustAdmin(t, adm, "RECONNECT")
		if sv := findRow(mustAdmin(t, adm, "SHOW SERVERS"), "remote_pid", fmt.Sprint(inTx)); sv == nil || sv["close_needed"] != "1" || sv["state"] != "active" {
			t.Errorf("SHOW SERVERS during RECONNECT: %v", sv)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		mustAdmin(t, adm, "WAIT_CLOSE")
		if got := queryInt(t, client, "select pg_backend_pid()"); got == inTx {
			t.Fatalf("server %d lent during RECONNECT was reused", inTx)
		}
	})

	t.Run("reload", func(t *testing.T) {
		good := a.conf
		good.DefaultPoolSize = 7
		a.rewriteConfig(t, good.TOML(a.pg.Port))
		mustAdmin(t, adm, "RELOAD")
		if r := findRow(mustAdmin(t, adm, "SHOW CONFIG"), "key", "default_pool_size"); r["value"] != "7" {
			t.Fatalf("after RELOAD default_pool_size = %v; want 7", r)
		}
		bad := good
		bad.Extra += "no_such_setting = 1\n"
		a.rewriteConfig(t, bad.TOML(a.pg.Port))
		_, err := adminRun(t, adm, "RELOAD")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "F0000" || !strings.Contains(pe.Message, "no_such_setting") {
			t.Fatalf("RELOAD of a bad file: %v; want F0000 naming no_such_setting", err)
		}
		if r := findRow(mustAdmin(t, adm, "SHOW CONFIG"), "key", "default_pool_size"); r["value"] != "7" {
			t.Fatalf("after a failed RELOAD default_pool_size = %v; want 7 still", r)
		}
		a.rewriteConfig(t, good.TOML(a.pg.Port))
	})

	t.Run("kill_db", func(t *testing.T) {
		victim := connect(t, a.URL())
		queryInt(t, victim, "select 1")
		mustAdmin(t, adm, "KILL "+a.DB)
		var n int
		err := victim.QueryRow(ctx, "select 1").Scan(&n)
		if err == nil {
			t.Fatal("client of a killed database could still run a query")
		}
		if d := findRow(mustAdmin(t, adm, "SHOW DATABASES"), "name", a.DB); d["paused"] != "1" || d["current_connections"] != "0" {
			t.Errorf("SHOW DATABASES after KILL: %v", d)
		}
		mustAdmin(t, adm, "RESUME "+a.DB)
		c := connect(t, a.URL())
		queryInt(t, c, "select 1")
		c.Close(ctx)
	})

	t.Run("shutdown", func(t *testing.T) {
		client.Close(ctx)
		mustAdmin(t, adm, "SHUTDOWN WAIT_FOR_SERVERS")
		if _, err := a.tide.Wait(10 * time.Second); err != nil {
			t.Fatalf("pgtide did not exit after SHUTDOWN WAIT_FOR_SERVERS: %v", err)
		}
	})
}
