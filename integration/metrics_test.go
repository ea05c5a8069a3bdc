package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// scrape is one parsed /metrics page: series ("name{labels}") -> value.
type scrape map[string]float64

// get returns the value of the series called name whose labels include
// every label="value" pair in labels, summed over the matches; ok=false when
// none matches.
func (s scrape) get(name string, labels ...string) (float64, bool) {
	var sum float64
	found := false
	for series, v := range s {
		n, ls, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains("{"+ls, "{"+l+",") && !strings.Contains("{"+ls, ","+l+",") &&
				!strings.Contains(ls, ","+l+"}") && !strings.HasPrefix(ls, l+"}") {
				match = false
				break
			}
		}
		if match {
			sum += v
			found = true
		}
	}
	return sum, found
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	code, body, err := tryHTTPGet(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return code, body
}

// tryHTTPGet is httpGet for polling: an endpoint not up yet is an error,
// not a test failure.
func tryHTTPGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	return resp.StatusCode, string(b), nil
}

func scrapeMetrics(t *testing.T, base string) scrape {
	t.Helper()
	code, body := httpGet(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d\n%s", code, body)
	}
	s := scrape{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("/metrics: malformed line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics: malformed value in %q", line)
		}
		s[line[:i]] = v
	}
	return s
}

// TestMetrics runs queries through pgtide and reads them back from
// metrics_listen: counters, gauges, histograms, /healthz, and /readyz turning
// 503 when a SIGTERM starts the drain while a client is still connected.
func TestMetrics(t *testing.T) {
	mport, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", mport)
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.Extra = fmt.Sprintf("metrics_listen = \"127.0.0.1:%d\"\n", mport)
	})
	if !pgtest.Eventually(5*time.Second, func() bool {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	}) {
		t.Fatalf("metrics endpoint %s not answering /healthz", base)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz while running: %d %s", code, body)
	}

	ctx := ctxT(t, 30*time.Second)
	a := connect(t, e.URL())
	for i := range 5 {
		if n := queryInt(t, a, "SELECT $1::int", i); n != int64(i) {
			t.Fatal(n)
		}
	}
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_sleep(0.01)"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "SELECT 1/0"); sqlState(err) != "22012" {
		t.Fatalf("SELECT 1/0: %v, want 22012", err)
	}
	if err := connectErr(t, e.tide.ConnString(e.DB, e.User, "wrong-password")); sqlState(err) != "28P01" {
		t.Fatalf("login with a wrong password: %v", err)
	}

	db, user := `database="`+e.DB+`"`, `user="`+e.User+`"`
	var s scrape
	// Counters move as the proxy sees each reply, which may be just after
	// the client got it: poll until they have caught up.
	if !pgtest.Eventually(5*time.Second, func() bool {
		s = scrapeMetrics(t, base)
		q, _ := s.get("pgtide_pool_queries_total", db, user)
		x, _ := s.get("pgtide_pool_transactions_total", db, user)
		e, _ := s.get("pgtide_pool_server_errors_total", db, user, `class="22"`)
		f, _ := s.get("pgtide_login_failures_total", `reason="password"`)
		return q >= 7 && x >= 7 && e >= 1 && f >= 1
	}) {
		q, _ := s.get("pgtide_pool_queries_total", db, user)
		x, _ := s.get("pgtide_pool_transactions_total", db, user)
		t.Fatalf("pgtide_pool_queries_total = %v, pgtide_pool_transactions_total = %v for the pool; want >= 7 each", q, x)
	}
	for _, c := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"pgtide_pool_received_bytes_total", []string{db, user}, 1},
		{"pgtide_pool_sent_bytes_total", []string{db, user}, 1},
		{"pgtide_pool_logins_total", []string{db, user}, 1},
		{"pgtide_pool_server_errors_total", []string{db, user, `class="22"`}, 1},
		{"pgtide_pool_server_connects_total", []string{db, user}, 1},
		{"pgtide_pool_clients", []string{db, user, `state="active"`}, 1},
		{"pgtide_pool_clients", []string{db, user, `state="waiting"`}, 0},
		{"pgtide_pool_servers", []string{db, user}, 1}, // all states
		{"pgtide_pool_servers", []string{db, user, `state="idle"`}, 0},
		{"pgtide_pool_servers", []string{db, user, `state="active"`}, 0},
		{"pgtide_pool_servers", []string{db, user, `state="used"`}, 0},
		{"pgtide_pool_servers", []string{db, user, `state="testing"`}, 0},
		{"pgtide_pool_servers", []string{db, user, `state="login"`}, 0},
		{"pgtide_pool_max_wait_seconds", []string{db, user}, 0},
		{"pgtide_pool_query_duration_seconds_count", []string{db, user}, 7},
		{"pgtide_pool_transaction_duration_seconds_count", []string{db, user}, 7},
		{"pgtide_pool_wait_duration_seconds_count", []string{db, user}, 1}, // borrows: not one per transaction when the next request beats the release
		{"pgtide_pool_transaction_duration_seconds_bucket", []string{db, user, `le="+Inf"`}, 7},
		{"pgtide_client_connections", nil, 1},
		{"pgtide_login_failures_total", []string{`reason="password"`}, 1},
		{"pgtide_ready", nil, 1},
		{"pgtide_build_info", nil, 1},
		{"go_goroutines", nil, 1},
	} {
		v, ok := s.get(c.name, c.labels...)
		if !ok {
			t.Errorf("%s%v not in /metrics", c.name, c.labels)
		} else if v < c.min {
			t.Errorf("%s%v = %v, want >= %v", c.name, c.labels, v, c.min)
		}
	}
	if t.Failed() {
		_, body := httpGet(t, base+"/metrics")
		t.Logf("/metrics:\n%s", body)
	}

	// SIGTERM with a client connected: pgtide waits for it (shutdown_timeout
	// 10s), stops accepting, and /readyz says so while /healthz stays 200.
	if err := e.tide.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var code int
	var body string
	if !pgtest.Eventually(5*time.Second, func() bool {
		code, body = httpGet(t, base+"/readyz")
		return code == http.StatusServiceUnavailable
	}) {
		t.Fatalf("/readyz after SIGTERM: %d %s, want 503", code, body)
	}
	if code, body := httpGet(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz while draining: %d %s", code, body)
	}
	if v, _ := scrapeMetrics(t, base).get("pgtide_ready"); v != 0 {
		t.Fatalf("pgtide_ready = %v while draining, want 0", v)
	}
	if e.tide.Exited() {
		t.Fatalf("pgtide exited on SIGTERM with a client connected")
	}
	if n := queryInt(t, a, "SELECT 42"); n != 42 {
		t.Fatal(n)
	}
	a.Close(ctx)
	if _, err := e.tide.Wait(5 * time.Second); err != nil {
		t.Fatalf("pgtide still running 5 s after the last client left")
	}
	if resp, err := http.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("metrics endpoint still answering after pgtide exited")
	}
}

