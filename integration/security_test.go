package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// Tests of issue 13 (security hardening) items 3, 4, 5, 8, 9 and 11; the
// threat model and the list of defences are in docs/security.md.

// installLookup creates the README's lookup function in db, executable by
// authUser.
func installLookup(t *testing.T, pg *pgtest.Postgres, db, authUser string) {
	t.Helper()
	pg.ExecIn(t, db, fmt.Sprintf(`
CREATE SCHEMA pgtide;
CREATE FUNCTION pgtide.user_lookup(i_username text)
RETURNS TABLE (usename name, passwd text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT rolname, CASE WHEN rolvaliduntil IS NULL OR rolvaliduntil > now() THEN rolpassword END
  FROM pg_catalog.pg_authid
  WHERE rolname = i_username AND rolcanlogin
$$;
REVOKE ALL ON FUNCTION pgtide.user_lookup(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgtide TO %[1]s;
GRANT EXECUTE ON FUNCTION pgtide.user_lookup(text) TO %[1]s;`, pgtest.QuoteIdent(authUser)))
}

// checkConfig runs `pgtide -check-config` on text and returns its exit
// code and output.
func checkConfig(t *testing.T, text string) (int, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "check.toml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, "{{PORT}}", "6432")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(pgtest.BuildPgtide(t), "-check-config", path).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if ee != nil {
		return ee.ExitCode(), string(out)
	}
	return 0, string(out)
}

// authQueryTOML is a pgtide configuration with auth_query (authUser), a
// [databases."*"] section pointing at pg, and extraTop added to the
// top-level keys (auth_dbname among them, or not).
func authQueryTOML(pg *pgtest.Postgres, authUser, authPass, extraTop string) string {
	return fmt.Sprintf(`listen = ["127.0.0.1:{{PORT}}"]
log_format = "json"
log_level = "debug"
auth_user = %q
auth_cache_ttl = "1h"
%s
[databases."*"]
host = "127.0.0.1"
port = %d
server_tls_sslmode = "disable"

[users.%s]
password = %q
`, authUser, extraTop, pg.Port, authUser, authPass)
}

