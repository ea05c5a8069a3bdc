// Package metrics exposes pgtide's pools to Prometheus and serves the HTTP
// endpoint of metrics_listen: /metrics, /healthz and /readyz.
//
// Gauges and counters are read from the proxy at scrape time (a custom
// prometheus.Collector over Server.Pools), so the hot path pays nothing for
// them beyond the atomics it already keeps. The three histograms (server
// wait, transaction and query duration) are fed by an Observer, one
// Observe per event.
//
// The exposition format, label escaping, content negotiation and the Go and
// process collectors come from github.com/prometheus/client_golang rather
// than hand-written text: the format has enough corners (escaping, OpenMetrics,
// histogram buckets, HELP/TYPE rules) that a maintained library is cheaper
// than keeping our own correct.
package metrics

import (
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgtide/pgtide/proxy"
)

// Source is what the metrics read from the proxy; *proxy.Server implements it.
type Source interface {
	Pools() []proxy.PoolStats
	Clients() int
	ParkedClients() int
	LoginFailuresByReason() map[string]uint64
	Ready() bool
}

var _ Source = (*proxy.Server)(nil)

// DurationBuckets are the histogram buckets, in seconds: 100 µs to 60 s.
var DurationBuckets = []float64{
	.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60,
}

// Metrics is pgtide's Prometheus registry. It implements proxy.Observer;
// install it with Server.SetObserver before Serve.
type Metrics struct {
	reg *prometheus.Registry
	src Source

	wait, xact, query *prometheus.HistogramVec

	hists sync.Map // histKey -> *poolHists: skips label hashing per event
}

type histKey struct{ db, user string }

type poolHists struct{ wait, xact, query prometheus.Observer }

var (
	_ proxy.Observer    = (*Metrics)(nil)
	_ proxy.PoolRemover = (*Metrics)(nil)
)

// New returns the metrics of src, with the Go runtime and process
// collectors, and pgtide_build_info for version.
func New(src Source, version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), src: src}
	hist := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "pgtide", Subsystem: "pool", Name: name, Help: help, Buckets: DurationBuckets,
		}, []string{"database", "user"})
	}
	m.wait = hist("wait_duration_seconds", "Time clients waited for a server connection, per borrow.")
	m.xact = hist("transaction_duration_seconds", "Duration of transactions, from the first request to the ReadyForQuery with status I.")
	m.query = hist("query_duration_seconds", "Duration of queries (a Query, an extended-protocol batch up to Sync, a FunctionCall) until their ReadyForQuery.")
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pgtide_build_info", Help: "Always 1; the labels say which pgtide this is.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	buildInfo.Set(1)
	m.reg.MustRegister(
		m.wait, m.xact, m.query, buildInfo, &collector{src: src},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry returns the registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) hist(db, user string) *poolHists {
	k := histKey{db, user}
	if h, ok := m.hists.Load(k); ok {
		return h.(*poolHists)
	}
	ldb, luser := label(db), label(user)
	h := &poolHists{
		wait:  m.wait.WithLabelValues(ldb, luser),
		xact:  m.xact.WithLabelValues(ldb, luser),
		query: m.query.WithLabelValues(ldb, luser),
	}
	got, _ := m.hists.LoadOrStore(k, h)
	return got.(*poolHists)
}

// QueryDone implements proxy.Observer.
func (m *Metrics) QueryDone(db, user string, d time.Duration) {
	m.hist(db, user).query.Observe(d.Seconds())
}

// XactDone implements proxy.Observer.
func (m *Metrics) XactDone(db, user string, d time.Duration) {
	m.hist(db, user).xact.Observe(d.Seconds())
}

// Waited implements proxy.Observer.
func (m *Metrics) Waited(db, user string, d time.Duration) {
	m.hist(db, user).wait.Observe(d.Seconds())
}

// PoolRemoved implements proxy.PoolRemover: the series of a pool that is
// gone for good (a freed "*" database pool, a removed database or user)
// go with it, so that names clients made up do not pile up.
func (m *Metrics) PoolRemoved(db, user string) {
	m.hists.Delete(histKey{db, user})
	for _, h := range []*prometheus.HistogramVec{m.wait, m.xact, m.query} {
		h.DeleteLabelValues(label(db), label(user))
	}
}

