package integration

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestTxnToldParamsFollowClient: transaction mode, pool_size 1. A client
// is told TimeZone, DateStyle and standard_conforming_strings at login;
// then the database's defaults change (ALTER DATABASE ... SET) and its
// pooled server goes away. The client's queries must still run with the
// values it was told, as a direct session's do (and as PgBouncer keeps
// them): before the fix the new server's defaults reached it silently
// (told standard_conforming_strings = on, its queries ran with off, which
// breaks libpq's quoting).
func TestTxnToldParamsFollowClient(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) { db.PoolSize = 1 })
	sup := super(t, r.pg, r.DB)
	ctx := ctxT(t, 60*time.Second)
	type view struct{ told, got string }
	check := func(c *pgx.Conn) map[string]view {
		out := map[string]view{}
		for _, p := range []string{"TimeZone", "DateStyle", "standard_conforming_strings"} {
			var v string
			if err := c.QueryRow(ctx, "SELECT current_setting($1)", p).Scan(&v); err != nil {
				t.Fatalf("current_setting(%s): %v", p, err)
			}
			out[p] = view{told: c.PgConn().ParameterStatus(p), got: v}
		}
		return out
	}
	direct := connect(t, r.DirectURL())
	tide := connect(t, r.URL())
	var directPID int32
	if err := direct.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&directPID); err != nil {
		t.Fatal(err)
	}
	t.Logf("before: direct %v, pgtide %v", check(direct), check(tide))
	t.Cleanup(func() {
		_, _ = sup.Exec(context.Background(), "ALTER DATABASE "+r.DB+" RESET ALL")
	})
	for _, q := range []string{
		"ALTER DATABASE " + r.DB + " SET TimeZone = 'Asia/Tokyo'",
		"ALTER DATABASE " + r.DB + " SET DateStyle = 'SQL, DMY'",
		"ALTER DATABASE " + r.DB + " SET standard_conforming_strings = off",
	} {
		if _, err := sup.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// The pool's server goes away (a restart, server_lifetime, a network blip).
	if _, err := sup.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> $2", r.User, directPID); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitUntil(t, 5*time.Second, "the pooled server gone (only the direct session left)", func() bool {
		all, _ := r.backends(t)
		return all == 1
	})
	d, p := check(direct), check(tide)
	t.Logf("after: direct %v", d)
	t.Logf("after: pgtide %v", p)
	for k, v := range p {
		if v.told != v.got {
			t.Errorf("pgtide: the client was told %s = %q, its queries run with %q (directly: told %q, runs with %q)", k, v.told, v.got, d[k].told, d[k].got)
		}
	}
	// A client that logs in now starts with the new defaults, as a new
	// direct session does, whatever pgtide cached at earlier logins.
	nd, nt := check(connect(t, r.DirectURL())), check(connect(t, r.URL()))
	t.Logf("new: direct %v", nd)
	t.Logf("new: pgtide %v", nt)
	for k, v := range nt {
		if v.got != nd[k].got || v.told != v.got {
			t.Errorf("a new pgtide client: told %s = %q, runs with %q; a new direct session runs with %q", k, v.told, v.got, nd[k].got)
		}
	}
	// And the first client still keeps what it was told.
	for k, v := range check(tide) {
		if v.told != v.got {
			t.Errorf("pgtide, after a new client: the first client was told %s = %q, its queries run with %q", k, v.told, v.got)
		}
	}
}
