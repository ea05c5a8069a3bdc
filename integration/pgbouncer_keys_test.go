package integration

// PgBouncer settings operators rely on (issue 16 item 4), each against the
// real PostgreSQL: ignore_startup_parameters, application_name_add_host,
// connect_query, per-database client_encoding/datestyle/timezone,
// reserve_pool_size/reserve_pool_timeout.

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// connectWith opens a pgx connection sending params as startup parameters.
func connectWith(t testing.TB, url string, params map[string]string) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range params {
		cc.RuntimeParams[k] = v
	}
	c, err := pgx.ConnectConfig(ctxT(t, 15*time.Second), cc)
	if err != nil {
		t.Fatalf("connect %s: %v", redact(url), err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// TestIgnoreStartupParameters: parameters in ignore_startup_parameters, as
// startup parameters or as -c in options, are accepted and not set on the
// server; the others still are.
func TestIgnoreStartupParameters(t *testing.T) {
	for _, mode := range []string{"session", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, func(c *tideConf, _ *dbConf) {
				c.PoolMode = mode
				c.Extra = "ignore_startup_parameters = [\"search_path\", \"Statement_Timeout\"]\n"
			})
			c := connectWith(t, e.URL(), map[string]string{
				"search_path": "nowhere", "lock_timeout": "1234ms",
				"options": "-c statement_timeout=4321 -c work_mem=2MB",
			})
			if got := queryString(t, c, "show search_path"); got != `"$user", public` {
				t.Errorf("search_path = %q; want the server's default (the startup value is ignored)", got)
			}
			if got := queryString(t, c, "show statement_timeout"); got != "0" {
				t.Errorf("statement_timeout = %q; want 0 (the options value is ignored)", got)
			}
			if got := queryString(t, c, "show lock_timeout"); got != "1234ms" {
				t.Errorf("lock_timeout = %q; want 1234ms (not in the list)", got)
			}
			if got := queryString(t, c, "show work_mem"); got != "2MB" {
				t.Errorf("work_mem = %q; want 2MB (not in the list)", got)
			}
		})
	}
}

// TestApplicationNameAddHost: with application_name_add_host the server
// sees "NAME - host:port" of the client ("app - host:port" without a name),
// and the client is told that value at login, as PgBouncer does.
func TestApplicationNameAddHost(t *testing.T) {
	e := newEnv(t, func(c *tideConf, _ *dbConf) {
		c.PoolMode = "transaction"
		c.Extra = "application_name_add_host = true\n"
	})
	for _, tc := range []struct{ sent, name string }{{"myapp", "myapp"}, {"", "app"}} {
		params := map[string]string{}
		if tc.sent != "" {
			params["application_name"] = tc.sent
		}
		c := connectWith(t, e.URL(), params)
		la := c.PgConn().Conn().LocalAddr().(*net.TCPAddr)
		want := fmt.Sprintf("%s - %s:%d", tc.name, la.IP, la.Port)
		if got := queryString(t, c, "show application_name"); got != want {
			t.Errorf("server's application_name = %q; want %q", got, want)
		}
		if got := c.PgConn().ParameterStatus("application_name"); got != want {
			t.Errorf("reported application_name = %q; want %q", got, want)
		}
		// A later SET is applied as sent.
		if _, err := c.Exec(ctxT(t, 10*time.Second), "set application_name = 'later'"); err != nil {
			t.Fatal(err)
		}
		if got := queryString(t, c, "show application_name"); got != "later" {
			t.Errorf("after SET: %q", got)
		}
	}
}

// TestConnectQuery: a database's connect_query runs once on each new server
// connection, on that connection, before the client uses it; one that fails
// closes the connection and the client gets PostgreSQL's error.
func TestConnectQuery(t *testing.T) {
	pg := pgtest.Shared(t)
	good, bad := uniqueName(t, "cq"), uniqueName(t, "cqbad")
	var dbName string
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		dbName = db.Name
		c.Extra = fmt.Sprintf(`
[databases.%s]
host = "127.0.0.1"
port = %d
dbname = %q
connect_query = "insert into public.dials(pid) values (pg_backend_pid())"

[databases.%s]
host = "127.0.0.1"
port = %d
dbname = %q
connect_query = "select * from public.no_such_table"
`, good, pg.Port, dbName, bad, pg.Port, dbName)
	})
	direct := connect(t, e.DirectURL())
	if _, err := direct.Exec(ctxT(t, 10*time.Second), "create table public.dials(pid int)"); err != nil {
		t.Fatal(err)
	}
	var pids []int64
	for i := 0; i < 2; i++ {
		c := connect(t, e.tide.ConnString(good, e.User, e.Pass))
		pids = append(pids, queryInt(t, c, "select pg_backend_pid()"))
	}
	for _, pid := range pids {
		if n := queryInt(t, direct, "select count(*) from public.dials where pid = $1", pid); n != 1 {
			t.Errorf("server %d ran connect_query %d times; want once", pid, n)
		}
	}
	if n := queryInt(t, direct, "select count(*) from public.dials"); n != 2 {
		t.Errorf("connect_query ran %d times for 2 server connections", n)
	}

	_, err := pgx.Connect(ctxT(t, 15*time.Second), e.tide.ConnString(bad, e.User, e.Pass))
	if err == nil {
		t.Fatal("login through a failing connect_query succeeded")
	}
	if st := sqlState(err); st != "42P01" {
		t.Errorf("login error %v (SQLSTATE %q); want 42P01 from the connect_query", err, st)
	}
	if !pgtest.Eventually(10*time.Second, func() bool { return strings.Contains(e.tide.Logs(), "connect_query failed") }) {
		t.Error("pgtide did not log the connect_query failure")
	}
}