// label returns s as a label value: Prometheus takes only UTF-8 (invalid
// label values panic in WithLabelValues and fail the whole scrape), and
// database and user names come from clients, who may send any bytes (or a
// name cut to 63 bytes inside a character). Invalid bytes become U+FFFD.
func label(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// ServerError implements proxy.Observer. Errors are counted by the pools'
// PoolCounters and read at scrape time.
func (m *Metrics) ServerError(db, user, sqlstate string) {}

// Login implements proxy.Observer. Logins are counted by PoolCounters and
// Server.LoginFailuresByReason and read at scrape time.
func (m *Metrics) Login(db, user string, ok bool) {}

// collector reads every pool's gauges and counters at scrape time.
type collector struct{ src Source }

var poolLabels = []string{"database", "user"}

func desc(name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc("pgtide_"+name, help, append(append([]string(nil), poolLabels...), extra...), nil)
}

var (
	descClients     = desc("pool_clients", "Logged-in clients of the pool, by state: active (has a server or needs none now), waiting (for a server).", "state")
	descServers     = desc("pool_servers", "Server connections of the pool, by state as in PgBouncer's SHOW POOLS: active (lent to a client), idle, used and testing (always 0: pgtide checks an idle server as it lends it), login (being dialed and authenticated).", "state")
	descMaxWait     = desc("pool_max_wait_seconds", "How long the oldest client still waiting for a server has waited.")
	descXacts       = desc("pool_transactions_total", "Transactions completed (a ReadyForQuery with status I ending one).")
	descQueries     = desc("pool_queries_total", "Queries completed (requests answered by ReadyForQuery).")
	descRecv        = desc("pool_received_bytes_total", "Bytes received from clients (and forwarded to servers).")
	descSent        = desc("pool_sent_bytes_total", "Bytes sent to clients (from servers).")
	descErrors      = desc("pool_server_errors_total", "ErrorResponses from servers, by SQLSTATE class (the first two characters).", "class")
	descLogins      = desc("pool_logins_total", "Successful client logins to the pool.")
	descDials       = desc("pool_server_connects_total", "Server connections opened.")
	descDialErrors  = desc("pool_server_connect_errors_total", "Server connection attempts that failed.")
	descWaitTimeout = desc("pool_wait_timeouts_total", "Clients that gave up waiting for a server (query_wait_timeout).")
	descPinned      = desc("pool_pinned_clients", "Clients in transaction or statement mode pinned to their server connection by state that cannot move (a client with two reasons counts under both).", "reason")
	descPinRefusals = desc("pool_pin_refusals_total", "Statements refused with 0A000 under pin_policy \"refuse\", by the state they created.", "reason")

	descClientConns   = prometheus.NewDesc("pgtide_client_connections", "Client connections, including those still logging in.", nil, nil)
	descLoginFailures = prometheus.NewDesc("pgtide_login_failures_total", "Client logins refused, by reason: password (wrong password or unknown user), not_allowed (TLS required, HBA, certificate, console access), unknown_database, too_many_clients, unavailable (shutting down, database disabled), wait_timeout, server_login (the server refused pgtide or could not be reached), auth_query, protocol, other.", []string{"reason"}, nil)
	descParked        = prometheus.NewDesc("pgtide_client_connections_parked", "Logged-in clients idle without a server that hold no goroutine: their sockets wait in pgtide's epoll set (docs/architecture.md).", nil, nil)
	descReady         = prometheus.NewDesc("pgtide_ready", "1 while pgtide accepts new clients, 0 once shutdown has begun (as /readyz).", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descClients, descServers, descMaxWait, descXacts, descQueries, descRecv, descSent,
		descErrors, descLogins, descDials, descDialErrors, descWaitTimeout, descPinned, descPinRefusals,
		descClientConns, descParked, descLoginFailures, descReady,
	} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v uint64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}
	for _, p := range c.src.Pools() {
		db, u := label(p.Database), label(p.User)
		gauge(descClients, float64(max(p.Clients-p.ClientsWaiting, 0)), db, u, "active")
		gauge(descClients, float64(p.ClientsWaiting), db, u, "waiting")
		gauge(descServers, float64(p.Lent), db, u, "active")
		gauge(descServers, float64(max(p.Idle-p.Used, 0)), db, u, "idle")
		gauge(descServers, float64(p.Used), db, u, "used")
		gauge(descServers, 0, db, u, "testing")
		gauge(descServers, float64(max(p.Open-p.Idle-p.Lent, 0)), db, u, "login")
		gauge(descMaxWait, p.MaxClientWait.Seconds(), db, u)
		counter(descDials, p.Dialed, db, u)
		counter(descDialErrors, p.DialErrors, db, u)
		counter(descWaitTimeout, p.WaitTimeouts, db, u)
		pc := p.Counters
		if pc == nil {
			continue
		}
		counter(descXacts, pc.Xacts.Load(), db, u)
		counter(descQueries, pc.Queries.Load(), db, u)
		counter(descRecv, pc.BytesIn.Load(), db, u)
		counter(descSent, pc.BytesOut.Load(), db, u)
		counter(descLogins, pc.Logins.Load(), db, u)
		for class, n := range pc.ErrorsByClass() {
			counter(descErrors, n, db, u, label(class)) // a server's bytes: any
		}
		for i, reason := range proxy.PinReasons {
			gauge(descPinned, float64(max(pc.Pinned[i].Load(), 0)), db, u, reason)
			counter(descPinRefusals, pc.PinRefusals[i].Load(), db, u, reason)
		}
	}
	gauge(descClientConns, float64(c.src.Clients()))
	gauge(descParked, float64(c.src.ParkedClients()))
	for reason, n := range c.src.LoginFailuresByReason() {
		counter(descLoginFailures, n, reason)
	}
	gauge(descReady, boolFloat(c.src.Ready()))
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
