// Package pgtest is the integration-test harness: it starts a throwaway
// PostgreSQL server (initdb into a temp dir, free port, SCRAM over TCP) and
// the pgtide binary, and cleans both up afterwards.
//
// Test packages that use Shared must call Main from their TestMain so that the
// shared server is stopped when the test binary exits:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtide/pgtide/cmd/pgtide/pgcluster"
)

// AptPackage is the Debian/Ubuntu package that provides the server binaries.
const AptPackage = pgcluster.AptPackage

// Postgres is a running PostgreSQL server owned by the test harness.
type Postgres struct {
	Host      string // always "127.0.0.1"
	Port      int
	SuperUser string // "postgres"
	Password  string // the superuser's password (SCRAM over TCP)
	SocketDir string
	BinDir    string
	DataDir   string

	c *pgcluster.Cluster // does the work; shared with `pgtide demo`
}

// Option changes how StartPostgres configures the server.
type Option func(*options)

type options struct {
	settings [][2]string
}

// WithSetting adds "-c key=value" to the postgres command line.
func WithSetting(key, value string) Option {
	return func(o *options) { o.settings = append(o.settings, [2]string{key, value}) }
}

// reportStartErr turns a start error into Skip (binaries missing, not in CI) or Fatal.
func reportStartErr(t testing.TB, err error) {
	t.Helper()
	var nb *pgcluster.ErrNoBinaries
	if errors.As(err, &nb) {
		SkipUnlessCI(t, "pgtest: %v (install the %q apt package or set PGTIDE_PG_BINDIR)", err, AptPackage)
	}
	t.Fatalf("pgtest: %v", err)
}

// StartPostgres starts a fresh PostgreSQL server for this test; it is stopped
// and its directory removed in t.Cleanup.
func StartPostgres(t testing.TB, opts ...Option) *Postgres {
	t.Helper()
	pg, err := startPostgres(opts...)
	if err != nil {
		reportStartErr(t, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres logs:\n%s", pg.Logs())
		}
		pg.stop()
	})
	return pg
}

var (
	sharedOnce sync.Once
	sharedPG   *Postgres
	sharedErr  error
)

// Shared returns the PostgreSQL server shared by all tests of this test
// binary, starting it on first use. It is stopped by Main.
func Shared(t testing.TB) *Postgres {
	t.Helper()
	sharedOnce.Do(func() { sharedPG, sharedErr = startPostgres() })
	if sharedErr != nil {
		reportStartErr(t, sharedErr)
	}
	return sharedPG
}

// Main runs the tests, then stops the shared server and removes the built
// pgtide binary. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if sharedPG != nil {
		sharedPG.stop()
	}
	cleanupBuild()
	os.Exit(code)
}

// FindBinDir locates the PostgreSQL server binaries: $PGTIDE_PG_BINDIR, else
// the newest /usr/lib/postgresql/*/bin, else `pg_config --bindir` from PATH.
func FindBinDir() (string, error) { return pgcluster.FindBinDir() }

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) { return pgcluster.FreePort() }

func startPostgres(opts ...Option) (*Postgres, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	c, err := pgcluster.Start(pgcluster.Options{Settings: o.settings, TempPrefix: "pgtide-pg-"})
	if err != nil {
		return nil, err
	}
	return &Postgres{
		Host:      c.Host,
		Port:      c.Port,
		SuperUser: c.SuperUser,
		Password:  c.Password,
		SocketDir: c.SocketDir,
		BinDir:    c.BinDir,
		DataDir:   c.DataDir,
		c:         c,
	}, nil
}

func (pg *Postgres) stop() { pg.c.Stop() }

// Logs returns what the server wrote to stdout/stderr so far.
func (pg *Postgres) Logs() string { return pg.c.Logs() }

// Restart stops the server with a fast shutdown (what `pg_ctl restart -m fast`
// does: SIGINT to the postmaster) and starts it again on the same port and
// data directory. Existing connections are terminated.
func (pg *Postgres) Restart(t testing.TB) {
	t.Helper()
	pg.c.Shutdown()
	if err := pg.c.Launch(60 * time.Second); err != nil {
		t.Fatalf("pgtest: restart: %v", err)
	}
}

// Addr is "127.0.0.1:PORT".
func (pg *Postgres) Addr() string { return net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port)) }

// ConnString returns a postgres:// URL for this server with sslmode=disable.
func (pg *Postgres) ConnString(db, user, password string) string {
	return connURL(pg.Host, pg.Port, db, user, password)
}

func connURL(host string, port int, db, user, password string) string {
	return pgcluster.ConnURL(host, port, db, user, password)
}

// SuperConnString is ConnString for the superuser.
func (pg *Postgres) SuperConnString(db string) string {
	return pg.ConnString(db, pg.SuperUser, pg.Password)
}

// Exec runs sql (may hold several statements) as the superuser in database
// "postgres" and fails the test on error.
func (pg *Postgres) Exec(t testing.TB, sql string) {
	t.Helper()
	pg.ExecIn(t, "postgres", sql)
}

// ExecIn is Exec in the given database.
func (pg *Postgres) ExecIn(t testing.TB, db, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, pg.SuperConnString(db))
	if err != nil {
		t.Fatalf("pgtest: connect as superuser to %s: %v", db, err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, sql).ReadAll(); err != nil {
		t.Fatalf("pgtest: exec %q: %v", sql, err)
	}
}

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// QuoteIdent quotes a SQL identifier.
func QuoteIdent(s string) string {
	if identRE.MatchString(s) {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// QuoteLiteral quotes a SQL string literal (standard_conforming_strings on).
func QuoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// CreateRole creates a LOGIN role with a SCRAM password.
func CreateRole(t testing.TB, pg *Postgres, name, password string) {
	t.Helper()
	pg.Exec(t, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", QuoteIdent(name), QuoteLiteral(password)))
}

// CreateDatabase creates a database owned by owner.
func CreateDatabase(t testing.TB, pg *Postgres, name, owner string) {
	t.Helper()
	pg.Exec(t, fmt.Sprintf("CREATE DATABASE %s OWNER %s", QuoteIdent(name), QuoteIdent(owner)))
}

// syncBuffer is the shared concurrent-safe buffer of pgcluster.
type syncBuffer = pgcluster.SyncBuffer

// RestartImmediate stops the server with an immediate shutdown (SIGQUIT to
// the postmaster: backends exit without cleanup, crash recovery at the next
// start) and starts it again on the same port and data directory.
func (pg *Postgres) RestartImmediate(t testing.TB) {
	t.Helper()
	pg.c.ShutdownImmediate()
	if err := pg.c.Launch(60 * time.Second); err != nil {
		t.Fatalf("pgtest: restart: %v", err)
	}
}
