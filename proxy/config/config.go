// Package config holds pgtide's configuration: plain Go types decoded from a
// TOML file, with defaults applied and every value validated once, at load.
//
// Errors name the key they are about (for example databases.app.port) and,
// where the TOML decoder knows it, the line. Unknown keys are errors, with a
// suggestion of the closest valid key. All problems in a file are reported
// together as an *Errors.
//
// A *Config is not modified after Load/Parse returns; a reload builds a new one.
package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// PoolMode says when a server connection goes back to the pool.
type PoolMode string

// Pool modes, as in PgBouncer.
const (
	PoolSession     PoolMode = "session"
	PoolTransaction PoolMode = "transaction"
	PoolStatement   PoolMode = "statement"
)

// PinPolicy says what transaction and statement mode do with state that
// cannot move between servers (temporary tables, session advisory locks,
// LISTEN, cursors WITH HOLD).
type PinPolicy string

// Pin policies.
const (
	PinKeep   PinPolicy = "pin"    // the client keeps its server until the state is gone
	PinRefuse PinPolicy = "refuse" // the statement fails with 0A000 and the state is undone
)

// Valid reports whether m is one of the three pool modes (not "").
func (m PoolMode) Valid() bool {
	switch m {
	case PoolSession, PoolTransaction, PoolStatement:
		return true
	}
	return false
}

// Duration is a time.Duration written as a string in TOML ("30s", "2m", "1h").
// "0" (or the integer 0) means zero, which for most settings means disabled.
type Duration struct{ time.Duration }

// durationForms is the hint given for any malformed duration.
const durationForms = `expected a duration like "30s", "5m", "1h" (or "0" to disable)`

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	if s == "0" {
		d.Duration = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: %s", s, durationForms)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) {
	if d.Duration == 0 {
		return []byte("0"), nil
	}
	return []byte(d.Duration.String()), nil
}

