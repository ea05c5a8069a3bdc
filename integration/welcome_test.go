package integration

// Logins without a server (proxy/welcome.go): once a pool has seen a login
// with a client's startup settings, the next such login completes at once
// and the client waits for a server at its first query.

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestLoginBeyondPoolSizeSessionMode: session mode, pool_size 1, the one
// server held by a client. A second client logs in at once (before, its
// login waited for the server until its connect timeout) and gets the
// server, with its startup settings, when the first client leaves.
func TestLoginBeyondPoolSizeSessionMode(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) { c.PoolMode = "session"; db.PoolSize = 1 })
	first := connect(t, e.URL()+"&application_name=first") // the pool learns the welcome
	queryInt(t, first, "SELECT 1")

	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	second, err := pgx.Connect(ctx2, e.URL()+"&application_name=first")
	if err != nil {
		t.Fatalf("a second client beyond pool_size 1 could not log in while the server is held: %v", err)
	}
	defer second.Close(context.Background())
	if got := second.PgConn().ParameterStatus("application_name"); got != "first" {
		t.Errorf("application_name reported at login = %q; want first", got)
	}
	if got := second.PgConn().ParameterStatus("server_version"); got == "" {
		t.Error("server_version not reported at login")
	}
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var app string
		err := second.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&app)
		if err == nil && app != "first" {
			err = &pgconn.PgError{Message: "application_name on the server = " + app}
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("the second client ran a query while the only server was held: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	first.Close(context.Background())
	if err := <-got; err != nil {
		t.Fatalf("the second client's first query after the server freed: %v", err)
	}
}

// TestLoginWelcomeRefreshed: a login answered from the cache is told the
// server's current values at its first query when the server's defaults
// changed since (ParameterStatus, as PostgreSQL sends on a change).
func TestLoginWelcomeRefreshed(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) { c.PoolMode = "transaction"; db.PoolSize = 2 })
	c1 := connect(t, e.URL())
	if got := c1.PgConn().ParameterStatus("IntervalStyle"); got != "postgres" {
		t.Fatalf("IntervalStyle at login = %q; want postgres", got)
	}
	c1.Close(context.Background())
	e.pg.Exec(t, "ALTER DATABASE "+e.DB+" SET IntervalStyle = 'iso_8601'")
	// New servers now start with iso_8601; the idle ones still say postgres.
	admin := super(t, e.pg, "postgres")
	if _, err := admin.Exec(ctxT(t, 10*time.Second), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", e.DB); err != nil {
		t.Fatal(err)
	}
	if !pgtest.Eventually(10*time.Second, func() bool {
		return queryInt(t, admin, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", e.DB) == 0
	}) {
		t.Fatal("terminated backends did not exit")
	}
	c2 := connect(t, e.URL())
	if got := c2.PgConn().ParameterStatus("IntervalStyle"); got != "postgres" {
		t.Logf("IntervalStyle at login = %q (the login borrowed a server)", got)
	}
	var iv string
	if err := c2.QueryRow(ctxT(t, 10*time.Second), "SELECT current_setting('IntervalStyle')").Scan(&iv); err != nil {
		t.Fatal(err)
	}
	if iv != "iso_8601" {
		t.Fatalf("server IntervalStyle = %q; want iso_8601", iv)
	}
	if got := c2.PgConn().ParameterStatus("IntervalStyle"); got != "iso_8601" {
		t.Fatalf("the client was not told the server's IntervalStyle: it believes %q", got)
	}
	c3 := connect(t, e.URL())
	if got := c3.PgConn().ParameterStatus("IntervalStyle"); got != "iso_8601" {
		t.Fatalf("the next login was told IntervalStyle %q; want iso_8601 (cache refreshed)", got)
	}
}
