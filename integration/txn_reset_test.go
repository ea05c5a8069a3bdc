package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestTxnResetReturnsToStartupSettings: RESET, RESET ALL, SET ... TO DEFAULT
// and DISCARD ALL return a session to the values its client gave at startup
// (startup packet parameters, options -c), as PostgreSQL does. pgtide
// applies startup settings to pooled servers with SET, so on the server
// these return to the server's defaults instead; before this, the client
// then ran with the server's search_path, jit and the rest, and was told
// the server's TimeZone and DateStyle (asyncpg's pool runs RESET ALL each
// time a connection goes back to it). Each step is compared with the same
// client against PostgreSQL directly; through pgtide another client uses
// the one server between steps. Simple and extended protocol.
func TestTxnResetReturnsToStartupSettings(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		db.PoolSize = 1
	})
	steps := []string{
		"",
		"SET TimeZone = 'UTC'; SET jit = on; SET search_path = public; SET DateStyle = 'ISO'; SET myapp.tenant = 'b'",
		"RESET ALL",
		"SET search_path = public",
		"RESET search_path",
		"SET TimeZone = 'UTC'",
		"SET TimeZone TO DEFAULT",
		"SET jit = on",
		"DISCARD ALL",
		"BEGIN; SET search_path = public; RESET ALL; COMMIT",
	}
	modes := map[string]pgx.QueryExecMode{"simple": pgx.QueryExecModeSimpleProtocol, "extended": pgx.QueryExecModeCacheDescribe}
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			want := resetSteps(t, e.DirectURL(), mode, steps, nil)
			other := connect(t, e.URL())
			got := resetSteps(t, e.URL(), mode, steps, other)
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("through pgtide: %s\n        PostgreSQL: %s", got[i], want[i])
				}
			}
		})
	}
}

// TestTxnAsyncpgPoolKeepsServerSettings: an asyncpg pool created with
// server_settings (search_path, jit, TimeZone, sent at connect time) runs
// RESET ALL at each release; its connections keep those settings, as
// against PostgreSQL directly. Before, after the first release an
// unqualified table name no longer found the table in the pool's schema.
func TestTxnAsyncpgPoolKeepsServerSettings(t *testing.T) {
	py := needPython(t, "asyncpg", "python3-asyncpg")
	txnPyAgainstBoth(t, py, "txn_asyncpg_reset.py", 1)
}

// TestSessionResetReturnsToStartupSettings: session mode, where pgtide also
// applies connect-time settings with SET: RESET, RESET ALL and DISCARD ALL
// return to them, as against PostgreSQL directly (simple and extended
// protocol); and an asyncpg pool with server_settings keeps them across its
// RESET ALL at each release.
func TestSessionResetReturnsToStartupSettings(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "session"
		db.PoolSize = 3
	})
	steps := []string{
		"",
		"SET TimeZone = 'UTC'; SET jit = on; SET search_path = public; SET DateStyle = 'ISO'; SET myapp.tenant = 'b'",
		"RESET ALL",
		"SET search_path = public",
		"RESET search_path",
		"SET jit = on",
		"DISCARD ALL",
		"SET TimeZone = 'UTC'; RESET TimeZone",
	}
	modes := map[string]pgx.QueryExecMode{"simple": pgx.QueryExecModeSimpleProtocol, "extended": pgx.QueryExecModeCacheDescribe}
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			want := resetSteps(t, e.DirectURL(), mode, steps, nil)
			got := resetSteps(t, e.URL(), mode, steps, nil)
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("through pgtide: %s\n        PostgreSQL: %s", got[i], want[i])
				}
			}
		})
	}
	t.Run("asyncpg", func(t *testing.T) {
		py := needPython(t, "asyncpg", "python3-asyncpg")
		runTxnPy(t, py, "txn_asyncpg_reset.py", e.tide.Host, e.tide.Port, e.DB, e.User, e.Pass)
	})
}

// resetSteps connects with connect-time settings (TimeZone, DateStyle,
// search_path, application_name, and jit and a custom one through options), runs each step
// (statements split on "; "), and describes what the client sees after
// each: the values its queries run with and the reported ones it was told.
// other, when set, runs a query between steps (on the same server).
func resetSteps(t *testing.T, url string, mode pgx.QueryExecMode, steps []string, other *pgx.Conn) []string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["TimeZone"] = "Asia/Tokyo"
	cfg.RuntimeParams["DateStyle"] = "German"
	cfg.RuntimeParams["search_path"] = "foo, public"
	cfg.RuntimeParams["application_name"] = "startup_app"
	cfg.RuntimeParams["options"] = "-c jit=off -c myapp.tenant=a"
	cfg.DefaultQueryExecMode = mode
	c, err := pgx.ConnectConfig(ctxT(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var out []string
	for _, step := range steps {
		if step != "" {
			for _, q := range strings.Split(step, "; ") {
				if _, err := c.Exec(ctxT(t, 10*time.Second), q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
		}
		if other != nil { // another client on the one server
			if _, err := other.Exec(ctxT(t, 10*time.Second), "SELECT 1"); err != nil {
				t.Fatal(err)
			}
		}
		var tz, ds, sp, jit, tenant, app string
		if err := c.QueryRow(ctxT(t, 10*time.Second), "SELECT current_setting('TimeZone'), current_setting('DateStyle'), current_setting('search_path'), current_setting('jit'), current_setting('myapp.tenant', true), current_setting('application_name')").Scan(&tz, &ds, &sp, &jit, &tenant, &app); err != nil {
			t.Fatal(err)
		}
		pc := c.PgConn()
		out = append(out, fmt.Sprintf("after %q: TimeZone=%s DateStyle=%s search_path=%s jit=%s myapp.tenant=%s application_name=%s; reported TimeZone=%s DateStyle=%s application_name=%s",
			step, tz, ds, sp, jit, tenant, app, pc.ParameterStatus("TimeZone"), pc.ParameterStatus("DateStyle"), pc.ParameterStatus("application_name")))
	}
	return out
}
