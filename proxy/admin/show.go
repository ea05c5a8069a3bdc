package admin

import (
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/proxy/config"
)

// Column types of console results, as PgBouncer 1.25 declares them
// (src/pktbuf.c): its timestamps are text too.
const (
	oidBytea   = 17
	oidInt8    = 20
	oidInt4    = 23
	oidText    = 25
	oidNumeric = 1700
)

type column struct {
	name string
	oid  uint32
}

// table is one SHOW result: columns, then rows of string, int, int64,
// uint64, bool or nil (NULL) values.
type table struct {
	cols []column
	rows [][]any
}

// cols builds columns from "name:t" specs, t as PgBouncer's tuple
// descriptors: s text (the default), i int4, q int8, N numeric, b bytea,
// T a time shown as text.
func cols(spec ...string) []column {
	out := make([]column, len(spec))
	for i, s := range spec {
		name, typ, _ := strings.Cut(s, ":")
		out[i] = column{name, oidText}
		switch typ {
		case "i":
			out[i].oid = oidInt4
		case "q":
			out[i].oid = oidInt8
		case "N":
			out[i].oid = oidNumeric
		case "b":
			out[i].oid = oidBytea
		}
	}
	return out
}

func (t *table) add(vals ...any) { t.rows = append(t.rows, vals) }

func typeSize(oid uint32) int16 {
	switch oid {
	case oidInt4:
		return 4
	case oidInt8:
		return 8
	}
	return -1
}

// encode appends RowDescription, DataRows and CommandComplete "SHOW".
func (t *table) encode(out []byte) []byte {
	rd := pgproto3.RowDescription{Fields: make([]pgproto3.FieldDescription, len(t.cols))}
	for i, c := range t.cols {
		rd.Fields[i] = pgproto3.FieldDescription{Name: []byte(c.name), DataTypeOID: c.oid, DataTypeSize: typeSize(c.oid), TypeModifier: -1}
	}
	out, _ = rd.Encode(out)
	for _, r := range t.rows {
		dr := pgproto3.DataRow{Values: make([][]byte, len(r))}
		for i, v := range r {
			dr.Values[i] = cell(v, t.cols[i].oid)
		}
		out, _ = dr.Encode(out)
	}
	out, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SHOW")}).Encode(out)
	return out
}

// cell formats one value; an int4 column clamps what does not fit.
func cell(v any, oid uint32) []byte {
	clamp := func(x int64) int64 {
		if oid == oidInt4 {
			return min(max(x, math.MinInt32), math.MaxInt32)
		}
		return x
	}
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return []byte(x)
	case int:
		return strconv.AppendInt(nil, clamp(int64(x)), 10)
	case int64:
		return strconv.AppendInt(nil, clamp(x), 10)
	case uint32:
		return strconv.AppendInt(nil, clamp(int64(x)), 10)
	case uint64:
		if oid == oidInt4 && x > math.MaxInt32 {
			x = math.MaxInt32
		}
		return strconv.AppendUint(nil, x, 10)
	case bool:
		if x {
			return []byte("1")
		}
		return []byte("0")
	}
	return []byte(fmt.Sprint(v))
}

// help is SHOW HELP's notice detail.
const help = `SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION
SHOW PEERS|PEER_POOLS
SHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE
SHOW DNS_HOSTS|DNS_ZONES
SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS
SET key = arg
PAUSE [<db>]
RESUME [<db>]
DISABLE <db>
ENABLE <db>
RECONNECT [<db>]
KILL [<db>]
KILL_CLIENT <id>
SUSPEND
WAIT_CLOSE [<db>]
RELOAD
SHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]`

func (ac *conn) show(subject string) error {
	c := ac.c
	var t table
	switch subject {
	case "HELP":
		ac.out, _ = (&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000",
			Message: "Console usage", Detail: help}).Encode(ac.out)
		ac.out, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SHOW")}).Encode(ac.out)
		return nil
	case "FDS":
		if !ac.super {
			return &Error{codeInsufficientPrivilege, "admin access needed"}
		}
		t = showFDs()
	default:
		t = c.table(subject, time.Now())
	}
	ac.out = t.encode(ac.out)
	return nil
}

