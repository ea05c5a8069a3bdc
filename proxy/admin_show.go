package proxy

import (
	"encoding"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/config"
)

// Column types of console results, as PgBouncer uses them.
const (
	oidText = 25
	oidInt8 = 20
)

type adminCol struct {
	name string
	oid  uint32
}

// table is one SHOW result: columns, then rows of string, int, int64,
// uint64 or nil (NULL) values.
type table struct {
	cols []adminCol
	rows [][]any
}

func cols(spec ...string) []adminCol {
	out := make([]adminCol, len(spec))
	for i, s := range spec {
		name, typ, _ := strings.Cut(s, ":")
		out[i] = adminCol{name, oidText}
		if typ == "i" {
			out[i].oid = oidInt8
		}
	}
	return out
}

func (t *table) add(vals ...any) { t.rows = append(t.rows, vals) }

// encode appends RowDescription, DataRows and CommandComplete "SHOW".
func (t *table) encode(out []byte) []byte {
	rd := pgproto3.RowDescription{Fields: make([]pgproto3.FieldDescription, len(t.cols))}
	for i, c := range t.cols {
		size := int16(-1)
		if c.oid == oidInt8 {
			size = 8
		}
		rd.Fields[i] = pgproto3.FieldDescription{Name: []byte(c.name), DataTypeOID: c.oid, DataTypeSize: size, TypeModifier: -1}
	}
	out, _ = rd.Encode(out)
	for _, r := range t.rows {
		dr := pgproto3.DataRow{Values: make([][]byte, len(r))}
		for i, v := range r {
			dr.Values[i] = cell(v)
		}
		out, _ = dr.Encode(out)
	}
	out, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SHOW")}).Encode(out)
	return out
}

func cell(v any) []byte {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return []byte(x)
	case int:
		return strconv.AppendInt(nil, int64(x), 10)
	case int64:
		return strconv.AppendInt(nil, x, 10)
	case uint64:
		return strconv.AppendUint(nil, x, 10)
	case bool:
		if x {
			return []byte("1")
		}
		return []byte("0")
	}
	return []byte(fmt.Sprint(v))
}

// adminHelp is SHOW HELP's notice detail.
const adminHelp = `SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION
SHOW STATS|STATS_TOTALS|STATS_AVERAGES|LISTS|STATE
PAUSE [<db>]
RESUME [<db>]
DISABLE <db>
ENABLE <db>
RECONNECT [<db>]
KILL [<db>]
KILL_CLIENT <id>
WAIT_CLOSE [<db>]
RELOAD
SHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]`

func (ac *adminConn) show(subject string) error {
	s := ac.s
	var t table
	switch subject {
	case "HELP":
		ac.out, _ = (&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000",
			Message: "Console usage", Detail: adminHelp}).Encode(ac.out)
		ac.out, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SHOW")}).Encode(ac.out)
		return nil
	case "VERSION":
		t.cols = cols("version")
		t.add("pgtide " + s.Version)
	case "POOLS":
		t = s.showPools()
	case "CLIENTS":
		t = s.showClients()
	case "SERVERS":
		t = s.showServers()
	case "DATABASES":
		t = s.showDatabases()
	case "USERS":
		t = s.showUsers()
	case "STATS", "STATS_TOTALS", "STATS_AVERAGES":
		t = s.showStats(subject)
	case "CONFIG":
		t = showConfig(s.Config())
	case "LISTS":
		t = s.showLists()
	case "STATE":
		t.cols = cols("key", "value")
		yes := func(b bool) string {
			if b {
				return "yes"
			}
			return "no"
		}
		t.add("active", yes(s.state.Load() == stateRunning && !s.admin.pausedAll.Load()))
		t.add("paused", yes(s.admin.pausedAll.Load()))
		t.add("suspended", "no")
		t.add("shutting_down", yes(s.state.Load() != stateRunning))
	}
	ac.out = t.encode(ac.out)
	return nil
}

// clientInfo is a snapshot of one client session.
type clientInfo struct {
	ss       *session
	server   uint64 // linked server's id, 0 = none
	waiting  time.Duration
	isWait   bool
	request  time.Time
	app      string
	prepared int
}