// Config is the whole configuration file.
type Config struct {
	Listen                   []string  `toml:"listen"`                      // TCP "host:port" list; default ["127.0.0.1:6432"]
	UnixSocketDir            string    `toml:"unix_socket_dir"`             // "" = no unix socket; socket file is .s.PGSQL.<port>, port = port of first Listen entry (or 6432)
	UnixSocketMode           string    `toml:"unix_socket_mode"`            // "0777"; octal permissions of the socket file
	PoolMode                 PoolMode  `toml:"pool_mode"`                   // default session
	PinPolicy                PinPolicy `toml:"pin_policy"`                  // "pin" (default) | "refuse"
	DefaultPoolSize          int       `toml:"default_pool_size"`           // default 20; must be >= 1
	MinPoolSize              int       `toml:"min_pool_size"`               // default 0
	ReservePoolSize          int       `toml:"reserve_pool_size"`           // 0 = none; extra servers for clients that waited reserve_pool_timeout
	ReservePoolTimeout       Duration  `toml:"reserve_pool_timeout"`        // 5s
	MaxClientConn            int       `toml:"max_client_conn"`             // default 100
	MaxDBConnections         int       `toml:"max_db_connections"`          // default 0 = unlimited (global default per database)
	MaxUserConnections       int       `toml:"max_user_connections"`        // default 0 = unlimited
	MaxDBClientConnections   int       `toml:"max_db_client_connections"`   // 0 = unlimited; logged-in clients per database
	MaxUserClientConnections int       `toml:"max_user_client_connections"` // 0 = unlimited; logged-in clients per user
	AuthType                 string    `toml:"auth_type"`                   // "scram-sha-256" (default) | "md5" | "password" | "trust" | "hba"
	ServerConnectTimeout     Duration  `toml:"server_connect_timeout"`      // 15s
	QueryWaitTimeout         Duration  `toml:"query_wait_timeout"`          // 120s (0 = wait forever)
	QueryWaitNotify          Duration  `toml:"query_wait_notify"`           // 5s; a client waiting this long for a server gets a NOTICE (0 = never)
	CancelWaitTimeout        Duration  `toml:"cancel_wait_timeout"`         // 10s; how long a cancel request may take to reach the server (0 = no limit)
	ServerIdleTimeout        Duration  `toml:"server_idle_timeout"`         // 600s (0 = never)
	ServerLifetime           Duration  `toml:"server_lifetime"`             // 3600s (0 = never)
	AutodbIdleTimeout        Duration  `toml:"autodb_idle_timeout"`         // 3600s; pools of "*" databases unused this long are freed (0 = never)
	ServerResetQuery         string    `toml:"server_reset_query"`          // "DISCARD ALL"
	ServerResetQueryAlways   bool      `toml:"server_reset_query_always"`   // false
	ServerFastClose          bool      `toml:"server_fast_close"`           // false; session mode: a server retired by RECONNECT or a reload closes (with its client) at the next transaction boundary
	ServerCheckDelay         Duration  `toml:"server_check_delay"`          // 30s; idle longer than this: server_check_query runs before lending
	ServerCheckQuery         string    `toml:"server_check_query"`          // "" = no query (a non-blocking liveness read only)
	ServerLoginRetry         Duration  `toml:"server_login_retry"`          // 0 = off; after a failed server dial, new dials fail at once with its error this long
	LoadBalanceHosts         string    `toml:"load_balance_hosts"`          // "round-robin" (default) | "disable"; which host of a database's host list a new server connection tries first
	ClientLoginTimeout       Duration  `toml:"client_login_timeout"`        // 60s
	ShutdownTimeout          Duration  `toml:"shutdown_timeout"`            // 30s (0 = wait forever)
	QueryTimeout             Duration  `toml:"query_timeout"`               // 0 = off
	IdleTransactionTimeout   Duration  `toml:"idle_transaction_timeout"`    // 0 = off
	TransactionTimeout       Duration  `toml:"transaction_timeout"`         // 0 = off; close a client whose transaction has been open this long (25P04)
	MaxPacketSize            int       `toml:"max_packet_size"`             // default 1073741824 (1 GiB); min 16384
	MaxMessageBuffer         int       `toml:"max_message_buffer"`          // default 1073741824 (1 GiB); 0 = no limit
	MaxPreparedStatements    int       `toml:"max_prepared_statements"`     // default 200
	AdminUsers               []string  `toml:"admin_users"`
	StatsUsers               []string  `toml:"stats_users"`
	LogLevel                 string    `toml:"log_level"`           // "debug"|"info"(default)|"warn"|"error"
	LogFormat                string    `toml:"log_format"`          // "auto"(default: console when stderr is a terminal, else json)|"json"|"console"
	MetricsListen            string    `toml:"metrics_listen"`      // "" (default) = off; "host:port" serving /metrics, /healthz, /readyz
	SoReuseport              bool      `toml:"so_reuseport"`        // false; true: TCP listeners set SO_REUSEPORT (online restart)
	ListenBacklog            int       `toml:"listen_backlog"`      // 0 = the kernel's maximum (net.core.somaxconn)
	ClientIdleTimeout        Duration  `toml:"client_idle_timeout"` // 0 = off; close clients idle (outside a transaction) this long

	// Startup parameters (see proxy/params.go).
	IgnoreStartupParameters []string `toml:"ignore_startup_parameters"` // accepted from clients, never set on servers
	ApplicationNameAddHost  bool     `toml:"application_name_add_host"` // false; true: application_name gets " - host:port" of the client

	// TCP keepalive and user timeout of client and server sockets (see proxy/tcp.go).
	TCPKeepalive   bool     `toml:"tcp_keepalive"`    // true
	TCPKeepIdle    Duration `toml:"tcp_keepidle"`     // 0 = 15s
	TCPKeepIntvl   Duration `toml:"tcp_keepintvl"`    // 0 = 15s
	TCPKeepCnt     int      `toml:"tcp_keepcnt"`      // 0 = 9
	TCPUserTimeout Duration `toml:"tcp_user_timeout"` // 0 = the kernel's default
	TCPDeferAccept bool     `toml:"tcp_defer_accept"` // true: TCP listeners hand over a connection once its first bytes arrive

	StatsPeriod       Duration            `toml:"stats_period"` // 60s; per-pool stats log line (0 = off)
	Threads           int                 `toml:"threads"`      // 0 (default) = auto: GOMAXPROCS env, else half the CPUs (at least 1)
	LogConnections    bool                `toml:"log_connections"`
	LogDisconnections bool                `toml:"log_disconnections"`
	LogPoolerErrors   bool                `toml:"log_pooler_errors"` // errors pgtide itself sends to clients
	Databases         map[string]Database `toml:"databases"`
	Users             map[string]User     `toml:"users"`

	// Client-facing TLS and HBA (see tls.go).
	ClientTLSSSLMode    string   `toml:"client_tls_sslmode"`     // "" = "prefer" with a certificate, else "disable"
	ClientTLSCertFile   string   `toml:"client_tls_cert_file"`   // PEM certificate (chain) pgtide presents to clients
	ClientTLSKeyFile    string   `toml:"client_tls_key_file"`    // its PEM private key
	ClientTLSCAFile     string   `toml:"client_tls_ca_file"`     // PEM CA bundle client certificates are verified against
	ClientTLSMinVersion string   `toml:"client_tls_min_version"` // "TLSv1.2" (default) | "TLSv1.3"
	ClientTLSCiphers    []string `toml:"client_tls_ciphers"`     // TLS 1.2 cipher suites (Go/IANA names); empty = Go's defaults
	AuthHBAFile         string   `toml:"auth_hba_file"`          // pg_hba.conf-format rules, used when auth_type = "hba"

	// auth_query: secrets of users not in [users] looked up in PostgreSQL (see authquery.go).
	AuthUser     string   `toml:"auth_user"`      // "" = off; a [users] entry with a plaintext password
	AuthQuery    string   `toml:"auth_query"`     // DefaultAuthQuery; $1 is the user name
	AuthDBName   string   `toml:"auth_dbname"`    // the one database it runs in; required with auth_user
	AuthCacheTTL Duration `toml:"auth_cache_ttl"` // 60s; how long a looked-up secret is reused

	// userTimeouts: some [users.NAME] sets a timeout (TimeoutsFor), found
	// by validation; without it no client looks its user up.
	userTimeouts bool
}