// TestMetricsClientsWaitingAtPause: pgtide_pool_clients{state="waiting"}
// and pgtide_pool_max_wait_seconds count the clients SHOW POOLS counts in
// cl_waiting: one whose query waits at PAUSE and one whose login does. They
// came from the pool's own wait queue, which neither is in, and read 0.
func TestMetricsClientsWaitingAtPause(t *testing.T) {
	mport, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", mport)
	stamp := fmt.Sprint(time.Now().UnixNano())
	admPass := "Adm-" + stamp
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.Extra = fmt.Sprintf("metrics_listen = \"127.0.0.1:%d\"\nadmin_users = [\"adm\"]\n", mport)
		c.Users["adm"] = admPass
	})
	a := connect(t, e.URL()) // logged in; its pool exists
	if _, err := a.Exec(ctxT(t, 10*time.Second), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	adm := console(t, e.tide.ConnString("pgtide", "adm", admPass))
	mustAdmin(t, adm, "PAUSE "+e.DB)
	queryDone := make(chan error, 1)
	go func() {
		_, err := a.Exec(context.Background(), "SELECT 1")
		queryDone <- err
	}()
	loginDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, e.URL()+"&application_name=metricswait") // new settings: its login needs a server
		if err == nil {
			c.Close(context.Background())
		}
		loginDone <- err
	}()
	db, user := `database="`+e.DB+`"`, `user="`+e.User+`"`
	var w, mw float64
	if !pgtest.Eventually(10*time.Second, func() bool {
		s := scrapeMetrics(t, base)
		w, _ = s.get("pgtide_pool_clients", db, user, `state="waiting"`)
		mw, _ = s.get("pgtide_pool_max_wait_seconds", db, user)
		return w == 2 && mw > 0
	}) {
		t.Fatalf(`at PAUSE with a query and a login waiting: pgtide_pool_clients{state="waiting"} = %v, pgtide_pool_max_wait_seconds = %v; want 2 and > 0`, w, mw)
	}
	mustAdmin(t, adm, "RESUME "+e.DB)
	for _, ch := range []chan error{queryDone, loginDone} {
		if err := <-ch; err != nil {
			t.Fatalf("after RESUME: %v", err)
		}
	}
	if !pgtest.Eventually(10*time.Second, func() bool {
		w, _ = scrapeMetrics(t, base).get("pgtide_pool_clients", db, user, `state="waiting"`)
		return w == 0
	}) {
		t.Fatalf(`after RESUME: pgtide_pool_clients{state="waiting"} = %v; want 0`, w)
	}
}

