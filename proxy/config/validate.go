package config

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

var (
	authTypes   = []string{"scram-sha-256", "md5", "password", "trust", "hba"}
	logLevels   = []string{"debug", "info", "warn", "error"}
	logFormats  = []string{"auto", "json", "console"}
	poolModes   = []string{string(PoolSession), string(PoolTransaction), string(PoolStatement)}
	pinPolicies = []string{string(PinKeep), string(PinRefuse)}
	loadBalance = []string{LoadBalanceRoundRobin, LoadBalanceDisable}
)

func k(parts ...string) toml.Key { return toml.Key(parts) }

// validate checks every value of c, which has been decoded onto the defaults.
func (d *decoder) validate(c *Config) {
	d.checkEnum(k("pool_mode"), string(c.PoolMode), poolModes)
	d.checkEnum(k("pin_policy"), string(c.PinPolicy), pinPolicies)
	d.checkEnum(k("auth_type"), c.AuthType, authTypes)
	d.checkEnum(k("log_level"), c.LogLevel, logLevels)
	d.checkEnum(k("log_format"), c.LogFormat, logFormats)
	d.checkEnum(k("load_balance_hosts"), c.LoadBalanceHosts, loadBalance)

	if c.DefaultPoolSize < 1 {
		d.fail(k("default_pool_size"), "", fmt.Sprintf("must be at least 1, got %d", c.DefaultPoolSize))
	}
	if c.MinPoolSize < 0 {
		d.fail(k("min_pool_size"), "", negative(c.MinPoolSize))
	} else if c.DefaultPoolSize >= 1 && c.MinPoolSize > c.DefaultPoolSize {
		d.fail(k("min_pool_size"), "", fmt.Sprintf("%d must not exceed default_pool_size (%d)", c.MinPoolSize, c.DefaultPoolSize))
	}
	if c.MaxClientConn < 1 {
		d.fail(k("max_client_conn"), "", fmt.Sprintf("must be at least 1, got %d", c.MaxClientConn))
	}
	d.checkNonNegative(k("max_db_connections"), c.MaxDBConnections)
	d.checkNonNegative(k("reserve_pool_size"), c.ReservePoolSize)
	d.checkNonNegative(k("max_user_connections"), c.MaxUserConnections)
	d.checkNonNegative(k("max_prepared_statements"), c.MaxPreparedStatements)
	d.checkNonNegative(k("listen_backlog"), c.ListenBacklog)
	d.checkNonNegative(k("max_db_client_connections"), c.MaxDBClientConnections)
	d.checkNonNegative(k("max_user_client_connections"), c.MaxUserClientConnections)
	d.checkNonNegative(k("tcp_keepcnt"), c.TCPKeepCnt)
	for _, t := range []struct {
		key string
		d   Duration
	}{{"tcp_keepidle", c.TCPKeepIdle}, {"tcp_keepintvl", c.TCPKeepIntvl}} {
		if t.d.Duration%time.Second != 0 {
			d.fail(k(t.key), "", fmt.Sprintf("must be whole seconds (the kernel counts them so), got %s", t.d.Duration))
		}
	}
	if c.TCPUserTimeout.Duration%time.Millisecond != 0 {
		d.fail(k("tcp_user_timeout"), "", fmt.Sprintf("must be whole milliseconds, got %s", c.TCPUserTimeout.Duration))
	}
	for i, name := range c.IgnoreStartupParameters {
		switch strings.ToLower(name) {
		case "":
			d.fail(k("ignore_startup_parameters"), fmt.Sprintf("[%d]", i), "must not be empty")
		case "user", "database", "replication":
			d.fail(k("ignore_startup_parameters"), fmt.Sprintf("[%d]", i), fmt.Sprintf("%q cannot be ignored: pgtide needs it to route the client", name))
		}
	}
	if c.Threads < 0 {
		d.fail(k("threads"), "", fmt.Sprintf("must be 0 (auto) or a positive number of threads, got %d", c.Threads))
	}
	if c.MaxMessageBuffer < 0 {
		d.fail(k("max_message_buffer"), "", fmt.Sprintf("must be 0 (no limit) or a number of bytes, got %d", c.MaxMessageBuffer))
	}
	if c.MaxPacketSize < MinMaxPacketSize {
		d.fail(k("max_packet_size"), "", fmt.Sprintf("must be at least %d, got %d", MinMaxPacketSize, c.MaxPacketSize))
	}

	for _, dur := range []struct {
		key string
		d   Duration
	}{
		{"server_connect_timeout", c.ServerConnectTimeout},
		{"reserve_pool_timeout", c.ReservePoolTimeout},
		{"query_wait_timeout", c.QueryWaitTimeout},
		{"query_wait_notify", c.QueryWaitNotify},
		{"cancel_wait_timeout", c.CancelWaitTimeout},
		{"server_idle_timeout", c.ServerIdleTimeout},
		{"server_lifetime", c.ServerLifetime},
		{"autodb_idle_timeout", c.AutodbIdleTimeout},
		{"server_check_delay", c.ServerCheckDelay},
		{"client_login_timeout", c.ClientLoginTimeout},
		{"shutdown_timeout", c.ShutdownTimeout},
		{"query_timeout", c.QueryTimeout},
		{"idle_transaction_timeout", c.IdleTransactionTimeout},
		{"transaction_timeout", c.TransactionTimeout},
		{"stats_period", c.StatsPeriod},
		{"client_idle_timeout", c.ClientIdleTimeout},
		{"server_login_retry", c.ServerLoginRetry},
		{"tcp_keepidle", c.TCPKeepIdle},
		{"tcp_keepintvl", c.TCPKeepIntvl},
		{"tcp_user_timeout", c.TCPUserTimeout},
	} {
		if dur.d.Duration < 0 {
			d.fail(k(dur.key), "", fmt.Sprintf("must not be negative, got %s", dur.d.Duration))
		}
	}

	if t := c.AutodbIdleTimeout.Duration; t > 0 && t < time.Second {
		// Shorter would free a pool between a login's lookup and its borrow.
		d.fail(k("autodb_idle_timeout"), "", fmt.Sprintf("must be \"0\" (never) or at least 1s, got %s", t))
	}

	for i, addr := range c.Listen {
		if reason := checkListen(addr); reason != "" {
			d.fail(k("listen"), fmt.Sprintf("[%d]", i), reason)
			continue
		}
		for j := 0; j < i; j++ {
			if listenOverlap(c.Listen[j], addr) {
				d.fail(k("listen"), fmt.Sprintf("[%d]", i), fmt.Sprintf("%q overlaps listen[%d] %q: the second bind would fail (or, with so_reuseport, share the port silently)", addr, j, c.Listen[j]))
				break
			}
		}
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			d.fail(k("metrics_listen"), "", fmt.Sprintf("invalid address %q: expected \"host:port\" (e.g. \"127.0.0.1:9127\", \"[::1]:9127\", \":9127\"), or \"\" for no metrics endpoint", c.MetricsListen))
		} else if reason := checkListen(c.MetricsListen); reason != "" {
			d.fail(k("metrics_listen"), "", reason)
		} else {
			for _, l := range c.Listen {
				if checkListen(l) == "" && listenOverlap(l, c.MetricsListen) {
					d.fail(k("metrics_listen"), "", fmt.Sprintf("%q overlaps listen entry %q; the metrics endpoint needs an address of its own", c.MetricsListen, l))
					break
				}
			}
		}
	}
	if n, err := strconv.ParseUint(c.UnixSocketMode, 8, 32); err != nil || n > 0o777 {
		d.fail(k("unix_socket_mode"), "", fmt.Sprintf("invalid mode %q: expected octal permissions such as \"0777\", \"0770\" or \"0700\"", c.UnixSocketMode))
	}
	if len(c.Listen) == 0 && c.UnixSocketDir == "" {
		d.fail(k("listen"), "", "no listen address and no unix_socket_dir: pgtide would accept no connections")
	}

	for i, u := range c.AdminUsers {
		if u == "" {
			d.fail(k("admin_users"), fmt.Sprintf("[%d]", i), "user name must not be empty")
		}
	}
	for i, u := range c.StatsUsers {
		if u == "" {
			d.fail(k("stats_users"), fmt.Sprintf("[%d]", i), "user name must not be empty")
		}
	}

	d.validateClientTLS(c) // tls.go
	d.validateAuthQuery(c) // authquery.go

	for _, name := range sortedNames(c.Databases) {
		d.validateDatabase(c, name, c.Databases[name])
	}
	for _, name := range sortedNames(c.Users) {
		d.validateUser(name, c.Users[name])
		if c.Users[name].hasTimeouts() {
			c.userTimeouts = true
		}
	}
}

