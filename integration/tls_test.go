package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// tlsURL is a pgtide URL for user (password via PGPASSWORD for psql, or in
// the URL when password is set) with extra libpq parameters.
func tlsURL(port int, db, user, password string, params ...string) string {
	u := url.URL{Scheme: "postgres", Host: fmt.Sprintf("127.0.0.1:%d", port), Path: "/" + db}
	if password != "" {
		u.User = url.UserPassword(user, password)
	} else {
		u.User = url.User(user)
	}
	q := url.Values{"connect_timeout": {"10"}}
	for i := 0; i+1 < len(params); i += 2 {
		q.Set(params[i], params[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func clientTLSConf(c *pgtest.Certs, mode string) string {
	return fmt.Sprintf("client_tls_sslmode = %q\nclient_tls_cert_file = %q\nclient_tls_key_file = %q\nclient_tls_ca_file = %q\n",
		mode, c.ServerCert, c.ServerKey, c.CAFile)
}

func TestTLSClient(t *testing.T) {
	psql := needBinary(t, "psql", "postgresql-client")
	certs := pgtest.NewCerts(t)
	e := newEnv(t, func(c *tideConf, _ *dbConf) { c.Extra = clientTLSConf(certs, "require") })

	t.Run("psql require", func(t *testing.T) {
		r := runPsql(t, psql, tlsURL(e.tide.Port, e.DB, e.User, "", "sslmode", "require"), e.Pass, "-c", `\conninfo`)
		if r.code != 0 || !strings.Contains(r.stdout, "SSL connection (protocol: TLSv1.") {
			t.Fatalf("exit %d, stdout %q, stderr %q; want an SSL connection", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("psql verify-full", func(t *testing.T) {
		r := runPsql(t, psql, tlsURL(e.tide.Port, e.DB, e.User, "", "sslmode", "verify-full", "sslrootcert", certs.CAFile),
			e.Pass, "-tA", "-c", "select 41 + 1")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "42" {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("plain client refused", func(t *testing.T) {
		r := runPsql(t, psql, tlsURL(e.tide.Port, e.DB, e.User, "", "sslmode", "disable"), e.Pass, "-c", "select 1")
		if r.code == 0 || !strings.Contains(r.stderr, `connection requires SSL (client_tls_sslmode is "require")`) {
			t.Fatalf("exit %d, stderr %q; want the require error", r.code, r.stderr)
		}
		_, err := pgx.Connect(ctxT(t, 10*time.Second), tlsURL(e.tide.Port, e.DB, e.User, e.Pass, "sslmode", "disable"))
		if sqlState(err) != "28000" {
			t.Fatalf("pgx without TLS: %v, want SQLSTATE 28000", err)
		}
	})
	t.Run("psycopg2 require", func(t *testing.T) {
		py := needPython(t, "psycopg2", "python3-psycopg2")
		script := `import psycopg2, sys
c = psycopg2.connect(sys.argv[1])
cur = c.cursor()
cur.execute("select 7")
print(c.info.ssl_in_use, c.info.ssl_attribute("protocol"), cur.fetchone()[0])`
		out, err := exec.CommandContext(ctxT(t, 30*time.Second), py, "-c", script,
			tlsURL(e.tide.Port, e.DB, e.User, e.Pass, "sslmode", "require")).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "True TLSv1.") || !strings.HasSuffix(strings.TrimSpace(string(out)), " 7") {
			t.Fatalf("psycopg2: %v\n%s", err, out)
		}
	})
	t.Run("direct TLS", func(t *testing.T) {
		// pgx sends ALPN "postgresql" with sslnegotiation=direct.
		c := connect(t, tlsURL(e.tide.Port, e.DB, e.User, e.Pass, "sslmode", "verify-full", "sslrootcert", certs.CAFile, "sslnegotiation", "direct"))
		if n := queryInt(t, c, "select 5"); n != 5 {
			t.Fatalf("got %d", n)
		}
		if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
			t.Fatalf("pgx connection is not TLS: %T", c.PgConn().Conn())
		}
		// Without ALPN the handshake completes and pgtide hangs up.
		tc, err := tls.Dial("tcp", e.tide.Addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("tls dial: %v", err)
		}
		defer tc.Close()
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := tc.Read(make([]byte, 1)); err == nil {
			t.Fatal("direct TLS without ALPN was not closed")
		}
	})
	t.Run("cert reload on SIGHUP", func(t *testing.T) {
		c := connect(t, tlsURL(e.tide.Port, e.DB, e.User, e.Pass, "sslmode", "require"))
		// A new CA and server certificate in the same files.
		fresh := pgtest.NewCerts(t)
		for _, f := range [][2]string{{fresh.ServerCert, certs.ServerCert}, {fresh.ServerKey, certs.ServerKey}} {
			b, err := os.ReadFile(f[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f[1], b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.tide.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		verify := func(ca string) error {
			c, err := pgx.Connect(ctxT(t, 10*time.Second), tlsURL(e.tide.Port, e.DB, e.User, e.Pass, "sslmode", "verify-full", "sslrootcert", ca))
			if err == nil {
				c.Close(context.Background())
			}
			return err
		}
		if !pgtest.Eventually(5*time.Second, func() bool { return verify(fresh.CAFile) == nil }) {
			t.Fatalf("the new certificate is not served after SIGHUP: %v", verify(fresh.CAFile))
		}
		if err := verify(certs.CAFile); err == nil {
			t.Fatal("the old certificate is still served")
		}
		if n := queryInt(t, c, "select 9"); n != 9 { // the connected client stayed
			t.Fatalf("got %d", n)
		}
	})
}

func TestTLSClientToPlainPgtide(t *testing.T) {
	psql := needBinary(t, "psql", "postgresql-client")
	e := newEnv(t, nil)
	r := runPsql(t, psql, tlsURL(e.tide.Port, e.DB, e.User, "", "sslmode", "require"), e.Pass, "-c", "select 1")
	if r.code == 0 || !strings.Contains(r.stderr, "server does not support SSL, but SSL was required") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	// sslmode=prefer falls back to a plain connection.
	r = runPsql(t, psql, tlsURL(e.tide.Port, e.DB, e.User, "", "sslmode", "prefer"), e.Pass, "-tA", "-c", "select 1")
	if r.code != 0 {
		t.Fatalf("prefer: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestHBA(t *testing.T) {
	psql := needBinary(t, "psql", "postgresql-client")
	certs := pgtest.NewCerts(t)
	hba := filepath.Join(t.TempDir(), "pg_hba.conf")
	writeHBA := func(text string) {
		if err := os.WriteFile(hba, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeHBA("host all all all scram-sha-256\n")
	e := newEnv(t, func(c *tideConf, _ *dbConf) {
		c.Extra = clientTLSConf(certs, "prefer") + fmt.Sprintf("auth_type = \"hba\"\nauth_hba_file = %q\n", hba)
	})
	// The real rules name this test's user, known only now: reload them.
	writeHBA(fmt.Sprintf(`# pgtide test rules
hostssl  all           %[1]s        127.0.0.1/32  cert
host     all           rejected     all           reject
host     %[2]s,pgtide  all          127.0.0.0/8   scram-sha-256
`, e.User, e.DB))
	reloads := strings.Count(e.tide.Logs(), "configuration reloaded")
	if err := e.tide.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !pgtest.Eventually(5*time.Second, func() bool { return strings.Count(e.tide.Logs(), "configuration reloaded") > reloads }) {
		t.Fatal("no reload")
	}
	certFile, keyFile := certs.Client(e.User)

	t.Run("cert", func(t *testing.T) {
		r := runPsql(t, psql, tlsURL(e.tide.Port, e.DB, e.User, "", "sslmode", "verify-full", "sslrootcert", certs.CAFile,
			"sslcert", certFile, "sslkey", keyFile), "", "-tA", "-c", "select current_user")
		if r.code != 0 || strings.TrimSpace(r.stdout) != e.User {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("cert for another user", func(t *testing.T) {
		other, otherKey := certs.Client("someone_else")
		r := runPsql(t, psql, tlsURL(e.tide.Port, e.DB, e.User, "", "sslmode", "require", "sslcert", other, "sslkey", otherKey), "", "-c", "select 1")
		if r.code == 0 || !strings.Contains(r.stderr, fmt.Sprintf(`certificate authentication failed for user "%s"`, e.User)) {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("no cert", func(t *testing.T) {
		r := runPsql(t, psql, tlsURL(e.tide.Port, e.DB, e.User, "", "sslmode", "require"), e.Pass, "-c", "select 1")
		if r.code == 0 || !strings.Contains(r.stderr, "connection requires a valid client certificate") {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("password without TLS", func(t *testing.T) {
		c := connect(t, tlsURL(e.tide.Port, e.DB, e.User, e.Pass, "sslmode", "disable"))
		if n := queryInt(t, c, "select 3"); n != 3 {
			t.Fatalf("got %d", n)
		}
	})
	t.Run("reject", func(t *testing.T) {
		_, err := pgx.Connect(ctxT(t, 10*time.Second), tlsURL(e.tide.Port, e.DB, "rejected", "x", "sslmode", "disable"))
		if sqlState(err) != "28000" || !strings.Contains(err.Error(), `pg_hba.conf rejects connection for host "127.0.0.1", user "rejected", database "`+e.DB+`", no encryption`) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("no entry", func(t *testing.T) {
		_, err := pgx.Connect(ctxT(t, 10*time.Second), tlsURL(e.tide.Port, "otherdb", e.User, e.Pass, "sslmode", "disable"))
		if sqlState(err) != "28000" || !strings.Contains(err.Error(), `no pg_hba.conf entry for host "127.0.0.1", user "`+e.User+`", database "otherdb", no encryption`) {
			t.Fatalf("got %v", err)
		}
		if !strings.Contains(e.tide.Logs(), `"user":"`+e.User+`"`) {
			t.Fatal("the failed login is not logged with the user")
		}
	})
	t.Run("bad file keeps the old rules", func(t *testing.T) {
		writeHBA("host all all all trust\nhots all all all trust\n")
		if err := e.tide.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if !pgtest.Eventually(5*time.Second, func() bool { return strings.Contains(e.tide.Logs(), `pg_hba.conf:2: invalid connection type \"hots\"`) }) {
			t.Fatal("the bad line is not logged")
		}
		_, err := pgx.Connect(ctxT(t, 10*time.Second), tlsURL(e.tide.Port, e.DB, "rejected", "x", "sslmode", "disable"))
		if sqlState(err) != "28000" {
			t.Fatalf("after a bad reload: %v, want the old reject rule", err)
		}
	})
}

func TestTLSServer(t *testing.T) {
	certs := pgtest.NewCerts(t)
	pg := pgtest.StartPostgres(t, pgtest.WithServerTLS(certs))
	user, pass := "tlsuser", "Pw-tls-"+fmt.Sprint(time.Now().UnixNano())
	pgtest.CreateRole(t, pg, user, pass)
	pgtest.CreateDatabase(t, pg, "tlsdb", user)
	conf := defaultConf()
	conf.Users[user] = pass
	conf.Extra = fmt.Sprintf(`
[databases.req]
host = "127.0.0.1"
port = %[1]d
dbname = "tlsdb"
server_tls_sslmode = "require"

[databases.full]
host = "127.0.0.1"
port = %[1]d
dbname = "tlsdb"
server_tls_sslmode = "verify-full"
server_tls_ca_file = %[2]q

[databases.plain]
host = "127.0.0.1"
port = %[1]d
dbname = "tlsdb"
server_tls_sslmode = "disable"
`, pg.Port, certs.CAFile)
	tide := pgtest.StartPgtide(t, conf.TOML(pg.Port))
	t.Cleanup(func() {
		if strings.Contains(tide.Logs(), pass) {
			t.Error("pgtide output contains the password")
		}
	})
	for db, want := range map[string]bool{"req": true, "full": true, "plain": false} {
		c := connect(t, tide.ConnString(db, user, pass))
		var ssl bool
		if err := c.QueryRow(ctxT(t, 10*time.Second), "select ssl from pg_stat_ssl where pid = pg_backend_pid()").Scan(&ssl); err != nil {
			t.Fatalf("%s: %v", db, err)
		}
		if ssl != want {
			t.Errorf("%s: server connection ssl = %v, want %v", db, ssl, want)
		}
	}
	// A cancel reaches the backend over TLS.
	c := connect(t, tide.ConnString("req", user, pass))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Exec(ctx, "select pg_sleep(20)")
	if err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("cancel: err %v after %v", err, time.Since(start))
	}
	if !errors.Is(err, context.DeadlineExceeded) && sqlState(err) != "57014" {
		t.Fatalf("cancel: %v", err)
	}
	if !pgtest.Eventually(5*time.Second, func() bool { return strings.Contains(pg.Logs(), "canceling statement due to user request") }) {
		t.Fatalf("the server did not see the cancel request; logs:\n%s", pg.Logs())
	}
}

// TestHBAConsoleUnderBothNames: the admin console answers to "pgtide" and,
// unless [databases] has a section of that name, "pgbouncer". An HBA rule
// for either name is a rule for the console: before, a reject for "pgtide"
// was passed by logging in as "pgbouncer" (and a PgBouncer file's reject
// for "pgbouncer" by logging in as "pgtide"), which then met the next
// rule, "all". A "pgbouncer" that is a real database is that database's
// name only.
func TestHBAConsoleUnderBothNames(t *testing.T) {
	const admPass = "AdmPw-console-hba"
	// realPgbouncer: [databases.pgbouncer] names the env's own database.
	start := func(t *testing.T, rules string, realPgbouncer bool) *env {
		hba := filepath.Join(t.TempDir(), "pg_hba.conf")
		if err := os.WriteFile(hba, []byte(rules), 0o600); err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, func(c *tideConf, db *dbConf) {
			c.Extra = fmt.Sprintf("admin_users = [\"adm\"]\nauth_type = \"hba\"\nauth_hba_file = %q\n", hba)
			c.Users["adm"] = admPass
			if realPgbouncer {
				c.Databases = append(c.Databases, dbConf{Name: "pgbouncer", DBName: db.Name})
			}
		})
		e.secrets = append(e.secrets, admPass)
		return e
	}
	refused := func(t *testing.T, e *env, db string) {
		t.Helper()
		err := connectErr(t, e.tide.ConnString(db, "adm", admPass))
		if sqlState(err) != "28000" || !strings.Contains(err.Error(), "pg_hba.conf rejects connection") {
			t.Errorf("console as %q: %v; want the reject rule's 28000", db, err)
		}
	}
	for _, name := range []string{"pgtide", "pgbouncer"} {
		t.Run("reject "+name, func(t *testing.T) {
			e := start(t, fmt.Sprintf("host %s all 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 scram-sha-256\n", name), false)
			refused(t, e, "pgtide")
			refused(t, e, "pgbouncer")
		})
	}
	t.Run("pgbouncer a real database", func(t *testing.T) {
		e := start(t, "host pgbouncer all 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 scram-sha-256\n", true)
		c, err := pgx.Connect(ctxT(t, 10*time.Second), e.tide.ConnString("pgtide", "adm", admPass)+"&default_query_exec_mode=simple_protocol")
		if err != nil {
			t.Fatalf("console as pgtide, with a real database pgbouncer rejected: %v", err)
		}
		c.Close(context.Background())
		err = connectErr(t, e.tide.ConnString("pgbouncer", e.User, e.Pass))
		if sqlState(err) != "28000" {
			t.Errorf("the real database pgbouncer: %v; want 28000", err)
		}
	})
}
