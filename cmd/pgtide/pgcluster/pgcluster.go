// Package pgcluster starts and stops a throwaway PostgreSQL cluster: it finds
// the server binaries on the machine, runs initdb into a temp directory
// (as an unprivileged user when the caller is root, since postgres refuses to
// run as root), starts the postmaster on a free 127.0.0.1 port with SCRAM
// authentication over TCP, waits until it accepts connections, and on Stop
// shuts it down and removes the directory.
//
// The integration-test harness (integration/pgtest) and `pgtide demo` both use
// it, so the demo exercises the same code as the tests.
package pgcluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// AptPackage is the Debian/Ubuntu package that provides the server binaries.
const AptPackage = "postgresql"

// ErrNoBinaries means the PostgreSQL server binaries were not found.
type ErrNoBinaries struct{ Msg string }

func (e *ErrNoBinaries) Error() string { return e.Msg }

// Options changes how Start configures the cluster. The zero value is fine.
type Options struct {
	// Settings are added as "-c key=value" to the postgres command line,
	// after the built-in ones.
	Settings [][2]string
	// TempPrefix names the temp directory (default "pgtide-pg-").
	TempPrefix string
	// StartTimeout bounds the wait for the server to accept connections
	// (default 60s).
	StartTimeout time.Duration
}

// Cluster is a running PostgreSQL server in a temp directory.
type Cluster struct {
	Host      string // always "127.0.0.1"
	Port      int
	SuperUser string // "postgres"
	Password  string // the superuser's password (SCRAM over TCP)
	SocketDir string
	BinDir    string
	DataDir   string
	RootDir   string // temp dir holding DataDir, SocketDir and the pwfile; removed by Stop

	cred *syscall.Credential // non-nil when running as root
	args []string            // postgres command line (without the binary)
	logs *SyncBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// FindBinDir locates the PostgreSQL server binaries: $PGTIDE_PG_BINDIR, else
// the newest /usr/lib/postgresql/*/bin, else `pg_config --bindir` from PATH.
// The error is an *ErrNoBinaries when none is found.
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
			return "", &ErrNoBinaries{fmt.Sprintf("PGTIDE_PG_BINDIR=%s has no postgres/initdb", d)}
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
	return "", &ErrNoBinaries{"PostgreSQL server binaries (postgres, initdb) not found"}
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
	_, _ = rand.Read(b)
	return "pw" + hex.EncodeToString(b)
}

// Start creates and starts a new cluster. On error nothing is left behind.
func Start(o Options) (*Cluster, error) {
	if o.TempPrefix == "" {
		o.TempPrefix = "pgtide-pg-"
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 60 * time.Second
	}
	bin, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp(os.TempDir(), o.TempPrefix)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		Host:      "127.0.0.1",
		SuperUser: "postgres",
		Password:  randomPassword(),
		SocketDir: filepath.Join(root, "sock"),
		BinDir:    bin,
		DataDir:   filepath.Join(root, "data"),
		RootDir:   root,
		cred:      cred,
		logs:      &SyncBuffer{},
	}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	if err := c.prepareDirs(); err != nil {
		return nil, err
	}
	if err := c.initdb(); err != nil {
		return nil, err
	}
	// The port may be taken between FreePort and bind: retry a few times.
	for attempt := 0; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		c.Port = port
		c.args = []string{
			"-D", c.DataDir,
			"-p", strconv.Itoa(port),
			"-k", c.SocketDir,
			"-c", "listen_addresses=127.0.0.1",
			"-c", "fsync=off",
			"-c", "synchronous_commit=off",
			"-c", "full_page_writes=off",
			"-c", "max_connections=200",
			"-c", "shared_buffers=32MB",
			"-c", "password_encryption=scram-sha-256",
		}
		for _, s := range o.Settings {
			c.args = append(c.args, "-c", s[0]+"="+s[1])
		}
		err = c.Launch(o.StartTimeout)
		if err == nil {
			break
		}
		if attempt < 3 && strings.Contains(c.Logs(), "could not bind") {
			continue
		}
		return nil, err
	}
	ok = true
	return c, nil
}

