package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgtide/pgtide/integration/pgtest"
	"github.com/pgtide/pgtide/proxy/config"
)

func convertString(t *testing.T, ini, userlist string) (*config.Config, string, []string) {
	t.Helper()
	res := convertFiles(t, map[string]string{"pgbouncer.ini": ini, "userlist.txt": userlist}, convertOptions{KeepSocketDir: true})
	if len(res.Weaker) > 0 {
		t.Fatalf("weaker: %q", res.Weaker)
	}
	cfg, err := config.Parse("out.toml", res.TOML)
	if err != nil {
		t.Fatalf("converted config does not validate: %v\n%s", err, res.TOML)
	}
	return cfg, string(res.TOML), res.Notes
}

// convertFiles writes files (name -> text; "" is left out) to a temp
// directory and converts its pgbouncer.ini.
func convertFiles(t *testing.T, files map[string]string, opts convertOptions) *convertResult {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if text == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "pgbouncer.ini")
	res, err := convertPgBouncerOpts(path, []byte(files["pgbouncer.ini"]), opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestConvertMinimal(t *testing.T) {
	cfg, out, notes := convertString(t, "[databases]\napp = host=127.0.0.1 dbname=app\n[pgbouncer]\nlisten_addr = 127.0.0.1, ::1\n", "")
	if got := strings.Join(cfg.Listen, " "); got != "127.0.0.1:6432 [::1]:6432" {
		t.Errorf("listen = %q", got)
	}
	if cfg.UnixSocketDir != "/tmp" {
		t.Errorf("unix_socket_dir = %q, want PgBouncer's default /tmp (with -keep-socket-dir)", cfg.UnixSocketDir)
	}
	if len(notes) != 0 {
		t.Errorf("unexpected notes: %q", notes)
	}
	if !strings.Contains(out, "[databases.app]") {
		t.Errorf("output:\n%s", out)
	}
}

func TestConvertNoListenAddr(t *testing.T) {
	cfg, _, notes := convertString(t, "[databases]\n[pgbouncer]\nunix_socket_dir = /run/pgb\nlisten_port = 7000\n", "")
	if len(cfg.Listen) != 0 || cfg.UnixSocketDir != "/run/pgb" {
		t.Errorf("listen = %v, unix_socket_dir = %q; want no TCP (PgBouncer without listen_addr) and /run/pgb", cfg.Listen, cfg.UnixSocketDir)
	}
	// pgtide names the socket after the first listen entry's port, and there is none.
	if len(notes) != 1 || !strings.Contains(notes[0], "listen_port: not converted") || !strings.Contains(notes[0], ".s.PGSQL.7000") {
		t.Errorf("notes = %q", notes)
	}
}

func TestConvertMappings(t *testing.T) {
	ini := `[databases]
app = host=db port=5433 pool_size=7 min_pool_size=2 pool_mode=Transaction client_encoding=UTF8 datestyle='ISO, DMY' timezone=UTC application_name=x
* = host=/var/run/postgresql
[users]
alice = pool_mode=statement max_user_connections=3 pool_size=2
carol = pool_mode=session
[pgbouncer]
listen_addr = *
auth_type = plain
auth_file = userlist.txt
query_wait_timeout = 0.25
cancel_wait_timeout = 3
query_wait_notify = 0
transaction_timeout = 120
server_fast_close = 1
server_lifetime = 3600
server_reset_query_always = 0
max_prepared_statements = 0
max_packet_size = 100
verbose = 2
logfile = /var/log/pgbouncer.log
so_reuseport = 1
made_up_setting = 1
`
	cfg, _, notes := convertString(t, ini, "\"alice\" \"a-secret\"\n\"bob\" \"b-secret\"\n")
	if app := cfg.Databases["app"]; app.ClientEncoding != "UTF8" || app.DateStyle != "ISO, DMY" || app.TimeZone != "UTC" {
		t.Errorf("databases.app = %+v", app)
	}
	if cfg.AuthType != "password" {
		t.Errorf("auth_type = %q, want password (PgBouncer plain)", cfg.AuthType)
	}
	if cfg.QueryWaitTimeout.Duration != 250*time.Millisecond || cfg.ServerLifetime.Duration != time.Hour || cfg.CancelWaitTimeout.Duration != 3*time.Second {
		t.Errorf("durations: %v %v %v", cfg.QueryWaitTimeout, cfg.ServerLifetime, cfg.CancelWaitTimeout)
	}
	if !cfg.ServerFastClose {
		t.Errorf("server_fast_close not carried over")
	}
	if cfg.TransactionTimeout.Duration != 2*time.Minute {
		t.Errorf("transaction_timeout = %v, want 2m0s", cfg.TransactionTimeout)
	}
	if cfg.QueryWaitNotify.Duration != 0 {
		t.Errorf("query_wait_notify = %v, want 0 (off, as the ini says)", cfg.QueryWaitNotify)
	}
	if cfg.MaxPreparedStatements != 200 {
		t.Errorf("max_prepared_statements = %d, want pgtide's default", cfg.MaxPreparedStatements)
	}
	if !cfg.SoReuseport {
		t.Errorf("so_reuseport not carried over")
	}
	if cfg.MaxPacketSize != config.MinMaxPacketSize || cfg.LogLevel != "debug" {
		t.Errorf("max_packet_size = %d, log_level = %q", cfg.MaxPacketSize, cfg.LogLevel)
	}
	app := cfg.Databases["app"]
	if app.Host != "db" || app.Port != 5433 || app.PoolSize != 7 || app.MinPoolSize != 2 || app.PoolMode != config.PoolTransaction || app.DBName != "app" {
		t.Errorf("databases.app = %+v", app)
	}
	if cfg.Databases["*"].Host != "/var/run/postgresql" || cfg.Databases["*"].DBName != "" {
		t.Errorf("databases.* = %+v", cfg.Databases["*"])
	}
	alice := cfg.Users["alice"]
	if alice.Password != "a-secret" || alice.PoolMode != config.PoolStatement || alice.MaxUserConnections != 3 || alice.PoolSize != 2 {
		t.Errorf("users.alice = %+v", alice)
	}
	if cfg.Users["bob"].Password != "b-secret" {
		t.Errorf("users.bob = %+v", cfg.Users["bob"])
	}
	all := strings.Join(notes, "\n")
	for _, want := range []string{
		"pgbouncer.ini:2: databases.app.application_name: not converted",
		"max_prepared_statements: not converted",
		"max_packet_size: not converted",
		"logfile: not converted",
		"made_up_setting: not converted: no pgtide equivalent",
		"users.carol: has no password",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("notes lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "secret") {
		t.Errorf("notes contain a password:\n%s", all)
	}
}

// TestConvertDatabaseServerLifetime: a [databases] entry's server_lifetime
// (seconds) becomes that database's server_lifetime; 0 (PgBouncer: the
// global one) is left out; a value that is not a duration is reported.
func TestConvertDatabaseServerLifetime(t *testing.T) {
	ini := `[databases]
short = host=db server_lifetime=90
frac = host=db server_lifetime=0.5
zero = host=db server_lifetime=0
bad = host=db server_lifetime=soon
[pgbouncer]
listen_addr = *
server_lifetime = 3600
`
	cfg, out, notes := convertString(t, ini, "")
	for name, want := range map[string]time.Duration{"short": 90 * time.Second, "frac": 500 * time.Millisecond, "zero": time.Hour, "bad": time.Hour} {
		if got := cfg.EffectiveServerLifetime(cfg.Databases[name]); got != want {
			t.Errorf("databases.%s: server_lifetime in effect %v, want %v", name, got, want)
		}
	}
	if !strings.Contains(out, "[databases.short]") || !strings.Contains(out, `server_lifetime = "90s"`) {
		t.Errorf("output:\n%s", out)
	}
	all := strings.Join(notes, "\n")
	if !strings.Contains(all, "databases.bad.server_lifetime: not converted") || strings.Contains(all, "databases.short.server_lifetime") ||
		strings.Contains(all, "databases.zero.server_lifetime") {
		t.Errorf("notes:\n%s", all)
	}
}

func TestConvertAuthTypes(t *testing.T) {
	for in, want := range map[string]string{"md5": "md5", "scram-sha-256": "scram-sha-256", "trust": "trust", "plain": "password", "any": "scram-sha-256"} {
		cfg, _, notes := convertString(t, "[pgbouncer]\nlisten_addr=*\nauth_type = "+in+"\n", "")
		if cfg.AuthType != want {
			t.Errorf("auth_type %s -> %q, want %q", in, cfg.AuthType, want)
		}
		if (in == "any") != (len(notes) > 0) {
			t.Errorf("auth_type %s: notes %q", in, notes)
		}
	}
	// Certificate and PAM authentication cannot be carried over: an error
	// unless -allow-weaker.
	for _, in := range []string{"cert", "pam"} {
		res := convertFiles(t, map[string]string{"pgbouncer.ini": "[pgbouncer]\nlisten_addr=*\nauth_type = " + in + "\n"}, convertOptions{})
		if len(res.Weaker) != 1 || !strings.Contains(res.Weaker[0], "auth_type") {
			t.Errorf("auth_type %s: weaker = %q", in, res.Weaker)
		}
	}
}

func TestRunConvertCLI(t *testing.T) {
	dir := t.TempDir()
	ini := filepath.Join(dir, "p.ini")
	os.WriteFile(ini, []byte("[databases]\nx = host=h\n[pgbouncer]\nlisten_addr=*\npidfile=/run/p.pid\n"), 0o600)
	var stdout, stderr bytes.Buffer
	if code := runIO([]string{"convert-pgbouncer", ini}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "[databases.x]") || !strings.Contains(stderr.String(), "pidfile: not converted") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	// -o after the file name works too.
	out := filepath.Join(dir, "out.toml")
	stdout.Reset()
	stderr.Reset()
	if code := runIO([]string{"convert-pgbouncer", ini, "-o", out}, &stdout, &stderr); code != 0 || stdout.Len() != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, stdout.String(), stderr.String())
	}
	if _, err := config.Load(out); err != nil {
		t.Fatal(err)
	}
	// A result that does not validate is still written, and the exit code says so.
	os.WriteFile(ini, []byte("[databases]\npgtide = host=h\n[pgbouncer]\nlisten_addr=*\n"), 0o600)
	stderr.Reset()
	if code := runIO([]string{"convert-pgbouncer", "-o", out, ini}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "reserved") {
		t.Errorf("exit %d, stderr %s", code, stderr.String())
	}
	if code := runIO([]string{"convert-pgbouncer"}, &stdout, &stderr); code != 2 {
		t.Errorf("no file: exit %d, want 2", code)
	}
	if code := runIO([]string{"convert-pgbouncer", filepath.Join(dir, "missing.ini")}, &stdout, &stderr); code != 1 {
		t.Errorf("missing file: exit %d, want 1", code)
	}
}