func snapClient(ss *session, now time.Time) clientInfo {
	ci := clientInfo{ss: ss}
	if w := ss.adm.waitStart.Load(); w != 0 {
		ci.isWait = true
		ci.waiting = max(now.Sub(time.Unix(0, w)), 0)
	}
	ss.mu.Lock()
	if ss.sc != nil {
		ci.server = ss.sc.ID
	}
	ci.request = ss.queryStart
	ci.app = ss.want["application_name"]
	ci.prepared = len(ss.stmts)
	ss.mu.Unlock()
	if ci.request.IsZero() {
		ci.request = ss.adm.connected
	}
	return ci
}

func (s *Server) showPools() table {
	t := table{cols: cols("database", "user", "cl_active:i", "cl_waiting:i", "cl_active_cancel_req:i",
		"cl_waiting_cancel_req:i", "sv_active:i", "sv_active_cancel:i", "sv_being_canceled:i", "sv_idle:i",
		"sv_used:i", "sv_tested:i", "sv_login:i", "maxwait:i", "maxwait_us:i", "pool_mode")}
	type agg struct {
		active, waiting, linked int
		maxWait                 time.Duration
	}
	byPool := map[poolKey]*agg{}
	now := time.Now()
	for _, ss := range s.sessionList() {
		k := poolKey{ss.dbName, ss.userName}
		a := byPool[k]
		if a == nil {
			a = &agg{}
			byPool[k] = a
		}
		ci := snapClient(ss, now)
		if ci.isWait {
			a.waiting++
			a.maxWait = max(a.maxWait, ci.waiting)
		} else {
			a.active++
		}
		if ci.server != 0 {
			a.linked++
		}
	}
	for _, p := range s.poolList("") {
		st := p.e.pool.Stats()
		a := byPool[p.k]
		if a == nil {
			a = &agg{}
		}
		login := max(st.Lent-a.linked, 0)
		t.add(p.k.db, p.k.user, a.active, a.waiting, 0, 0, a.linked, 0, 0, st.Idle, 0, 0, login,
			int64(a.maxWait/time.Second), int64(a.maxWait%time.Second/time.Microsecond), string(p.e.mode))
	}
	return t
}

var clientCols = []string{"type", "user", "database", "replication", "state", "addr", "port:i", "local_addr",
	"local_port:i", "connect_time", "request_time", "wait:i", "wait_us:i", "close_needed:i", "ptr", "link",
	"remote_pid:i", "tls", "application_name", "prepared_statements:i", "id:i"}

const timeFormat = "2006-01-02 15:04:05 MST"

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