// TestAuthQueryRunsInAuthDBName: the owner of a database a client can name
// (through "*") defines pgtide.user_lookup there to answer with their own
// verifier for any role. pgtide must never run auth_query in that database
// (issue 13.4): a configuration without auth_dbname is refused, and with it
// the lookup runs in auth_dbname only.
func TestAuthQueryRunsInAuthDBName(t *testing.T) {
	pg := pgtest.Shared(t)
	stamp := fmt.Sprint(time.Now().UnixNano())
	authUser, authPass := uniqueName(t, "a"), "Auth-"+stamp
	victim, victimPass := uniqueName(t, "v"), "Victim-"+stamp
	attacker, attackerPass := uniqueName(t, "m"), "Mallory-"+stamp
	trusted, evil := uniqueName(t, "dt"), uniqueName(t, "de")
	for _, r := range [][2]string{{authUser, authPass}, {victim, victimPass}, {attacker, attackerPass}} {
		pgtest.CreateRole(t, pg, r[0], r[1])
	}
	pgtest.CreateDatabase(t, pg, trusted, pg.SuperUser)
	pgtest.CreateDatabase(t, pg, evil, attacker)
	installLookup(t, pg, trusted, authUser)
	// The attacker's lookup: their own verifier for whoever is asked about,
	// and a record of each call.
	attackerVerifier := storedSecret(t, pg, attacker)
	pg.ExecIn(t, evil, fmt.Sprintf(`
SET ROLE %[1]s;
CREATE SCHEMA pgtide;
CREATE TABLE pgtide.calls (usename text);
CREATE FUNCTION pgtide.user_lookup(i_username text)
RETURNS TABLE (usename name, passwd text) LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO pgtide.calls VALUES (i_username);
  RETURN QUERY SELECT i_username::name, %[2]s::text;
END $$;
GRANT USAGE ON SCHEMA pgtide TO PUBLIC;
GRANT INSERT ON pgtide.calls TO PUBLIC;
GRANT EXECUTE ON FUNCTION pgtide.user_lookup(text) TO PUBLIC;`, pgtest.QuoteIdent(attacker), pgtest.QuoteLiteral(attackerVerifier)))
	calls := func() int64 {
		c := super(t, pg, evil)
		return queryInt(t, c, "SELECT count(*) FROM pgtide.calls")
	}
	attack := func(tide *pgtest.Pgtide) error {
		return connectErr(t, tide.ConnString(evil, victim, attackerPass))
	}

	noAuthDB := authQueryTOML(pg, authUser, authPass, "")
	if code, out := checkConfig(t, noAuthDB); code == 0 {
		// Today's behaviour, shown in full: the lookup runs in the
		// attacker's database and pgtide takes their password for the victim's.
		tide := pgtest.StartPgtide(t, noAuthDB)
		err := attack(tide)
		t.Fatalf("auth_user without auth_dbname was accepted (%s); logging in as %s to %s with the attacker's password then gave %v, after %d calls of the attacker's lookup function",
			strings.TrimSpace(out), victim, evil, err, calls())
	} else if code != 1 || !strings.Contains(out, "auth_dbname: must be set when auth_user is set") {
		t.Fatalf("-check-config without auth_dbname: exit %d, output %q; want exit 1 naming auth_dbname", code, out)
	}

	tide := pgtest.StartPgtide(t, authQueryTOML(pg, authUser, authPass, fmt.Sprintf("auth_dbname = %q\n", trusted)))
	t.Cleanup(func() {
		for _, s := range []string{authPass, victimPass, attackerPass, attackerVerifier} {
			if strings.Contains(tide.Logs(), s) {
				t.Errorf("pgtide output contains a secret")
			}
		}
	})
	if err := attack(tide); sqlState(err) != "28P01" || !strings.Contains(err.Error(), "password authentication failed for user") {
		t.Fatalf("victim with the attacker's password through %s: %v; want pgtide's 28P01", evil, err)
	}
	if n := calls(); n != 0 {
		t.Fatalf("the attacker's lookup function ran %d times", n)
	}
	// The victim, with the victim's password, still reaches every database.
	for _, db := range []string{evil, trusted} {
		c := connect(t, tide.ConnString(db, victim, victimPass))
		if who := queryString(t, c, "SELECT current_user || '@' || current_database()"); who != victim+"@"+db {
			t.Fatalf("logged in as %s", who)
		}
	}
}

// goroutines reads go_goroutines from pgtide's metrics endpoint.
func goroutines(t *testing.T, base string) float64 {
	t.Helper()
	v, ok := scrapeMetrics(t, base).get("go_goroutines")
	if !ok {
		t.Fatal("no go_goroutines in /metrics")
	}
	return v
}

