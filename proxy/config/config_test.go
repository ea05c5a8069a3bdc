package config

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse("test.toml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: unexpected error:\n%v", err)
	}
	return c
}

func parseErrors(t *testing.T, src string) *Errors {
	t.Helper()
	c, err := Parse("test.toml", []byte(src))
	if err == nil {
		t.Fatalf("Parse succeeded, want an error; config: %+v", c)
	}
	if c != nil {
		t.Errorf("Parse returned a config together with an error")
	}
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, want *Errors: %v", err, err)
	}
	if errs.File != "test.toml" {
		t.Errorf("Errors.File = %q, want test.toml", errs.File)
	}
	return errs
}

func fieldErrors(t *testing.T, errs *Errors) []*FieldError {
	t.Helper()
	var out []*FieldError
	for _, e := range errs.List {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("element %T is not a *FieldError: %v", e, e)
		}
		out = append(out, fe)
	}
	return out
}

func TestDefaults(t *testing.T) {
	want := &Config{
		Listen:                []string{"127.0.0.1:6432"},
		PoolMode:              PoolSession,
		PinPolicy:             PinKeep,
		DefaultPoolSize:       20,
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
		LoadBalanceHosts:      "round-robin",
		UnixSocketMode:        "0777",
		TCPKeepalive:          true,
		TCPDeferAccept:        true,
		AuthQuery:             DefaultAuthQuery,
		AuthCacheTTL:          Duration{60 * time.Second},
		ClientLoginTimeout:    Duration{60 * time.Second},
		ShutdownTimeout:       Duration{30 * time.Second},
		MaxPacketSize:         1073741824,
		MaxMessageBuffer:      1073741824,
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
	if got := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Default() =\n%+v\nwant\n%+v", got, want)
	}
	for _, src := range []string{"", "# only a comment\n"} {
		if got := mustParse(t, src); !reflect.DeepEqual(got, want) {
			t.Errorf("Parse(%q) =\n%+v\nwant the defaults", src, got)
		}
	}
	// Default() hands out a fresh value each time.
	a := Default()
	a.Listen[0] = "x"
	a.Databases["x"] = Database{}
	if b := Default(); b.Listen[0] != "127.0.0.1:6432" || len(b.Databases) != 0 {
		t.Errorf("Default() shares state between calls")
	}
}

func TestDatabaseDefaults(t *testing.T) {
	c := mustParse(t, `
[databases.app]
[databases.other]
host = "/var/run/postgresql"
port = 5433
dbname = "real"
user = "svc"
password = "pw"
pool_size = 5
min_pool_size = 2
pool_mode = "transaction"
max_db_connections = 7
[databases."*"]
`)
	want := map[string]Database{
		"app": {Host: "127.0.0.1", Port: 5432, DBName: "app"},
		"other": {Host: "/var/run/postgresql", Port: 5433, DBName: "real", User: "svc", Password: "pw",
			PoolSize: 5, MinPoolSize: 2, PoolMode: PoolTransaction, MaxDBConnections: 7},
		"*": {Host: "127.0.0.1", Port: 5432},
	}
	if !reflect.DeepEqual(c.Databases, want) {
		t.Errorf("Databases =\n%+v\nwant\n%+v", c.Databases, want)
	}
}