// TestDatabaseParameterDefaults: a database's client_encoding, datestyle
// and timezone are the settings of its clients that send none of their
// own: set on the server and reported at login. A client's own value wins.
func TestDatabaseParameterDefaults(t *testing.T) {
	pg := pgtest.Shared(t)
	name := uniqueName(t, "dflt")
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.DefaultPoolSize = 1 // both clients share one server
		c.Extra = fmt.Sprintf(`
[databases.%s]
host = "127.0.0.1"
port = %d
dbname = %q
client_encoding = "LATIN1"
datestyle = "SQL, DMY"
timezone = "Pacific/Chatham"
`, name, pg.Port, db.Name)
	})
	url := e.tide.ConnString(name, e.User, e.Pass)
	own := connectWith(t, url, map[string]string{"timezone": "UTC", "options": "-c DateStyle=ISO,YMD"})
	dflt := connectWith(t, url, nil)
	for _, tc := range []struct {
		c                *pgx.Conn
		who              string
		enc, style, zone string
	}{
		{dflt, "client with no settings", "LATIN1", "SQL, DMY", "Pacific/Chatham"},
		{own, "client with its own", "LATIN1", "ISO, YMD", "UTC"},
	} {
		for _, p := range []struct{ show, reported, want string }{
			{"client_encoding", "client_encoding", tc.enc}, {"datestyle", "DateStyle", tc.style}, {"timezone", "TimeZone", tc.zone},
		} {
			if got := queryString(t, tc.c, "show "+p.show); got != p.want {
				t.Errorf("%s: server's %s = %q; want %q", tc.who, p.show, got, p.want)
			}
			if got := tc.c.PgConn().ParameterStatus(p.reported); got != p.want {
				t.Errorf("%s: reported %s = %q; want %q", tc.who, p.reported, got, p.want)
			}
		}
	}
}

// TestReservePool: with the pool's one server held in a transaction, a
// client that waited reserve_pool_timeout gets a reserve server; once the
// reserve is used up too, the next client waits until query_wait_timeout.
func TestReservePool(t *testing.T) {
	e := newEnv(t, func(c *tideConf, _ *dbConf) {
		c.PoolMode = "transaction"
		c.DefaultPoolSize = 1
		c.Extra = "reserve_pool_size = 1\nreserve_pool_timeout = \"100ms\"\nquery_wait_timeout = \"10s\"\n"
	})
	a := connect(t, e.URL())
	txA, err := a.Begin(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var pidA int64
	if err := txA.QueryRow(ctxT(t, 10*time.Second), "select pg_backend_pid()").Scan(&pidA); err != nil {
		t.Fatal(err)
	}
	// The only server is in a's transaction: b is served from the reserve.
	b := connect(t, e.URL())
	txB, err := b.Begin(ctxT(t, 15*time.Second))
	if err != nil {
		t.Fatalf("client past reserve_pool_timeout: %v", err)
	}
	var pidB int64
	if err := txB.QueryRow(ctxT(t, 10*time.Second), "select pg_backend_pid()").Scan(&pidB); err != nil {
		t.Fatal(err)
	}
	if pidB == pidA {
		t.Fatalf("b got a's server %d inside a's transaction", pidA)
	}
	// Both servers are held: c waits, and times out.
	c, err := pgx.Connect(ctxT(t, 30*time.Second), e.URL())
	if err == nil {
		t.Cleanup(func() { c.Close(context.Background()) })
		_, err = c.Exec(ctxT(t, 30*time.Second), "select 1")
	}
	if st := sqlState(err); st != "57014" {
		t.Errorf("third client: %v (SQLSTATE %q); want 57014 query_wait_timeout (reserve used up)", err, st)
	}
	for _, tx := range []pgx.Tx{txA, txB} {
		if err := tx.Commit(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCancelWaitTimeoutSet: with cancel_wait_timeout set, a cancel request
// still reaches the backend running the client's query (57014 at once, the
// connection usable after). The limit itself is TestCancelWaitTimeout
// (proxy): a server that never accepts the cancel.
func TestCancelWaitTimeoutSet(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.Extra = "cancel_wait_timeout = \"2s\"\n"
	})
	c := connect(t, e.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := c.Exec(ctx, "SELECT pg_sleep(30)")
	if err == nil {
		t.Fatal("pg_sleep(30) was not cancelled")
	}
	if !c.IsClosed() {
		if got := queryInt(t, c, "SELECT 7"); got != 7 {
			t.Fatalf("after the cancel: %d", got)
		}
	}
	// The backend's query really stopped: nothing of this database sleeps.
	admin := super(t, e.pg, "postgres")
	if !pgtest.Eventually(5*time.Second, func() bool {
		return queryInt(t, admin, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'SELECT pg_sleep%' AND state = 'active'", e.DB) == 0
	}) {
		t.Fatal("the cancelled pg_sleep is still running on the server")
	}
}
