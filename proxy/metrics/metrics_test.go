package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy"
)

type fakeSource struct {
	pools    []proxy.PoolStats
	clients  int
	parked   int
	failures uint64
	ready    atomic.Bool
}

func (f *fakeSource) Pools() []proxy.PoolStats { return f.pools }
func (f *fakeSource) Clients() int             { return f.clients }
func (f *fakeSource) ParkedClients() int       { return f.parked }
func (f *fakeSource) LoginFailuresByReason() map[string]uint64 {
	return map[string]uint64{"password": f.failures, "not_allowed": 1}
}
func (f *fakeSource) Ready() bool { return f.ready.Load() }

func newFake() *fakeSource {
	pc := &proxy.PoolCounters{}
	pc.Xacts.Store(7)
	pc.Queries.Store(11)
	pc.BytesIn.Store(100)
	pc.BytesOut.Store(2000)
	pc.Logins.Store(3)
	f := &fakeSource{
		pools: []proxy.PoolStats{{
			Database: "app", User: "alice",
			Stats:          pool.Stats{Open: 5, Idle: 2, Lent: 2, Waiting: 1, Dialed: 6, DialErrors: 1, MaxWait: 1500 * time.Millisecond},
			Counters:       pc,
			Clients:        4,
			ClientsWaiting: 1,
			MaxClientWait:  1500 * time.Millisecond,
			Used:           1,
		}},
		clients:  6,
		parked:   4,
		failures: 2,
	}
	f.ready.Store(true)
	return f
}

// value finds the sample of family name whose labels include want.
func value(t *testing.T, fams []*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	t.Helper()
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func TestCollector(t *testing.T) {
	f := newFake()
	m := New(f, "1.2.3")
	m.QueryDone("app", "alice", 3*time.Millisecond)
	m.QueryDone("app", "alice", 4*time.Millisecond)
	m.XactDone("app", "alice", 8*time.Millisecond)
	m.Waited("app", "alice", time.Microsecond)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	pool := map[string]string{"database": "app", "user": "alice"}
	with := func(k, v string) map[string]string {
		out := map[string]string{k: v}
		for a, b := range pool {
			out[a] = b
		}
		return out
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"pgtide_pool_clients", with("state", "active"), 3},
		{"pgtide_pool_clients", with("state", "waiting"), 1},
		{"pgtide_pool_servers", with("state", "active"), 2},
		{"pgtide_pool_servers", with("state", "idle"), 1}, // one of the two idle is due for server_check_query
		{"pgtide_pool_servers", with("state", "used"), 1},
		{"pgtide_pool_servers", with("state", "testing"), 0},
		{"pgtide_pool_servers", with("state", "login"), 1},
		{"pgtide_pool_max_wait_seconds", pool, 1.5},
		{"pgtide_pool_transactions_total", pool, 7},
		{"pgtide_pool_queries_total", pool, 11},
		{"pgtide_pool_received_bytes_total", pool, 100},
		{"pgtide_pool_sent_bytes_total", pool, 2000},
		{"pgtide_pool_logins_total", pool, 3},
		{"pgtide_pool_server_connects_total", pool, 6},
		{"pgtide_pool_server_connect_errors_total", pool, 1},
		{"pgtide_pool_wait_timeouts_total", pool, 0},
		{"pgtide_pool_query_duration_seconds", pool, 2},
		{"pgtide_pool_transaction_duration_seconds", pool, 1},
		{"pgtide_pool_wait_duration_seconds", pool, 1},
		{"pgtide_client_connections", nil, 6},
		{"pgtide_client_connections_parked", nil, 4},
		{"pgtide_login_failures_total", map[string]string{"reason": "password"}, 2},
		{"pgtide_login_failures_total", map[string]string{"reason": "not_allowed"}, 1},
		{"pgtide_ready", nil, 1},
		{"pgtide_build_info", map[string]string{"version": "1.2.3"}, 1},
	} {
		got, ok := value(t, fams, c.name, c.labels)
		if !ok {
			t.Errorf("%s%v: not exposed", c.name, c.labels)
			continue
		}
		if got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := value(t, fams, "go_goroutines", nil); !ok {
		t.Errorf("Go runtime collector missing")
	}
}

func TestHandler(t *testing.T) {
	f := newFake()
	m := New(f, "test")
	ts := httptest.NewServer(m.Handler())
	defer ts.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `pgtide_pool_queries_total{database="app",user="alice"} 11`) {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz while ready: %d", code)
	}
	f.ready.Store(false)
	if code, _ := get("/readyz"); code != 503 {
		t.Fatalf("/readyz while draining: %d, want 503", code)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz while draining: %d", code)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Fatalf("/nope: %d", code)
	}
}