// autodb_idle_timeout carries over; so do the global auth_user and
// auth_dbname (which pgtide requires with auth_user); a database's own
// auth_dbname is a note.
func TestConvertAutodbAndAuthQuery(t *testing.T) {
	cfg, _, notes := convertString(t, "[databases]\n* = host=db auth_dbname=postgres\n[pgbouncer]\nlisten_addr = 127.0.0.1\nautodb_idle_timeout = 600\nauth_user = pgb\nauth_dbname = postgres\nauth_file = userlist.txt\n", "\"pgb\" \"pgb-pw\"\n")
	if cfg.AutodbIdleTimeout.Duration != 10*time.Minute {
		t.Errorf("autodb_idle_timeout = %s, want 10m", cfg.AutodbIdleTimeout.Duration)
	}
	if cfg.AuthUser != "pgb" || cfg.AuthDBName != "postgres" {
		t.Errorf("auth_user = %q, auth_dbname = %q", cfg.AuthUser, cfg.AuthDBName)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "databases.*.auth_dbname: not converted") {
		t.Errorf("notes = %q; want one, about the database's auth_dbname", notes)
	}
	// Without auth_dbname (PgBouncer then looks up in the client's database)
	// the converter says pgtide needs one.
	res := convertFiles(t, map[string]string{"pgbouncer.ini": "[databases]\n* = host=db\n[pgbouncer]\nlisten_addr = *\nauth_user = pgb\nauth_file = userlist.txt\n", "userlist.txt": "\"pgb\" \"pw\"\n"}, convertOptions{KeepSocketDir: true})
	if all := strings.Join(res.Notes, "\n"); !strings.Contains(all, "auth_user: pgtide requires auth_dbname") {
		t.Errorf("notes = %q", res.Notes)
	}
}

