package integration

// PgBouncer settings operators rely on (issue 16 item 4), each against the
// real PostgreSQL: ignore_startup_parameters, application_name_add_host.

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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