// TestUnauthenticatedStartupsLeaveNothing: clients that never authenticate,
// each naming a database of its own (through "*") and a user that is not
// in [users] (so auth_query looks it up), leave no goroutine, no pool, no
// metric series and no server connection behind (issue 13.3). The test
// runs with auth_dbname left out if pgtide accepts that (the configuration
// of the report), else with it set.
func TestUnauthenticatedStartupsLeaveNothing(t *testing.T) {
	pg := pgtest.Shared(t)
	stamp := fmt.Sprint(time.Now().UnixNano())
	authUser, authPass := uniqueName(t, "a"), "Auth-"+stamp
	user, pass := uniqueName(t, "u"), "Pw-"+stamp
	authDB := uniqueName(t, "d")
	pgtest.CreateRole(t, pg, authUser, authPass)
	pgtest.CreateRole(t, pg, user, pass)
	pgtest.CreateDatabase(t, pg, authDB, pg.SuperUser)
	installLookup(t, pg, authDB, authUser)
	mport, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", mport)
	top := fmt.Sprintf("metrics_listen = \"127.0.0.1:%d\"\n", mport)
	if code, _ := checkConfig(t, authQueryTOML(pg, authUser, authPass, top)); code != 0 {
		top += fmt.Sprintf("auth_dbname = %q\n", authDB)
	} else {
		t.Log("auth_user without auth_dbname is accepted: running without it")
	}
	tide := pgtest.StartPgtide(t, authQueryTOML(pg, authUser, authPass, top))
	if !pgtest.Eventually(10*time.Second, func() bool { c, _, err := tryHTTPGet(base + "/healthz"); return err == nil && c == 200 }) {
		t.Fatal("metrics endpoint not answering")
	}

	attempt := func(i int) error {
		db := fmt.Sprintf("nodb_%s_%d", stamp, i)
		if i%2 == 0 {
			return connectErr(t, tide.ConnString(db, fmt.Sprintf("nobody_%s_%d", stamp, i), "x"))
		}
		return connectErr(t, tide.ConnString(db, user, "wrong")) // a real role, a wrong password
	}
	// Warm up (the auth pool and its connections), then the baseline.
	for i := range 4 {
		_ = attempt(-1 - i)
	}
	before := goroutines(t, base)
	const n = 200
	for i := range n {
		if err := attempt(i); sqlState(err) != "28P01" && !t.Failed() {
			t.Errorf("attempt %d: %v; want 28P01", i, err)
		}
	}
	// Slack for goroutines of the runtime and the HTTP server.
	var after float64
	if !pgtest.Eventually(15*time.Second, func() bool { after = goroutines(t, base); return after <= before+10 }) {
		t.Fatalf("goroutines: %v before %d failed logins, %v after; want no growth", before, n, after)
	}
	s := scrapeMetrics(t, base)
	for series := range s {
		if strings.Contains(series, "nodb_"+stamp) {
			t.Fatalf("metric series left for a database named by a client that never logged in: %s", series)
		}
	}
	mon := super(t, pg, "postgres")
	if got := queryInt(t, mon, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", authUser); got > 2 {
		t.Fatalf("%d server connections as auth_user; want at most the auth pool's 2", got)
	}
}

// adminConsole opens the admin console of tide as user.
func adminConsole(t *testing.T, tide *pgtest.Pgtide, user, pass string) *pgconn.PgConn {
	t.Helper()
	return console(t, tide.ConnString("pgtide", user, pass))
}

// poolNames lists the databases of SHOW POOLS.
func poolNames(t *testing.T, adm *pgconn.PgConn) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, r := range mustAdmin(t, adm, "SHOW POOLS") {
		out[r["database"]] = true
	}
	return out
}