// A hardened deployment: TLS on both sides, HBA, auth_query. Every setting
// is carried over, each left-out one is a comment in the output.
func TestConvertSecurity(t *testing.T) {
	certs := pgtest.NewCerts(t)
	dir := t.TempDir()
	hba := filepath.Join(dir, "pg_hba.conf")
	os.WriteFile(hba, []byte("hostssl all all 0.0.0.0/0 scram-sha-256\nhost all all 0.0.0.0/0 reject\n"), 0o600)
	ini := `[databases]
%include dbs.ini
[pgbouncer]
listen_addr = 127.0.0.1
auth_type = hba
auth_hba_file = ` + hba + `
auth_file = userlist.txt
auth_user = pgb_auth
auth_dbname = app
client_tls_sslmode = require
client_tls_cert_file = ` + certs.ServerCert + `
client_tls_key_file = ` + certs.ServerKey + `
client_tls_ca_file = ` + certs.CAFile + `
client_tls_protocols = tlsv1.3
client_tls_ciphers = ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-SHA384:!aNULL
client_tls_ecdhcurve = auto
server_tls_sslmode = verify-full
server_tls_ca_file = ` + certs.CAFile + `
so_reuseport = 1
stats_period = 30
log_stats = 0
log_connections = 0
log_pooler_errors = 1
server_check_query = select 1
unix_socket_mode = 0770
logfile = /var/log/pgbouncer.log
admin_users = pgb_auth, ops
`
	res := convertFiles(t, map[string]string{
		"pgbouncer.ini": ini,
		"dbs.ini":       "app = host=10.0.0.1,10.0.0.2 port=5433 load_balance_hosts=disable connect_query='SET x = 1'\nother = host=10.0.0.3 auth_user=someone\n",
		"userlist.txt":  "\"pgb_auth\" \"auth-pw\"\n",
	}, convertOptions{KeepSocketDir: true})
	if len(res.Weaker) > 0 {
		t.Fatalf("weaker: %q", res.Weaker)
	}
	cfg, err := config.Parse("out.toml", res.TOML)
	if err != nil {
		t.Fatalf("does not validate: %v\n%s", err, res.TOML)
	}
	out := string(res.TOML)
	check := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("auth_type", cfg.AuthType, "hba")
	check("auth_hba_file", cfg.AuthHBAFile, hba)
	check("auth_user", cfg.AuthUser, "pgb_auth")
	check("auth_query", cfg.AuthQuery, pgbDefaultAuthQuery)
	check("auth_dbname", cfg.AuthDBName, "app")
	check("client_tls_sslmode", cfg.ClientTLSSSLMode, "require")
	check("client_tls_cert_file", cfg.ClientTLSCertFile, certs.ServerCert)
	check("client_tls_ca_file", cfg.ClientTLSCAFile, certs.CAFile)
	check("client_tls_min_version", cfg.ClientTLSMinVersion, "TLSv1.3")
	check("client_tls_ciphers", cfg.ClientTLSCiphers, []string{"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"})
	check("so_reuseport", cfg.SoReuseport, true)
	check("stats_period", cfg.StatsPeriod.Duration, time.Duration(0)) // log_stats = 0
	check("log_connections", cfg.LogConnections, false)
	check("server_check_query", cfg.ServerCheckQuery, "select 1")
	check("unix_socket_mode", cfg.UnixSocketMode, "0770")
	for _, db := range []string{"app", "other"} {
		check(db+".server_tls_sslmode", cfg.Databases[db].ServerTLSSSLMode, "verify-full")
		check(db+".server_tls_ca_file", cfg.Databases[db].ServerTLSCAFile, certs.CAFile)
	}
	check("app.host", cfg.Databases["app"].Host, "10.0.0.1,10.0.0.2")
	check("app.port", cfg.Databases["app"].Port, 5433)
	check("app.load_balance_hosts", cfg.Databases["app"].LoadBalanceHosts, "disable")
	check("app.connect_query", cfg.Databases["app"].ConnectQuery, "SET x = 1")
	for _, want := range []string{
		"# not converted: logfile = /var/log/pgbouncer.log (pgbouncer.ini:",
		"# not converted: databases.other.auth_user = someone (dbs.ini:2)",
		"# not converted: client_tls_ecdhcurve = auto",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The comment sits in the section it is about.
	if i, j := strings.Index(out, "[databases.other]"), strings.Index(out, "databases.other.auth_user"); i < 0 || j < i {
		t.Errorf("auth_user comment is not in [databases.other]:\n%s", out)
	}
	notes := strings.Join(res.Notes, "\n")
	if strings.Contains(notes, "databases.app.host") || strings.Contains(notes, "load_balance_hosts") {
		t.Errorf("the host list or load_balance_hosts is reported as not converted:\n%s", notes)
	}
	for _, want := range []string{"client_tls_ciphers: not converted: left out ECDHE-RSA-AES256-SHA384"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "no password source") {
		t.Errorf("auth_query with auth_dbname serves the console:\n%s", notes)
	}
	if strings.Contains(notes, "auth-pw") || strings.Contains(out, "not converted: password") {
		t.Errorf("a secret in the notes or comments")
	}
}

// Console users nothing gives a password to are warned about.
func TestConvertConsoleUsers(t *testing.T) {
	_, _, notes := convertString(t, "[pgbouncer]\nlisten_addr=*\nauth_file = userlist.txt\nadmin_users = admin, ops\nstats_users = mon, ops\n", "\"admin\" \"pw\"\n")
	all := strings.Join(notes, "\n")
	for _, u := range []string{"ops", "mon"} {
		if strings.Count(all, fmt.Sprintf("%q has no password source", u)) != 1 {
			t.Errorf("no single warning for %s:\n%s", u, all)
		}
	}
	if strings.Contains(all, `"admin" has no password`) {
		t.Errorf("admin has one:\n%s", all)
	}
	_, _, notes = convertString(t, "[pgbouncer]\nlisten_addr=*\nauth_type = trust\nadmin_users = ops\n", "")
	if len(notes) != 0 {
		t.Errorf("trust needs no password: %q", notes)
	}
}

// Settings pgtide cannot honour that would leave it less secure than the
// PgBouncer it replaces: an error unless -allow-weaker.
func TestConvertWeaker(t *testing.T) {
	for _, tc := range []struct{ ini, key string }{
		{"server_tls_protocols = tlsv1.3", "server_tls_protocols"},
		{"server_tls_ciphers = ECDHE-RSA-AES256-GCM-SHA384", "server_tls_ciphers"},
		{"client_tls_ciphers = DHE-RSA-AES256-SHA", "client_tls_ciphers"},
		{"auth_type = cert", "auth_type"},
		{"unix_socket_mode = rwx", "unix_socket_mode"},
	} {
		dir := t.TempDir()
		ini := filepath.Join(dir, "p.ini")
		os.WriteFile(ini, []byte("[databases]\nx = host=h\n[pgbouncer]\nlisten_addr=*\n"+tc.ini+"\n"), 0o600)
		var stdout, stderr bytes.Buffer
		if code := runIO([]string{"convert-pgbouncer", ini}, &stdout, &stderr); code != 1 || stdout.Len() != 0 || !strings.Contains(stderr.String(), "less secure") || !strings.Contains(stderr.String(), tc.key) {
			t.Errorf("%s: exit %d, stdout %q, stderr:\n%s", tc.ini, code, stdout.String(), stderr.String())
		}
		stdout.Reset()
		stderr.Reset()
		if code := runIO([]string{"convert-pgbouncer", "-allow-weaker", ini}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "# not converted: "+tc.key) {
			t.Errorf("%s -allow-weaker: exit %d, stdout:\n%s\nstderr:\n%s", tc.ini, code, stdout.String(), stderr.String())
		}
	}
	// server_tls_protocols that include TLS 1.2 lose nothing.
	cfg, _, _ := convertString(t, "[pgbouncer]\nlisten_addr=*\nserver_tls_protocols = secure\nclient_tls_ciphers = secure\n", "")
	if len(cfg.ClientTLSCiphers) != 0 {
		t.Errorf("client_tls_ciphers = %q", cfg.ClientTLSCiphers)
	}
}

// By default the socket goes to the systemd unit's RuntimeDirectory, which
// is the only directory the sandboxed unit can write.
func TestConvertSocketDirDefault(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("..", "..", "systemd", "pgtide.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nRuntimeDirectory="+filepath.Base(systemdSocketDir)+"\n") {
		t.Fatalf("systemd/pgtide.service has no RuntimeDirectory=%s", filepath.Base(systemdSocketDir))
	}
	for _, ini := range []string{"[pgbouncer]\nlisten_addr=*\n", "[pgbouncer]\nlisten_addr=*\nunix_socket_dir = /var/run/postgresql\n"} {
		res := convertFiles(t, map[string]string{"pgbouncer.ini": ini}, convertOptions{})
		cfg, err := config.Parse("out.toml", res.TOML)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.UnixSocketDir != systemdSocketDir || !strings.Contains(strings.Join(res.Notes, "\n"), "unix_socket_dir: the socket moves") {
			t.Errorf("%q: unix_socket_dir = %q, notes %q", ini, cfg.UnixSocketDir, res.Notes)
		}
	}
}

// The TCP settings, listen_backlog and client_idle_timeout carry over;
// tcp_user_timeout is milliseconds in PgBouncer.
func TestConvertTCPAndIdle(t *testing.T) {
	cfg, out, notes := convertString(t, `[pgbouncer]
listen_addr = *
tcp_keepalive = 1
tcp_keepidle = 30
tcp_keepintvl = 5
tcp_keepcnt = 3
tcp_user_timeout = 2500
tcp_defer_accept = 0
listen_backlog = 512
client_idle_timeout = 600
server_login_retry = 15
max_db_client_connections = 50
max_user_client_connections = 20
auth_file = userlist.txt
[databases]
app = host=h max_db_client_connections=5
[users]
bob = max_user_client_connections=2
`, "\"bob\" \"pw\"\n")
	if !cfg.TCPKeepalive || cfg.TCPKeepIdle.Duration != 30*time.Second || cfg.TCPKeepIntvl.Duration != 5*time.Second ||
		cfg.TCPKeepCnt != 3 || cfg.TCPUserTimeout.Duration != 2500*time.Millisecond || cfg.TCPDeferAccept || cfg.ListenBacklog != 512 ||
		cfg.ClientIdleTimeout.Duration != 10*time.Minute || cfg.ServerLoginRetry.Duration != 15*time.Second || cfg.MaxDBClientConnections != 50 || cfg.MaxUserClientConnections != 20 ||
		cfg.Databases["app"].MaxDBClientConnections != 5 || cfg.Users["bob"].MaxUserClientConnections != 2 {
		t.Errorf("converted: %+v\n%s", cfg, out)
	}
	if len(notes) != 0 {
		t.Errorf("notes = %q", notes)
	}
}

func TestConvertStartupParameters(t *testing.T) {
	cfg, out, notes := convertString(t, `[pgbouncer]
listen_addr = *
ignore_startup_parameters = extra_float_digits, options
application_name_add_host = 1
auth_file = userlist.txt
`, "\"bob\" \"pw\"\n")
	if strings.Join(cfg.IgnoreStartupParameters, ",") != "extra_float_digits,options" || !cfg.ApplicationNameAddHost {
		t.Errorf("converted: %+v\n%s", cfg, out)
	}
	if len(notes) != 0 {
		t.Errorf("notes = %q", notes)
	}
}

func TestConvertReservePool(t *testing.T) {
	cfg, out, notes := convertString(t, `[pgbouncer]
listen_addr = *
reserve_pool_size = 3
reserve_pool_timeout = 0.5
auth_file = userlist.txt
[databases]
app = host=h reserve_pool=2
new = host=h reserve_pool_size=4
`, "\"bob\" \"pw\"\n")
	if cfg.ReservePoolSize != 3 || cfg.ReservePoolTimeout.Duration != 500*time.Millisecond ||
		cfg.Databases["app"].ReservePoolSize != 2 || cfg.Databases["new"].ReservePoolSize != 4 {
		t.Errorf("converted: %+v\n%s", cfg, out)
	}
	if len(notes) != 0 {
		t.Errorf("notes = %q", notes)
	}
}

// Host lists, port lists and load_balance_hosts carry over; a port list
// that does not match its hosts, or an unknown mode, is reported.
func TestConvertHostLists(t *testing.T) {
	cfg, out, notes := convertString(t, `[databases]
rr = host=h1,h2 port=5433,5434 load_balance_hosts=round-robin
pin = host=/var/run/postgresql,10.0.0.2 load_balance_hosts=DISABLE
odd = host=h1,h2,h3 port=5433,5434
bad = host=h1,h2 load_balance_hosts=random
[pgbouncer]
listen_addr = 127.0.0.1
`, "")
	check := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v\n%s", what, got, want, out)
		}
	}
	rr, pin, odd, bad := cfg.Databases["rr"], cfg.Databases["pin"], cfg.Databases["odd"], cfg.Databases["bad"]
	check("rr.host", rr.Host, "h1,h2")
	check("rr targets", rr.Targets(), []config.Target{{Host: "h1", Port: 5433}, {Host: "h2", Port: 5434}})
	check("rr.load_balance_hosts", rr.LoadBalanceHosts, "round-robin")
	check("pin targets", pin.Targets(), []config.Target{{Host: "/var/run/postgresql", Port: 5432}, {Host: "10.0.0.2", Port: 5432}})
	check("pin.load_balance_hosts", pin.LoadBalanceHosts, "disable")
	check("odd.host", odd.Host, "h1,h2,h3")
	check("odd targets", odd.Targets(), []config.Target{{Host: "h1", Port: 5432}, {Host: "h2", Port: 5432}, {Host: "h3", Port: 5432}})
	check("bad.load_balance_hosts", bad.LoadBalanceHosts, "")
	all := strings.Join(notes, "\n")
	for _, want := range []string{
		"databases.odd.port: not converted: 2 ports for 3 hosts",
		`databases.bad.load_balance_hosts: not converted: "random" is neither round-robin nor disable`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("notes lack %q:\n%s", want, all)
		}
	}
	for _, quiet := range []string{"databases.rr", "databases.pin"} {
		if strings.Contains(all, quiet) {
			t.Errorf("notes mention %s, which converted as is:\n%s", quiet, all)
		}
	}
	if !strings.Contains(out, "port = [5433, 5434]") {
		t.Errorf("output lacks the port list:\n%s", out)
	}
}