func TestParseAllKeys(t *testing.T) {
	c := mustParse(t, `
listen = ["0.0.0.0:7432", "[::1]:7433"]
unix_socket_dir = "/tmp"
pool_mode = "transaction"
pin_policy = "refuse"
default_pool_size = 10
min_pool_size = 2
max_client_conn = 500
max_db_connections = 50
max_user_connections = 40
auth_type = "md5"
server_connect_timeout = "5s"
reserve_pool_size = 2
reserve_pool_timeout = "1s"
query_wait_timeout = "0"
query_wait_notify = "2s"
cancel_wait_timeout = "3s"
server_idle_timeout = "1m"
server_lifetime = 0
autodb_idle_timeout = "10m"
server_reset_query = "RESET ALL"
server_reset_query_always = true
server_fast_close = true
server_check_delay = "500ms"
server_check_query = "select 1"
unix_socket_mode = "0770"
listen_backlog = 64
client_idle_timeout = "10m"
tcp_keepalive = false
tcp_defer_accept = false
tcp_keepidle = "30s"
tcp_keepintvl = "5s"
tcp_keepcnt = 3
tcp_user_timeout = "2500ms"
client_login_timeout = "10s"
shutdown_timeout = "2m"
query_timeout = "1h"
idle_transaction_timeout = "90s"
transaction_timeout = "10m"
max_packet_size = 16384
max_message_buffer = 4194304
max_prepared_statements = 0
auth_user = "alice"
auth_query = "SELECT u, p FROM auth.lookup($1)"
auth_dbname = "app"
auth_cache_ttl = "5m"
admin_users = ["admin"]
stats_users = ["monitor", "grafana"]
log_level = "debug"
log_format = "json"
metrics_listen = "127.0.0.1:9127"
so_reuseport = true
stats_period = "0"
load_balance_hosts = "disable"
log_connections = false
log_disconnections = false
log_pooler_errors = false

[databases.app]

[users.alice]
password = "secret"
pool_mode = "statement"
pin_policy = "pin"
pool_size = 3
max_user_connections = 4
`)
	want := &Config{
		Listen: []string{"0.0.0.0:7432", "[::1]:7433"}, UnixSocketDir: "/tmp",
		PoolMode: PoolTransaction, PinPolicy: PinRefuse, DefaultPoolSize: 10, MinPoolSize: 2, MaxClientConn: 500,
		MaxDBConnections: 50, MaxUserConnections: 40, AuthType: "md5",
		ServerConnectTimeout: Duration{5 * time.Second}, QueryWaitTimeout: Duration{0}, QueryWaitNotify: Duration{2 * time.Second}, CancelWaitTimeout: Duration{3 * time.Second},
		ReservePoolSize: 2, ReservePoolTimeout: Duration{time.Second},
		ServerIdleTimeout: Duration{time.Minute}, ServerLifetime: Duration{0}, AutodbIdleTimeout: Duration{10 * time.Minute},
		ServerResetQuery: "RESET ALL", ServerResetQueryAlways: true, ServerFastClose: true,
		ServerCheckDelay: Duration{500 * time.Millisecond}, ServerCheckQuery: "select 1", UnixSocketMode: "0770", ListenBacklog: 64,
		ClientIdleTimeout: Duration{10 * time.Minute}, TCPKeepIdle: Duration{30 * time.Second}, TCPKeepIntvl: Duration{5 * time.Second},
		TCPKeepCnt: 3, TCPUserTimeout: Duration{2500 * time.Millisecond}, ClientLoginTimeout: Duration{10 * time.Second},
		ShutdownTimeout: Duration{2 * time.Minute}, QueryTimeout: Duration{time.Hour},
		AuthUser: "alice", AuthQuery: "SELECT u, p FROM auth.lookup($1)", AuthDBName: "app", AuthCacheTTL: Duration{5 * time.Minute},
		IdleTransactionTimeout: Duration{90 * time.Second}, TransactionTimeout: Duration{10 * time.Minute}, MaxPacketSize: 16384, MaxMessageBuffer: 4194304, MaxPreparedStatements: 0,
		AdminUsers: []string{"admin"}, StatsUsers: []string{"monitor", "grafana"},
		LogLevel: "debug", LogFormat: "json", MetricsListen: "127.0.0.1:9127",
		SoReuseport: true, StatsPeriod: Duration{0}, LoadBalanceHosts: "disable",
		Databases: map[string]Database{"app": {Host: "127.0.0.1", Port: 5432, DBName: "app"}},
		Users: map[string]User{"alice": {Password: "secret", PoolMode: PoolStatement, PinPolicy: PinKeep, PoolSize: 3,
			MaxUserConnections: 4}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got\n%+v\nwant\n%+v", c, want)
	}
	if got, want := c.UnixSocketPath(), "/tmp/.s.PGSQL.7432"; got != want {
		t.Errorf("UnixSocketPath() = %q, want %q", got, want)
	}
}

// TestValidationErrors: every check names its key, gives the right line and
// a reason that says what is wrong.
func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name   string
		src    string
		key    string
		line   int    // 0: do not check
		reason string // substring
	}{
		{"pool_mode", `pool_mode = "sesion"`, "pool_mode", 1, `did you mean "session"?`},
		{"pool_mode empty", `pool_mode = ""`, "pool_mode", 1, `expected one of "session", "transaction", "statement"`},
		{"default_pool_size 0", `default_pool_size = 0`, "default_pool_size", 1, "at least 1"},
		{"min_pool_size negative", `min_pool_size = -1`, "min_pool_size", 1, "negative"},
		{"min_pool_size above size", "default_pool_size = 5\nmin_pool_size = 6", "min_pool_size", 2, "must not exceed default_pool_size (5)"},
		{"max_client_conn", `max_client_conn = 0`, "max_client_conn", 1, "at least 1"},
		{"max_db_connections", `max_db_connections = -1`, "max_db_connections", 1, "negative"},
		{"max_user_connections", `max_user_connections = -5`, "max_user_connections", 1, "negative"},
		{"max_prepared_statements", `max_prepared_statements = -1`, "max_prepared_statements", 1, "negative"},
		{"max_packet_size", `max_packet_size = 16383`, "max_packet_size", 1, "at least 16384"},
		{"max_message_buffer", `max_message_buffer = -1`, "max_message_buffer", 1, "0 (no limit) or a number of bytes"},
		{"auth_type", `auth_type = "sha256"`, "auth_type", 1, `"scram-sha-256", "md5", "password", "trust"`},
		{"log_level", `log_level = "verbose"`, "log_level", 1, `"debug", "info", "warn", "error"`},
		{"log_format", `log_format = "text"`, "log_format", 1, `"auto", "json", "console"`},
		{"ignore_startup_parameters user", `ignore_startup_parameters = ["x", "User"]`, "ignore_startup_parameters[1]", 1, "cannot be ignored"},
		{"timezone NUL", "[databases.a]\ntimezone = \"UTC\\u0000\"", "databases.a.timezone", 2, "NUL"},
		{"reserve_pool_size negative", "[databases.a]\nreserve_pool_size = -1", "databases.a.reserve_pool_size", 2, "negative"},
		{"reserve_pool_timeout negative", `reserve_pool_timeout = "-1s"`, "reserve_pool_timeout", 1, "negative"},
		{"ignore_startup_parameters empty", `ignore_startup_parameters = [""]`, "ignore_startup_parameters[0]", 1, "must not be empty"},
		{"listen no port", `listen = ["127.0.0.1"]`, "listen[0]", 1, `expected "host:port"`},
		{"listen bad port", "\nlisten = [\"127.0.0.1:6432\", \"localhost:http\"]", "listen[1]", 2, "0 to 65535"},
		{"listen big port", `listen = [":70000"]`, "listen[0]", 1, "0 to 65535"},
		{"metrics_listen no port", `metrics_listen = "127.0.0.1"`, "metrics_listen", 1, `e.g. "127.0.0.1:9127"`},
		{"metrics_listen bad port", `metrics_listen = ":99999"`, "metrics_listen", 1, "0 to 65535"},
		{"metrics_listen same as listen", "listen = [\"127.0.0.1:6432\"]\nmetrics_listen = \"127.0.0.1:6432\"", "metrics_listen", 2, "address of its own"},
		{"nothing to listen on", `listen = []`, "listen", 1, "no listen address and no unix_socket_dir"},
		{"negative duration", `server_lifetime = "-1s"`, "server_lifetime", 1, "negative"},
		{"bad duration", `query_wait_timeout = "2 minutes"`, "query_wait_timeout", 1, `expected a duration like "30s", "5m", "1h"`},
		{"unitless duration", `server_idle_timeout = 600`, "server_idle_timeout", 1, `write "600s"`},
		{"duration wrong type", `shutdown_timeout = true`, "shutdown_timeout", 1, "got boolean true"},
		{"admin_users empty name", `admin_users = [""]`, "admin_users[0]", 1, "must not be empty"},
		{"stats_users empty name", `stats_users = ["a", ""]`, "stats_users[1]", 1, "must not be empty"},
		{"reserved database", "[databases.pgtide]\nhost = \"h\"", "databases.pgtide", 1, "reserved for the admin console"},
		{"database port 0", "[databases.app]\nport = 0", "databases.app.port", 2, "between 1 and 65535"},
		{"database port high", "[databases.app]\n\nport = 65536", "databases.app.port", 3, "between 1 and 65535"},
		{"database host empty", "[databases.app]\nhost = \"\"", "databases.app.host", 2, "must not be empty"},
		{"database dbname empty", "[databases.app]\ndbname = \"\"", "databases.app.dbname", 2, "must not be empty"},
		{"database pool_size", "[databases.app]\npool_size = -1", "databases.app.pool_size", 2, "negative"},
		{"database min_pool_size", "[databases.app]\nmin_pool_size = -1", "databases.app.min_pool_size", 2, "negative"},
		{"database min above size", "[databases.app]\npool_size = 3\nmin_pool_size = 4", "databases.app.min_pool_size", 3, "must not exceed the pool size (3)"},
		{"database size below global min", "min_pool_size = 5\n[databases.app]\npool_size = 3", "databases.app.pool_size", 3, "less than min_pool_size (5)"},
		{"database pool_mode", "[databases.app]\npool_mode = \"txn\"", "databases.app.pool_mode", 2, "expected one of"},
		{"database max_db_connections", "[databases.app]\nmax_db_connections = -1", "databases.app.max_db_connections", 2, "negative"},
		{"database server_lifetime negative", "[databases.app]\nserver_lifetime = \"-1s\"", "databases.app.server_lifetime", 2, "negative"},
		{"database server_lifetime unitless", "[databases.app]\nserver_lifetime = 600", "databases.app.server_lifetime", 2, `write "600s"`},
		{"star database", "[databases.\"*\"]\nport = -3", `databases."*".port`, 2, "between 1 and 65535"},
		{"user md5 not hex", "[users.bob]\npassword = \"md5" + strings.Repeat("g", 32) + "\"", "users.bob.password", 2, "32 lowercase hex digits"},
		{"user scram malformed", "[users.bob]\npassword = \"SCRAM-SHA-256$4096:c2FsdA==\"", "users.bob.password", 2, "invalid SCRAM-SHA-256 verifier"},
		{"user pool_mode", "[users.bob]\npool_mode = \"sess\"", "users.bob.pool_mode", 2, "expected one of"},
		{"user pool_size", "[users.bob]\npool_size = -1", "users.bob.pool_size", 2, "negative"},
		{"user max_user_connections", "[users.bob]\nmax_user_connections = -1", "users.bob.max_user_connections", 2, "negative"},
		{"type string for int", "[databases.app]\npool_size = \"ten\"", "databases.app.pool_size", 2, `expected an integer, got string "ten"`},
		{"type int for string", `auth_type = 5`, "auth_type", 1, "expected a string, got integer 5"},
		{"type float for int", `default_pool_size = 2.5`, "default_pool_size", 1, "expected an integer, got float 2.5"},
		{"type string for bool", `server_reset_query_always = "yes"`, "server_reset_query_always", 1, "expected true or false"},
		{"type string for array", `listen = "127.0.0.1:6432"`, "listen", 1, "expected an array of strings"},
		{"type array element", `admin_users = ["a", 1]`, "admin_users[1]", 1, "expected a string, got integer 1"},
		{"type databases not table", `databases = 3`, "databases", 1, "expected a table"},
		{"pgbouncer connection string", "[databases]\napp = \"host=db dbname=app\"", "databases.app", 2, "PgBouncer connection strings"},
		{"array of tables", "[[users]]\npassword = \"x\"", "users", 1, "expected a table, got an array of tables"},
		{"inline table", "databases = { app = { port = \"x\" } }", "databases.app.port", 1, "expected an integer"},
		{"dotted keys", "databases.app.port = 0", "databases.app.port", 1, "between 1 and 65535"},
		{"syntax error", "pool_mode = \"session\"\nlisten = [", "", 2, "invalid TOML"},
		{"duplicate key", "pool_mode = \"session\"\npool_mode = \"session\"", "", 2, "invalid TOML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := parseErrors(t, tt.src)
			list := fieldErrors(t, errs)
			if len(list) != 1 {
				t.Fatalf("got %d errors, want 1:\n%v", len(list), errs)
			}
			fe := list[0]
			if fe.Key != tt.key {
				t.Errorf("Key = %q, want %q (%v)", fe.Key, tt.key, fe)
			}
			if tt.line != 0 && fe.Line != tt.line {
				t.Errorf("Line = %d, want %d (%v)", fe.Line, tt.line, fe)
			}
			if !strings.Contains(fe.Reason, tt.reason) {
				t.Errorf("Reason = %q, want it to contain %q", fe.Reason, tt.reason)
			}
			msg := errs.Error()
			wantPrefix := "test.toml:" + fmt.Sprint(fe.Line) + ": "
			if tt.key != "" {
				wantPrefix += tt.key + ": "
			}
			if !strings.HasPrefix(msg, wantPrefix) {
				t.Errorf("Error() = %q, want prefix %q", msg, wantPrefix)
			}
		})
	}
}

