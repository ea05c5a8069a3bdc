package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtide/pgtide/integration/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// dbConf is one [databases.NAME] section.
type dbConf struct {
	Name     string // section name (what clients connect to)
	DBName   string // real database on the server; "" = Name
	PoolSize int    // 0 = not set
	PoolMode string // "" = not set
	User     string // "" = not set (client's own credentials)
	Password string
	// Server, when set, is TOML lines that stand for the section's host and
	// port lines (several hosts: hosts_test.go).
	Server string
	// Extra is raw TOML lines added to the section.
	Extra string
}

// tideConf is a pgtide configuration; TOML renders it.
type tideConf struct {
	PoolMode        string
	DefaultPoolSize int
	MaxClientConn   int
	ShutdownTimeout string
	Databases       []dbConf
	Users           map[string]string // user -> password
	Extra           string            // raw top-level TOML appended before the sections
	// PGPort, when set, is where newEnv points pgtide instead of the shared
	// PostgreSQL's port (a relay in front of it: startFaultRelay).
	PGPort int
}

func defaultConf() tideConf {
	return tideConf{
		PoolMode:        "session",
		DefaultPoolSize: 20,
		MaxClientConn:   100,
		ShutdownTimeout: "10s",
		Users:           map[string]string{},
	}
}

// TOML renders the config; the listen port stays "{{PORT}}".
func (c tideConf) TOML(pgPort int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen = [\"127.0.0.1:{{PORT}}\"]\n")
	fmt.Fprintf(&b, "pool_mode = %q\n", c.PoolMode)
	fmt.Fprintf(&b, "default_pool_size = %d\n", c.DefaultPoolSize)
	fmt.Fprintf(&b, "max_client_conn = %d\n", c.MaxClientConn)
	fmt.Fprintf(&b, "log_level = \"debug\"\n")
	fmt.Fprintf(&b, "log_format = \"json\"\n")
	fmt.Fprintf(&b, "shutdown_timeout = %q\n", c.ShutdownTimeout)
	b.WriteString(c.Extra)
	for _, d := range c.Databases {
		fmt.Fprintf(&b, "\n[databases.%s]\n", d.Name)
		if d.Server != "" {
			b.WriteString(d.Server)
		} else {
			fmt.Fprintf(&b, "host = \"127.0.0.1\"\nport = %d\n", pgPort)
		}
		dbname := d.DBName
		if dbname == "" {
			dbname = d.Name
		}
		fmt.Fprintf(&b, "dbname = %q\n", dbname)
		if d.PoolSize != 0 {
			fmt.Fprintf(&b, "pool_size = %d\n", d.PoolSize)
		}
		if d.PoolMode != "" {
			fmt.Fprintf(&b, "pool_mode = %q\n", d.PoolMode)
		}
		if d.User != "" {
			fmt.Fprintf(&b, "user = %q\npassword = %q\n", d.User, d.Password)
		}
		b.WriteString(d.Extra)
	}
	for u, pw := range c.Users {
		fmt.Fprintf(&b, "\n[users.%s]\npassword = %q\n", u, pw)
	}
	return b.String()
}

// env is one test's world: a role and database of its own on the shared
// PostgreSQL, and a pgtide in front of it.
type env struct {
	t    testing.TB
	pg   *pgtest.Postgres
	tide *pgtest.Pgtide
	conf tideConf
	DB   string
	User string
	Pass string
	// secrets that must never show up in pgtide's output
	secrets []string
}

var nameSeq atomic.Int64

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// uniqueName returns a lower-case identifier unique in this test binary.
func uniqueName(t testing.TB, prefix string) string {
	n := nameSeq.Add(1)
	s := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	name := fmt.Sprintf("%s%d_%s", prefix, n, s)
	if len(name) > 40 {
		name = name[:40]
	}
	return strings.TrimRight(name, "_")
}

