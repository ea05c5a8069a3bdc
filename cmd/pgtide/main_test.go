package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pgtide/pgtide/proxy/config"
)

func TestVersionFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runIO([]string{"-version"}, &out, &errb); code != 0 || out.String() != "pgtide "+version+"\n" {
		t.Fatalf("exit %d, out %q", code, out.String())
	}
}

func TestNoConfig(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runIO(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "-config FILE is required") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}

const checkTOML = `listen = ["127.0.0.1:7777"]
pool_mode = "transaction"
admin_users = ["admin"]
server_idle_timeout = "600s"

[databases.app]
host = "db"
password = "db-secret-pw"
user = "svc"
server_lifetime = "90s"

[databases."*"]
port = 5433

[users.alice]
password = "alice-secret-pw"
pool_size = 3
`

func TestCheckConfigVerbose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(path, []byte(checkTOML), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := runIO([]string{"-check-config", path, "-v"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	s := out.String()
	if strings.Contains(s, "secret") {
		t.Fatalf("-v prints a password:\n%s", s)
	}
	// Every key of every section is printed.
	for _, typ := range []any{config.Config{}, config.Database{}, config.User{}} {
		rt := reflect.TypeOf(typ)
		for i := 0; i < rt.NumField(); i++ {
			key := strings.Split(rt.Field(i).Tag.Get("toml"), ",")[0]
			if key == "" || key == "-" || key == "databases" || key == "users" {
				continue
			}
			if !strings.Contains(s, "\n"+key+" = ") && !strings.Contains(s, "\n# "+key+" = ") {
				t.Errorf("%s.%s missing from -v output", rt.Name(), key)
			}
		}
	}
	for _, want := range []string{
		`listen = ["127.0.0.1:7777"]`, `pool_mode = "transaction"`, `admin_users = ["admin"]`,
		"[databases.app]\nhost = \"db\"", "[databases.\"*\"]", "[users.alice]",
		"# password = (set: plaintext, not shown)", "pool_size = 3",
		// Durations as written, and the values in effect.
		`server_idle_timeout = "600s"`, `server_lifetime = "1h0m0s"`,
		`client_tls_sslmode = "disable"`, `client_tls_min_version = "TLSv1.2"`, `server_tls_sslmode = "prefer"`,
		`#   app x alice: pool_mode "transaction", pool_size 3, max_db_connections 0, server db:5432 dbname "app", server_tls_sslmode "prefer", server_lifetime "1m30s"`,
		`#   * x alice: pool_mode "transaction", pool_size 3, max_db_connections 0, server 127.0.0.1:5433 dbname (the name the client asks for), server_tls_sslmode "prefer", server_lifetime "1h0m0s"`,
		// A database's server_lifetime; "" = the global one.
		"connect_query = \"\"\nserver_lifetime = \"1m30s\"\n", "connect_query = \"\"\nserver_lifetime = \"\"\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("-v output lacks %q:\n%s", want, s)
		}
	}
	// The output is itself a valid configuration (passwords left out).
	if _, err := config.Parse("effective", out.Bytes()[bytes.IndexByte(out.Bytes(), '\n')+1:]); err != nil {
		t.Errorf("-v output does not parse: %v\n%s", err, s)
	}
}

// -check-config warns (exit 0) about users nothing gives a password, and
// rejects a listen address given twice.
func TestCheckConfigWarnings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(path, []byte("admin_users = [\"ops\"]\n[users.nopw]\npool_size = 1\n"), 0o600)
	var out, errb bytes.Buffer
	if code := runIO([]string{"-check-config", path}, &out, &errb); code != 0 ||
		!strings.Contains(errb.String(), "warning: users.nopw: no password") || !strings.Contains(errb.String(), `warning: admin_users: "ops"`) {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	os.WriteFile(path, []byte("listen = [\"127.0.0.1:6432\", \":6432\"]\n"), 0o600)
	errb.Reset()
	if code := runIO([]string{"-check-config", path}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "overlaps") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}

func TestCheckConfigInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(path, []byte("pool_mod = \"session\"\n"), 0o600)
	var out, errb bytes.Buffer
	if code := runIO([]string{"-check-config", path}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), path+":1: pool_mod") || !strings.Contains(errb.String(), "pool_mode") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}

func TestDemoConfigValid(t *testing.T) {
	cfg := demoConfig(5432, 6432)
	var out bytes.Buffer
	printEffective(&out, cfg)
	if _, err := config.Parse("demo", out.Bytes()); err != nil {
		t.Fatalf("demo config does not validate: %v\n%s", err, out.String())
	}
	if cfg.PoolMode != config.PoolTransaction || cfg.Users["demo"].Password != "demo" || cfg.Databases["demo"].Port != 5432 {
		t.Fatalf("demo config: %+v", cfg)
	}
}

func TestDemoBadArgs(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runIO([]string{"demo", "extra"}, &out, &errb); code != 2 {
		t.Fatalf("exit %d", code)
	}
}

// TestCheckConfigWarnsWorldReadable: -check-config warns (and still exits
// 0) when a file holding passwords is readable by every user (issue 13.9).
func TestCheckConfigWarnsWorldReadable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(path, []byte(checkTOML), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o644, true}, {0o604, true}, {0o640, false}, {0o600, false}} {
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		code := runIO([]string{"-check-config", path}, &out, &errb)
		warned := strings.Contains(errb.String(), "warning: configuration file") && strings.Contains(errb.String(), "readable by every user")
		if code != 0 || warned != tc.warn {
			t.Errorf("mode %04o: exit %d, stderr %q; want a warning: %v", tc.mode, code, errb.String(), tc.warn)
		}
		if strings.Contains(errb.String(), "secret-pw") {
			t.Errorf("mode %04o: the warning shows a password: %q", tc.mode, errb.String())
		}
	}
}

// TestCheckConfigSyntaxErrorHidesPassword: a password line that is not valid
// TOML is reported by line and key, without its value (issue 13.8).
func TestCheckConfigSyntaxErrorHidesPassword(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	const secret = "Zq7Hv2Kw3Jx"
	if err := os.WriteFile(path, []byte("[users.alice]\npassword = "+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := runIO([]string{"-check-config", path}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), path+":2: invalid TOML") || !strings.Contains(errb.String(), "users.alice.password") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	if strings.Contains(errb.String(), secret[:2]) {
		t.Fatalf("stderr shows part of the password: %q", errb.String())
	}
}

// -check-config -v shows a host list's ports and, per pool, every host and
// load_balance_hosts; the output parses back.
func TestCheckConfigVerboseHostList(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	src := "load_balance_hosts = \"disable\"\n[databases.app]\nhost = \"a,b\"\nport = [5433, 5434]\n[users.u]\npassword = \"pw-not-shown\"\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := runIO([]string{"-check-config", path, "-v"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	s := out.String()
	for _, want := range []string{
		"[databases.app]\nhost = \"a,b\"\nport = [5433, 5434]\nload_balance_hosts = \"\"",
		`load_balance_hosts = "disable"`,
		`#   app x u: pool_mode "session", pool_size 20, max_db_connections 0, server a:5433, b:5434 (load_balance_hosts "disable") dbname "app"`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("-v output lacks %q:\n%s", want, s)
		}
	}
	cfg, err := config.Parse("effective", out.Bytes()[bytes.IndexByte(out.Bytes(), '\n')+1:])
	if err != nil {
		t.Fatalf("-v output does not parse: %v\n%s", err, s)
	}
	if ts := cfg.Databases["app"].Targets(); len(ts) != 2 || ts[1].Port != 5434 {
		t.Errorf("parsed back: %v", ts)
	}
}