func TestUnknownKeys(t *testing.T) {
	tests := []struct {
		name, src, key, reason string
	}{
		{"typo in database", "[databases.app]\npool_sise = 10", "databases.app.pool_sise", `unknown key "pool_sise" (did you mean "pool_size"?)`},
		{"typo at top level", `max_client_con = 10`, "max_client_con", `unknown key "max_client_con" (did you mean "max_client_conn"?)`},
		{"wrong case", "[users.u]\nPassword = \"x\"", "users.u.Password", `(did you mean "password"?)`},
		{"no suggestion", `frobnicate = 1`, "frobnicate", `unknown key "frobnicate"`},
		{"top-level key after a table", "[users.u]\npassword = \"x\"\nlog_level = \"debug\"", "users.u.log_level", "top-level key"},
		{"pgbouncer listen_port", `listen_port = 6432`, "listen_port", "listen = ["},
		{"unknown table", "[pools.x]\nsize = 1", "pools", `unknown key "pools"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list := fieldErrors(t, parseErrors(t, tt.src))
			if len(list) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(list), list)
			}
			if list[0].Key != tt.key || !strings.Contains(list[0].Reason, tt.reason) {
				t.Errorf("got %q: %q; want %q containing %q", list[0].Key, list[0].Reason, tt.key, tt.reason)
			}
			if list[0].Line == 0 {
				t.Errorf("no line for %v", list[0])
			}
		})
	}
}

func TestManyErrorsTogether(t *testing.T) {
	src := `listen = ["nope"]
pool_mode = "sometimes"
default_pool_size = "ten"
query_timeout = "soon"
bogus_key = 1

[databases.app]
port = 0
pool_sise = 3

[databases.pgtide]

[users.bob]
password = "md5XYZXYZXYZXYZXYZXYZXYZXYZXYZXYZXY"
`
	errs := parseErrors(t, src)
	list := fieldErrors(t, errs)
	want := []struct {
		key  string
		line int
	}{
		{"listen[0]", 1},
		{"pool_mode", 2},
		{"default_pool_size", 3},
		{"query_timeout", 4},
		{"bogus_key", 5},
		{"databases.app.port", 8},
		{"databases.app.pool_sise", 9},
		{"databases.pgtide", 11},
		{"users.bob.password", 14},
	}
	if len(list) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(list), len(want), errs)
	}
	for i, w := range want {
		if list[i].Key != w.key || list[i].Line != w.line {
			t.Errorf("error %d = %q line %d, want %q line %d", i, list[i].Key, list[i].Line, w.key, w.line)
		}
	}
	lines := strings.Split(errs.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("Error() has %d lines, want %d:\n%s", len(lines), len(want), errs.Error())
	}
	if lines[5] != "test.toml:8: databases.app.port: must be between 1 and 65535, got 0" {
		t.Errorf("line 6 of Error() = %q", lines[5])
	}
}

// TestSecretsNotInErrors: invariant 7, a bad password is never echoed.
func TestSecretsNotInErrors(t *testing.T) {
	for _, src := range []string{
		"[users.u]\npassword = \"md5hunter2hunter2hunter2hunter2hunt\"",
		"[users.u]\npassword = \"SCRAM-SHA-256$4096:hunter2$hunter2:hunter2\"",
		"[users.u]\npassword = 1234567",
		"[databases.d]\npassword = 1234567",
	} {
		errs := parseErrors(t, src)
		if msg := errs.Error(); strings.Contains(msg, "hunter2") || strings.Contains(msg, "1234567") {
			t.Errorf("error message leaks the password: %s", msg)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pgtide.toml")
	if err := os.WriteFile(path, []byte("[databases.app]\nport = 5433\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Databases["app"].Port != 5433 {
		t.Errorf("port = %d", c.Databases["app"].Port)
	}

	if err := os.WriteFile(path, []byte("\n\n[databases.app]\nport = 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if want := path + ":4: databases.app.port: "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load error = %v, want prefix %q", err, want)
	}

	_, err = Load(filepath.Join(dir, "missing.toml"))
	var errs *Errors
	if !errors.As(err, &errs) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want an *Errors wrapping os.ErrNotExist", err)
	}
}

func TestExampleConfigLoads(t *testing.T) {
	c, err := Load("../../config.example.toml")
	if err != nil {
		t.Fatalf("config.example.toml does not load:\n%v", err)
	}
	if !reflect.DeepEqual(c.Listen, []string{"127.0.0.1:6432"}) {
		t.Errorf("listen = %v", c.Listen)
	}
	db, ok := c.Databases["app"]
	if !ok || db.Host != "127.0.0.1" || db.Port != 5432 || db.DBName != "app" {
		t.Errorf("databases.app = %+v, %v", db, ok)
	}
	if _, ok := c.Users["app"]; !ok {
		t.Errorf("no [users.app]")
	}
	// Everything not set in the example is at its default.
	d := Default()
	c.Databases, c.Users = d.Databases, d.Users
	if !reflect.DeepEqual(c, d) {
		t.Errorf("example's global settings differ from the defaults:\n%+v\n%+v", c, d)
	}
}

// TestExampleDocumentsEveryKey: config.example.toml mentions every key.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, keys := range [][]string{configKeys, databaseKeys, userKeys} {
		for _, k := range keys {
			if !bytes.Contains(data, []byte(k)) {
				t.Errorf("config.example.toml does not mention %q", k)
			}
		}
	}
}

func TestResolveDatabase(t *testing.T) {
	c := mustParse(t, `
[databases.app]
port = 5433
[databases."*"]
host = "/var/run/postgresql"
pool_size = 4
[databases.fixed]
`)
	tests := []struct {
		name string
		want Database
		ok   bool
	}{
		{"app", Database{Host: "127.0.0.1", Port: 5433, DBName: "app"}, true},
		{"fixed", Database{Host: "127.0.0.1", Port: 5432, DBName: "fixed"}, true},
		{"other", Database{Host: "/var/run/postgresql", Port: 5432, DBName: "other", PoolSize: 4}, true},
		{"third", Database{Host: "/var/run/postgresql", Port: 5432, DBName: "third", PoolSize: 4}, true},
	}
	for _, tt := range tests {
		got, ok := c.ResolveDatabase(tt.name)
		if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ResolveDatabase(%q) = %+v, %v; want %+v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
	// The "*" entry itself is not changed by a lookup.
	if c.Databases["*"].DBName != "" {
		t.Errorf("ResolveDatabase modified the \"*\" entry")
	}

	noStar := mustParse(t, "[databases.app]\n")
	if _, ok := noStar.ResolveDatabase("other"); ok {
		t.Errorf("ResolveDatabase(other) found something without a \"*\" entry")
	}
	// A "*" with its own dbname sends every name there.
	pinned := mustParse(t, "[databases.\"*\"]\ndbname = \"main\"\n")
	if db, _ := pinned.ResolveDatabase("x"); db.DBName != "main" {
		t.Errorf("dbname = %q, want main", db.DBName)
	}
	// A Config built in code (not parsed) gets the same defaults.
	code := Default()
	code.Databases["d"] = Database{}
	if db, ok := code.ResolveDatabase("d"); !ok || !reflect.DeepEqual(db, Database{Host: "127.0.0.1", Port: 5432, DBName: "d"}) {
		t.Errorf("ResolveDatabase on a code-built config = %+v, %v", db, ok)
	}
}

func TestEffectivePoolModeAndSize(t *testing.T) {
	c := Default()
	c.PoolMode = PoolTransaction
	c.DefaultPoolSize = 20
	tests := []struct {
		name     string
		db       Database
		user     User
		wantMode PoolMode
		wantSize int
	}{
		{"global", Database{}, User{}, PoolTransaction, 20},
		{"database", Database{PoolMode: PoolSession, PoolSize: 7}, User{}, PoolSession, 7},
		{"user over database", Database{PoolMode: PoolSession, PoolSize: 7}, User{PoolMode: PoolStatement, PoolSize: 3}, PoolStatement, 3},
		{"user over global", Database{}, User{PoolMode: PoolSession, PoolSize: 2}, PoolSession, 2},
		{"mixed", Database{PoolSize: 9}, User{PoolMode: PoolStatement}, PoolStatement, 9},
	}
	for _, tt := range tests {
		if got := c.EffectivePoolMode(tt.db, tt.user); got != tt.wantMode {
			t.Errorf("%s: EffectivePoolMode = %q, want %q", tt.name, got, tt.wantMode)
		}
		if got := c.EffectivePoolSize(tt.db, tt.user); got != tt.wantSize {
			t.Errorf("%s: EffectivePoolSize = %d, want %d", tt.name, got, tt.wantSize)
		}
	}
	// Through Parse, end to end.
	p := mustParse(t, `
pool_mode = "statement"
default_pool_size = 11
[databases.app]
pool_mode = "transaction"
pool_size = 6
[users.u]
password = "x"
pool_size = 2
`)
	db, _ := p.ResolveDatabase("app")
	if m, s := p.EffectivePoolMode(db, p.Users["u"]), p.EffectivePoolSize(db, p.Users["u"]); m != PoolTransaction || s != 2 {
		t.Errorf("parsed: mode %q size %d, want transaction 2", m, s)
	}
}

// TestEffectiveServerLifetime: a database's server_lifetime wins; "", "0"
// and leaving it out give the global one (PgBouncer's per-database 0).
func TestEffectiveServerLifetime(t *testing.T) {
	c := mustParse(t, `
server_lifetime = "1h"
[databases.short]
server_lifetime = "90s"
[databases.empty]
server_lifetime = ""
[databases.zero]
server_lifetime = "0"
[databases.unset]
`)
	for name, want := range map[string]time.Duration{"short": 90 * time.Second, "empty": time.Hour, "zero": time.Hour, "unset": time.Hour} {
		if got := c.EffectiveServerLifetime(c.Databases[name]); got != want {
			t.Errorf("databases.%s: EffectiveServerLifetime = %v, want %v", name, got, want)
		}
	}
	c = mustParse(t, "server_lifetime = \"0\"\n[databases.unset]\n")
	if got := c.EffectiveServerLifetime(c.Databases["unset"]); got != 0 {
		t.Errorf("global 0, database unset: %v, want 0 (never)", got)
	}
}

func TestUnixSocketPath(t *testing.T) {
	tests := []struct {
		dir    string
		listen []string
		want   string
	}{
		{"", []string{"127.0.0.1:6432"}, ""},
		{"/tmp", []string{"127.0.0.1:7000", ":8000"}, "/tmp/.s.PGSQL.7000"},
		{"/run/pgtide", nil, "/run/pgtide/.s.PGSQL.6432"},
		{"/tmp/", []string{"[::1]:5555"}, "/tmp/.s.PGSQL.5555"},
	}
	for _, tt := range tests {
		c := Default()
		c.UnixSocketDir, c.Listen = tt.dir, tt.listen
		if got := c.UnixSocketPath(); got != tt.want {
			t.Errorf("UnixSocketPath(%q, %v) = %q, want %q", tt.dir, tt.listen, got, tt.want)
		}
	}
	// Unix socket only is a valid configuration.
	c := mustParse(t, "listen = []\nunix_socket_dir = \"/tmp\"\n")
	if c.UnixSocketPath() != "/tmp/.s.PGSQL.6432" || len(c.Listen) != 0 {
		t.Errorf("unix-only config: %q %v", c.UnixSocketPath(), c.Listen)
	}
}

func TestDurationText(t *testing.T) {
	var _ encoding.TextUnmarshaler = (*Duration)(nil)
	var _ encoding.TextMarshaler = Duration{}
	for in, want := range map[string]time.Duration{
		"0": 0, "0s": 0, "30s": 30 * time.Second, "2m": 2 * time.Minute, "1h30m": 90 * time.Minute, "250ms": 250 * time.Millisecond,
	} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err != nil || d.Duration != want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", in, d.Duration, err, want)
		}
		out, _ := d.MarshalText()
		var back Duration
		if err := back.UnmarshalText(out); err != nil || back != d {
			t.Errorf("round trip of %v via %q = %v, %v", d, out, back, err)
		}
	}
	for _, in := range []string{"", "30", "5 minutes", "1d", "s"} {
		var d Duration
		err := d.UnmarshalText([]byte(in))
		if err == nil || !strings.Contains(err.Error(), `expected a duration like "30s", "5m", "1h"`) {
			t.Errorf("UnmarshalText(%q) error = %v", in, err)
		}
	}
}

// scramVerifier builds a verifier the way PostgreSQL does (RFC 5802/7677).
func scramVerifier(t *testing.T, password string, salt []byte, iter int) (v string, storedKey, serverKey []byte) {
	t.Helper()
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, 32)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	sk := sha256.Sum256(clientKey)
	storedKey, serverKey = sk[:], mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(storedKey), b64(serverKey)), storedKey, serverKey
}

func TestParseSCRAMVerifier(t *testing.T) {
	salt := make([]byte, 16)
	rand.Read(salt)
	v, stored, server := scramVerifier(t, "s3cret", salt, 4096)

	iter, gotSalt, gotStored, gotServer, err := ParseSCRAMVerifier(v)
	if err != nil {
		t.Fatalf("ParseSCRAMVerifier(real verifier): %v", err)
	}
	if iter != 4096 || !bytes.Equal(gotSalt, salt) || !bytes.Equal(gotStored, stored) || !bytes.Equal(gotServer, server) {
		t.Errorf("ParseSCRAMVerifier = %d %x %x %x", iter, gotSalt, gotStored, gotServer)
	}

	// A real verifier is accepted as a user's password.
	c := mustParse(t, fmt.Sprintf("[users.u]\npassword = %q\n", v))
	if c.Users["u"].Password != v {
		t.Errorf("password not kept")
	}

	b64 := base64.StdEncoding.EncodeToString
	key := b64(stored)
	short := b64(stored[:31])
	bad := []struct{ name, in, reason string }{
		{"no prefix", "SCRAM-SHA-1$4096:c2FsdA==$" + key + ":" + key, "expected SCRAM-SHA-256$"},
		{"no keys", "SCRAM-SHA-256$4096:c2FsdA==", "expected SCRAM-SHA-256$"},
		{"no salt", "SCRAM-SHA-256$4096$" + key + ":" + key, "expected SCRAM-SHA-256$"},
		{"one key", "SCRAM-SHA-256$4096:c2FsdA==$" + key, "expected SCRAM-SHA-256$"},
		{"zero iterations", "SCRAM-SHA-256$0:c2FsdA==$" + key + ":" + key, "iteration"},
		{"negative iterations", "SCRAM-SHA-256$-1:c2FsdA==$" + key + ":" + key, "iteration"},
		{"text iterations", "SCRAM-SHA-256$many:c2FsdA==$" + key + ":" + key, "iteration"},
		{"bad salt", "SCRAM-SHA-256$4096:!!!$" + key + ":" + key, "salt"},
		{"empty salt", "SCRAM-SHA-256$4096:$" + key + ":" + key, "salt"},
		{"short stored key", "SCRAM-SHA-256$4096:c2FsdA==$" + short + ":" + key, "StoredKey"},
		{"bad server key", "SCRAM-SHA-256$4096:c2FsdA==$" + key + ":%%%", "ServerKey"},
	}
	for _, tt := range bad {
		_, _, _, _, err := ParseSCRAMVerifier(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("%s: err = %v, want it to mention %q", tt.name, err, tt.reason)
		}
		if err != nil && strings.Contains(err.Error(), key) {
			t.Errorf("%s: error leaks the key", tt.name)
		}
	}
}

func TestPasswordForms(t *testing.T) {
	for _, pw := range []string{
		"plain",
		"md5" + strings.Repeat("0123456789abcdef", 2),
		"md5short",                      // not 35 characters: plaintext
		"md5" + strings.Repeat("z", 33), // 36 characters: plaintext
		"",
	} {
		if _, err := Parse("t", []byte(fmt.Sprintf("[users.u]\npassword = %q\n", pw))); err != nil {
			t.Errorf("password %q rejected: %v", pw, err)
		}
	}
}

func TestLevenshtein(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"kitten", "sitting", 3}, {"pool_sise", "pool_size", 1}, {"flaw", "lawn", 2},
	} {
		if got := levenshtein(tt.a, tt.b); got != tt.want {
			t.Errorf("levenshtein(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