// table builds the result of SHOW subject (every subject but HELP).
func (c *Console) table(subject string, now time.Time) table {
	b := c.b
	var t table
	switch subject {
	case "VERSION":
		t.cols = cols("version")
		t.add("pgtide " + b.BuildVersion())
	case "POOLS":
		t = c.showPools(now)
	case "CLIENTS":
		t = c.showClients(now, false)
	case "SERVERS":
		t = c.showServers(false)
	case "SOCKETS", "ACTIVE_SOCKETS":
		t = c.showSockets(now, subject == "ACTIVE_SOCKETS")
	case "DATABASES":
		t = c.showDatabases()
	case "USERS":
		t = c.showUsers()
	case "STATS", "STATS_TOTALS", "STATS_AVERAGES":
		t = c.showStats(subject, now)
	case "TOTALS":
		t = c.showTotals(now)
	case "CONFIG":
		t = showConfig(b.Config(), b.BootConfig())
	case "LISTS":
		t = c.showLists()
	case "MEM":
		t = showMem()
	case "FDS":
		t = showFDs()
	case "DNS_HOSTS":
		t.cols = cols("hostname", "ttl:q", "addrs") // pgtide keeps no DNS cache
	case "DNS_ZONES":
		t.cols = cols("zonename", "serial:q", "count:i")
	case "PEERS": // pgtide has no peering: no rows
		t.cols = cols("peer_id:i", "host", "port:i", "pool_size:i")
	case "PEER_POOLS":
		t.cols = cols("peer_id:i", "cl_active_cancel_req:i", "cl_waiting_cancel_req:i", "sv_active_cancel:i", "sv_login:i")
	case "STATE":
		t.cols = cols("key", "value")
		yes := func(b bool) string {
			if b {
				return "yes"
			}
			return "no"
		}
		st := b.State()
		t.add("active", yes(st.Running && !st.PausedAll && !st.Suspended))
		t.add("paused", yes(st.PausedAll))
		t.add("suspended", yes(st.Suspended))
		t.add("shutting_down", yes(!st.Running))
	default:
		if v, ok := fakeParam(subject); ok {
			t.cols = cols(strings.ToLower(subject))
			t.add(v)
		}
	}
	return t
}

// waited is how long a client has been waiting for a server, 0 if it is not.
func waited(cl Client, now time.Time) time.Duration {
	if cl.WaitStart.IsZero() {
		return 0
	}
	return max(now.Sub(cl.WaitStart), 0)
}

type poolKey struct{ db, user string }

func (c *Console) showPools(now time.Time) table {
	t := table{cols: cols("database", "user", "cl_active:i", "cl_waiting:i", "cl_active_cancel_req:i",
		"cl_waiting_cancel_req:i", "sv_active:i", "sv_active_cancel:i", "sv_being_canceled:i", "sv_idle:i",
		"sv_used:i", "sv_tested:i", "sv_login:i", "maxwait:i", "maxwait_us:i", "pool_mode", "load_balance_hosts")}
	type agg struct {
		active, waiting, linked int
		maxWait                 time.Duration
	}
	byPool := map[poolKey]*agg{}
	for _, cl := range c.b.ClientRows() {
		k := poolKey{cl.Database, cl.User}
		a := byPool[k]
		if a == nil {
			a = &agg{}
			byPool[k] = a
		}
		if !cl.WaitStart.IsZero() {
			a.waiting++
			a.maxWait = max(a.maxWait, waited(cl, now))
		} else {
			a.active++
		}
		if cl.Server != 0 {
			a.linked++
		}
	}
	cfg := c.b.Config()
	for _, p := range sortedPools(c.b.PoolRows()) {
		a := byPool[poolKey{p.Database, p.User}]
		if a == nil {
			a = &agg{}
		}
		login := max(p.Lent-a.linked, 0)
		db, _ := cfg.ResolveDatabase(p.Database)
		t.add(p.Database, p.User, a.active, a.waiting, 0, 0, a.linked, 0, 0, max(p.Idle-p.Used, 0), p.Used, 0, login,
			int64(a.maxWait/time.Second), int64(a.maxWait%time.Second/time.Microsecond), p.Mode, loadBalanceHosts(cfg, db))
	}
	return t
}