// TestWildcardPoolsFreed: a "*" database makes one pool per name a client
// logs in to. A login that fails leaves none, and an auto-created pool
// unused for autodb_idle_timeout is freed with its servers and metric series,
// while one with a client stays (issue 13.5). autodb_idle_timeout reloads.
func TestWildcardPoolsFreed(t *testing.T) {
	pg := pgtest.Shared(t)
	stamp := fmt.Sprint(time.Now().UnixNano())
	user, pass := uniqueName(t, "u"), "Pw-"+stamp
	admPass := "Adm-" + stamp
	dbA, dbB := uniqueName(t, "da"), uniqueName(t, "db")
	pgtest.CreateRole(t, pg, user, pass)
	pgtest.CreateDatabase(t, pg, dbA, user)
	pgtest.CreateDatabase(t, pg, dbB, user)
	mport, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", mport)
	conf := func(idle string) string {
		return fmt.Sprintf(`listen = ["127.0.0.1:{{PORT}}"]
log_format = "json"
admin_users = ["adm"]
metrics_listen = "127.0.0.1:%d"
autodb_idle_timeout = %q

[databases."*"]
host = "127.0.0.1"
port = %d
server_tls_sslmode = "disable"

[users.%s]
password = %q

[users.adm]
password = %q
`, mport, idle, pg.Port, user, pass, admPass)
	}
	tide := pgtest.StartPgtide(t, conf("1h"))
	adm := adminConsole(t, tide, "adm", admPass)

	// Logins that fail at the server (no such database): no pool is left.
	for i := range 20 {
		db := fmt.Sprintf("nodb_%s_%d", stamp, i)
		if err := connectErr(t, tide.ConnString(db, user, pass)); sqlState(err) != "3D000" {
			t.Fatalf("login to %s: %v; want 3D000 from the server", db, err)
		}
	}
	for db := range poolNames(t, adm) {
		if strings.HasPrefix(db, "nodb_") {
			t.Fatalf("SHOW POOLS lists %s, whose only login failed", db)
		}
	}

	// Two databases reached through "*": A keeps a client, B's leaves.
	a := connect(t, tide.ConnString(dbA, user, pass))
	b := connect(t, tide.ConnString(dbB, user, pass))
	queryInt(t, a, "SELECT 1")
	queryInt(t, b, "SELECT 1")
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := poolNames(t, adm); !p[dbA] || !p[dbB] {
		t.Fatalf("SHOW POOLS %v; want %s and %s", p, dbA, dbB)
	}
	query := `pgtide_pool_query_duration_seconds_count`
	if _, ok := scrapeMetrics(t, base).get(query, `database="`+dbB+`"`); !ok {
		t.Fatalf("no %s series for %s", query, dbB)
	}

	// Reload with a short timeout: B goes, with its server and series.
	if err := os.WriteFile(tide.ConfigPath, []byte(strings.ReplaceAll(conf("1s"), "{{PORT}}", fmt.Sprint(tide.Port))), 0o600); err != nil {
		t.Fatal(err)
	}
	mustAdmin(t, adm, "RELOAD")
	if !pgtest.Eventually(30*time.Second, func() bool { return !poolNames(t, adm)[dbB] }) {
		t.Fatalf("pool of %s not freed after autodb_idle_timeout", dbB)
	}
	mon := super(t, pg, "postgres")
	if !pgtest.Eventually(10*time.Second, func() bool {
		return queryInt(t, mon, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", dbB) == 0
	}) {
		t.Fatalf("server connections to %s left after its pool was freed", dbB)
	}
	for series := range scrapeMetrics(t, base) {
		if strings.Contains(series, `database="`+dbB+`"`) {
			t.Fatalf("series left for the freed pool: %s", series)
		}
	}
	// A's client kept its pool through the same sweeps, and still works.
	if !poolNames(t, adm)[dbA] {
		t.Fatalf("the pool of %s was freed while a client was connected", dbA)
	}
	if queryInt(t, a, "SELECT 2") != 2 {
		t.Fatal("query on the client that stayed")
	}
	// B again: a fresh pool.
	b = connect(t, tide.ConnString(dbB, user, pass))
	if queryInt(t, b, "SELECT 3") != 3 {
		t.Fatal("query after the pool was freed")
	}
	b.Close(context.Background())
	a.Close(context.Background())
	if !pgtest.Eventually(30*time.Second, func() bool { p := poolNames(t, adm); return !p[dbA] && !p[dbB] }) {
		t.Fatalf("pools not freed once their clients left: %v", poolNames(t, adm))
	}
}

// TestAuthQueryCacheDroppedOnServerRefusal: an auth_query user's cached
// secret goes as soon as PostgreSQL refuses a server login for that role,
// so a changed password or NOLOGIN takes effect then, not auth_cache_ttl
// later (issue 13.11).
func TestAuthQueryCacheDroppedOnServerRefusal(t *testing.T) {
	pg := pgtest.Shared(t)
	stamp := fmt.Sprint(time.Now().UnixNano())
	authUser, authPass := uniqueName(t, "a"), "Auth-"+stamp
	alice, p1, p2 := uniqueName(t, "u"), "Old-"+stamp, "New-"+stamp
	d1, d2 := uniqueName(t, "d1"), uniqueName(t, "d2")
	pgtest.CreateRole(t, pg, authUser, authPass)
	pgtest.CreateRole(t, pg, alice, p1)
	pgtest.CreateDatabase(t, pg, d1, alice)
	pgtest.CreateDatabase(t, pg, d2, alice)
	installLookup(t, pg, d1, authUser)
	conf := defaultConf()
	conf.Users[authUser] = authPass
	conf.Databases = []dbConf{{Name: d1}, {Name: d2}}
	conf.Extra = fmt.Sprintf("auth_user = %q\nauth_dbname = %q\nauth_cache_ttl = \"1h\"\n", authUser, d1)
	tide := pgtest.StartPgtide(t, conf.TOML(pg.Port))
	login := func(db, pw string) error { return connectErr(t, tide.ConnString(db, alice, pw)) }

	// The secret is cached and d1's pool keeps an idle server logged in as alice.
	if err := login(d1, p1); err != nil {
		t.Fatal(err)
	}
	pg.Exec(t, fmt.Sprintf("ALTER ROLE %s PASSWORD %s", pgtest.QuoteIdent(alice), pgtest.QuoteLiteral(p2)))
	// The old password against the cache: pgtide lets it through, the server
	// refuses the new server login for d2 (a verifier it no longer has).
	if err := login(d2, p1); err == nil {
		t.Fatal("the old password reached d2 after the change")
	}
	// From now on the old password is refused by pgtide itself, even where an
	// idle server of alice is pooled, and the new one works at once.
	if err := login(d1, p1); sqlState(err) != "28P01" {
		t.Fatalf("old password after a refused server login: %v; want 28P01 (pgtide still trusts its cached secret)", err)
	}
	if err := login(d1, p2); err != nil {
		t.Fatalf("new password: %v (pgtide still trusts its cached secret)", err)
	}

	// NOLOGIN: the first refused server login ends pgtide's trust too.
	pg.Exec(t, fmt.Sprintf("ALTER ROLE %s NOLOGIN", pgtest.QuoteIdent(alice)))
	if err := login(d2, p2); err == nil {
		t.Fatal("a NOLOGIN role reached d2")
	}
	if err := login(d1, p2); sqlState(err) != "28P01" {
		t.Fatalf("NOLOGIN role after a refused server login: %v; want 28P01", err)
	}
	for _, s := range []string{authPass, p1, p2} {
		if strings.Contains(tide.Logs(), s) {
			t.Errorf("pgtide output contains a password")
		}
	}
}

// TestBrokenPasswordLineNotEchoed: a password line that is not valid TOML
// fails the admin RELOAD, SIGHUP and -check-config without repeating any
// of the value: not in the RELOAD reply, the JSON log or stderr (13.8).
func TestBrokenPasswordLineNotEchoed(t *testing.T) {
	a := newAdminEnv(t)
	adm := console(t, a.adminURL())
	const secret = "Zqxwvkp7Jm4"
	frags := []string{}
	for i := 0; i+3 <= 7; i++ {
		frags = append(frags, secret[i:i+3])
	}
	leaks := func(s string) string {
		for _, f := range frags {
			if strings.Contains(s, f) {
				return f
			}
		}
		return ""
	}
	broken := a.conf.TOML(a.pg.Port) + "\n[users.mallory]\npassword = " + secret + "\n"
	a.rewriteConfig(t, broken)

	_, err := adminRun(t, adm, "RELOAD")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "F0000" || !strings.Contains(pe.Message, "invalid TOML") {
		t.Fatalf("RELOAD of a broken file: %v; want F0000 invalid TOML", err)
	}
	if f := leaks(pe.Message + pe.Detail + pe.Hint); f != "" {
		t.Fatalf("RELOAD reply repeats part of the password (%q): %s", f, pe.Message)
	}
	if err := a.tide.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !pgtest.Eventually(10*time.Second, func() bool {
		return strings.Count(a.tide.Logs(), "reload failed; keeping the running configuration") >= 2
	}) {
		t.Fatal("no reload failure logged after SIGHUP")
	}
	if f := leaks(a.tide.Logs()); f != "" {
		t.Fatalf("the log repeats part of the password (%q)", f)
	}
	code, out := checkConfig(t, broken)
	if code != 1 || !strings.Contains(out, "invalid TOML") {
		t.Fatalf("-check-config: exit %d, %q", code, out)
	}
	if f := leaks(out); f != "" {
		t.Fatalf("-check-config repeats part of the password (%q): %s", f, out)
	}
	queryInt(t, connect(t, a.URL()), "SELECT 1") // still serving the old configuration
}

// TestFilePermissions: pgtide refuses a TLS private key with group or world
// access, as PostgreSQL does, at startup and on reload, and warns about a
// world-readable configuration file that holds passwords (issue 13.9).
func TestFilePermissions(t *testing.T) {
	pg := pgtest.Shared(t)
	certs := pgtest.NewCerts(t)
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.Extra = fmt.Sprintf("client_tls_cert_file = %q\nclient_tls_key_file = %q\n", certs.ServerCert, certs.ServerKey)
	})
	text := e.conf.TOML(pg.Port)
	want := fmt.Sprintf("private key file %q has group or world access", certs.ServerKey)

	// Startup with a 0644 key: refused with PostgreSQL's message.
	if err := os.Chmod(certs.ServerKey, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "p.toml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, "{{PORT}}", "0")), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pgtest.BuildPgtide(t), "-config", path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), want) {
			t.Fatalf("startup with a 0644 key: %v, output %q; want it refused: %s", err, out.String(), want)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("pgtide started with a 0644 private key; output %q", out.String())
	}
	if code, msg := checkConfig(t, text); code != 1 || !strings.Contains(msg, want) {
		t.Fatalf("-check-config with a 0644 key: exit %d, %q", code, msg)
	}

	// Reload of the running pgtide (key 0600 at its start) with the key now
	// readable by others: refused, the old configuration keeps serving.
	if err := e.tide.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// (The JSON log escapes the quotes around the path.)
	if !pgtest.Eventually(10*time.Second, func() bool { return strings.Contains(e.tide.Logs(), "has group or world access") }) {
		t.Fatalf("reload with a 0644 key not refused; log:\n%s", e.tide.Logs())
	}
	if err := os.Chmod(certs.ServerKey, 0o600); err != nil {
		t.Fatal(err)
	}
	queryInt(t, connect(t, tlsURL(e.tide.Port, e.DB, e.User, e.Pass, "sslmode", "require")), "SELECT 1")

	// A world-readable configuration file with passwords: a warning.
	if err := os.Chmod(e.tide.ConfigPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.tide.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !pgtest.Eventually(10*time.Second, func() bool {
		return strings.Contains(e.tide.Logs(), "holds passwords and is readable by every user of this machine")
	}) {
		t.Fatal("no warning about a world-readable configuration file with passwords")
	}
}

