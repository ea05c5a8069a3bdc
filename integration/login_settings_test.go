package integration

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestLoginSettingRefusedAsPostgreSQL: a startup setting the server refuses
// (an invalid DateStyle, whose error has a detail; a work_mem with a bad
// unit, whose error has a hint; an unknown parameter) fails the login with
// PostgreSQL's error whole: FATAL, its code and message, and its detail and
// hint. Before, pgtide told only the code and message.
func TestLoginSettingRefusedAsPostgreSQL(t *testing.T) {
	e := newEnv(t, nil)
	cases := []struct{ name, key, value string }{
		{"detail", "DateStyle", "bogus"},
		{"hint", "work_mem", "1XB"},
		{"unknown", "no_such_setting", "1"},
	}
	login := func(t *testing.T, url, key, value string) *pgconn.PgError {
		cfg, err := pgconn.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams[key] = value
		c, err := pgconn.ConnectConfig(ctxT(t, 10*time.Second), cfg)
		if err == nil {
			c.Close(ctxT(t, 5*time.Second))
			t.Fatalf("login with %s=%s succeeded", key, value)
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			t.Fatalf("login with %s=%s: %v, not a server error", key, value, err)
		}
		return pe
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := login(t, e.DirectURL(), tc.key, tc.value)
			got := login(t, e.URL(), tc.key, tc.value)
			type fields struct{ Severity, Code, Message, Detail, Hint string }
			w := fields{want.Severity, want.Code, want.Message, want.Detail, want.Hint}
			g := fields{got.Severity, got.Code, got.Message, got.Detail, got.Hint}
			if g != w {
				t.Errorf("through pgtide: %+v\n        PostgreSQL: %+v", g, w)
			}
		})
	}
}

// TestStartupParamOverridesOptions: a parameter sent both in the startup
// packet and as "-c" in options takes the startup packet's value, as
// PostgreSQL applies options first and the other startup parameters after
// them (lib/pq's own TestRuntimeParameters sends client_encoding=UTF8 with
// options='-c client_encoding=SQL_ASCII' and expects UTF8). Before, pgtide
// let options win, in every pool mode.
func TestStartupParamOverridesOptions(t *testing.T) {
	params := map[string]string{
		"client_encoding": "UTF8",
		"work_mem":        "3MB",
		"options":         "-c client_encoding=SQL_ASCII -c work_mem=5MB -c jit=off",
	}
	show := func(t *testing.T, url string) string {
		cfg, err := pgconn.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range params {
			cfg.RuntimeParams[k] = v
		}
		c, err := pgconn.ConnectConfig(ctxT(t, 10*time.Second), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctxT(t, 5*time.Second))
		res, err := c.Exec(ctxT(t, 10*time.Second), "SELECT current_setting('client_encoding') || ' ' || current_setting('work_mem') || ' ' || current_setting('jit')").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		return string(res[0].Rows[0][0]) + " told " + c.ParameterStatus("client_encoding")
	}
	for _, mode := range []string{"session", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, func(c *tideConf, _ *dbConf) { c.PoolMode = mode })
			want := show(t, e.DirectURL())
			if got := show(t, e.URL()); got != want {
				t.Errorf("through pgtide: %q, PostgreSQL: %q", got, want)
			}
		})
	}
}

// TestStartupAppNameNotUTF8: an application_name that is not valid UTF-8
// (a program name or PGAPPNAME in a Latin-1 environment) is accepted by
// PostgreSQL, which replaces what is not printable ASCII ('?' per byte up
// to 15, "\xNN" from 16). pgtide sent the bytes as they came and the
// server refused them (FATAL 22021), so the client could not log in
// through pgtide at all. The value reported at login and the setting
// must be PostgreSQL's, twice in a row (the second login of transaction
// mode comes from the welcome cache).
func TestStartupAppNameNotUTF8(t *testing.T) {
	const app = "caf\xe9 \xff\xfe\u00e9 ok"
	show := func(t *testing.T, url string) string {
		cfg, err := pgconn.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["application_name"] = app
		c, err := pgconn.ConnectConfig(ctxT(t, 10*time.Second), cfg)
		if err != nil {
			t.Fatalf("login with application_name %q: %v", app, err)
		}
		defer c.Close(ctxT(t, 5*time.Second))
		res, err := c.Exec(ctxT(t, 10*time.Second), "SELECT current_setting('application_name')").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		return string(res[0].Rows[0][0]) + " told " + c.ParameterStatus("application_name")
	}
	for _, mode := range []string{"session", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, func(c *tideConf, _ *dbConf) { c.PoolMode = mode })
			want := show(t, e.DirectURL())
			for i := 0; i < 2; i++ {
				if got := show(t, e.URL()); got != want {
					t.Errorf("login %d through pgtide: %q, PostgreSQL: %q", i+1, got, want)
				}
			}
		})
	}
}

// A startup option without "=" gets the SQLSTATE PostgreSQL gives it
// (42601: "-c work_mem requires a value"); pgtide answered 08P01.
func TestStartupOptionWithoutValue(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t, 20*time.Second)
	for _, opt := range []string{"-c%20work_mem", "--work_mem"} {
		var codes [2]string
		for i, url := range []string{e.DirectURL(), e.URL()} {
			c, err := pgconn.Connect(ctx, url+"&options="+opt)
			if err == nil {
				c.Close(ctx)
			}
			codes[i] = sqlState(err)
		}
		if codes[0] != "42601" || codes[1] != codes[0] {
			t.Errorf("options=%s: PostgreSQL %q, pgtide %q", opt, codes[0], codes[1])
		}
	}
}