// User-level timeouts and reserve_pool_size carry over (PgBouncer 1.24+);
// PgBouncer's -1 ("not set") leaves the user on the global value.
func TestConvertUserTimeouts(t *testing.T) {
	ini := `[databases]
app = host=db
[users]
alice = query_timeout=0.3 idle_transaction_timeout=0 client_idle_timeout=60 query_wait_timeout=-1 reserve_pool_size=2 transaction_timeout=30
[pgbouncer]
listen_addr = *
auth_type = plain
auth_file = userlist.txt
query_timeout = 10
`
	cfg, _, notes := convertString(t, ini, "\"alice\" \"a-secret\"\n")
	a := cfg.Users["alice"]
	if got := cfg.TimeoutsFor("alice"); got != (config.ClientTimeouts{Query: 300 * time.Millisecond, Wait: cfg.QueryWaitTimeout.Duration, IdleTransaction: 0, ClientIdle: time.Minute, Transaction: 30 * time.Second}) {
		t.Errorf("alice's timeouts = %+v", got)
	}
	if !a.IdleTransactionTimeout.Set || a.QueryWaitTimeout.Set || a.ReservePoolSize != 2 {
		t.Errorf("alice = %+v", a)
	}
	for _, n := range notes {
		if strings.Contains(n, "users.alice") {
			t.Errorf("note about alice: %s", n)
		}
	}
}