// Database is one [databases.NAME] section. The name "*" is the fallback
// for any database a client asks for that has no section of its own.
type Database struct {
	Host                   string      `toml:"host"`                      // default "127.0.0.1"; a value starting with "/" is a unix socket directory; "a,b,c" lists several hosts (Targets)
	Port                   int         `toml:"port"`                      // default 5432; the port of every host. In the file also an array, one port per host (Ports)
	Ports                  []int       `toml:"-"`                         // port = [p1, p2, ...]: one port per host of Host, in order (len > 1); nil: Port for every host
	LoadBalanceHosts       string      `toml:"load_balance_hosts"`        // "" = inherit the global load_balance_hosts
	DBName                 string      `toml:"dbname"`                    // default: the section name (for "*": the name the client asked for)
	User                   string      `toml:"user"`                      // optional: connect to the server as this user instead of the client's
	Password               string      `toml:"password"`                  // optional: password for User (or for the client's user)
	PoolSize               int         `toml:"pool_size"`                 // 0 = default_pool_size
	MinPoolSize            int         `toml:"min_pool_size"`             // 0 = global min_pool_size
	ReservePoolSize        int         `toml:"reserve_pool_size"`         // 0 = global reserve_pool_size
	PoolMode               PoolMode    `toml:"pool_mode"`                 // "" = inherit
	PinPolicy              PinPolicy   `toml:"pin_policy"`                // "" = inherit
	MaxDBConnections       int         `toml:"max_db_connections"`        // 0 = global value
	MaxDBClientConnections int         `toml:"max_db_client_connections"` // 0 = global value
	ConnectQuery           string      `toml:"connect_query"`             // "" = none; run once on each new server connection after login
	ServerLifetime         OptDuration `toml:"server_lifetime"`           // unset, "" or "0" = the global server_lifetime

	// Defaults for clients of this database that do not send their own
	// (see proxy/params.go); "" = the server's.
	ClientEncoding string `toml:"client_encoding"`
	DateStyle      string `toml:"datestyle"`
	TimeZone       string `toml:"timezone"`

	// TLS to the server (see tls.go).
	ServerTLSSSLMode  string `toml:"server_tls_sslmode"`   // "" = "prefer"
	ServerTLSCAFile   string `toml:"server_tls_ca_file"`   // PEM CA bundle the server certificate is verified against
	ServerTLSCertFile string `toml:"server_tls_cert_file"` // client certificate pgtide presents to the server
	ServerTLSKeyFile  string `toml:"server_tls_key_file"`  // its private key

	// Authentication requests the server may make, as libpq's require_auth
	// (see requireauth.go): "" = any; e.g. "scram-sha-256" or "!password".
	ServerRequireAuth string `toml:"server_require_auth"`
}