func (d *decoder) validateDatabase(c *Config, name string, db Database) {
	key := func(f string) toml.Key { return k("databases", name, f) }
	switch name {
	case "":
		d.fail(k("databases", name), "", "database name must not be empty")
	case AdminDatabaseName:
		d.fail(k("databases", name), "", fmt.Sprintf("the database name %q is reserved for the admin console", AdminDatabaseName))
	}
	d.validateHosts(key, db)
	if db.LoadBalanceHosts != "" {
		d.checkEnum(key("load_balance_hosts"), db.LoadBalanceHosts, loadBalance)
	}
	if db.DBName == "" && name != "*" {
		d.fail(key("dbname"), "", "must not be empty (leave it out to use the section name)")
	}
	d.checkNonNegative(key("pool_size"), db.PoolSize)
	d.checkNonNegative(key("min_pool_size"), db.MinPoolSize)
	d.checkNonNegative(key("reserve_pool_size"), db.ReservePoolSize)
	d.checkNonNegative(key("max_db_connections"), db.MaxDBConnections)
	d.checkNonNegative(key("max_db_client_connections"), db.MaxDBClientConnections)
	if lt := db.ServerLifetime.Duration.Duration; lt < 0 {
		d.fail(key("server_lifetime"), "", fmt.Sprintf("must not be negative, got %s (\"\" = the global server_lifetime)", lt))
	}
	if db.PoolMode != "" {
		d.checkEnum(key("pool_mode"), string(db.PoolMode), poolModes)
	}
	if db.PinPolicy != "" {
		d.checkEnum(key("pin_policy"), string(db.PinPolicy), pinPolicies)
	}
	// PostgreSQL checks the values themselves (at login); a NUL byte could
	// not even reach it, so say so here rather than fail every login.
	for _, p := range [...][2]string{{"connect_query", db.ConnectQuery}, {"client_encoding", db.ClientEncoding}, {"datestyle", db.DateStyle}, {"timezone", db.TimeZone}} {
		if strings.ContainsRune(p[1], 0) {
			d.fail(key(p[0]), "", "must not contain a NUL character")
		}
	}
	d.validateServerTLS(name, db)         // tls.go
	d.validateServerRequireAuth(name, db) // requireauth.go
	if db.PoolSize >= 0 && db.MinPoolSize >= 0 {
		size, minSize := db.PoolSize, db.MinPoolSize
		if size == 0 {
			size = c.DefaultPoolSize
		}
		if minSize == 0 {
			minSize = c.MinPoolSize
		}
		switch {
		case size < 1 || minSize <= size:
		case db.MinPoolSize > 0:
			d.fail(key("min_pool_size"), "", fmt.Sprintf("%d must not exceed the pool size (%d)", minSize, size))
		case db.PoolSize > 0:
			d.fail(key("pool_size"), "", fmt.Sprintf("%d is less than min_pool_size (%d)", size, minSize))
		}
	}
}