// hostPort splits an address for the addr/port columns; a unix socket
// shows as "unix".
func (s *Server) hostPort(a net.Addr) (string, int) {
	if a == nil {
		return "", 0
	}
	if _, ok := a.(*net.UnixAddr); ok {
		port := config.DefaultPort
		if cfg := s.Config(); len(cfg.Listen) > 0 {
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

func (s *Server) showClients() table {
	t := table{cols: cols(clientCols...)}
	now := time.Now()
	for _, ac := range s.admin.consoles() {
		addr, port := s.hostPort(ac.nc.RemoteAddr())
		laddr, lport := s.hostPort(ac.nc.LocalAddr())
		req := ac.connected
		if r := ac.reqStart.Load(); r != 0 {
			req = time.Unix(0, r)
		}
		t.add("C", ac.user, config.AdminDatabaseName, "none", "active", addr, port, laddr, lport,
			fmtTime(ac.connected), fmtTime(req), 0, 0, 0, strconv.FormatUint(ac.id, 10), "", 0, "", ac.appName, 0, ac.id)
	}
	for _, ss := range s.sessionList() {
		ci := snapClient(ss, now)
		state := "idle"
		switch {
		case ci.isWait:
			state = "waiting"
		case ci.server != 0:
			state = "active"
		}
		link := ""
		if ci.server != 0 {
			link = strconv.FormatUint(ci.server, 10)
		}
		addr, port := s.hostPort(ss.conn.RemoteAddr())
		laddr, lport := s.hostPort(ss.conn.LocalAddr())
		t.add("C", ss.userName, ss.dbName, "none", state, addr, port, laddr, lport,
			fmtTime(ss.adm.connected), fmtTime(ci.request), int64(ci.waiting/time.Second),
			int64(ci.waiting%time.Second/time.Microsecond), 0, strconv.FormatUint(ss.adm.id, 10), link, 0, "",
			ci.app, ci.prepared, ss.adm.id)
	}
	return t
}

func (s *Server) showServers() table {
	t := table{cols: cols(clientCols...)}
	type row struct {
		id  uint64
		val []any
	}
	var rows []row
	add := func(db, user, state string, ci pool.ConnInfo, link string, req time.Time) {
		addr, port := s.hostPort(ci.Addr)
		laddr, lport := s.hostPort(ci.Local)
		rows = append(rows, row{ci.ID, []any{"S", user, db, "none", state, addr, port, laddr, lport,
			fmtTime(ci.Created), fmtTime(req), 0, 0, ci.CloseNeeded, strconv.FormatUint(ci.ID, 10), link,
			int64(ci.PID), "", "", 0, ci.ID}})
	}
	now := time.Now()
	for _, ss := range s.sessionList() {
		ss.mu.Lock()
		sc := ss.sc
		ss.mu.Unlock()
		if sc == nil {
			continue
		}
		ci := snapClient(ss, now)
		add(ss.dbName, ss.userName, "active", sc.Info(), strconv.FormatUint(ss.adm.id, 10), ci.request)
	}
	for _, p := range s.poolList("") {
		for _, ci := range p.e.pool.IdleConns() {
			add(p.k.db, p.k.user, "idle", ci, "", ci.LastUsed)
		}
	}
	slices.SortFunc(rows, func(a, b row) int { return cmpU64(a.id, b.id) })
	for _, r := range rows {
		t.add(r.val...)
	}
	return t
}

// databaseNames lists [databases] sections (but "*") and databases that
// have pools (reached through "*"), sorted.
func (s *Server) databaseNames(cfg *config.Config) []string {
	var names []string
	for name := range cfg.Databases {
		if name != "*" {
			names = append(names, name)
		}
	}
	for _, p := range s.poolList("") {
		if _, ok := cfg.ResolveDatabase(p.k.db); ok && !slices.Contains(names, p.k.db) {
			names = append(names, p.k.db)
		}
	}
	slices.Sort(names)
	return names
}

func (s *Server) showDatabases() table {
	t := table{cols: cols("name", "host", "port:i", "database", "force_user", "pool_size:i", "min_pool_size:i",
		"reserve_pool:i", "pool_mode", "max_connections:i", "current_connections:i", "paused:i", "disabled:i")}
	cfg := s.Config()
	open := map[string]int{}
	for _, p := range s.poolList("") {
		open[p.k.db] += p.e.pool.Stats().Open
	}
	for _, name := range s.databaseNames(cfg) {
		db, _ := cfg.ResolveDatabase(name)
		mode := db.PoolMode
		if mode == "" {
			mode = cfg.PoolMode
		}
		paused, disabled := s.admin.pausedAll.Load(), false
		if c := s.admin.peek(name); c != nil {
			paused = paused || c.paused.Load()
			disabled = c.disabled.Load()
		}
		t.add(name, db.Host, db.Port, db.DBName, db.User, cfg.EffectivePoolSize(db, config.User{}),
			pick(db.MinPoolSize, cfg.MinPoolSize), 0, string(mode), pick(db.MaxDBConnections, cfg.MaxDBConnections),
			open[name], paused, disabled)
	}
	return t
}

func (s *Server) showUsers() table {
	t := table{cols: cols("name", "pool_size:i", "reserve_pool_size:i", "pool_mode", "max_user_connections:i",
		"current_connections:i", "max_user_client_connections:i", "current_client_connections:i")}
	cfg := s.Config()
	open, clients := map[string]int{}, map[string]int{}
	for _, p := range s.poolList("") {
		open[p.k.user] += p.e.pool.Stats().Open
	}
	for _, ss := range s.sessionList() {
		clients[ss.userName]++
	}
	names := make([]string, 0, len(cfg.Users))
	for name := range cfg.Users {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		u := cfg.Users[name]
		var size, mode any
		if u.PoolSize > 0 {
			size = u.PoolSize
		}
		if u.PoolMode != "" {
			mode = string(u.PoolMode)
		}
		t.add(name, size, 0, mode, pick(u.MaxUserConnections, cfg.MaxUserConnections), open[name], 0, clients[name])
	}
	return t
}

func (s *Server) showLists() table {
	t := table{cols: cols("list", "items:i")}
	cfg := s.Config()
	pools := s.poolList("")
	servers := 0
	for _, p := range pools {
		servers += p.e.pool.Stats().Open
	}
	used := len(s.sessionList()) + len(s.admin.consoles())
	t.add("databases", len(s.databaseNames(cfg)))
	t.add("users", len(cfg.Users))
	t.add("pools", len(pools))
	t.add("free_clients", 0)
	t.add("used_clients", used)
	t.add("login_clients", max(s.Clients()-used, 0))
	t.add("free_servers", 0)
	t.add("used_servers", servers)
	t.add("dns_names", 0)
	t.add("dns_zones", 0)
	t.add("dns_queries", 0)
	t.add("dns_pending", 0)
	return t
}

// showConfig lists the top-level settings with their defaults. Only
// listen, unix_socket_dir and metrics_listen need a restart. There are no secrets at this
// level ([users] and [databases] are not shown).
func showConfig(cfg *config.Config) table {
	t := table{cols: cols("key", "value", "default", "changeable")}
	def := config.Default()
	v, dv := reflect.ValueOf(cfg).Elem(), reflect.ValueOf(def).Elem()
	typ := v.Type()
	type kv struct{ k, v, d, c string }
	var rows []kv
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		key := strings.Split(f.Tag.Get("toml"), ",")[0]
		if key == "" || key == "-" || f.Type.Kind() == reflect.Map || strings.Contains(key, "password") {
			continue
		}
		ch := "yes"
		if key == "listen" || key == "unix_socket_dir" || key == "metrics_listen" {
			ch = "no"
		}
		rows = append(rows, kv{key, configValue(v.Field(i)), configValue(dv.Field(i)), ch})
	}
	slices.SortFunc(rows, func(a, b kv) int { return strings.Compare(a.k, b.k) })
	for _, r := range rows {
		t.add(r.k, r.v, r.d, r.c)
	}
	return t
}

func configValue(v reflect.Value) string {
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		b, err := m.MarshalText()
		if err == nil {
			return string(b)
		}
	}
	switch v.Kind() {
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = configValue(v.Index(i))
		}
		return strings.Join(parts, ",")
	case reflect.String:
		return v.String()
	}
	return fmt.Sprint(v.Interface())
}

