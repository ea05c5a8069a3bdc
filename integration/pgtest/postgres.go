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
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// AptPackage is the Debian/Ubuntu package that provides the server binaries.
const AptPackage = "postgresql"

// Postgres is a running PostgreSQL server owned by the test harness.
type Postgres struct {
	Host      string // always "127.0.0.1"
	Port      int
	SuperUser string // "postgres"
	Password  string // the superuser's password (SCRAM over TCP)
	SocketDir string
	BinDir    string
	DataDir   string

	rootDir string              // temp dir holding DataDir, SocketDir and the pwfile
	cred    *syscall.Credential // non-nil when running as root
	args    []string            // postgres command line (without the binary)
	logs    *syncBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
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

// errNoBinaries means the PostgreSQL server binaries were not found: the test
// is skipped, or fails in CI.
type errNoBinaries struct{ msg string }

func (e *errNoBinaries) Error() string { return e.msg }

// inCI reports whether we run under CI, where missing dependencies are failures.
func inCI() bool { return os.Getenv("CI") == "true" }

// reportStartErr turns a start error into Skip (binaries missing, not in CI) or Fatal.
func reportStartErr(t testing.TB, err error) {
	t.Helper()
	var nb *errNoBinaries
	if errors.As(err, &nb) && !inCI() {
		t.Skipf("pgtest: %v (install the %q apt package or set PGTIDE_PG_BINDIR)", err, AptPackage)
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
func FindBinDir() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"postgres", "initdb"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if d := os.Getenv("PGTIDE_PG_BINDIR"); d != "" {
		if !has(d) {
			return "", &errNoBinaries{fmt.Sprintf("PGTIDE_PG_BINDIR=%s has no postgres/initdb", d)}
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if has(d) {
			return d, nil
		}
	}
	return "", &errNoBinaries{"PostgreSQL server binaries (postgres, initdb) not found"}
}

// versionOf extracts the major version from /usr/lib/postgresql/<v>/bin.
func versionOf(dir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
	return v
}

// serverCredential returns the credential to run postgres with when we are
// root (postgres refuses to run as root), else nil.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var u *user.User
	var err error
	for _, name := range []string{"postgres", "nobody"} {
		if u, err = user.Lookup(name); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("running as root and found neither user postgres nor nobody: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %s has non-numeric uid/gid %s/%s", u.Username, u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// cleanEnv is the environment for initdb/postgres: ours minus PG* variables
// that could redirect them.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomPassword() string {
	b := make([]byte, 12)
	f, err := os.Open("/dev/urandom")
	if err == nil {
		_, _ = f.Read(b)
		f.Close()
	}
	return fmt.Sprintf("pw%x", b)
}

func startPostgres(opts ...Option) (*Postgres, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	bin, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp(os.TempDir(), "pgtide-pg-")
	if err != nil {
		return nil, err
	}
	pg := &Postgres{
		Host:      "127.0.0.1",
		SuperUser: "postgres",
		Password:  randomPassword(),
		SocketDir: filepath.Join(root, "sock"),
		BinDir:    bin,
		DataDir:   filepath.Join(root, "data"),
		rootDir:   root,
		cred:      cred,
		logs:      &syncBuffer{},
	}
	ok := false
	defer func() {
		if !ok {
			pg.stop()
		}
	}()
	if err := pg.prepareDirs(); err != nil {
		return nil, err
	}
	if err := pg.initdb(); err != nil {
		return nil, err
	}
	// The port may be taken between FreePort and bind: retry a few times.
	for attempt := 0; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		pg.Port = port
		pg.args = []string{
			"-D", pg.DataDir,
			"-p", strconv.Itoa(port),
			"-k", pg.SocketDir,
			"-c", "listen_addresses=127.0.0.1",
			"-c", "fsync=off",
			"-c", "synchronous_commit=off",
			"-c", "full_page_writes=off",
			"-c", "max_connections=200",
			"-c", "shared_buffers=32MB",
			"-c", "password_encryption=scram-sha-256",
		}
		for _, s := range o.settings {
			pg.args = append(pg.args, "-c", s[0]+"="+s[1])
		}
		err = pg.launch(60 * time.Second)
		if err == nil {
			break
		}
		if attempt < 3 && strings.Contains(pg.Logs(), "could not bind") {
			continue
		}
		return nil, err
	}
	ok = true
	return pg, nil
}

func (pg *Postgres) prepareDirs() error {
	if err := os.Chmod(pg.rootDir, 0o755); err != nil {
		return err
	}
	for _, d := range []string{pg.DataDir, pg.SocketDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	if pg.cred != nil {
		for _, d := range []string{pg.rootDir, pg.DataDir, pg.SocketDir} {
			if err := os.Chown(d, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
				return err
			}
		}
		// Every parent of rootDir must be traversable by the server user.
		for d := filepath.Dir(pg.rootDir); ; d = filepath.Dir(d) {
			if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
				return fmt.Errorf("%s is not traversable by uid %d; set TMPDIR to a world-traversable dir", d, pg.cred.Uid)
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return nil
}

func (pg *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(pg.BinDir, name), args...)
	cmd.Dir = pg.rootDir
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: pg.cred,
		Setpgid:    true,
		// If the test binary dies, take the server down with it
		// (SIGQUIT = immediate shutdown, children follow the postmaster).
		Pdeathsig: syscall.SIGQUIT,
	}
	return cmd
}

func (pg *Postgres) initdb() error {
	pwfile := filepath.Join(pg.rootDir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(pg.Password+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(pwfile)
	if pg.cred != nil {
		if err := os.Chown(pwfile, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
			return err
		}
	}
	cmd := pg.command("initdb",
		"-D", pg.DataDir,
		"-U", pg.SuperUser,
		"--pwfile="+pwfile,
		"--auth-local=trust",
		"--auth-host=scram-sha-256",
		"--encoding=UTF8",
		"--locale=C",
		"--no-sync",
		"--no-instructions",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb failed: %v\n%s", err, out)
	}
	return nil
}

// launch starts the postmaster with pg.args and waits until it accepts SCRAM
// connections over TCP.
func (pg *Postgres) launch(timeout time.Duration) error {
	cmd := pg.command("postgres", pg.args...)
	cmd.Stdout = pg.logs
	cmd.Stderr = pg.logs
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	pg.mu.Lock()
	pg.cmd, pg.done = cmd, done
	pg.mu.Unlock()

	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("postgres exited during startup (%v):\n%s", cmd.ProcessState, pg.Logs())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgconn.Connect(ctx, pg.ConnString("postgres", pg.SuperUser, pg.Password))
		cancel()
		if err == nil {
			c.Close(context.Background())
			return nil
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	pg.kill()
	return fmt.Errorf("postgres did not accept connections within %v: %v\n%s", timeout, lastErr, pg.Logs())
}

// shutdown stops the postmaster: SIGINT (fast shutdown), then SIGKILL of the
// whole process group after 10 s.
func (pg *Postgres) shutdown() {
	pg.mu.Lock()
	cmd, done := pg.cmd, pg.done
	pg.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		pg.kill()
	}
}

func (pg *Postgres) kill() {
	pg.mu.Lock()
	cmd, done := pg.cmd, pg.done
	pg.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

func (pg *Postgres) stop() {
	pg.shutdown()
	if pg.rootDir != "" {
		_ = os.RemoveAll(pg.rootDir)
	}
}

// Logs returns what the server wrote to stdout/stderr so far.
func (pg *Postgres) Logs() string { return pg.logs.String() }

// Restart stops the server with a fast shutdown (what `pg_ctl restart -m fast`
// does: SIGINT to the postmaster) and starts it again on the same port and
// data directory. Existing connections are terminated.
func (pg *Postgres) Restart(t testing.TB) {
	t.Helper()
	pg.shutdown()
	if err := pg.launch(60 * time.Second); err != nil {
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
	u := url.URL{
		Scheme:   "postgres",
		Host:     net.JoinHostPort(host, strconv.Itoa(port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable&connect_timeout=10",
	}
	if password != "" {
		u.User = url.UserPassword(user, password)
	} else {
		u.User = url.User(user)
	}
	return u.String()
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

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
