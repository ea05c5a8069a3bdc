package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgtide/pgtide/proxy/config"
)

func convertString(t *testing.T, ini, userlist string) (*config.Config, string, []string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "pgbouncer.ini")
	if userlist != "" {
		if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(userlist), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := convertPgBouncer(path, []byte(ini), "")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("out.toml", res.TOML)
	if err != nil {
		t.Fatalf("converted config does not validate: %v\n%s", err, res.TOML)
	}
	return cfg, string(res.TOML), res.Notes
}

func TestConvertMinimal(t *testing.T) {
	cfg, out, notes := convertString(t, "[databases]\napp = host=127.0.0.1 dbname=app\n[pgbouncer]\nlisten_addr = 127.0.0.1, ::1\n", "")
	if got := strings.Join(cfg.Listen, " "); got != "127.0.0.1:6432 [::1]:6432" {
		t.Errorf("listen = %q", got)
	}
	if cfg.UnixSocketDir != "/tmp" {
		t.Errorf("unix_socket_dir = %q, want PgBouncer's default /tmp", cfg.UnixSocketDir)
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
app = host=db port=5433 pool_size=7 min_pool_size=2 pool_mode=Transaction client_encoding=UTF8
* = host=/var/run/postgresql
[users]
alice = pool_mode=statement max_user_connections=3 pool_size=2
carol = pool_mode=session
[pgbouncer]
listen_addr = *
auth_type = plain
auth_file = userlist.txt
query_wait_timeout = 0.25
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
	if cfg.AuthType != "password" {
		t.Errorf("auth_type = %q, want password (PgBouncer plain)", cfg.AuthType)
	}
	if cfg.QueryWaitTimeout.Duration != 250*time.Millisecond || cfg.ServerLifetime.Duration != time.Hour {
		t.Errorf("durations: %v %v", cfg.QueryWaitTimeout, cfg.ServerLifetime)
	}
	if cfg.MaxPreparedStatements != 200 {
		t.Errorf("max_prepared_statements = %d, want pgtide's default", cfg.MaxPreparedStatements)
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
		"pgbouncer.ini:2: databases.app.client_encoding: not converted",
		"max_prepared_statements: not converted",
		"max_packet_size: not converted",
		"logfile: not converted",
		"so_reuseport: not converted",
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

func TestConvertAuthTypes(t *testing.T) {
	for in, want := range map[string]string{"md5": "md5", "scram-sha-256": "scram-sha-256", "trust": "trust", "plain": "password", "hba": "scram-sha-256", "any": "scram-sha-256", "cert": "scram-sha-256"} {
		cfg, _, notes := convertString(t, "[pgbouncer]\nlisten_addr=*\nauth_type = "+in+"\n", "")
		if cfg.AuthType != want {
			t.Errorf("auth_type %s -> %q, want %q", in, cfg.AuthType, want)
		}
		if (in == "hba" || in == "any" || in == "cert") != (len(notes) > 0) {
			t.Errorf("auth_type %s: notes %q", in, notes)
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

func TestConvertAutodbAndAuthQuery(t *testing.T) {
	cfg, _, notes := convertString(t, "[databases]\n* = host=db auth_dbname=postgres\n[pgbouncer]\nlisten_addr = 127.0.0.1\nautodb_idle_timeout = 600\nauth_user = pgb\nauth_dbname = postgres\n", "")
	if cfg.AutodbIdleTimeout.Duration != 10*time.Minute {
		t.Errorf("autodb_idle_timeout = %s, want 10m", cfg.AutodbIdleTimeout.Duration)
	}
	n := 0
	for _, s := range notes {
		if strings.Contains(s, "auth_") && strings.Contains(s, "pgtide requires auth_dbname") {
			n++
		}
	}
	if n != 3 { // auth_user, auth_dbname, and the database's auth_dbname
		t.Errorf("notes = %q; want three auth_query notes naming auth_dbname", notes)
	}
}
