package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sys/unix"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestConvertPgBouncerHardened converts a hardened PgBouncer deployment
// (client TLS require, server TLS verify-full, HBA, auth_query with
// auth_dbname, so_reuseport, %include, a host list) with the built binary,
// starts pgtide on the result and logs in with pgx, as a user that exists
// only in PostgreSQL.
func TestConvertPgBouncerHardened(t *testing.T) {
	bin := pgtest.BuildPgtide(t)
	certs := pgtest.NewCerts(t)
	pg := pgtest.StartPostgres(t, pgtest.WithServerTLS(certs))
	appUser, appPass := "app_user", "App-"+fmt.Sprint(time.Now().UnixNano())
	authUser, authPass := "pgb_auth", "Auth-"+fmt.Sprint(time.Now().UnixNano())
	pgtest.CreateRole(t, pg, appUser, appPass)
	pgtest.CreateRole(t, pg, authUser, authPass)
	pgtest.CreateDatabase(t, pg, "appdb", appUser)
	pgtest.CreateDatabase(t, pg, "authdb", authUser)
	pg.ExecIn(t, "authdb", `
CREATE SCHEMA lookup;
CREATE FUNCTION lookup.get_auth(i_username text) RETURNS TABLE (usename name, passwd text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = i_username AND rolcanlogin
$$;
REVOKE ALL ON FUNCTION lookup.get_auth(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA lookup TO pgb_auth;
GRANT EXECUTE ON FUNCTION lookup.get_auth(text) TO pgb_auth;`)

	dir := t.TempDir()
	write := func(name, text string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hba := write("pg_hba.conf", "hostssl all all 127.0.0.1/32 scram-sha-256\nhost all all 0.0.0.0/0 reject\n")
	write("userlist.txt", fmt.Sprintf("%q %q\n", authUser, authPass))
	// A host list whose second host has no server (nothing listens on
	// 127.0.0.2): it carries over, and logins that start there (round robin)
	// go on to the first.
	write("databases.ini", fmt.Sprintf("appdb = host=127.0.0.1,127.0.0.2 port=%d dbname=appdb\nauthdb = host=127.0.0.1 port=%d\n", pg.Port, pg.Port))
	sock := t.TempDir()
	ini := write("pgbouncer.ini", fmt.Sprintf(`;; hardened pgbouncer.ini
[databases]
%%include databases.ini

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6432
unix_socket_dir = %s
unix_socket_mode = 0700
auth_type = hba
auth_hba_file = %s
auth_file = userlist.txt
auth_user = pgb_auth
auth_query = SELECT usename, passwd FROM lookup.get_auth($1)
auth_dbname = authdb
client_tls_sslmode = require
client_tls_key_file = %s
client_tls_cert_file = %s
client_tls_ca_file = %s
client_tls_protocols = secure
client_tls_ciphers = default
server_tls_sslmode = verify-full
server_tls_ca_file = %s
so_reuseport = 1
stats_period = 30
log_connections = 1
log_disconnections = 1
log_pooler_errors = 1
pool_mode = transaction
logfile = /var/log/pgbouncer/pgbouncer.log
pidfile = /var/run/pgbouncer/pgbouncer.pid
`, sock, hba, certs.ServerKey, certs.ServerCert, certs.CAFile, certs.CAFile))

	out := filepath.Join(dir, "pgtide.toml")
	cmd := exec.Command(bin, "convert-pgbouncer", "-keep-socket-dir", "-o", out, ini)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("convert-pgbouncer: %v\n%s", err, stderr.String())
	}
	for _, secret := range []string{authPass, appPass} {
		if strings.Contains(stderr.String(), secret) {
			t.Errorf("stderr contains a password")
		}
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, want := range []string{"# not converted: logfile", `host = "127.0.0.1,127.0.0.2"`} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if !strings.Contains(text, `listen = ["127.0.0.1:6432"]`) {
		t.Fatalf("listen not converted:\n%s", text)
	}
	tide := pgtest.StartPgtide(t, strings.Replace(text, "127.0.0.1:6432", "127.0.0.1:{{PORT}}", 1))
	t.Cleanup(func() {
		for _, s := range []string{appPass, authPass} {
			if strings.Contains(tide.Logs(), s) {
				t.Error("pgtide output contains a password")
			}
		}
	})

	// TLS from the client, verify-full to the server, auth_query for the user.
	c := connect(t, tlsURL(tide.Port, "appdb", appUser, appPass, "sslmode", "verify-full", "sslrootcert", certs.CAFile))
	var ssl bool
	if err := c.QueryRow(ctxT(t, 10*time.Second), "select ssl from pg_stat_ssl where pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Fatalf("server connection ssl = %v (%v), want true (server_tls_sslmode = verify-full)", ssl, err)
	}
	// A second server while c holds the first: round robin starts this dial
	// at 127.0.0.2, where nothing listens, and it goes on to 127.0.0.1.
	tx, err := c.Begin(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	c2 := connect(t, tlsURL(tide.Port, "appdb", appUser, appPass, "sslmode", "verify-full", "sslrootcert", certs.CAFile))
	if err := c2.QueryRow(ctxT(t, 10*time.Second), "select ssl from pg_stat_ssl where pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Fatalf("second server connection: ssl = %v (%v), want true", ssl, err)
	}
	_ = tx.Rollback(ctxT(t, 10*time.Second))
	if !strings.Contains(tide.Logs(), "server host failed; trying the next host of the list") {
		t.Errorf("the second dial did not start at 127.0.0.2 (round robin)")
	}
	// client_tls_sslmode = require (and the HBA reject rule) refuse plain TCP.
	if _, err := pgx.Connect(ctxT(t, 10*time.Second), tlsURL(tide.Port, "appdb", appUser, appPass, "sslmode", "disable")); err == nil {
		t.Fatal("a plain-TCP login succeeded; client_tls_sslmode = require was lost")
	}
	// A wrong password still fails.
	if _, err := pgx.Connect(ctxT(t, 10*time.Second), tlsURL(tide.Port, "appdb", appUser, "wrong", "sslmode", "require")); sqlState(err) != "28P01" {
		t.Fatalf("wrong password: %v, want 28P01", err)
	}
	// unix_socket_mode = 0700 was applied.
	if fi, err := os.Stat(filepath.Join(sock, fmt.Sprintf(".s.PGSQL.%d", tide.Port))); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("unix socket: %v, mode %v; want 0700", err, fi.Mode().Perm())
	}
}

// TestServerCheckQuery: an idle server connection older than
// server_check_delay runs server_check_query before it is lent, and one the
// query fails on is closed, not lent.
func TestServerCheckQuery(t *testing.T) {
	run := func(t *testing.T, query, delay string) (*env, *pgx.Conn) {
		e := newEnv(t, func(c *tideConf, _ *dbConf) {
			c.PoolMode = "transaction"
			c.Extra = fmt.Sprintf("server_check_query = %q\nserver_check_delay = %q\n", query, delay)
		})
		return e, connect(t, e.URL())
	}
	t.Run("runs", func(t *testing.T) {
		admPass := "Adm-" + fmt.Sprint(time.Now().UnixNano())
		e := newEnv(t, func(c *tideConf, _ *dbConf) {
			c.PoolMode = "transaction"
			c.Extra = "server_check_query = \"insert into public.checks default values\"\nserver_check_delay = \"0\"\n" +
				"admin_users = [\"adm\"]\n"
			c.Users["adm"] = admPass
		})
		e.secrets = append(e.secrets, admPass)
		d := connect(t, e.DirectURL())
		if _, err := d.Exec(ctxT(t, 10*time.Second), "create table public.checks (id serial)"); err != nil {
			t.Fatal(err)
		}
		c := connect(t, e.URL())
		for i := 0; i < 3; i++ {
			queryInt(t, c, "select 1")
		}
		// With server_check_delay = 0 the idle server is due for a check:
		// the console counts it as sv_used, as PgBouncer does.
		adm := console(t, e.tide.ConnString("pgtide", "adm", admPass))
		if r := findRow(mustAdmin(t, adm, "SHOW POOLS"), "database", e.DB); r["sv_used"] != "1" || r["sv_idle"] != "0" {
			t.Errorf("SHOW POOLS: sv_used %q, sv_idle %q; want 1 and 0", r["sv_used"], r["sv_idle"])
		}
		if r := findRow(mustAdmin(t, adm, "SHOW SERVERS"), "database", e.DB); r["state"] != "used" {
			t.Errorf("SHOW SERVERS: the idle server due for a check is %q; want used", r["state"])
		}
		// The first borrow dialed; every later one was checked.
		if n := queryInt(t, d, "select count(*) from public.checks"); n < 2 {
			t.Fatalf("server_check_query ran %d times over 3 borrows of an idle server, want at least 2", n)
		}
	})
	t.Run("failing query closes the server", func(t *testing.T) {
		e, c := run(t, "select 1/0", "0")
		first := queryInt(t, c, "select pg_backend_pid()")
		second := queryInt(t, c, "select pg_backend_pid()")
		if first == second {
			t.Fatalf("the same server (pid %d) was lent after server_check_query failed on it", first)
		}
		if !strings.Contains(e.tide.Logs(), "server_check_query failed") {
			t.Error("no log line for the failed check")
		}
	})
	t.Run("within the delay no check", func(t *testing.T) {
		_, c := run(t, "select 1/0", "1h")
		first := queryInt(t, c, "select pg_backend_pid()")
		if second := queryInt(t, c, "select pg_backend_pid()"); first != second {
			t.Fatalf("pid %d then %d: the server was checked (and closed) within server_check_delay", first, second)
		}
	})
}

// TestLoginFailureLoggedOnce: a refused login is one log line, at warn, with
// the reason (and the SQLSTATE); duration fields carry their unit.
func TestLoginFailureLoggedOnce(t *testing.T) {
	e := newEnv(t, nil)
	if err := connectErr(t, e.tide.ConnString(e.DB, e.User, "wrong-password")); sqlState(err) != "28P01" {
		t.Fatalf("wrong password: %v", err)
	}
	c := connect(t, e.URL())
	c.Close(ctxT(t, 5*time.Second))
	// The good client's disconnect line comes after everything about the bad one.
	if !pgtest.Eventually(10*time.Second, func() bool {
		for _, l := range strings.Split(e.tide.Logs(), "\n") {
			if strings.Contains(l, `"client disconnected"`) && strings.Contains(l, e.User) {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no disconnect line:\n%s", e.tide.Logs())
	}
	var failed []map[string]any
	for _, l := range strings.Split(e.tide.Logs(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || m["user"] != e.User {
			continue
		}
		if lvl := m["level"]; lvl == "warn" || lvl == "error" || strings.Contains(fmt.Sprint(m["message"]), "fail") {
			failed = append(failed, m)
		}
		if m["message"] == "client disconnected" {
			if _, ok := m["duration_ms"]; !ok {
				t.Errorf("client disconnected line has no duration_ms: %v", m)
			}
			if _, ok := m["duration"]; ok {
				t.Errorf("client disconnected line has a duration without its unit: %v", m)
			}
		}
	}
	if len(failed) != 1 {
		t.Fatalf("the failed login was logged %d times, want once:\n%v", len(failed), failed)
	}
	if m := failed[0]; m["level"] != "warn" || m["reason"] != "password" || m["sqlstate"] != "28P01" {
		t.Errorf("login failure line = %v; want level warn, reason password, sqlstate 28P01", m)
	}
}

// TestConvertDebianConfigForUnit converts a pgbouncer.ini as Debian ships
// it (unix socket in /var/run/postgresql, which the sandboxed unit can
// neither write nor share) and checks that the socket moves to the unit's
// RuntimeDirectory, and that the result starts and serves clients on that
// socket (the directory is a temp dir here: /run needs root).
func TestConvertDebianConfigForUnit(t *testing.T) {
	bin := pgtest.BuildPgtide(t)
	unit, err := os.ReadFile("../systemd/pgtide.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^RuntimeDirectory=(\S+)$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("systemd/pgtide.service has no RuntimeDirectory=")
	}
	runtimeDir := "/run/" + string(m[1])
	e := newEnv(t, nil) // a role and database on the shared server
	dir := t.TempDir()
	ini := filepath.Join(dir, "pgbouncer.ini")
	os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(fmt.Sprintf("%q %q\n", e.User, e.Pass)), 0o600)
	os.WriteFile(ini, []byte(fmt.Sprintf(`;; Debian's /etc/pgbouncer/pgbouncer.ini, with one database
[databases]
%s = host=127.0.0.1 port=%d

[pgbouncer]
logfile = /var/log/postgresql/pgbouncer.log
pidfile = /var/run/postgresql/pgbouncer.pid
listen_addr = localhost
listen_port = 6432
unix_socket_dir = /var/run/postgresql
auth_type = md5
auth_file = userlist.txt
`, e.DB, e.pg.Port)), 0o600)
	out, err := exec.Command(bin, "convert-pgbouncer", ini).Output()
	if err != nil {
		t.Fatalf("convert-pgbouncer: %v", err)
	}
	text := string(out)
	if !strings.Contains(text, fmt.Sprintf("unix_socket_dir = %q", runtimeDir)) {
		t.Fatalf("unix_socket_dir is not the unit's RuntimeDirectory %s:\n%s", runtimeDir, text)
	}
	sock := t.TempDir()
	text = strings.Replace(text, fmt.Sprintf("unix_socket_dir = %q", runtimeDir), fmt.Sprintf("unix_socket_dir = %q", sock), 1)
	text = strings.Replace(text, `"localhost:6432"`, `"127.0.0.1:{{PORT}}"`, 1)
	tide := pgtest.StartPgtide(t, text)
	c := connect(t, fmt.Sprintf("host=%s port=%d dbname=%s user=%s password=%s", sock, tide.Port, e.DB, e.User, e.Pass))
	if queryInt(t, c, "select 6*7") != 42 {
		t.Fatal("query over the unix socket")
	}
}

// pgtideSockets returns pgtide's TCP sockets (duplicated into this process
// with pidfd_getfd; close them), keyed "client", "server" or "listener" by
// whether the local port is pgtide's and whether there is a peer.
func pgtideSockets(t *testing.T, pid, tidePort, pgPort int) map[string][]int {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open: %v", err)
	}
	defer unix.Close(pidfd)
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]int{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, n, 0)
		if err != nil {
			continue
		}
		kind := ""
		if sa, err := unix.Getsockname(fd); err == nil {
			local := sockPort(sa)
			peer, perr := unix.Getpeername(fd)
			switch {
			case local == tidePort && perr != nil:
				kind = "listener"
			case local == tidePort:
				kind = "client"
			case perr == nil && sockPort(peer) == pgPort:
				kind = "server"
			}
		}
		if kind == "" {
			unix.Close(fd)
			continue
		}
		out[kind] = append(out[kind], fd)
	}
	return out
}

func sockPort(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return -1
}

// TestTCPOptions: tcp_keepalive, tcp_keepidle, tcp_keepintvl, tcp_keepcnt
// and tcp_user_timeout are set on client and server sockets, and
// listen_backlog on the listener, as read back from pgtide's own sockets.
func TestTCPOptions(t *testing.T) {
	e := newEnv(t, func(c *tideConf, _ *dbConf) {
		c.Extra = "tcp_keepidle = \"7s\"\ntcp_keepintvl = \"3s\"\ntcp_keepcnt = 4\ntcp_user_timeout = \"9s\"\nlisten_backlog = 17\n"
	})
	c := connect(t, e.URL()) // session mode: the server stays attached
	queryInt(t, c, "select 1")
	socks := pgtideSockets(t, e.tide.Cmd.Process.Pid, e.tide.Port, e.pg.Port)
	defer func() {
		for _, fds := range socks {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}()
	for _, kind := range []string{"client", "server"} {
		if len(socks[kind]) == 0 {
			t.Fatalf("no %s socket found in pgtide", kind)
		}
		for _, fd := range socks[kind] {
			for _, o := range []struct {
				name       string
				level, opt int
				want       int
			}{
				{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
				{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 7},
				{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 3},
				{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 4},
				{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 9000},
			} {
				if got, err := unix.GetsockoptInt(fd, o.level, o.opt); err != nil || got != o.want {
					t.Errorf("%s socket: %s = %d (%v), want %d", kind, o.name, got, err, o.want)
				}
			}
		}
	}
	// The accept queue length of a listening socket is what ss shows as Send-Q.
	ss := needBinary(t, "ss", "iproute2")
	out, err := exec.Command(ss, "-Hltn", fmt.Sprintf("sport = :%d", e.tide.Port)).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	if f := strings.Fields(string(out)); len(f) < 3 || f[2] != "17" {
		t.Errorf("listener Send-Q (backlog) = %q, want 17", out)
	}
}

// TestClientIdleTimeout: a client idle outside a transaction for longer than
// client_idle_timeout is closed with 57P05; one idle inside a transaction is
// not (that is idle_transaction_timeout's business, off here).
func TestClientIdleTimeout(t *testing.T) {
	e := newEnv(t, func(c *tideConf, _ *dbConf) {
		c.PoolMode = "transaction"
		c.Extra = "client_idle_timeout = \"1s\"\n"
	})
	inTxn := connect(t, e.URL())
	tx, err := inTxn.Begin(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	idle := connect(t, e.URL())
	queryInt(t, idle, "select 1")
	if !pgtest.Eventually(20*time.Second, func() bool { return strings.Contains(e.tide.Logs(), "client_idle_timeout: closing the client") }) {
		t.Fatal("the idle client was not closed")
	}
	_, err = idle.Exec(ctxT(t, 10*time.Second), "select 1")
	if err == nil {
		t.Fatal("the idle client still works")
	}
	if st := sqlState(err); st != "57P05" && !strings.Contains(err.Error(), "idle-session timeout") {
		t.Errorf("after the close: %v, want 57P05", err)
	}
	// The client in a transaction has been idle longer, and is still there.
	var n int
	if err := tx.QueryRow(ctxT(t, 10*time.Second), "select 5").Scan(&n); err != nil || n != 5 {
		t.Fatalf("client in a transaction: %v", err)
	}
	if err := tx.Commit(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestClientConnectionLimits: max_db_client_connections and
// max_user_client_connections (global, per database, per user) refuse the
// client one past the limit with PostgreSQL's 53300, and let the next one in
// once a client has left.
func TestClientConnectionLimits(t *testing.T) {
	var other string
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		other = uniqueName(t, "o")
		c.Databases = append(c.Databases, dbConf{Name: other, DBName: db.Name})
		c.Extra = "max_user_client_connections = 3\n"
	})
	// A per-database limit of 2 for the first database (rewritten config, reloaded).
	text := strings.Replace(e.conf.TOML(e.pg.Port), fmt.Sprintf("[databases.%s]\n", e.DB), fmt.Sprintf("[databases.%s]\nmax_db_client_connections = 2\n", e.DB), 1)
	e.rewriteConfig(t, text)
	before := strings.Count(e.tide.Logs(), "configuration reloaded")
	if err := e.tide.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !pgtest.Eventually(10*time.Second, func() bool { return strings.Count(e.tide.Logs(), "configuration reloaded") > before }) {
		t.Fatalf("reload not applied:\n%s", e.tide.Logs())
	}
	conns := []*pgx.Conn{connect(t, e.URL()), connect(t, e.URL())}
	if err := connectErr(t, e.URL()); sqlState(err) != "53300" || !strings.Contains(err.Error(), fmt.Sprintf("too many connections for database %q", e.DB)) {
		t.Fatalf("third client of database %s: %v, want 53300 too many connections for database", e.DB, err)
	}
	// The user has 2 clients; a third in the other database is allowed (user limit 3), a fourth is not.
	conns = append(conns, connect(t, e.tide.ConnString(other, e.User, e.Pass)))
	err := connectErr(t, e.tide.ConnString(other, e.User, e.Pass))
	if sqlState(err) != "53300" || !strings.Contains(err.Error(), fmt.Sprintf("too many connections for role %q", e.User)) {
		t.Fatalf("fourth client of the user: %v, want 53300 too many connections for role", err)
	}
	// One leaves; a new client of the first database gets in.
	conns[0].Close(ctxT(t, 5*time.Second))
	if !pgtest.Eventually(10*time.Second, func() bool { return connectErr(t, e.URL()) == nil }) {
		t.Fatal("no login after a client left")
	}
}

// TestServerLoginRetry: after pgtide's own login to PostgreSQL fails, new
// clients of that pool get the same error at once for server_login_retry,
// without another login attempt reaching the server; with it off every
// client tries again.
func TestServerLoginRetry(t *testing.T) {
	for _, tc := range []struct {
		retry        string
		wantAttempts int
	}{{"1h", 1}, {"0", 3}} {
		t.Run("retry="+tc.retry, func(t *testing.T) {
			pg := pgtest.Shared(t)
			role := uniqueName(t, "r")
			pgtest.CreateRole(t, pg, role, "Right-"+role)
			e := newEnv(t, func(c *tideConf, db *dbConf) {
				db.User, db.Password = role, "wrong-"+role // pgtide's server login fails
				c.Extra = fmt.Sprintf("server_login_retry = %q\n", tc.retry)
			})
			for i := 0; i < 3; i++ {
				err := connectErr(t, e.URL())
				if sqlState(err) != "28P01" || !strings.Contains(err.Error(), fmt.Sprintf("password authentication failed for user %q", role)) {
					t.Fatalf("client %d: %v, want the server's 28P01 for %s", i, err, role)
				}
			}
			want := fmt.Sprintf("password authentication failed for user %q", role)
			if !pgtest.Eventually(5*time.Second, func() bool { return strings.Count(pg.Logs(), want) >= tc.wantAttempts }) {
				t.Fatalf("PostgreSQL saw %d failed logins of %s, want %d", strings.Count(pg.Logs(), want), role, tc.wantAttempts)
			}
			if n := strings.Count(pg.Logs(), want); n != tc.wantAttempts {
				t.Fatalf("PostgreSQL saw %d failed logins of %s, want %d", n, role, tc.wantAttempts)
			}
			// pgtide's line for the refused client says whose refusal it was.
			if !strings.Contains(e.tide.Logs(), `"reason":"server_login"`) {
				t.Errorf("no login failed line with reason server_login")
			}
		})
	}
}

// TestServerLoginErrorOneLine: pgtide's refused server login over TLS with
// sslmode prefer (a TLS attempt, then none, as libpq would) reaches the
// client as one error, one line, with the server's SQLSTATE: not the
// multi-line report of both attempts.
func TestServerLoginErrorOneLine(t *testing.T) {
	certs := pgtest.NewCerts(t)
	pg := pgtest.StartPostgres(t, pgtest.WithServerTLS(certs))
	role := "one_line_role"
	pgtest.CreateRole(t, pg, role, "Right-pw")
	pgtest.CreateDatabase(t, pg, "oneline", role)
	tide := pgtest.StartPgtide(t, fmt.Sprintf(`listen = ["127.0.0.1:{{PORT}}"]
log_format = "json"
[databases.oneline]
host = "127.0.0.1"
port = %d
server_tls_sslmode = "prefer"
[users.%s]
password = "Wrong-pw"
`, pg.Port, role))
	err := connectErr(t, tide.ConnString("oneline", role, "Wrong-pw"))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28P01" {
		t.Fatalf("login: %v, want the server's 28P01", err)
	}
	if strings.Contains(pe.Message, "\n") || strings.Count(pe.Message, "SQLSTATE") > 0 || strings.Contains(strings.ToLower(pe.Message), "tls") {
		t.Errorf("the client's error is not one plain line: %q", pe.Message)
	}
}