// loadBalanceHosts is the load_balance_hosts column of SHOW DATABASES and
// SHOW POOLS: the mode in effect for a database whose host is a list, NULL
// for one host (as PgBouncer shows it).
func loadBalanceHosts(cfg *config.Config, db config.Database) any {
	if !strings.Contains(db.Host, ",") {
		return nil
	}
	return cfg.EffectiveLoadBalanceHosts(db)
}

func sortedPools(ps []Pool) []Pool {
	slices.SortFunc(ps, func(a, b Pool) int {
		if c := strings.Compare(a.Database, b.Database); c != 0 {
			return c
		}
		return strings.Compare(a.User, b.User)
	})
	return ps
}

// socketCols are SHOW CLIENTS/SERVERS columns; SHOW SOCKETS adds the
// debug ones.
var socketCols = []string{"type", "user", "database", "replication", "state", "addr", "port:i", "local_addr",
	"local_port:i", "connect_time:T", "request_time:T", "wait:i", "wait_us:i", "close_needed:i", "ptr", "link",
	"remote_pid:i", "tls", "application_name", "prepared_statements:i", "id:i"}

var socketDebugCols = []string{"recv_pos:i", "pkt_pos:i", "pkt_remain:i", "send_pos:i", "send_remain:i",
	"pkt_avail:i", "send_avail:i"}

// timeFormat is PgBouncer's for connect_time and request_time.
const timeFormat = "2006-01-02 15:04:05 MST"

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