// TestReplicationRefused: a replication connection is refused with 0A000,
// before any server is involved.
func TestReplicationRefused(t *testing.T) {
	e := newEnv(t, nil)
	cfg, err := pgconn.ParseConfig(e.URL())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"database", "true"} {
		cfg.RuntimeParams["replication"] = v
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := pgconn.ConnectConfig(ctx, cfg)
		cancel()
		if err == nil {
			c.Close(context.Background())
			t.Fatalf("replication=%s: connected", v)
		}
		if sqlState(err) != "0A000" {
			t.Fatalf("replication=%s: %v; want 0A000", v, err)
		}
	}
}

// halfOpenLogins opens n connections to e that send a startup packet for
// database db and stop at the password request, where a login holds its
// place until client_login_timeout.
func halfOpenLogins(t *testing.T, e *env, n int, db string) {
	t.Helper()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", e.tide.Port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write(startupPacket("whoever", db)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := pgproto3.NewFrontend(c, c).Receive(); err != nil {
			t.Fatal(err)
		}
	}
}

// consoleEnv is a pgtide with admin user adm; maxClients 0 keeps the default.
func consoleEnv(t *testing.T, maxClients int) (*env, string) {
	admPass := "Adm-" + fmt.Sprint(time.Now().UnixNano())
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		if maxClients > 0 {
			c.MaxClientConn = maxClients
		}
		c.Extra = "admin_users = [\"adm\"]\n"
		c.Users["adm"] = admPass
	})
	e.secrets = append(e.secrets, admPass)
	return e, admPass
}

