package admin

import (
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeBackend is a Backend whose rows the test sets.
type fakeBackend struct {
	cfg, boot *config.Config
	state     State
	pools     []Pool
	clients   []Client
	servers   []Server
	conns     int
	paused    map[string]bool
	stopping  chan struct{}
	done      chan struct{}
	calls     []string
}

func newFake() *fakeBackend {
	cfg := config.Default()
	cfg.Databases = map[string]config.Database{
		"app":  {Host: "10.0.0.1", Port: 5432, DBName: "appdb", User: "svc", PoolMode: config.PoolTransaction, PoolSize: 5},
		"misc": {Host: "10.0.0.2", Port: 5433, DBName: "misc"},
	}
	cfg.Users = map[string]config.User{"alice": {PoolSize: 3}, "bob": {}}
	return &fakeBackend{cfg: cfg, boot: cfg, state: State{Running: true}, paused: map[string]bool{},
		stopping: make(chan struct{}), done: make(chan struct{})}
}

func (f *fakeBackend) Config() *config.Config     { return f.cfg }
func (f *fakeBackend) BootConfig() *config.Config { return f.boot }
func (f *fakeBackend) BuildVersion() string       { return "9.9.9" }
func (f *fakeBackend) NextID() uint64             { return 1000 }
func (f *fakeBackend) State() State               { return f.state }
func (f *fakeBackend) Stopping() <-chan struct{}  { return f.stopping }
func (f *fakeBackend) Done() <-chan struct{}      { return f.done }
func (f *fakeBackend) PoolRows() []Pool           { return append([]Pool(nil), f.pools...) }
func (f *fakeBackend) ClientRows() []Client       { return append([]Client(nil), f.clients...) }
func (f *fakeBackend) ServerRows() []Server       { return append([]Server(nil), f.servers...) }
func (f *fakeBackend) Clients() int               { return f.conns }
func (f *fakeBackend) DBState(db string) (bool, bool) {
	return f.paused[db], db == "misc"
}
func (f *fakeBackend) HasDatabase(db string) bool { _, ok := f.cfg.Databases[db]; return ok }
func (f *fakeBackend) Pause(db string)            { f.calls = append(f.calls, "pause "+db) }
func (f *fakeBackend) WaitPaused(context.Context, string) error {
	return nil
}
func (f *fakeBackend) Resume(db string) { f.calls = append(f.calls, "resume "+db) }
func (f *fakeBackend) Suspend() error {
	if f.state.Suspended {
		return errors.New("already suspended")
	}
	f.state.Suspended = true
	f.calls = append(f.calls, "suspend")
	return nil
}
func (f *fakeBackend) WaitSuspended(context.Context) error      { return nil }
func (f *fakeBackend) SetDisabled(string, bool)                 {}
func (f *fakeBackend) Kill(string)                              {}
func (f *fakeBackend) KillClient(uint64) bool                   { return false }
func (f *fakeBackend) Reconnect(string)                         {}
func (f *fakeBackend) WaitClosed(context.Context, string) error { return nil }
func (f *fakeBackend) ReloadConfig() error                      { return ErrNoReload }
func (f *fakeBackend) ApplyConfig(cfg *config.Config) error {
	f.calls = append(f.calls, "apply")
	f.cfg = cfg
	return nil
}
func (f *fakeBackend) Shutdown(mode string) {
	// As *proxy.Server with only consoles connected: consoles must go.
	f.calls = append(f.calls, "shutdown "+mode)
	close(f.stopping)
}

func TestParseCommand(t *testing.T) {
	ok := []struct {
		in   string
		want command
	}{
		{"SHOW POOLS", command{Verb: "SHOW", Arg: "POOLS"}},
		{"show pools;", command{Verb: "SHOW", Arg: "POOLS"}},
		{"  Show   stats_totals ; ", command{Verb: "SHOW", Arg: "STATS_TOTALS"}},
		{"show totals", command{Verb: "SHOW", Arg: "TOTALS"}},
		{"SHOW mem", command{Verb: "SHOW", Arg: "MEM"}},
		{"pause", command{Verb: "PAUSE"}},
		{"PAUSE appdb", command{Verb: "PAUSE", Arg: "appdb"}},
		{"pause AppDB", command{Verb: "PAUSE", Arg: "AppDB"}}, // names keep their case
		{`resume "my ""db"""`, command{Verb: "RESUME", Arg: `my "db"`}},
		{"disable appdb", command{Verb: "DISABLE", Arg: "appdb"}},
		{"ENABLE appdb", command{Verb: "ENABLE", Arg: "appdb"}},
		{"kill", command{Verb: "KILL"}},
		{"KILL appdb", command{Verb: "KILL", Arg: "appdb"}},
		{"kill_client 42", command{Verb: "KILL_CLIENT", Arg: "42"}},
		{"reconnect", command{Verb: "RECONNECT"}},
		{"wait_close appdb", command{Verb: "WAIT_CLOSE", Arg: "appdb"}},
		{"RELOAD;", command{Verb: "RELOAD"}},
		{"shutdown", command{Verb: "SHUTDOWN"}},
		{"shutdown wait_for_clients", command{Verb: "SHUTDOWN", Arg: "WAIT_FOR_CLIENTS"}},
		{"SHUTDOWN WAIT_FOR_SERVERS", command{Verb: "SHUTDOWN", Arg: "WAIT_FOR_SERVERS"}},
		{"SET default_pool_size = 30", command{Verb: "SET", Arg: "default_pool_size", Value: "30"}},
		{"set Query_Timeout to '5'", command{Verb: "SET", Arg: "query_timeout", Value: "5"}},
		{"SET log_level='debug'", command{Verb: "SET", Arg: "log_level", Value: "debug"}},
	}
	for _, c := range ok {
		got, err := parseCommand(c.in)
		if err != nil || got != c.want {
			t.Errorf("parseCommand(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	bad := []string{
		"", ";", "SELECT 1", "SHOW", "SHOW TABLES", "SHOW POOLS extra", "DISABLE", "ENABLE",
		"KILL_CLIENT", "KILL_CLIENT abc", "KILL_CLIENT -1", "RELOAD now", "SHUTDOWN NOW",
		"PAUSE a b", `PAUSE "unterminated`, `PAUSE ""`, "SET", "SET a", "SET a b", "SET a = 'open",
	}
	for _, in := range bad {
		got, err := parseCommand(in)
		if err == nil {
			t.Errorf("parseCommand(%q) = %+v; want an error", in, got)
			continue
		}
		if ce, ok := err.(*Error); !ok || ce.Code != codeSyntaxError {
			t.Errorf("parseCommand(%q) error %v; want SQLSTATE %s", in, err, codeSyntaxError)
		}
	}
}

func TestSplitStatements(t *testing.T) {
	cases := map[string][]string{
		"":                           nil,
		" ; ;":                       nil,
		"SHOW POOLS":                 {"SHOW POOLS"},
		"SHOW POOLS; show stats;":    {"SHOW POOLS", "show stats"},
		`PAUSE "a;b"; RESUME "a;b"`:  {`PAUSE "a;b"`, `RESUME "a;b"`},
		"SHOW VERSION;;SHOW STATE\n": {"SHOW VERSION", "SHOW STATE"},
		"SET a = 'x;y'; SHOW STATE":  {"SET a = 'x;y'", "SHOW STATE"},
	}
	for in, want := range cases {
		if got := splitStatements(in); !reflect.DeepEqual(got, want) {
			t.Errorf("splitStatements(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestStatsOnlyShow(t *testing.T) {
	for verb, spec := range verbs {
		if verb == "SET" {
			continue // set checks the privilege itself, after the fake settings
		}
		if spec.readOnly != (verb == "SHOW") {
			t.Errorf("%s: readOnly = %v; only SHOW is open to stats_users", verb, spec.readOnly)
		}
	}
}

func TestAverages(t *testing.T) {
	then := Totals{Assign: 10, Xact: 10, Query: 20, Recv: 1000, Sent: 2000, XactNs: 1e6, QueryNs: 2e6}
	now := Totals{Assign: 30, Xact: 30, Query: 60, Recv: 3000, Sent: 6000, XactNs: 3e6, QueryNs: 6e6, WaitNs: 2e6}
	got := averages(now, then, 10)
	want := [nStat]int64{2, 2, 4, 200, 400, 100, 100, 100, 0, 0, 0}
	if got != want {
		t.Fatalf("averages = %v; want %v", got, want)
	}
	// A pool replaced by a reload restarts its counters: no negative rates.
	if got := averages(then, now, 10); got != [nStat]int64{} {
		t.Fatalf("averages after a counter reset = %v; want zeros", got)
	}
}

// colSpec renders a table's columns as "name:oid".
func colSpec(t table) []string {
	out := make([]string, len(t.cols))
	for i, c := range t.cols {
		out[i] = c.name + ":" + oidName[c.oid]
	}
	return out
}

var oidName = map[uint32]string{oidText: "text", oidInt4: "int4", oidInt8: "int8", oidNumeric: "numeric", oidBytea: "bytea"}

// PgBouncer125 are the columns (names, order, types) of PgBouncer 1.25's
// console (src/admin.c, src/stats.c), which pgtide's match.
var PgBouncer125 = map[string]string{
	"POOLS": "database:text user:text cl_active:int4 cl_waiting:int4 cl_active_cancel_req:int4 " +
		"cl_waiting_cancel_req:int4 sv_active:int4 sv_active_cancel:int4 sv_being_canceled:int4 sv_idle:int4 " +
		"sv_used:int4 sv_tested:int4 sv_login:int4 maxwait:int4 maxwait_us:int4 pool_mode:text load_balance_hosts:text",
	"DATABASES": "name:text host:text port:int4 database:text force_user:text pool_size:int4 min_pool_size:int4 " +
		"reserve_pool_size:int4 server_lifetime:int4 pool_mode:text load_balance_hosts:text max_connections:int4 " +
		"current_connections:int4 max_client_connections:int4 current_client_connections:int4 paused:int4 disabled:int4",
	"USERS": "name:text pool_size:text reserve_pool_size:text pool_mode:text max_user_connections:int4 " +
		"current_connections:int4 max_user_client_connections:int4 current_client_connections:int4",
	"CLIENTS": socketSpec + " pin:text", "SERVERS": socketSpec, // pin: pgtide's own, last
	"SOCKETS": socketSpec + " " + socketDebugSpec, "ACTIVE_SOCKETS": socketSpec + " " + socketDebugSpec,
	"LISTS":   "list:text items:int4",
	"CONFIG":  "key:text value:text default:text changeable:text",
	"VERSION": "version:text",
	"STATE":   "key:text value:text",
	"MEM":     "name:text size:int4 used:int4 free:int4 memtotal:int4",
	"FDS": "fd:int4 task:text user:text database:text addr:text port:int4 cancel:int8 link:int4 " +
		"client_encoding:text std_strings:text datestyle:text timezone:text password:text " +
		"scram_client_key:bytea scram_server_key:bytea",
	"DNS_HOSTS": "hostname:text ttl:int8 addrs:text",
	"DNS_ZONES": "zonename:text serial:int8 count:int4",
	"PEERS":     "peer_id:int4 host:text port:int4 pool_size:int4",
	"PEER_POOLS": "peer_id:int4 cl_active_cancel_req:int4 cl_waiting_cancel_req:int4 sv_active_cancel:int4 " +
		"sv_login:int4",
	"TOTALS": "name:text value:numeric",
	"STATS": "database:text total_server_assignment_count:numeric total_xact_count:numeric " +
		"total_query_count:numeric total_received:numeric total_sent:numeric total_xact_time:numeric " +
		"total_query_time:numeric total_wait_time:numeric total_client_parse_count:numeric " +
		"total_server_parse_count:numeric total_bind_count:numeric " +
		"avg_server_assignment_count:numeric avg_xact_count:numeric avg_query_count:numeric avg_recv:numeric " +
		"avg_sent:numeric avg_xact_time:numeric avg_query_time:numeric avg_wait_time:numeric " +
		"avg_client_parse_count:numeric avg_server_parse_count:numeric avg_bind_count:numeric",
	"STATS_TOTALS": "database:text server_assignment_count:numeric xact_count:numeric query_count:numeric " +
		"bytes_received:numeric bytes_sent:numeric xact_time:numeric query_time:numeric wait_time:numeric " +
		"client_parse_count:numeric server_parse_count:numeric bind_count:numeric",
	"STATS_AVERAGES": "database:text server_assignment_count:numeric xact_count:numeric query_count:numeric " +
		"bytes_received:numeric bytes_sent:numeric xact_time:numeric query_time:numeric wait_time:numeric " +
		"avg_client_parse_count:numeric avg_server_parse_count:numeric avg_bind_count:numeric",
}

const socketSpec = "type:text user:text database:text replication:text state:text addr:text port:int4 " +
	"local_addr:text local_port:int4 connect_time:text request_time:text wait:int4 wait_us:int4 " +
	"close_needed:int4 ptr:text link:text remote_pid:int4 tls:text application_name:text " +
	"prepared_statements:int4 id:int4"

const socketDebugSpec = "recv_pos:int4 pkt_pos:int4 pkt_remain:int4 send_pos:int4 send_remain:int4 " +
	"pkt_avail:int4 send_avail:int4"

func TestShowColumnsMatchPgBouncer125(t *testing.T) {
	c := New(newFake())
	for _, subject := range showSubjects {
		if subject == "HELP" {
			continue
		}
		want, ok := PgBouncer125[subject]
		if !ok {
			t.Errorf("SHOW %s: no PgBouncer 1.25 columns to compare with", subject)
			continue
		}
		got := strings.Join(colSpec(c.table(subject, time.Now())), " ")
		if got != want {
			t.Errorf("SHOW %s columns\n got %s\nwant %s", subject, got, want)
		}
	}
}

// rowsOf renders a table's rows as column → text (NULL as "<null>").
func rowsOf(tb table) []map[string]string {
	var out []map[string]string
	for _, r := range tb.rows {
		m := map[string]string{}
		for i, v := range r {
			b := cell(v, tb.cols[i].oid)
			if b == nil {
				m[tb.cols[i].name] = "<null>"
			} else {
				m[tb.cols[i].name] = string(b)
			}
		}
		out = append(out, m)
	}
	return out
}

func TestShowPoolsAndClients(t *testing.T) {
	f := newFake()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	conn := now.Add(-time.Hour)
	f.pools = []Pool{
		{Database: "misc", User: "bob", Mode: "session", Open: 3, Idle: 3, Used: 2},
		{Database: "app", User: "alice", Mode: "transaction", Open: 4, Idle: 1, Lent: 3},
	}
	f.clients = []Client{
		{ID: 7, Database: "app", User: "alice", Connected: conn, Server: 70, App: "web", Prepared: 2, Pin: "temp_table,listen"},
		{ID: 8, Database: "app", User: "alice", Connected: conn, WaitStart: now.Add(-2500 * time.Millisecond)},
		{ID: 9, Database: "app", User: "alice", Connected: conn, Request: now.Add(-time.Minute),
			WaitStart: now.Add(-time.Second)},
		{ID: 10, Database: "app", User: "alice", Connected: conn},
	}
	c := New(f)
	pools := rowsOf(c.table("POOLS", now))
	if len(pools) != 2 || pools[0]["database"] != "app" || pools[1]["database"] != "misc" {
		t.Fatalf("SHOW POOLS rows (sorted by database, user): %v", pools)
	}
	if m := pools[1]; m["sv_idle"] != "1" || m["sv_used"] != "2" {
		t.Errorf("SHOW POOLS misc: sv_idle %q, sv_used %q; want 1 and 2 (idle servers due for server_check_query are sv_used)", m["sv_idle"], m["sv_used"])
	}
	p := pools[0]
	want := map[string]string{"cl_active": "2", "cl_waiting": "2", "sv_active": "1", "sv_idle": "1", "sv_used": "0", "sv_login": "2",
		"maxwait": "2", "maxwait_us": "500000", "pool_mode": "transaction", "load_balance_hosts": "<null>"}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("SHOW POOLS %s = %q; want %q (%v)", k, p[k], v, p)
		}
	}

	clients := rowsOf(c.table("CLIENTS", now))
	if len(clients) != 4 {
		t.Fatalf("SHOW CLIENTS: %v", clients)
	}
	states := map[string]string{"7": "active", "8": "waiting", "9": "waiting", "10": "idle"}
	for _, r := range clients {
		if r["state"] != states[r["id"]] || r["ptr"] != r["id"] {
			t.Errorf("SHOW CLIENTS id %s: state %q ptr %q", r["id"], r["state"], r["ptr"])
		}
	}
	if r := clients[0]; r["link"] != "70" || r["application_name"] != "web" || r["prepared_statements"] != "2" ||
		r["request_time"] != "2026-01-02 02:04:05 UTC" || r["pin"] != "temp_table,listen" {
		t.Errorf("SHOW CLIENTS linked client: %v", r)
	}
	if r := clients[2]; r["wait"] != "1" || r["wait_us"] != "0" || r["request_time"] != "2026-01-02 03:03:05 UTC" {
		t.Errorf("SHOW CLIENTS waiting client: %v", r)
	}
	active := rowsOf(c.table("ACTIVE_SOCKETS", now))
	if len(active) != 1 || active[0]["id"] != "7" || active[0]["state"] != "cl_active" {
		t.Errorf("SHOW ACTIVE_SOCKETS: %v", active)
	}
}

func TestShowDatabasesUsersLists(t *testing.T) {
	f := newFake()
	f.cfg.ServerLifetime = config.Duration{Duration: 90 * time.Minute}
	f.pools = []Pool{{Database: "app", User: "alice", Open: 4}, {Database: "app", User: "bob", Open: 1}}
	f.clients = []Client{{ID: 1, Database: "app", User: "alice"}}
	f.paused["app"] = true
	f.conns = 3
	f.cfg.MaxDBClientConnections, f.cfg.MaxUserClientConnections = 50, 20
	app := f.cfg.Databases["app"]
	app.MaxDBClientConnections = 8
	f.cfg.Databases["app"] = app
	f.cfg.Users["alice"] = config.User{PoolSize: 3, MaxUserClientConnections: 2}
	c := New(f)
	dbs := rowsOf(c.table("DATABASES", time.Now()))
	if len(dbs) != 2 {
		t.Fatalf("SHOW DATABASES: %v", dbs)
	}
	want := map[string]string{"name": "app", "host": "10.0.0.1", "port": "5432", "database": "appdb", "force_user": "svc",
		"pool_size": "5", "server_lifetime": "5400", "pool_mode": "transaction", "current_connections": "5",
		"current_client_connections": "1", "paused": "1", "disabled": "0", "max_client_connections": "8"}
	for k, v := range want {
		if dbs[0][k] != v {
			t.Errorf("SHOW DATABASES app %s = %q; want %q", k, dbs[0][k], v)
		}
	}
	if d := dbs[1]; d["force_user"] != "<null>" || d["pool_mode"] != "<null>" || d["disabled"] != "1" || d["max_client_connections"] != "50" {
		t.Errorf("SHOW DATABASES misc (no user, inherited mode, disabled): %v", d)
	}
	users := rowsOf(c.table("USERS", time.Now()))
	if len(users) != 2 || users[0]["pool_size"] != "3" || users[1]["pool_size"] != "<null>" ||
		users[0]["current_connections"] != "4" || users[0]["current_client_connections"] != "1" ||
		users[0]["max_user_client_connections"] != "2" || users[1]["max_user_client_connections"] != "20" {
		t.Errorf("SHOW USERS: %v", users)
	}
	lists := map[string]string{}
	for _, r := range rowsOf(c.table("LISTS", time.Now())) {
		lists[r["list"]] = r["items"]
	}
	if lists["databases"] != "2" || lists["pools"] != "2" || lists["used_clients"] != "1" ||
		lists["login_clients"] != "2" || lists["used_servers"] != "5" {
		t.Errorf("SHOW LISTS: %v", lists)
	}
}

func TestShowConfigRunningValues(t *testing.T) {
	f := newFake()
	boot := *f.cfg
	boot.Listen = []string{"127.0.0.1:6432"}
	running := boot
	running.Listen = []string{"0.0.0.0:7777"} // reloaded, but listen needs a restart
	running.QueryWaitTimeout = config.Duration{Duration: 1500 * time.Millisecond}
	running.DefaultPoolSize = 42
	running.LogConnections = true
	f.boot, f.cfg = &boot, &running
	rows := map[string]map[string]string{}
	for _, r := range rowsOf(New(f).table("CONFIG", time.Now())) {
		rows[r["key"]] = r
	}
	check := func(key, value, def, changeable string) {
		t.Helper()
		r := rows[key]
		if r == nil || r["value"] != value || (def != "" && r["default"] != def) || r["changeable"] != changeable {
			t.Errorf("SHOW CONFIG %s = %v; want value %q default %q changeable %q", key, r, value, def, changeable)
		}
	}
	check("listen", "127.0.0.1:6432", "", "no")
	check("query_wait_timeout", "1.5", "120", "yes")
	check("server_lifetime", "3600", "3600", "yes")
	check("default_pool_size", "42", "20", "yes")
	check("log_connections", "1", "", "yes")
	check("so_reuseport", "0", "0", "no")
	check("max_client_conn", "100", "100", "yes")
	for k := range rows {
		if strings.Contains(k, "password") {
			t.Errorf("SHOW CONFIG shows %s", k)
		}
	}
}

func TestShowStatsAndTotals(t *testing.T) {
	f := newFake()
	f.pools = []Pool{
		{Database: "app", User: "a", Totals: Totals{Xact: 10, Query: 20, Recv: 100, Sent: 200, XactNs: 10e6}},
		{Database: "app", User: "b", Totals: Totals{Xact: 30, Query: 20, Recv: 300, Sent: 400, XactNs: 30e6}},
		{Database: "misc", User: "a", Totals: Totals{Xact: 5, Assign: 5, WaitNs: 5e6}},
	}
	c := New(f)
	stats := rowsOf(c.table("STATS", time.Now()))
	if len(stats) != 2 || stats[0]["database"] != "app" || stats[0]["total_xact_count"] != "40" ||
		stats[0]["total_received"] != "400" || stats[0]["total_xact_time"] != "40000" ||
		stats[1]["total_wait_time"] != "5000" {
		t.Errorf("SHOW STATS: %v", stats)
	}
	totals := map[string]string{}
	for _, r := range rowsOf(c.table("TOTALS", time.Now())) {
		totals[r["name"]] = r["value"]
	}
	if totals["total_xact_count"] != "45" || totals["total_client_bytes"] != "400" || totals["total_server_bytes"] != "600" ||
		totals["avg_xact_count"] != "0" {
		t.Errorf("SHOW TOTALS: %v", totals)
	}
}

// client is the far end of a console connection in a test.
type client struct {
	t  *testing.T
	fe *pgproto3.Frontend
	nc net.Conn
}

func (c *client) until(want pgproto3.BackendMessage) []pgproto3.BackendMessage {
	c.t.Helper()
	var got []pgproto3.BackendMessage
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		m, err := c.fe.Receive()
		if err != nil {
			c.t.Fatalf("receive: %v (so far %T)", err, got)
		}
		// Receive reuses its messages: keep copies.
		switch x := m.(type) {
		case *pgproto3.CommandComplete:
			m = &pgproto3.CommandComplete{CommandTag: []byte(string(x.CommandTag))}
		case *pgproto3.DataRow:
			dr := &pgproto3.DataRow{}
			for _, v := range x.Values {
				dr.Values = append(dr.Values, []byte(string(v)))
			}
			m = dr
		case *pgproto3.ErrorResponse:
			e := *x
			m = &e
		}
		got = append(got, m)
		if reflect.TypeOf(m) == reflect.TypeOf(want) {
			return got
		}
	}
}

// serve starts a console for f on one end of a pipe.
func serve(t *testing.T, f *fakeBackend, user string) (*client, chan error) {
	f.cfg.AdminUsers = []string{"adm"}
	f.cfg.StatsUsers = []string{"stat"}
	srv, cl := net.Pipe()
	c := New(f)
	done := make(chan error, 1)
	go func() {
		done <- c.Serve(srv, wire.NewReader(srv, 4096), zerolog.Nop(), "pgbouncer", user, map[string]string{})
	}()
	t.Cleanup(func() { _ = cl.Close(); <-done; close(f.done) }) // Done stops the stats ticker
	return &client{t: t, fe: pgproto3.NewFrontend(cl, cl), nc: cl}, done
}

func TestConsoleRefusesOthers(t *testing.T) {
	f := newFake()
	f.cfg.AdminUsers = []string{"adm"}
	c := New(f)
	srv, cl := net.Pipe()
	defer cl.Close()
	err := c.Serve(srv, wire.NewReader(srv, 4096), zerolog.Nop(), "pgtide", "mallory", nil)
	if e, ok := err.(*Error); !ok || e.Code != codeInvalidAuthSpec {
		t.Fatalf("Serve for a user in neither list = %v; want 28000", err)
	}
}

func TestConsoleShutdownRepliesThenCloses(t *testing.T) {
	f := newFake()
	c, _ := serve(t, f, "adm")
	c.until(&pgproto3.ReadyForQuery{})
	// SHUTDOWN makes the backend close Stopping while the command runs:
	// the console answers it, then says why it closes.
	c.fe.Send(&pgproto3.Query{String: "SHUTDOWN WAIT_FOR_SERVERS"})
	if err := c.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msgs := c.until(&pgproto3.ErrorResponse{})
	var tags []string
	for _, m := range msgs {
		if cc, ok := m.(*pgproto3.CommandComplete); ok {
			tags = append(tags, string(cc.CommandTag))
		}
	}
	e := msgs[len(msgs)-1].(*pgproto3.ErrorResponse)
	if e.Code != codeAdminShutdown || e.Severity != "FATAL" {
		t.Fatalf("console closed with %+v; want FATAL 57P01", e)
	}
	if len(tags) != 1 || tags[0] != "SHUTDOWN" {
		t.Fatalf("replies before the FATAL: %v; want the SHUTDOWN reply", tags)
	}
}

func TestConsoleStatsUserIsReadOnly(t *testing.T) {
	f := newFake()
	c, _ := serve(t, f, "stat")
	c.until(&pgproto3.ReadyForQuery{})
	c.fe.Send(&pgproto3.Query{String: "SHOW VERSION; PAUSE"})
	if err := c.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msgs := c.until(&pgproto3.ReadyForQuery{})
	var version string
	var code string
	for _, m := range msgs {
		switch m := m.(type) {
		case *pgproto3.DataRow:
			version = string(m.Values[0])
		case *pgproto3.ErrorResponse:
			code = m.Code
		}
	}
	if version != "pgtide 9.9.9" || code != codeInsufficientPrivilege || len(f.calls) != 0 {
		t.Fatalf("stats user: version %q, error %q, calls %v", version, code, f.calls)
	}
}

func TestSet(t *testing.T) {
	f := newFake()
	c := New(f)
	adm := &conn{c: c, super: true, log: zerolog.Nop()}
	stat := &conn{c: c, log: zerolog.Nop()}
	run := func(ac *conn, q string) error {
		t.Helper()
		cmd, err := parseCommand(q)
		if err != nil {
			t.Fatalf("parse %q: %v", q, err)
		}
		ac.out = ac.out[:0]
		return ac.exec(cmd)
	}
	code := func(err error) string {
		if e, ok := err.(*Error); ok {
			return e.Code
		}
		return ""
	}
	ok := []struct {
		q     string
		check func(*config.Config) bool
	}{
		{"SET default_pool_size = 30", func(c *config.Config) bool { return c.DefaultPoolSize == 30 }},
		{"SET query_wait_timeout = 2.5", func(c *config.Config) bool { return c.QueryWaitTimeout.Duration == 2500*time.Millisecond }},
		{"set query_wait_timeout to '45s'", func(c *config.Config) bool { return c.QueryWaitTimeout.Duration == 45*time.Second }},
		{"SET log_connections = 0", func(c *config.Config) bool { return !c.LogConnections }},
		{"SET stats_users = 'a, b'", func(c *config.Config) bool { return reflect.DeepEqual(c.StatsUsers, []string{"a", "b"}) }},
		{"SET pool_mode = statement", func(c *config.Config) bool { return c.PoolMode == config.PoolStatement }},
	}
	for _, tc := range ok {
		if err := run(adm, tc.q); err != nil || !tc.check(f.cfg) {
			t.Errorf("%s: %v; config not changed as asked", tc.q, err)
		}
	}
	if len(f.cfg.Databases) != 2 || len(f.cfg.Users) != 2 {
		t.Errorf("SET lost [databases] or [users]: %v %v", f.cfg.Databases, f.cfg.Users)
	}
	bad := map[string]string{
		"SET pool_mode = bogus":        codeInvalidParameterValue,
		"SET default_pool_size = abc":  codeInvalidParameterValue,
		"SET default_pool_size = 0":    codeInvalidParameterValue, // must be >= 1
		"SET query_timeout = -1":       codeInvalidParameterValue,
		"SET listen = '0.0.0.0:1'":     codeCantChangeRuntimeParam,
		"SET nosuch = 1":               codeUndefinedObject,
		"SET admin_users = 'mallory'":  "", // allowed: admin_users apply to new logins
		"SET client_encoding = 'UTF8'": "", // faked, as PgBouncer
		"SET extra_float_digits = 3":   "",
	}
	for q, want := range bad {
		before := f.cfg
		err := run(adm, q)
		if code(err) != want || (want != "" && f.cfg != before) {
			t.Errorf("%s: %v; want SQLSTATE %q and the config unchanged", q, err, want)
		}
	}
	if err := run(stat, "SET default_pool_size = 5"); code(err) != codeInsufficientPrivilege {
		t.Errorf("stats user SET: %v; want 42501", err)
	}
	if err := run(stat, "SET client_encoding = 'UTF8'"); err != nil {
		t.Errorf("stats user SET client_encoding: %v; want it ignored, as PgBouncer", err)
	}
	if got := rowsOf(c.table("CLIENT_ENCODING", time.Now())); len(got) != 1 || got[0]["client_encoding"] != "UTF-8" {
		t.Errorf("SHOW client_encoding: %v", got)
	}
}

func TestSuspendCommand(t *testing.T) {
	f := newFake()
	c := New(f)
	adm := &conn{c: c, super: true, log: zerolog.Nop()}
	stat := &conn{c: c, log: zerolog.Nop()}
	run := func(ac *conn, q string) string {
		t.Helper()
		cmd, err := parseCommand(q)
		if err != nil {
			t.Fatalf("parse %q: %v", q, err)
		}
		ac.out = ac.out[:0]
		if err := ac.exec(cmd); err != nil {
			if e, ok := err.(*Error); ok {
				return e.Code
			}
			return err.Error()
		}
		return ""
	}
	if code := run(stat, "SUSPEND"); code != codeInsufficientPrivilege {
		t.Errorf("SUSPEND by a stats user: %q; want 42501", code)
	}
	if _, err := parseCommand("SUSPEND now"); err == nil {
		t.Errorf("SUSPEND with an argument parsed")
	}
	if code := run(adm, "suspend"); code != "" {
		t.Fatalf("SUSPEND: %q", code)
	}
	state := map[string]string{}
	for _, r := range rowsOf(c.table("STATE", time.Now())) {
		state[r["key"]] = r["value"]
	}
	if state["suspended"] != "yes" || state["active"] != "no" {
		t.Errorf("SHOW STATE while suspended: %v", state)
	}
	if code := run(adm, "SUSPEND"); code != codeNotInPrerequisiteState {
		t.Errorf("SUSPEND twice: %q; want 55000", code)
	}
	for _, subject := range []string{"PEERS", "PEER_POOLS"} {
		if rows := c.table(subject, time.Now()).rows; len(rows) != 0 {
			t.Errorf("SHOW %s: %v; want no rows (no peering)", subject, rows)
		}
	}
}

// TestResumeDuringShutdown: as PgBouncer's test_resume_during_shutdown,
// RESUME once a shutdown has begun is refused ("pgtide is shutting down"):
// it cannot undo the shutdown, and an operator must not be told it did.
func TestResumeDuringShutdown(t *testing.T) {
	f := newFake()
	f.state.Running = false // a shutdown has begun (SHOW STATE shutting_down)
	c, _ := serve(t, f, "adm")
	c.until(&pgproto3.ReadyForQuery{})
	c.fe.Send(&pgproto3.Query{String: "RESUME"})
	if err := c.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var code, msg string
	for _, m := range c.until(&pgproto3.ReadyForQuery{}) {
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			code, msg = e.Code, e.Message
		}
	}
	if code != codeAdminShutdown || msg != "pgtide is shutting down" || len(f.calls) != 0 {
		t.Fatalf("RESUME during shutdown: error %q %q, calls %v; want 57P01 and no resume", code, msg, f.calls)
	}
}