// hostPort splits an address for the addr/port columns; a unix socket
// shows as "unix" with the port of the first listen address.
func (c *Console) hostPort(a net.Addr) (string, int) {
	if a == nil {
		return "", 0
	}
	if _, ok := a.(*net.UnixAddr); ok {
		port := config.DefaultPort
		if cfg := c.b.BootConfig(); len(cfg.Listen) > 0 {
			if _, p, err := net.SplitHostPort(cfg.Listen[0]); err == nil {
				port, _ = strconv.Atoi(p)
			}
		}
		return "unix", port
	}
	h, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String(), 0
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// TLSInfo is SHOW CLIENTS' tls column for a client connection: protocol
// and cipher, as PgBouncer's "TLSv1.3/TLS_AES_256_GCM_SHA384"; "" without
// TLS.
func TLSInfo(nc net.Conn) string {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	v := map[uint16]string{tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}[st.Version]
	if v == "" {
		v = tls.VersionName(st.Version)
	}
	return v + "/" + tls.CipherSuiteName(st.CipherSuite)
}

func idText(id uint64) string {
	if id == 0 {
		return ""
	}
	return strconv.FormatUint(id, 10)
}

// clientRows are the SHOW CLIENTS rows: consoles first, then sessions.
// debug gives SHOW SOCKETS' states (cl_active, cl_waiting) and columns.
func (c *Console) clientRows(now time.Time, debug bool) [][]any {
	var rows [][]any
	extra := func(r []any, pin string) []any {
		if debug {
			return append(r, 0, 0, 0, 0, 0, 0, 0)
		}
		return append(r, pin)
	}
	for _, ac := range c.consoles() {
		addr, port := c.hostPort(ac.nc.RemoteAddr())
		laddr, lport := c.hostPort(ac.nc.LocalAddr())
		req := ac.connected
		if r := ac.reqStart.Load(); r != 0 {
			req = time.Unix(0, r)
		}
		state := "active"
		if debug {
			state = "cl_active"
		}
		rows = append(rows, extra([]any{"C", ac.user, ac.db, "none", state, addr, port, laddr, lport,
			fmtTime(ac.connected), fmtTime(req), 0, 0, 0, idText(ac.id), "", 0, TLSInfo(ac.nc), ac.appName, 0, ac.id}, ""))
	}
	for _, cl := range c.b.ClientRows() {
		w := waited(cl, now)
		state := "idle"
		switch {
		case !cl.WaitStart.IsZero():
			state = "waiting"
		case cl.Server != 0:
			state = "active"
		}
		if debug {
			state = "cl_" + state
			if state == "cl_idle" {
				state = "cl_active" // PgBouncer's list of clients not waiting
			}
		}
		req := cl.Request
		if req.IsZero() {
			req = cl.Connected
		}
		addr, port := c.hostPort(cl.Addr)
		laddr, lport := c.hostPort(cl.Local)
		rows = append(rows, extra([]any{"C", cl.User, cl.Database, "none", state, addr, port, laddr, lport,
			fmtTime(cl.Connected), fmtTime(req), int64(w / time.Second), int64(w % time.Second / time.Microsecond), 0,
			idText(cl.ID), idText(cl.Server), 0, cl.TLS, cl.App, cl.Prepared, cl.ID}, cl.Pin))
	}
	return rows
}

// clientCols are SHOW CLIENTS' columns: PgBouncer's, then pgtide's own
// "pin" (why a transaction-mode client keeps its server; "" = it does not),
// last so that tools reading PgBouncer's columns by name or position work.
var clientCols = append(slices.Clone(socketCols), "pin")

func (c *Console) showClients(now time.Time, debug bool) table {
	t := table{cols: cols(clientCols...), rows: c.clientRows(now, debug)}
	return t
}

// serverRows are the SHOW SERVERS rows, ordered by id.
func (c *Console) serverRows(debug bool) [][]any {
	svs := c.b.ServerRows()
	slices.SortFunc(svs, func(a, b Server) int { return cmpU64(a.ID, b.ID) })
	var rows [][]any
	for _, sv := range svs {
		addr, port := c.hostPort(sv.Addr)
		laddr, lport := c.hostPort(sv.Local)
		state := sv.State
		if debug {
			state = "sv_" + state
		}
		r := []any{"S", sv.User, sv.Database, "none", state, addr, port, laddr, lport,
			fmtTime(sv.Connected), fmtTime(sv.Request), 0, 0, sv.CloseNeeded, idText(sv.ID), idText(sv.Link),
			sv.PID, "", sv.App, 0, sv.ID}
		if debug {
			r = append(r, 0, 0, 0, 0, 0, 0, 0)
		}
		rows = append(rows, r)
	}
	return rows
}

func (c *Console) showServers(debug bool) table {
	return table{cols: cols(socketCols...), rows: c.serverRows(debug)}
}

// showSockets is SHOW SOCKETS: clients and servers with the debug columns
// (pgtide keeps no per-socket buffer positions: they are 0). ACTIVE_SOCKETS
// keeps the clients and servers that are linked to each other.
func (c *Console) showSockets(now time.Time, activeOnly bool) table {
	t := table{cols: cols(append(slices.Clone(socketCols), socketDebugCols...)...)}
	for _, r := range append(c.clientRows(now, true), c.serverRows(true)...) {
		if activeOnly && r[15] == "" {
			continue
		}
		t.add(r...)
	}
	return t
}

// databaseNames lists [databases] sections (but "*") and databases that
// have pools (reached through "*"), sorted.
func databaseNames(cfg *config.Config, pools []Pool) []string {
	var names []string
	for name := range cfg.Databases {
		if name != "*" {
			names = append(names, name)
		}
	}
	for _, p := range pools {
		if _, ok := cfg.ResolveDatabase(p.Database); ok && !slices.Contains(names, p.Database) {
			names = append(names, p.Database)
		}
	}
	slices.Sort(names)
	return names
}

func pick(v, def int) int {
	if v != 0 {
		return v
	}
	return def
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (c *Console) showDatabases() table {
	t := table{cols: cols("name", "host", "port:i", "database", "force_user", "pool_size:i", "min_pool_size:i",
		"reserve_pool_size:i", "server_lifetime:i", "pool_mode", "load_balance_hosts", "max_connections:i",
		"current_connections:i", "max_client_connections:i", "current_client_connections:i", "paused:i", "disabled:i")}
	b := c.b
	cfg := b.Config()
	pools := b.PoolRows()
	open, clients := map[string]int{}, map[string]int{}
	for _, p := range pools {
		open[p.Database] += p.Open
	}
	for _, cl := range b.ClientRows() {
		clients[cl.Database]++
	}
	pausedAll := b.State().PausedAll
	for _, name := range databaseNames(cfg, pools) {
		db, _ := cfg.ResolveDatabase(name)
		paused, disabled := b.DBState(name)
		t.add(name, db.Host, db.Port, db.DBName, nullIfEmpty(db.User), cfg.EffectivePoolSize(db, config.User{}),
			pick(db.MinPoolSize, cfg.MinPoolSize), pick(db.ReservePoolSize, cfg.ReservePoolSize), int64(cfg.EffectiveServerLifetime(db)/time.Second),
			nullIfEmpty(string(db.PoolMode)), loadBalanceHosts(cfg, db), pick(db.MaxDBConnections, cfg.MaxDBConnections),
			open[name], pick(db.MaxDBClientConnections, cfg.MaxDBClientConnections), clients[name], paused || pausedAll, disabled)
	}
	return t
}

func (c *Console) showUsers() table {
	t := table{cols: cols("name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections:i",
		"current_connections:i", "max_user_client_connections:i", "current_client_connections:i")}
	cfg := c.b.Config()
	open, clients := map[string]int{}, map[string]int{}
	for _, p := range c.b.PoolRows() {
		open[p.User] += p.Open
	}
	for _, cl := range c.b.ClientRows() {
		clients[cl.User]++
	}
	names := make([]string, 0, len(cfg.Users))
	for name := range cfg.Users {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		u := cfg.Users[name]
		var size any
		if u.PoolSize > 0 {
			size = strconv.Itoa(u.PoolSize)
		}
		var reserve any
		if u.ReservePoolSize > 0 {
			reserve = strconv.Itoa(u.ReservePoolSize)
		}
		t.add(name, size, reserve, nullIfEmpty(string(u.PoolMode)), pick(u.MaxUserConnections, cfg.MaxUserConnections),
			open[name], pick(u.MaxUserClientConnections, cfg.MaxUserClientConnections), clients[name])
	}
	return t
}

func (c *Console) showLists() table {
	t := table{cols: cols("list", "items:i")}
	b := c.b
	cfg := b.Config()
	pools := b.PoolRows()
	servers := 0
	for _, p := range pools {
		servers += p.Open
	}
	used := len(b.ClientRows()) + len(c.consoles())
	t.add("databases", len(databaseNames(cfg, pools)))
	t.add("users", len(cfg.Users))
	t.add("peers", 0)
	t.add("pools", len(pools))
	t.add("peer_pools", 0)
	t.add("free_clients", 0)
	t.add("used_clients", used)
	t.add("login_clients", max(b.Clients()-used, 0))
	t.add("free_servers", 0)
	t.add("used_servers", servers)
	t.add("dns_names", 0)
	t.add("dns_zones", 0)
	t.add("dns_queries", 0)
	t.add("dns_pending", 0)
	return t
}

// showMem is SHOW MEM: PgBouncer lists its slab caches; pgtide has the Go
// runtime's heap and stacks instead (size 1: the figures are bytes).
func showMem() table {
	t := table{cols: cols("name", "size:i", "used:i", "free:i", "memtotal:i")}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.add("heap", 1, ms.HeapInuse, ms.HeapIdle-ms.HeapReleased, ms.HeapSys-ms.HeapReleased)
	t.add("stack", 1, ms.StackInuse, ms.StackSys-ms.StackInuse, ms.StackSys)
	return t
}

// showFDs is SHOW FDS: PgBouncer passes its sockets to a new process this
// way; pgtide's online restart uses so_reuseport instead, so the list is
// empty.
func showFDs() table {
	return table{cols: cols("fd:i", "task", "user", "database", "addr", "port:i", "cancel:q", "link:i",
		"client_encoding", "std_strings", "datestyle", "timezone", "password", "scram_client_key:b",
		"scram_server_key:b")}
}