// User is one [users.NAME] section.
type User struct {
	Password                 string    `toml:"password"` // plaintext, "md5<32 hex>", or "SCRAM-SHA-256$<iter>:<b64 salt>$<b64 storedkey>:<b64 serverkey>"
	PoolMode                 PoolMode  `toml:"pool_mode"`
	PinPolicy                PinPolicy `toml:"pin_policy"`                  // "" = inherit
	PoolSize                 int       `toml:"pool_size"`                   // 0 = inherit
	MaxUserConnections       int       `toml:"max_user_connections"`        // 0 = global
	MaxUserClientConnections int       `toml:"max_user_client_connections"` // 0 = global
	ReservePoolSize          int       `toml:"reserve_pool_size"`           // 0 = the database's, else the global one
	// Timeouts of this user's clients; unset = the global setting, "0" = off
	// for this user (as PgBouncer's user-level settings override the global
	// ones).
	QueryTimeout           OptDuration `toml:"query_timeout"`
	QueryWaitTimeout       OptDuration `toml:"query_wait_timeout"`
	IdleTransactionTimeout OptDuration `toml:"idle_transaction_timeout"`
	ClientIdleTimeout      OptDuration `toml:"client_idle_timeout"`
	TransactionTimeout     OptDuration `toml:"transaction_timeout"`
}

// OptDuration is a duration that may be left unset (Set false), for
// settings that fall back to another one: [users.NAME] timeouts (where "0"
// turns the timeout off for the user) and [databases.NAME]
// server_lifetime (where "0" means the global one, as in PgBouncer).
type OptDuration struct {
	Duration
	Set bool
}

// UnmarshalText implements encoding.TextUnmarshaler: "" leaves it unset.
func (d *OptDuration) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*d = OptDuration{}
		return nil
	}
	if err := d.Duration.UnmarshalText(b); err != nil {
		return err
	}
	d.Set = true
	return nil
}

// MarshalText implements encoding.TextMarshaler: "" when unset.
func (d OptDuration) MarshalText() ([]byte, error) {
	if !d.Set {
		return []byte{}, nil
	}
	return d.Duration.MarshalText()
}

// or returns d if set, else def.
func (d OptDuration) or(def Duration) time.Duration {
	if d.Set {
		return d.Duration.Duration
	}
	return def.Duration
}

func (u User) hasTimeouts() bool {
	return u.QueryTimeout.Set || u.QueryWaitTimeout.Set || u.IdleTransactionTimeout.Set || u.ClientIdleTimeout.Set || u.TransactionTimeout.Set
}

// ClientTimeouts are the timeouts of one user's clients.
type ClientTimeouts struct {
	Query, Wait, IdleTransaction, ClientIdle, Transaction time.Duration
}

// TimeoutsFor returns the timeouts of user's clients: the user's own where
// [users.NAME] sets them, else the global ones.
func (c *Config) TimeoutsFor(user string) ClientTimeouts {
	t := ClientTimeouts{c.QueryTimeout.Duration, c.QueryWaitTimeout.Duration, c.IdleTransactionTimeout.Duration, c.ClientIdleTimeout.Duration, c.TransactionTimeout.Duration}
	if !c.userTimeouts {
		return t
	}
	u, ok := c.Users[user]
	if !ok {
		return t
	}
	return ClientTimeouts{u.QueryTimeout.or(c.QueryTimeout), u.QueryWaitTimeout.or(c.QueryWaitTimeout),
		u.IdleTransactionTimeout.or(c.IdleTransactionTimeout), u.ClientIdleTimeout.or(c.ClientIdleTimeout), u.TransactionTimeout.or(c.TransactionTimeout)}
}

// Defaults that are referred to in more than one place.
const (
	DefaultListen         = "127.0.0.1:6432"
	DefaultPort           = 6432
	DefaultServerHost     = "127.0.0.1"
	DefaultServerPort     = 5432
	LoadBalanceRoundRobin = "round-robin" // load_balance_hosts: each new server connection starts at the next host of the list
	LoadBalanceDisable    = "disable"     // load_balance_hosts: each new server connection starts at the first host
	MinMaxPacketSize      = 16384
	AdminDatabaseName     = "pgtide"
	defaultPoolSizeVal    = 20
)