// validateHosts checks a database's host list and its port (or ports).
func (d *decoder) validateHosts(key func(string) toml.Key, db Database) {
	hosts := SplitHosts(db.Host)
	switch {
	case db.Host == "":
		d.fail(key("host"), "", "must not be empty")
	case len(hosts) > 1:
		for i, h := range hosts {
			if h == "" {
				d.fail(key("host"), "", fmt.Sprintf("entry %d of the host list %q is empty (hosts are separated by single commas)", i+1, db.Host))
				break
			}
		}
	}
	if d.bad[key("port").String()] {
		return // decodePort said why
	}
	if db.Port < 1 || db.Port > 65535 {
		d.fail(key("port"), "", fmt.Sprintf("must be between 1 and 65535, got %d", db.Port))
	}
	if n := len(db.Ports); n > 1 && n != len(hosts) {
		nh := fmt.Sprintf("%d hosts", len(hosts))
		if len(hosts) == 1 {
			nh = "1 host"
		}
		d.fail(key("port"), "", fmt.Sprintf("lists %d ports for %s (host = %q): give one port for every host (port = %d), or one per host in the same order", n, nh, db.Host, db.Port))
	}
}

func (d *decoder) validateUser(name string, u User) {
	key := func(f string) toml.Key { return k("users", name, f) }
	if name == "" {
		d.fail(k("users", name), "", "user name must not be empty")
	}
	if reason := checkPassword(u.Password); reason != "" {
		d.fail(key("password"), "", reason)
	}
	if u.PoolMode != "" {
		d.checkEnum(key("pool_mode"), string(u.PoolMode), poolModes)
	}
	if u.PinPolicy != "" {
		d.checkEnum(key("pin_policy"), string(u.PinPolicy), pinPolicies)
	}
	d.checkNonNegative(key("pool_size"), u.PoolSize)
	d.checkNonNegative(key("max_user_connections"), u.MaxUserConnections)
	d.checkNonNegative(key("max_user_client_connections"), u.MaxUserClientConnections)
	d.checkNonNegative(key("reserve_pool_size"), u.ReservePoolSize)
	for _, t := range []struct {
		key string
		d   OptDuration
	}{
		{"query_timeout", u.QueryTimeout}, {"query_wait_timeout", u.QueryWaitTimeout},
		{"idle_transaction_timeout", u.IdleTransactionTimeout}, {"client_idle_timeout", u.ClientIdleTimeout},
		{"transaction_timeout", u.TransactionTimeout},
	} {
		if t.d.Duration.Duration < 0 {
			d.fail(key(t.key), "", fmt.Sprintf("must not be negative, got %s", t.d.Duration.Duration))
		}
	}
}

