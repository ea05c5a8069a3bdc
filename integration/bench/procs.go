package main

// Child processes (PostgreSQL via pgcluster, PgBouncer, pgtide, the
// forwarder) and what the harness reads about them from /proc.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// clkTck is the clock-tick rate of utime/stime in /proc/PID/stat.
var clkTck = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && v > 0 {
			return float64(v)
		}
	}
	return 100
}()

// cpuSeconds is utime+stime of pid (all its threads, living and exited).
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("odd /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return float64(ut+st) / clkTck, nil
}

// rssKB is VmRSS of pid in KiB.
func rssKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				return strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// syncBuffer collects a child's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 4<<20 { // keep the last part only
		tail := append([]byte(nil), b.buf.Bytes()[b.buf.Len()-1<<20:]...)
		b.buf.Reset()
		b.buf.Write(tail)
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// child is a long-running process the harness started.
type child struct {
	name string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
}

func startChild(name string, cmd *exec.Cmd) (*child, error) {
	c := &child{name: name, cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.logs, c.logs
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); close(c.done) }()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL to the process group after 5 s.
func (c *child) stop() {
	if c == nil || c.exited() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

// waitLogin waits until connString accepts a login (and the child is alive).
func (c *child) waitLogin(connString string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if c.exited() {
			return fmt.Errorf("%s exited during startup (%v):\n%s", c.name, c.cmd.ProcessState, c.logs.String())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		conn, err := pgconn.Connect(ctx, connString)
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not accept a login within %v: %v\n%s", c.name, timeout, lastErr, c.logs.String())
}

// postgresCredential is the uid/gid of user postgres (PgBouncer refuses to
// run as root), or nil when we are not root.
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root and there is no user postgres to run pgbouncer as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// startPgBouncer runs Debian's pgbouncer in transaction mode with SCRAM
// auth against an auth_file holding the plaintext password.
func startPgBouncer(dir string, port, pgPort int, user, password string, poolSize int) (*child, error) {
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		return nil, fmt.Errorf("pgbouncer not found (apt-get install -y pgbouncer): %w", err)
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	ini := fmt.Sprintf(`[databases]
bench = host=127.0.0.1 port=%d dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %s
pool_mode = transaction
default_pool_size = %d
max_client_conn = 12000
listen_backlog = 4096
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
log_stats = 0
`, pgPort, port, filepath.Join(dir, "userlist.txt"), poolSize)
	files := map[string]string{
		"pgbouncer.ini": ini,
		"userlist.txt":  fmt.Sprintf("%q %q\n", user, password),
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			return nil, err
		}
		if cred != nil {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, err
			}
		}
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	return startChild("pgbouncer", cmd)
}

// startPgtide runs the pgtide binary in transaction mode; threads 0 leaves
// the setting at its default (auto).
func startPgtide(name, bin, dir string, port, pgPort int, user, password string, poolSize, threads int) (*child, error) {
	conf := fmt.Sprintf(`threads = %d
listen = ["127.0.0.1:%d"]
pool_mode = "transaction"
default_pool_size = %d
max_client_conn = 12000
auth_type = "scram-sha-256"
log_level = "warn"

[databases.bench]
host = "127.0.0.1"
port = %d
dbname = "bench"

[users.%s]
password = %q
`, threads, port, poolSize, pgPort, user, password)
	p := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-config", p)
	cmd.Env = os.Environ()
	return startChild(name, cmd)
}

// startForwarder runs this binary as the forwarder of kind "naive"
// (-forwarder) or "loop" (-forwarder-epoll).
func startForwarder(port, pgPort int, kind string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	spec := fmt.Sprintf("127.0.0.1:%d->127.0.0.1:%d", port, pgPort)
	var cmd *exec.Cmd
	switch kind {
	case "naive":
		cmd = exec.Command(self, "-forwarder", spec)
	case "loop":
		cmd = exec.Command(self, "-forwarder-epoll", spec, "-epoll-wait", "poller")
	default:
		return nil, fmt.Errorf("-forwarder-kind: want naive or loop, got %q", kind)
	}
	return startChild("forwarder", cmd)
}

// runForwarder is the -forwarder mode: the naive Go TCP forwarder the issue
// measured (a goroutine per direction, io.Copy with 16 KiB buffers, no
// parsing, no pooling). It is the floor a Go proxy starts from.
func runForwarder(spec string) error {
	from, to, ok := strings.Cut(spec, "->")
	if !ok {
		return fmt.Errorf("-forwarder wants LISTEN->TARGET, got %q", spec)
	}
	ln, err := net.Listen("tcp", from)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func(c net.Conn) {
			s, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				return
			}
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 16<<10)
				// Hide ReadFrom/WriteTo so io.CopyBuffer really copies
				// through the buffer (no splice).
				_, _ = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
				dst.Close()
				src.Close()
			}
			go pipe(s, c)
			pipe(c, s)
		}(c)
	}
}
