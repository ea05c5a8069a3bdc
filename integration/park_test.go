package integration

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// parkEnv starts pgtide in transaction mode with a metrics endpoint and
// returns the endpoint's base URL.
func parkEnv(t *testing.T, extra string) (*env, string) {
	t.Helper()
	mport, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", mport)
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.MaxClientConn = 500
		db.PoolSize = 2
		c.Extra = fmt.Sprintf("metrics_listen = \"127.0.0.1:%d\"\n", mport) + extra
	})
	if !pgtest.Eventually(10*time.Second, func() bool {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	}) {
		t.Fatalf("metrics endpoint %s not answering", base)
	}
	return e, base
}

func metricValue(t *testing.T, base, series string) float64 {
	t.Helper()
	v, ok := scrapeMetrics(t, base)[series]
	if !ok {
		t.Fatalf("%s not in /metrics", series)
	}
	return v
}

// Idle clients hold no goroutine (issue 15 item 5): they park at login and
// again after an idle spell, wake for their next query with their state
// intact, and a client in a transaction never parks.
func TestIdleClientsParked(t *testing.T) {
	e, base := parkEnv(t, "")
	ctx := ctxT(t, 2*time.Minute)

	// The first login fills the pool's welcome cache; later ones need no
	// server, so they have sent nothing when login ends.
	a := connect(t, e.URL())
	if queryInt(t, a, "SELECT 1") != 1 {
		t.Fatal("SELECT 1")
	}
	if _, err := a.Exec(ctx, "CREATE TABLE park_t (id int)"); err != nil {
		t.Fatal(err)
	}

	const n = 200
	conns := make([]*pgconn.PgConn, n)
	for i := range conns {
		c, err := pgconn.Connect(ctx, e.URL())
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		t.Cleanup(func() { _ = c.Close(ctx) })
		conns[i] = c
	}
	if !pgtest.Eventually(30*time.Second, func() bool {
		return metricValue(t, base, "pgtide_client_connections_parked") >= n
	}) {
		t.Fatalf("parked clients: %v, want >= %d (go_goroutines %v)", metricValue(t, base, "pgtide_client_connections_parked"), n, metricValue(t, base, "go_goroutines"))
	}
	if g := metricValue(t, base, "go_goroutines"); g >= n/2 {
		t.Errorf("go_goroutines = %v with %d idle clients: idle clients still hold goroutines", g, n)
	}

	// A client in a transaction keeps its goroutine and its server: it
	// must see its own transaction after the sweeps have gone by.
	tx := conns[0]
	if _, err := tx.Exec(ctx, "BEGIN; INSERT INTO park_t VALUES (-1)").ReadAll(); err != nil {
		t.Fatal(err)
	}

	// Every parked client wakes for its query and gets its own answer.
	for i, c := range conns[1:] {
		res, err := c.Exec(ctx, fmt.Sprintf("SELECT %d", i)).ReadAll()
		if err != nil {
			t.Fatalf("client %d after parking: %v", i+1, err)
		}
		if got := string(res[0].Rows[0][0]); got != strconv.Itoa(i) {
			t.Fatalf("client %d got %q", i+1, got)
		}
	}
	// They park again once idle; the one in a transaction does not.
	if !pgtest.Eventually(30*time.Second, func() bool {
		return metricValue(t, base, "pgtide_client_connections_parked") >= n-1
	}) {
		t.Fatalf("parked clients after queries: %v, want >= %d", metricValue(t, base, "pgtide_client_connections_parked"), n-1)
	}
	res, err := tx.Exec(ctx, "SELECT count(*) FROM park_t; COMMIT").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(res[0].Rows[0][0]); got != "1" {
		t.Fatalf("the open transaction sees %s rows, want its own 1", got)
	}
	if queryInt(t, a, "SELECT count(*) FROM park_t") != 1 {
		t.Fatal("the committed row is missing")
	}
	// Session settings survive parking (transaction mode keeps them per
	// client: issue 12).
	c := conns[5]
	if _, err := c.Exec(ctx, "SET application_name = 'parked_app'").ReadAll(); err != nil {
		t.Fatal(err)
	}
	before := metricValue(t, base, "pgtide_client_connections_parked")
	if !pgtest.Eventually(30*time.Second, func() bool {
		return metricValue(t, base, "pgtide_client_connections_parked") > before
	}) {
		t.Fatal("the client did not park after SET")
	}
	res, err = c.Exec(ctx, "SHOW application_name").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(res[0].Rows[0][0]); got != "parked_app" {
		t.Fatalf("application_name after parking = %q", got)
	}

	// SIGINT: parked clients are told and pgtide exits.
	if err := e.tide.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if _, err := e.tide.Wait(20 * time.Second); err != nil {
		t.Fatalf("pgtide did not exit with %d parked clients: %v", n, err)
	}
	if _, err := conns[7].Exec(ctx, "SELECT 1").ReadAll(); err == nil {
		t.Fatal("a parked client still ran a query after shutdown")
	}
}

// A parked client is still ended by pgtide: client_idle_timeout's timer
// reaches a session that has no goroutine, and it is gone from the counts.
func TestParkedClientIdleTimeout(t *testing.T) {
	e, base := parkEnv(t, "client_idle_timeout = \"1s\"\n")
	ctx := ctxT(t, time.Minute)
	a := connect(t, e.URL())
	if queryInt(t, a, "SELECT 1") != 1 { // fills the welcome cache
		t.Fatal("SELECT 1")
	}
	c, err := pgconn.Connect(ctx, e.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if !pgtest.Eventually(20*time.Second, func() bool {
		return metricValue(t, base, "pgtide_client_connections") == 0
	}) {
		t.Fatalf("client_connections = %v after client_idle_timeout", metricValue(t, base, "pgtide_client_connections"))
	}
	_, err = c.Exec(ctx, "SELECT 1").ReadAll()
	if err == nil {
		t.Fatal("a client past client_idle_timeout still ran a query")
	}
	if s := sqlState(err); s != "57P05" && !c.IsClosed() {
		t.Fatalf("error %v (SQLSTATE %q), want 57P05 or a closed connection", err, s)
	}
}