// Default returns a Config with every default filled in and no databases/users
// (the maps are empty, not nil).
func Default() *Config {
	return &Config{
		Listen:                []string{DefaultListen},
		PoolMode:              PoolSession,
		PinPolicy:             PinKeep,
		DefaultPoolSize:       defaultPoolSizeVal,
		MinPoolSize:           0,
		MaxClientConn:         100,
		AuthType:              "scram-sha-256",
		ServerConnectTimeout:  Duration{15 * time.Second},
		ReservePoolTimeout:    Duration{5 * time.Second},
		QueryWaitTimeout:      Duration{120 * time.Second},
		QueryWaitNotify:       Duration{5 * time.Second},
		CancelWaitTimeout:     Duration{10 * time.Second},
		ServerIdleTimeout:     Duration{600 * time.Second},
		ServerLifetime:        Duration{3600 * time.Second},
		AutodbIdleTimeout:     Duration{3600 * time.Second},
		ServerResetQuery:      "DISCARD ALL",
		ServerCheckDelay:      Duration{30 * time.Second},
		LoadBalanceHosts:      LoadBalanceRoundRobin,
		UnixSocketMode:        "0777",
		TCPKeepalive:          true,
		TCPDeferAccept:        true,
		AuthQuery:             DefaultAuthQuery,
		AuthCacheTTL:          Duration{60 * time.Second},
		ClientLoginTimeout:    Duration{60 * time.Second},
		ShutdownTimeout:       Duration{30 * time.Second},
		MaxPacketSize:         1 << 30,
		MaxMessageBuffer:      1 << 30,
		MaxPreparedStatements: 200,
		AdminUsers:            []string{},
		StatsUsers:            []string{},
		LogLevel:              "info",
		LogFormat:             "auto",
		StatsPeriod:           Duration{60 * time.Second},
		LogConnections:        true,
		LogDisconnections:     true,
		LogPoolerErrors:       true,
		Databases:             map[string]Database{},
		Users:                 map[string]User{},
	}
}

// defaultDatabase is what a [databases.NAME] section starts from before its
// keys are decoded onto it.
func defaultDatabase(name string) Database {
	d := Database{Host: DefaultServerHost, Port: DefaultServerPort}
	if name != "*" {
		d.DBName = name
	}
	return d
}

// Load reads, decodes, applies defaults and validates. On failure the error is
// an *Errors listing every problem.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Errors{File: path, List: []error{err}}
	}
	return Parse(path, data)
}