func TestEndpoint(t *testing.T) {
	e, err := Listen("127.0.0.1:0", New(newFake(), "test").Handler(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + e.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/healthz: %d", resp.StatusCode)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + e.Addr().String() + "/healthz"); err == nil {
		t.Fatalf("endpoint still serving after Close")
	}
	var none *Endpoint
	if err := none.Close(); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkObserver(b *testing.B) {
	m := New(newFake(), "test")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.QueryDone("app", "alice", time.Millisecond)
		}
	})
}

// TestPoolRemovedDropsHistograms: the histogram series of a freed pool go
// with it (issue 13.5); another pool's stay.
func TestPoolRemovedDropsHistograms(t *testing.T) {
	m := New(&fakeSource{}, "test")
	for _, db := range []string{"gone", "kept"} {
		m.QueryDone(db, "u", time.Millisecond)
		m.XactDone(db, "u", time.Millisecond)
		m.Waited(db, "u", time.Millisecond)
	}
	m.PoolRemoved("gone", "u")
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"pgtide_pool_query_duration_seconds", "pgtide_pool_transaction_duration_seconds", "pgtide_pool_wait_duration_seconds"} {
		found := map[string]bool{}
		for _, f := range fams {
			if f.GetName() != name {
				continue
			}
			for _, mt := range f.GetMetric() {
				for _, l := range mt.GetLabel() {
					if l.GetName() == "database" {
						found[l.GetValue()] = true
					}
				}
			}
		}
		if found["gone"] || !found["kept"] {
			t.Errorf("%s: series for databases %v; want kept only", name, found)
		}
	}
	// Observing again after removal starts a fresh series.
	m.QueryDone("gone", "u", time.Millisecond)
}

// TestLabelsNotUTF8: database and user names come from clients (a user
// name under auth_type "trust", a "*" database, a name cut to 63 bytes
// inside a character) and need not be UTF-8, which Prometheus requires of
// label values. Before, such a pool made the histograms' WithLabelValues
// panic in the client's login (which held a server, never given back) and
// every scrape fail with 500, for all pools. Invalid bytes are shown as
// U+FFFD; the series is dropped with its pool.
func TestLabelsNotUTF8(t *testing.T) {
	f := newFake()
	f.pools[0].User = "bad\xff"
	m := New(f, "test")
	m.Waited("app", "bad\xff", time.Millisecond)
	m.QueryDone("app\xfe", "bad\xff", time.Millisecond)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	seen := 0
	for _, fam := range fams {
		for _, mt := range fam.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "user" && l.GetValue() == "bad\uFFFD" {
					seen++
				}
			}
		}
	}
	if seen == 0 {
		t.Fatal(`no series with user="bad\uFFFD"`)
	}
	m.PoolRemoved("app\xfe", "bad\xff")
	if fams, err = m.Registry().Gather(); err != nil {
		t.Fatal(err)
	}
	for _, fam := range fams {
		for _, mt := range fam.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "database" && l.GetValue() == "app\uFFFD" {
					t.Errorf("%s: a series of the removed pool is left", fam.GetName())
				}
			}
		}
	}
}

// A server's SQLSTATE is a server's bytes: a class that is not UTF-8 is a
// label value with U+FFFD, not a failed scrape.
func TestErrorClassNotUTF8(t *testing.T) {
	f := newFake()
	f.pools[0].Counters.CountError("\xff\xfe000")
	m := New(f, "test")
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, fam := range fams {
		for _, mt := range fam.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "class" && l.GetValue() == "\uFFFD" {
					return
				}
			}
		}
	}
	t.Fatal(`no series with class="\uFFFD"`)
}