// newEnv creates a role and database on the shared server, and starts pgtide
// with conf plus a database section for them (modify is applied to it before
// the config is rendered).
func newEnv(t testing.TB, modify func(c *tideConf, db *dbConf)) *env {
	t.Helper()
	pg := pgtest.Shared(t)
	pgtest.BuildPgtide(t) // fail fast (and clearly) if the daemon does not build
	e := &env{t: t, pg: pg}
	e.User = uniqueName(t, "u")
	e.DB = uniqueName(t, "d")
	e.Pass = "Pw-" + e.User + "-" + fmt.Sprint(time.Now().UnixNano())
	e.secrets = append(e.secrets, e.Pass, pg.Password)
	pgtest.CreateRole(t, pg, e.User, e.Pass)
	pgtest.CreateDatabase(t, pg, e.DB, e.User)
	e.conf = defaultConf()
	db := dbConf{Name: e.DB}
	if modify != nil {
		modify(&e.conf, &db)
	}
	e.conf.Databases = append([]dbConf{db}, e.conf.Databases...)
	e.conf.Users[e.User] = e.Pass
	port := pg.Port
	if e.conf.PGPort != 0 {
		port = e.conf.PGPort
	}
	e.tide = pgtest.StartPgtide(t, e.conf.TOML(port))
	t.Cleanup(func() { e.checkNoSecrets() })
	return e
}

// checkNoSecrets enforces invariant 7: no password in pgtide's output.
func (e *env) checkNoSecrets() {
	logs := e.tide.Logs()
	for _, s := range e.secrets {
		if s != "" && strings.Contains(logs, s) {
			e.t.Errorf("pgtide output contains a password (%q); invariant 7 broken", s)
		}
	}
}

// rewriteConfig writes conf (rendered for this env) to pgtide's config file.
func (e *env) rewriteConfig(t testing.TB, text string) {
	t.Helper()
	text = strings.ReplaceAll(text, "{{PORT}}", fmt.Sprint(e.tide.Port))
	if err := os.WriteFile(e.tide.ConfigPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// URL is the connection URL through pgtide for this env's user and database.
func (e *env) URL() string { return e.tide.ConnString(e.DB, e.User, e.Pass) }

// DirectURL is the same, straight to PostgreSQL.
func (e *env) DirectURL() string { return e.pg.ConnString(e.DB, e.User, e.Pass) }

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a pgx connection (through pgtide unless url says otherwise).
func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", redact(url), err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// super opens a direct superuser connection to db on the shared server.
func super(t testing.TB, pg *pgtest.Postgres, db string) *pgx.Conn {
	t.Helper()
	return connect(t, pg.SuperConnString(db))
}

var pwInURL = regexp.MustCompile(`:[^:@/]*@`)

func redact(url string) string { return pwInURL.ReplaceAllString(url, ":***@") }

// sqlState returns the SQLSTATE of err ("" if it carries none).
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// queryInt runs a one-int query.
func queryInt(t testing.TB, c *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := c.QueryRow(ctxT(t, 30*time.Second), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// queryString runs a one-text query.
func queryString(t testing.TB, c *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := c.QueryRow(ctxT(t, 30*time.Second), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// waitRunning waits until n backends (besides mon's) run a query that
// starts with prefix, as pg_stat_activity shows them; mon is a superuser
// connection to the same PostgreSQL.
func waitRunning(t testing.TB, mon *pgx.Conn, prefix string, n int) {
	t.Helper()
	pgtest.WaitUntil(t, 10*time.Second, fmt.Sprintf("%d backend(s) running %q", n, prefix), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var got int
		err := mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() AND starts_with(query, $1)", prefix).Scan(&got)
		return err == nil && got >= n
	})
}

// needBinary returns the path of an external program, skipping the test if
// it is missing (failing in CI, where every dependency must be installed).
func needBinary(t testing.TB, path, aptPkg string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err != nil {
		pgtest.SkipUnlessCI(t, "%s not found (install the %s apt package): %v", path, aptPkg, err)
	}
	return p
}

// needPython returns /usr/bin/python3 after checking it can import module.
func needPython(t testing.TB, module, aptPkg string) string {
	t.Helper()
	py := needBinary(t, "/usr/bin/python3", "python3")
	if out, err := exec.Command(py, "-c", "import "+module).CombinedOutput(); err != nil {
		pgtest.SkipUnlessCI(t, "%s cannot import %s (install the %s apt package): %v\n%s", py, module, aptPkg, err, out)
	}
	return py
}