// checkPassword validates the stored forms of a password. The reason never
// contains the password itself.
func checkPassword(p string) string {
	if strings.HasPrefix(p, "md5") && len(p) == 35 {
		for _, c := range p[3:] {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return `looks like an md5 hash but is not "md5" followed by 32 lowercase hex digits`
			}
		}
		return ""
	}
	if strings.HasPrefix(p, scramPrefix) {
		if _, _, _, _, err := ParseSCRAMVerifier(p); err != nil {
			return "invalid SCRAM-SHA-256 verifier: " + err.Error()
		}
	}
	return ""
}

func checkListen(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("invalid address %q: expected \"host:port\" (e.g. \"127.0.0.1:6432\", \"[::1]:6432\", \":6432\")", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("invalid port %q in %q: expected a number from 0 to 65535", port, addr)
	}
	return ""
}

// listenOverlap reports whether binding both TCP addresses would collide:
// the same port and the same host, or a wildcard host ("", 0.0.0.0, ::)
// that covers the other. Port 0 (any free port) never collides.
func listenOverlap(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	if pa != pb || pa == "0" {
		return false
	}
	norm := func(h string) (string, string) { // host, family ("" = both)
		if ip := net.ParseIP(h); ip != nil {
			if ip.To4() != nil {
				return ip.String(), "4"
			}
			return ip.String(), "6"
		}
		if h == "" || h == "*" {
			return "", ""
		}
		return strings.ToLower(h), "name"
	}
	na, fa := norm(ha)
	nb, fb := norm(hb)
	wild := func(n string) bool { return n == "0.0.0.0" || n == "::" }
	switch {
	case na == nb:
		return true
	case na == "" || nb == "": // ":P" is every address of both families
		return true
	case wild(na) && (fa == fb || (fa == "6" && fb == "4")): // [::] is dual-stack on Linux by default
		return true
	case wild(nb) && (fa == fb || (fb == "6" && fa == "4")):
		return true
	}
	return false
}

func (d *decoder) checkEnum(key toml.Key, v string, allowed []string) {
	if contains(allowed, v) {
		return
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = strconv.Quote(a)
	}
	reason := fmt.Sprintf("invalid value %q (expected one of %s)", v, strings.Join(quoted, ", "))
	if s := closest(v, allowed); s != "" && v != "" {
		reason = fmt.Sprintf("invalid value %q (did you mean %q? expected one of %s)", v, s, strings.Join(quoted, ", "))
	}
	d.fail(key, "", reason)
}

func (d *decoder) checkNonNegative(key toml.Key, n int) {
	if n < 0 {
		d.fail(key, "", negative(n))
	}
}

func negative(n int) string { return fmt.Sprintf("must not be negative, got %d", n) }

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