// TestMetricsNamesNotUTF8: under auth_type "trust" any user name logs in,
// and with the database's own user and password the server login does not
// depend on it; a name that is not UTF-8 (a client's Latin-1) made
// Prometheus panic on the pool's label values. The login panicked after
// it had borrowed its server, which was never given back (one PostgreSQL
// connection lost per login, pool after pool), and every scrape answered
// 500 while the pool lived. Such a client logs in and runs its query, the
// scrape works and shows the name with U+FFFD, and its server goes back.
func TestMetricsNamesNotUTF8(t *testing.T) {
	pg := pgtest.Shared(t)
	pgtest.BuildPgtide(t)
	user, db := uniqueName(t, "u"), uniqueName(t, "d")
	pass := "Pw-" + user + "-" + fmt.Sprint(time.Now().UnixNano())
	pgtest.CreateRole(t, pg, user, pass)
	pgtest.CreateDatabase(t, pg, db, user)
	mport, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	tide := pgtest.StartPgtide(t, fmt.Sprintf(`listen = ["127.0.0.1:{{PORT}}"]
log_format = "json"
auth_type = "trust"
pool_mode = "transaction"
metrics_listen = "127.0.0.1:%d"

[databases.%s]
host = "127.0.0.1"
port = %d
user = %q
password = %q
`, mport, db, pg.Port, user, pass))
	t.Cleanup(func() {
		if strings.Contains(tide.Logs(), pass) {
			t.Errorf("pgtide output contains a password")
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", mport)
	pgtest.WaitUntil(t, 5*time.Second, "metrics endpoint", func() bool { _, _, err := tryHTTPGet(base + "/healthz"); return err == nil })
	cfg, err := pgx.ParseConfig(tide.ConnString(db, "x", ""))
	if err != nil {
		t.Fatal(err)
	}
	cfg.User = "caf\xe9"
	for i := 0; i < 3; i++ {
		c, err := pgx.ConnectConfig(ctxT(t, 10*time.Second), cfg)
		if err != nil {
			t.Fatalf("login %d as %q: %v", i+1, cfg.User, err)
		}
		if who := queryString(t, c, "SELECT current_user"); who != user {
			t.Fatalf("logged in as %s", who)
		}
		c.Close(context.Background())
	}
	s := scrapeMetrics(t, base) // fails on anything but 200
	if v, ok := s.get("pgtide_pool_logins_total", `user="caf`+"\uFFFD"+`"`); !ok || v != 3 {
		t.Errorf("pgtide_pool_logins_total for the pool: %v, %v; want 3", v, ok)
	}
	mon := super(t, pg, "postgres")
	pgtest.WaitUntil(t, 5*time.Second, "no server left lent", func() bool {
		v, _ := scrapeMetrics(t, base).get("pgtide_pool_servers", `state="active"`)
		return v == 0
	})
	if n := queryInt(t, mon, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state <> 'idle'", user); n != 0 {
		t.Errorf("%d of the pool's server connections are not idle", n)
	}
}
