package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// storedSecret reads a role's password as PostgreSQL stores it (SCRAM
// verifier or md5 hash), as the superuser.
func storedSecret(t *testing.T, pg *pgtest.Postgres, role string) string {
	t.Helper()
	c := super(t, pg, "postgres")
	return queryString(t, c, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
}

// passthroughEnv is a role and database of the test's own, and a pgtide
// whose config has no plaintext password for the role.
type passthroughEnv struct {
	pg             *pgtest.Postgres
	tide           *pgtest.Pgtide
	db, user, pass string
	secrets        []string
}

func (e *passthroughEnv) url(user, pass string) string { return e.tide.ConnString(e.db, user, pass) }

// checkNoSecrets: no password, verifier or hash in pgtide's output.
func (e *passthroughEnv) checkNoSecrets(t *testing.T) {
	logs := e.tide.Logs()
	for _, s := range e.secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("pgtide output contains a secret (%.12q...); invariant 7 broken", s)
		}
	}
}

// loginAndQuery logs in with pgx and psql, runs queries, and checks who
// the server says the session belongs to.
func loginAndQuery(t *testing.T, e *passthroughEnv, user, pass string) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	// Two clients at once: two server logins, the second one with the key
	// the latest client login left.
	var conns []*pgx.Conn
	for range 2 {
		conns = append(conns, connect(t, e.url(user, pass)))
	}
	for _, c := range conns {
		var who, db string
		if err := c.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&who, &db); err != nil {
			t.Fatal(err)
		}
		if who != user || db != e.db {
			t.Fatalf("current_user, current_database() = %s, %s; want %s, %s", who, db, user, e.db)
		}
		if n := queryInt(t, c, "SELECT $1::int + 1", 41); n != 42 {
			t.Fatalf("got %d", n)
		}
	}
	psql := needBinary(t, "psql", "postgresql-client")
	r := runPsql(t, psql, urlNoPassword("127.0.0.1", e.tide.Port, e.db, user), pass, "-tA", "-c", "select current_user")
	if r.code != 0 || strings.TrimSpace(r.stdout) != user {
		t.Fatalf("psql: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func wantLoginFails(t *testing.T, e *passthroughEnv, user, pass string) {
	t.Helper()
	c, err := pgx.Connect(ctxT(t, 15*time.Second), e.url(user, pass))
	if err == nil {
		c.Close(context.Background())
		t.Fatalf("login as %s with a wrong password succeeded", user)
	}
	if sqlState(err) != "28P01" {
		t.Fatalf("login as %s: %v, want SQLSTATE 28P01", user, err)
	}
}

// newPassthroughEnv creates role (password pass) owning a new database.
func newPassthroughEnv(t *testing.T) *passthroughEnv {
	pg := pgtest.Shared(t)
	pgtest.BuildPgtide(t)
	e := &passthroughEnv{pg: pg, user: uniqueName(t, "u"), db: uniqueName(t, "d")}
	e.pass = "Pw-" + e.user + "-" + fmt.Sprint(time.Now().UnixNano())
	e.secrets = append(e.secrets, e.pass, pg.Password)
	return e
}

func (e *passthroughEnv) start(t *testing.T, conf tideConf) {
	t.Helper()
	conf.Databases = append(conf.Databases, dbConf{Name: e.db})
	e.tide = pgtest.StartPgtide(t, conf.TOML(e.pg.Port))
	t.Cleanup(func() { e.checkNoSecrets(t) })
}

// TestSCRAMPassthrough: the config holds only the role's SCRAM verifier
// (read from pg_authid), no plaintext anywhere; clients log in with SCRAM
// and pgtide logs into PostgreSQL with the ClientKey from their proof.
func TestSCRAMPassthrough(t *testing.T) {
	e := newPassthroughEnv(t)
	pgtest.CreateRole(t, e.pg, e.user, e.pass)
	pgtest.CreateDatabase(t, e.pg, e.db, e.user)
	verifier := storedSecret(t, e.pg, e.user)
	if !strings.HasPrefix(verifier, "SCRAM-SHA-256$") {
		t.Fatalf("role's password is not a SCRAM verifier")
	}
	e.secrets = append(e.secrets, verifier)
	conf := defaultConf()
	conf.Users[e.user] = verifier
	e.start(t, conf)

	loginAndQuery(t, e, e.user, e.pass)
	wantLoginFails(t, e, e.user, e.pass+"x")
	// Still fine after a failed attempt (the key is only replaced by a good login).
	c := connect(t, e.url(e.user, e.pass))
	if queryInt(t, c, "SELECT 7") != 7 {
		t.Fatal("query after a failed login")
	}
}

// TestAuthQuery: a user that exists only in PostgreSQL logs in; its
// verifier comes from auth_query (the README's SECURITY DEFINER function,
// run as auth_user) and the server login is SCRAM passthrough.
func TestAuthQuery(t *testing.T) {
	e := newPassthroughEnv(t)
	authUser, authPass := uniqueName(t, "a"), "Auth-"+fmt.Sprint(time.Now().UnixNano())
	e.secrets = append(e.secrets, authPass)
	pgtest.CreateRole(t, e.pg, e.user, e.pass)
	pgtest.CreateRole(t, e.pg, authUser, authPass)
	pgtest.CreateDatabase(t, e.pg, e.db, e.user)
	e.pg.ExecIn(t, e.db, fmt.Sprintf(`
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

	conf := defaultConf()
	conf.Users[authUser] = authPass
	conf.Extra = fmt.Sprintf("auth_user = %q\nauth_dbname = %q\nauth_cache_ttl = \"30s\"\n", authUser, e.db)
	e.start(t, conf)

	loginAndQuery(t, e, e.user, e.pass)
	wantLoginFails(t, e, e.user, "wrong")
	wantLoginFails(t, e, "nobody_"+e.user, e.pass)
	// A role that cannot log in has no secret for pgtide either.
	nologin := uniqueName(t, "n")
	e.pg.Exec(t, fmt.Sprintf("CREATE ROLE %s NOLOGIN PASSWORD %s", pgtest.QuoteIdent(nologin), pgtest.QuoteLiteral(e.pass)))
	wantLoginFails(t, e, nologin, e.pass)
	if !strings.Contains(e.tide.Logs(), "password authentication failed") {
		t.Error("no failed-login line in pgtide's log")
	}
}

// hbaMu serializes edits of the shared server's pg_hba.conf.
var hbaMu sync.Mutex

// allowMD5 lets role log in with md5 over TCP on the shared server: a line
// before initdb's scram-sha-256 rules (PostgreSQL's scram-sha-256 method
// refuses an md5-hashed password).
func allowMD5(t *testing.T, pg *pgtest.Postgres, role, pass string) {
	t.Helper()
	hbaMu.Lock()
	defer hbaMu.Unlock()
	path := filepath.Join(pg.DataDir, "pg_hba.conf")
	old, err := os.ReadFile(path)
	if err != nil {
		pgtest.SkipUnlessCI(t, "cannot read %s to allow md5: %v", path, err)
	}
	line := fmt.Sprintf("host all %s 127.0.0.1/32 md5\n", role)
	if err := os.WriteFile(path, append([]byte(line), old...), 0o600); err != nil {
		pgtest.SkipUnlessCI(t, "cannot write %s to allow md5: %v", path, err)
	}
	pg.Exec(t, "SELECT pg_reload_conf()")
	ok := pgtest.Eventually(10*time.Second, func() bool {
		c, err := pgconn.Connect(context.Background(), pg.ConnString("postgres", role, pass))
		if err != nil {
			return false
		}
		c.Close(context.Background())
		return true
	})
	if !ok {
		t.Fatal("md5 login to PostgreSQL does not work after the pg_hba.conf change")
	}
}

// TestMD5Passthrough: a role with an md5 password; the config holds its md5
// hash; the client logs in with md5 (auth_type md5) and pgtide logs into
// PostgreSQL with md5 from the hash.
func TestMD5Passthrough(t *testing.T) {
	e := newPassthroughEnv(t)
	e.pg.Exec(t, fmt.Sprintf("SET password_encryption = 'md5'; CREATE ROLE %s LOGIN PASSWORD %s",
		pgtest.QuoteIdent(e.user), pgtest.QuoteLiteral(e.pass)))
	pgtest.CreateDatabase(t, e.pg, e.db, e.user)
	hash := storedSecret(t, e.pg, e.user)
	if !strings.HasPrefix(hash, "md5") {
		t.Fatal("role's password is not an md5 hash")
	}
	e.secrets = append(e.secrets, hash, hash[3:])
	allowMD5(t, e.pg, e.user, e.pass)
	conf := defaultConf()
	conf.Users[e.user] = hash
	// scram-sha-256 (the default) refuses an md5 secret, as PostgreSQL does.
	conf.Extra = "auth_type = \"md5\"\n"
	e.start(t, conf)

	loginAndQuery(t, e, e.user, e.pass)
	wantLoginFails(t, e, e.user, e.pass+"x")
}