// TestConsoleNotLockedOutByHalfOpenLogins: with max_client_conn = 3 and
// three connections sitting at the password prompt, the admin console
// still gets in: a console login that finds max_client_conn full takes one
// of the places kept for it. Before, it got 53300 like everyone else. A
// fourth ordinary client is still refused.
func TestConsoleNotLockedOutByHalfOpenLogins(t *testing.T) {
	e, admPass := consoleEnv(t, 3)
	halfOpenLogins(t, e, 3, e.DB)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, e.tide.ConnString("pgtide", "adm", admPass))
	if err != nil {
		t.Fatalf("admin console refused while 3 unauthenticated connections sit at the password prompt: %v", err)
	}
	pc.Close(ctx)
	if err := connectErr(t, e.URL()); sqlState(err) != "53300" {
		t.Errorf("a fourth client: %v; want 53300", err)
	}
}

// TestConsoleReserveNotFilledByConsoleLogins: 16 connections that name the
// console database and sit at the password prompt do not lock the operator
// out: console logins take ordinary max_client_conn places first, and only
// past max_client_conn the 16 kept for the console. An earlier version of
// that reserve counted every console login against the 16, so these 16
// filled it (53300 for the operator).
func TestConsoleReserveNotFilledByConsoleLogins(t *testing.T) {
	e, admPass := consoleEnv(t, 0)
	halfOpenLogins(t, e, 16, "pgtide")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, e.tide.ConnString("pgtide", "adm", admPass))
	if err != nil {
		t.Fatalf("admin console refused while 16 unauthenticated console logins wait: %v", err)
	}
	pc.Close(ctx)
}