// statsPeriod is how often SHOW STATS averages are recomputed (PgBouncer's
// stats_period default).
const statsPeriod = 60 * time.Second

// statTotals are one database's counters summed over its pools.
type statTotals struct {
	assign, xact, query, recv, sent uint64
	xactNs, queryNs, waitNs         int64
}

// statsWindow holds the sample that starts the current period and the
// averages of the last completed one (under adminState.mu).
type statsWindow struct {
	at   time.Time
	last map[string]statTotals
	avg  map[string][8]int64 // in SHOW STATS_AVERAGES column order
}

func (s *Server) dbTotals() map[string]statTotals {
	out := map[string]statTotals{}
	for _, p := range s.poolList("") {
		c := p.e.counters
		t := out[p.k.db]
		t.assign += c.Waits.Load()
		t.xact += c.Xacts.Load()
		t.query += c.Queries.Load()
		t.recv += c.BytesIn.Load()
		t.sent += c.BytesOut.Load()
		t.xactNs += c.XactNanos.Load()
		t.queryNs += c.QueryNanos.Load()
		t.waitNs += c.WaitNanos.Load()
		out[p.k.db] = t
	}
	return out
}

// averages over secs seconds between two samples: rates per second, and
// mean durations in microseconds. Counters can go back (a pool replaced by
// a reload starts from zero): negative deltas count as zero.
func averages(now, then statTotals, secs float64) [8]int64 {
	d := func(a, b uint64) float64 {
		if a < b {
			return 0
		}
		return float64(a - b)
	}
	dn := func(a, b int64) float64 { return float64(max(a-b, 0)) }
	per := func(x float64) int64 {
		if secs <= 0 {
			return 0
		}
		return int64(x / secs)
	}
	mean := func(ns, n float64) int64 {
		if n == 0 {
			return 0
		}
		return int64(ns / n / 1e3)
	}
	xact, query, assign := d(now.xact, then.xact), d(now.query, then.query), d(now.assign, then.assign)
	return [8]int64{per(assign), per(xact), per(query), per(d(now.recv, then.recv)), per(d(now.sent, then.sent)),
		mean(dn(now.xactNs, then.xactNs), xact), mean(dn(now.queryNs, then.queryNs), query),
		mean(dn(now.waitNs, then.waitNs), assign)}
}