// Parse does the same as Load from bytes (name is used in messages).
func Parse(name string, data []byte) (*Config, error) {
	d := newDecoder(name, data)
	cfg := Default()
	if !d.decode(cfg) {
		return nil, d.errs.result()
	}
	d.validate(cfg)
	if err := d.errs.result(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// ResolveDatabase finds [databases.NAME], falling back to "*" (with DBName set
// to name unless the "*" section names a dbname itself). ok=false if neither
// exists. Host, Port and DBName are always filled in on the result.
func (c *Config) ResolveDatabase(name string) (Database, bool) {
	db, ok := c.Databases[name]
	if !ok {
		db, ok = c.Databases["*"]
		if !ok {
			return Database{}, false
		}
	}
	if db.DBName == "" {
		db.DBName = name
	}
	if db.Host == "" {
		db.Host = DefaultServerHost
	}
	if db.Port == 0 {
		db.Port = DefaultServerPort
	}
	return db, true
}

// Target is one address a database's server connections may go to: a host
// name, an IP address or a unix socket directory, and a port.
type Target struct {
	Host string
	Port int
}

// String writes t as "host:port" ("[::1]:5432"; a unix socket directory as
// "/dir:5432"), for logs and messages.
func (t Target) String() string {
	if strings.HasPrefix(t.Host, "/") {
		return t.Host + ":" + strconv.Itoa(t.Port)
	}
	return net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
}

// SplitHosts splits a host value at its commas, as libpq and PgBouncer do,
// trimming the spaces around each entry. An empty entry stays (as "") for
// validation to report.
func SplitHosts(host string) []string {
	parts := strings.Split(host, ",")
	for i, h := range parts {
		parts[i] = strings.TrimSpace(h)
	}
	return parts
}

// Targets lists the addresses of db in the order written: each host of
// Host with its port (Ports[i], or Port for every host).
func (db Database) Targets() []Target {
	hosts := SplitHosts(db.Host)
	out := make([]Target, len(hosts))
	for i, h := range hosts {
		port := db.Port
		if i < len(db.Ports) {
			port = db.Ports[i]
		}
		out[i] = Target{h, port}
	}
	return out
}

// EffectiveLoadBalanceHosts returns the database's load_balance_hosts, else
// the global one.
func (c *Config) EffectiveLoadBalanceHosts(db Database) string {
	switch {
	case db.LoadBalanceHosts != "":
		return db.LoadBalanceHosts
	case c.LoadBalanceHosts != "":
		return c.LoadBalanceHosts
	}
	return LoadBalanceRoundRobin
}

// EffectiveServerLifetime returns the database's server_lifetime, else the
// global one (0 = never).
func (c *Config) EffectiveServerLifetime(db Database) time.Duration {
	if db.ServerLifetime.Duration.Duration > 0 {
		return db.ServerLifetime.Duration.Duration
	}
	return c.ServerLifetime.Duration
}

// EffectivePoolMode returns the user's pool_mode, else the database's, else
// the global one.
func (c *Config) EffectivePoolMode(db Database, user User) PoolMode {
	switch {
	case user.PoolMode != "":
		return user.PoolMode
	case db.PoolMode != "":
		return db.PoolMode
	case c.PoolMode != "":
		return c.PoolMode
	}
	return PoolSession
}

// EffectivePinPolicy returns the user's pin_policy, else the database's,
// else the global one.
func (c *Config) EffectivePinPolicy(db Database, user User) PinPolicy {
	switch {
	case user.PinPolicy != "":
		return user.PinPolicy
	case db.PinPolicy != "":
		return db.PinPolicy
	case c.PinPolicy != "":
		return c.PinPolicy
	}
	return PinKeep
}

// EffectivePoolSize returns the user's pool_size, else the database's, else
// default_pool_size.
func (c *Config) EffectivePoolSize(db Database, user User) int {
	switch {
	case user.PoolSize > 0:
		return user.PoolSize
	case db.PoolSize > 0:
		return db.PoolSize
	case c.DefaultPoolSize > 0:
		return c.DefaultPoolSize
	}
	return defaultPoolSizeVal
}

// UnixSocketFileMode is unix_socket_mode as a file mode (0777 if invalid,
// which validation rejects).
func (c *Config) UnixSocketFileMode() os.FileMode {
	n, err := strconv.ParseUint(c.UnixSocketMode, 8, 32)
	if err != nil || n > 0o777 {
		return 0o777
	}
	return os.FileMode(n)
}

// UnixSocketPath returns the path of the unix socket pgtide listens on:
// unix_socket_dir/.s.PGSQL.<port>, where port is the port of the first listen
// entry (6432 when there is none). It returns "" when unix_socket_dir is empty.
func (c *Config) UnixSocketPath() string {
	if c.UnixSocketDir == "" {
		return ""
	}
	port := DefaultPort
	if len(c.Listen) > 0 {
		if _, p, err := net.SplitHostPort(c.Listen[0]); err == nil {
			if n, err := strconv.Atoi(p); err == nil {
				port = n
			}
		}
	}
	return filepath.Join(c.UnixSocketDir, ".s.PGSQL."+strconv.Itoa(port))
}

// HasSecrets reports whether the file holds any password, hash or verifier.
func (c *Config) HasSecrets() bool {
	for _, u := range c.Users {
		if u.Password != "" {
			return true
		}
	}
	for _, db := range c.Databases {
		if db.Password != "" {
			return true
		}
	}
	return false
}

// FileModeWarning returns a warning when the configuration file at path
// holds secrets and every user of the machine may read it, else "". Only a
// warning: the file is the operator's, and it may be readable on purpose.
func (c *Config) FileModeWarning(path string) string {
	if !c.HasSecrets() {
		return ""
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o004 == 0 {
		return ""
	}
	return fmt.Sprintf("configuration file %q holds passwords and is readable by every user of this machine (mode %04o); make it readable by pgtide only: chmod 600 (or 640 with a group)", path, fi.Mode().Perm())
}
