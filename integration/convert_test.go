package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgtide/pgtide/integration/pgtest"
	"github.com/pgtide/pgtide/proxy/config"
)

// TestConvertPgBouncerSample converts testdata/pgbouncer/sample.ini (with its
// userlist.txt) with the built binary and checks the result validates and
// carries the settings over.
func TestConvertPgBouncerSample(t *testing.T) {
	bin := pgtest.BuildPgtide(t)
	out := filepath.Join(t.TempDir(), "pgtide.toml")
	cmd := exec.Command(bin, "convert-pgbouncer", "-o", out, filepath.Join("testdata", "pgbouncer", "sample.ini"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("convert-pgbouncer: %v\n%s", err, stderr.String())
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("output file: %v, mode %v (want 0600: it holds passwords)", err, fi.Mode())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(out, data)
	if err != nil {
		t.Fatalf("converted config does not validate: %v\n%s", err, data)
	}

	check := func(what string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("listen", strings.Join(cfg.Listen, ","), ":6543")
	check("unix_socket_dir", cfg.UnixSocketDir, "/run/pgtide") // the systemd unit's RuntimeDirectory
	check("pool_mode", cfg.PoolMode, config.PoolSession)
	check("default_pool_size", cfg.DefaultPoolSize, 25)
	check("max_client_conn", cfg.MaxClientConn, 1000)
	check("server_idle_timeout", cfg.ServerIdleTimeout.Duration, 300*time.Second)
	check("idle_transaction_timeout", cfg.IdleTransactionTimeout.Duration, 2500*time.Millisecond)
	check("query_timeout", cfg.QueryTimeout.Duration, time.Duration(0))
	check("server_reset_query_always", cfg.ServerResetQueryAlways, true)
	check("admin_users", strings.Join(cfg.AdminUsers, ","), "postgres,admin")

	app := cfg.Databases["app"]
	check("databases.app.host", app.Host, "10.0.0.5")
	check("databases.app.port", app.Port, 5433)
	check("databases.app.dbname", app.DBName, "app_prod")
	check("databases.app.pool_size", app.PoolSize, 40)
	check("databases.app.pool_mode", app.PoolMode, config.PoolTransaction)
	rep := cfg.Databases["reports"]
	check("databases.reports.password", rep.Password, "s3cr3t 'quoted'")
	check("databases.reports.user", rep.User, "reporter")
	check("databases.*.host", cfg.Databases["*"].Host, "10.0.0.6")
	check("databases.legacy.host", cfg.Databases["legacy"].Host, "db1.internal,db2.internal") // the host list carries over
	check("databases.reports.connect_query", rep.ConnectQuery, "SET search_path = reports")
	check("reserve_pool_size", cfg.ReservePoolSize, 5)

	check("users.app.password", cfg.Users["app"].Password, "app-password")
	check("users.batch.pool_mode", cfg.Users["batch"].PoolMode, config.PoolSession)
	check("users.batch.max_user_connections", cfg.Users["batch"].MaxUserConnections, 4)
	check(`users."odd ""name""".password`, cfg.Users[`odd "name"`].Password, "pw with spaces")
	if !strings.HasPrefix(cfg.Users["batch"].Password, "SCRAM-SHA-256$") {
		t.Errorf("users.batch.password is not the SCRAM secret from userlist.txt")
	}

	// Everything that was left out is said, with the line, and no secret is.
	msgs := stderr.String()
	for _, want := range []string{"sample.ini:13: logfile: not converted", "pidfile", "auth_hba_file: not converted: used only with auth_type = hba", "unix_socket_dir: the socket moves from /var/run/postgresql to /run/pgtide"} {
		if !strings.Contains(msgs, want) {
			t.Errorf("stderr does not mention %q:\n%s", want, msgs)
		}
	}
	if strings.Contains(msgs, "databases.legacy.host") {
		t.Errorf("stderr reports the host list as not converted:\n%s", msgs)
	}
	for _, secret := range []string{"app-password", "s3cr3t", "pw with spaces"} {
		if strings.Contains(msgs, secret) {
			t.Errorf("stderr contains a password (%q)", secret)
		}
	}

	// The daemon's own check agrees.
	if b, err := exec.Command(bin, "-check-config", out).CombinedOutput(); err != nil {
		t.Errorf("pgtide -check-config on the converted file: %v\n%s", err, b)
	}
}