// statsTicker closes a statistics period every statsPeriod. It starts with
// the first console, so the first averages cover the time since then.
func (s *Server) statsTicker() {
	s.rotateStats()
	t := time.NewTicker(statsPeriod)
	defer t.Stop()
	for {
		select {
		case <-s.Done():
			return
		case <-t.C:
			s.rotateStats()
		}
	}
}

func (s *Server) rotateStats() {
	now, tot := time.Now(), s.dbTotals()
	a := &s.admin
	a.mu.Lock()
	defer a.mu.Unlock()
	w := &a.stats
	if w.last != nil {
		secs := now.Sub(w.at).Seconds()
		w.avg = map[string][8]int64{}
		for db, t := range tot {
			w.avg[db] = averages(t, w.last[db], secs)
		}
	}
	w.at, w.last = now, tot
}

// currentAverages returns the last completed period's averages; before
// the first period ends, those since the first sample.
func (s *Server) currentAverages(tot map[string]statTotals) map[string][8]int64 {
	a := &s.admin
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stats.avg != nil {
		return a.stats.avg
	}
	out := map[string][8]int64{}
	if a.stats.last == nil {
		return out
	}
	secs := time.Since(a.stats.at).Seconds()
	for db, t := range tot {
		out[db] = averages(t, a.stats.last[db], secs)
	}
	return out
}

var avgNames = []string{"server_assignment_count", "xact_count", "query_count", "recv", "sent", "xact_time",
	"query_time", "wait_time"}

func (s *Server) showStats(subject string) table {
	tot := s.dbTotals()
	avg := s.currentAverages(tot)
	names := make([]string, 0, len(tot))
	for db := range tot {
		names = append(names, db)
	}
	slices.Sort(names)
	totalNames := []string{"server_assignment_count", "xact_count", "query_count", "received", "sent",
		"xact_time", "query_time", "wait_time"}
	totals := func(t statTotals) []any {
		return []any{t.assign, t.xact, t.query, t.recv, t.sent, t.xactNs / 1e3, t.queryNs / 1e3, t.waitNs / 1e3}
	}
	var t table
	spec := []string{"database"}
	switch subject {
	case "STATS":
		for _, n := range totalNames {
			spec = append(spec, "total_"+n+":i")
		}
		for _, n := range avgNames {
			spec = append(spec, "avg_"+n+":i")
		}
	case "STATS_TOTALS":
		for _, n := range totalNames {
			if n == "received" {
				n = "bytes_received"
			} else if n == "sent" {
				n = "bytes_sent"
			}
			spec = append(spec, n+":i")
		}
	case "STATS_AVERAGES":
		for _, n := range avgNames {
			switch n {
			case "recv":
				n = "bytes_received"
			case "sent":
				n = "bytes_sent"
			}
			spec = append(spec, n+":i")
		}
	}
	t.cols = cols(spec...)
	for _, db := range names {
		row := []any{db}
		a := avg[db]
		if subject != "STATS_AVERAGES" {
			row = append(row, totals(tot[db])...)
		}
		if subject != "STATS_TOTALS" {
			for _, v := range a {
				row = append(row, v)
			}
		}
		t.add(row...)
	}
	return t
}
