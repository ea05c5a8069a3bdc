package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// logLines returns pgtide's JSON log lines whose message is msg.
func logLines(logs, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestStatsLogAndSwitches: stats_period logs a per-pool stats line with
// rates and averages; log_connections, log_disconnections and
// log_pooler_errors gate their lines and change on reload.
func TestStatsLogAndSwitches(t *testing.T) {
	off := "stats_period = \"300ms\"\nlog_connections = false\nlog_disconnections = false\nlog_pooler_errors = false\n"
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.Extra = off
	})
	ctx := ctxT(t, 30*time.Second)
	c := connect(t, e.URL())
	for range 20 {
		queryInt(t, c, "SELECT 1")
	}
	var line map[string]any
	if !pgtest.Eventually(3*time.Second, func() bool {
		for _, m := range logLines(e.tide.Logs(), "stats") {
			if m["database"] == e.DB && m["user"] == e.User && m["queries"].(float64) > 0 {
				line = m
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no stats line with queries for the pool within 3 s")
	}
	t.Logf("stats line: %v", line)
	for _, k := range []string{"xacts_per_s", "queries_per_s", "bytes_in_per_s", "bytes_out_per_s", "avg_xact_us", "avg_query_us", "avg_wait_us", "xacts", "period_ms"} {
		if _, ok := line[k]; !ok {
			t.Errorf("stats line has no %q", k)
		}
	}
	total := 0.0
	for _, m := range logLines(e.tide.Logs(), "stats") {
		if m["database"] == e.DB {
			total += m["queries"].(float64)
		}
	}
	if total < 20 {
		t.Errorf("stats lines count %v queries in all; the client ran at least 20", total)
	}

	// Switches off: no connect, disconnect or refused-login lines.
	mark := len(e.tide.Logs())
	c2 := connect(t, e.URL())
	queryInt(t, c2, "SELECT 1")
	c2.Close(ctx)
	if connectErr(t, e.tide.ConnString("no_such_db", e.User, e.Pass)) == nil {
		t.Fatal("login to an unknown database succeeded")
	}
	// Lines that must not come give no condition to wait on: give them
	// time to show up.
	time.Sleep(200 * time.Millisecond)
	for _, msg := range []string{"client connected", "client disconnected", "login failed"} {
		if n := len(logLines(e.tide.Logs()[mark:], msg)); n != 0 {
			t.Errorf("%q logged %d times with its switch off", msg, n)
		}
	}

	// Switches on by reload (and stats off).
	conf := e.conf
	conf.Extra = "stats_period = \"0\"\n"
	reloadTo(t, e, conf, "debug")
	mark = len(e.tide.Logs())
	c3 := connect(t, e.URL())
	queryInt(t, c3, "SELECT 1")
	c3.Close(ctx)
	if connectErr(t, e.tide.ConnString("no_such_db", e.User, e.Pass)) == nil {
		t.Fatal("login to an unknown database succeeded")
	}
	if !pgtest.Eventually(2*time.Second, func() bool {
		logs := e.tide.Logs()[mark:]
		return len(logLines(logs, "client connected")) > 0 && len(logLines(logs, "client disconnected")) > 0 && len(logLines(logs, "login failed")) > 0
	}) {
		t.Fatalf("connect/disconnect/login failed lines missing after turning the switches on:\n%s", e.tide.Logs()[mark:])
	}
	conn := logLines(e.tide.Logs()[mark:], "client connected")[0]
	for _, k := range []string{"client", "session", "database", "user"} {
		if _, ok := conn[k]; !ok {
			t.Errorf("client connected line has no %q: %v", k, conn)
		}
	}
	// More than two of the old 300 ms periods: a stats line would be due.
	time.Sleep(700 * time.Millisecond)
	if n := len(logLines(e.tide.Logs()[mark:], "stats")); n != 0 {
		t.Errorf("%d stats lines after stats_period was set to 0", n)
	}
}