func (c *Cluster) prepareDirs() error {
	if err := os.Chmod(c.RootDir, 0o755); err != nil {
		return err
	}
	for _, d := range []string{c.DataDir, c.SocketDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	if c.cred != nil {
		for _, d := range []string{c.RootDir, c.DataDir, c.SocketDir} {
			if err := os.Chown(d, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
				return err
			}
		}
		// Every parent of RootDir must be traversable by the server user.
		for d := filepath.Dir(c.RootDir); ; d = filepath.Dir(d) {
			if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
				return fmt.Errorf("%s is not traversable by uid %d; set TMPDIR to a world-traversable dir", d, c.cred.Uid)
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return nil
}

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.BinDir, name), args...)
	cmd.Dir = c.RootDir
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: c.cred,
		// Own process group: a terminal's Ctrl-C reaches only our process,
		// which then shuts the server down in order.
		Setpgid: true,
		// If our process dies, take the server down with it
		// (SIGQUIT = immediate shutdown, children follow the postmaster).
		Pdeathsig: syscall.SIGQUIT,
	}
	return cmd
}

func (c *Cluster) initdb() error {
	pwfile := filepath.Join(c.RootDir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(c.Password+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(pwfile)
	if c.cred != nil {
		if err := os.Chown(pwfile, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return err
		}
	}
	cmd := c.command("initdb",
		"-D", c.DataDir,
		"-U", c.SuperUser,
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

// Launch starts the postmaster (again) with the command line Start chose and
// waits until it accepts SCRAM connections over TCP.
func (c *Cluster) Launch(timeout time.Duration) error {
	cmd := c.command("postgres", c.args...)
	cmd.Stdout = c.logs
	cmd.Stderr = c.logs
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.mu.Lock()
	c.cmd, c.done = cmd, done
	c.mu.Unlock()

	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("postgres exited during startup (%v):\n%s", cmd.ProcessState, c.Logs())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgconn.Connect(ctx, c.SuperConnString("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	c.Kill()
	return fmt.Errorf("postgres did not accept connections within %v: %v\n%s", timeout, lastErr, c.Logs())
}

// Shutdown stops the postmaster: SIGINT (fast shutdown), then SIGKILL of the
// whole process group after 10 s. The data directory stays.
func (c *Cluster) Shutdown() { c.stop(syscall.SIGINT) }

// ShutdownImmediate stops the postmaster with SIGQUIT (immediate shutdown:
// crash recovery at the next start), then SIGKILL after 10 s.
func (c *Cluster) ShutdownImmediate() { c.stop(syscall.SIGQUIT) }

func (c *Cluster) stop(sig syscall.Signal) {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.Kill()
	}
}

// Kill sends SIGKILL to the server's process group and waits for the
// postmaster to exit.
func (c *Cluster) Kill() {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// Stop shuts the server down and removes its directory.
func (c *Cluster) Stop() {
	c.Shutdown()
	if c.RootDir != "" {
		_ = os.RemoveAll(c.RootDir)
	}
}

// Logs returns what the server wrote to stdout/stderr so far.
func (c *Cluster) Logs() string { return c.logs.String() }

// Addr is "127.0.0.1:PORT".
func (c *Cluster) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// ConnString returns a postgres:// URL for this server with sslmode=disable.
func (c *Cluster) ConnString(db, user, password string) string {
	return ConnURL(c.Host, c.Port, db, user, password)
}

// SuperConnString is ConnString for the superuser.
func (c *Cluster) SuperConnString(db string) string {
	return c.ConnString(db, c.SuperUser, c.Password)
}

// ConnURL builds a postgres:// URL with sslmode=disable and a 10 s connect timeout.
func ConnURL(host string, port int, db, user, password string) string {
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

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers
// (a child process writes its output while tests read it).
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