// TestAuthQueryNameNotInEncoding: a login whose user name is not valid
// UTF-8 (the encoding of pgtide's auth_query connection), such as a name
// in a client's Latin-1 or a long name cut in the middle of a character,
// names no role. PostgreSQL runs its mock exchange for it and answers
// 28P01, as for any unknown user. pgtide's lookup failed on the server
// (22021) and the client got FATAL 08001 "authentication lookup failed"
// before any exchange, so such a name looked unlike an unknown user, and
// each attempt cost a query and a warning (nothing was cached).
func TestAuthQueryNameNotInEncoding(t *testing.T) {
	pg := pgtest.Shared(t)
	stamp := fmt.Sprint(time.Now().UnixNano())
	authUser, authPass := uniqueName(t, "a"), "Auth-"+stamp
	user, pass := uniqueName(t, "u"), "Pw-"+stamp
	db := uniqueName(t, "d")
	pgtest.CreateRole(t, pg, authUser, authPass)
	pgtest.CreateRole(t, pg, user, pass)
	pgtest.CreateDatabase(t, pg, db, user)
	installLookup(t, pg, db, authUser)
	tide := pgtest.StartPgtide(t, authQueryTOML(pg, authUser, authPass, fmt.Sprintf("auth_dbname = %q\n", db)))
	t.Cleanup(func() {
		for _, s := range []string{authPass, pass} {
			if strings.Contains(tide.Logs(), s) {
				t.Errorf("pgtide output contains a secret")
			}
		}
	})
	login := func(url, name string) error {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.User = name
		c, err := pgx.ConnectConfig(ctxT(t, 15*time.Second), cfg)
		if err == nil {
			c.Close(context.Background())
		}
		return err
	}
	// The second is cut to 63 bytes, 31 and a half characters (by
	// PostgreSQL and pgtide alike).
	for _, name := range []string{"caf\xe9", strings.Repeat("\u00e9", 40)} {
		direct := login(pg.ConnString(db, user, pass), name)
		through := login(tide.ConnString(db, user, pass), name)
		if sqlState(direct) != "28P01" {
			t.Fatalf("PostgreSQL, user %q: %v; want 28P01", name, direct)
		}
		if sqlState(through) != sqlState(direct) {
			t.Errorf("pgtide, user %q: %v; want PostgreSQL's %v", name, through, direct)
		}
	}
	c := connect(t, tide.ConnString(db, user, pass))
	if who := queryString(t, c, "SELECT current_user"); who != user {
		t.Fatalf("logged in as %s", who)
	}
}
