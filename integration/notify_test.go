package integration

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// notifySocket is a stand-in for systemd's notification socket. Only
// datagrams sent by pid (checked with SO_PASSCRED) are kept, so nothing else
// that inherits NOTIFY_SOCKET can confuse a test.
type notifySocket struct {
	path string
	conn *net.UnixConn
	msgs chan notifyMsg
}

type notifyMsg struct {
	pid  int32
	vars map[string]string
	raw  string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgtide-notify-") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ns := &notifySocket{path: filepath.Join(dir, "notify.sock"), msgs: make(chan notifyMsg, 64)}
	ns.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.conn.Close() })
	raw, err := ns.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatalf("SO_PASSCRED: %v %v", err, serr)
	}
	// A pgtide running as another user must be able to send.
	_ = os.Chmod(dir, 0o755)
	_ = os.Chmod(ns.path, 0o777)
	go ns.read()
	return ns
}

// send writes msg to the socket as another notifier would.
func (ns *notifySocket) send(t *testing.T, msg string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
}

func (ns *notifySocket) read() {
	defer close(ns.msgs)
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	for {
		n, oobn, _, _, err := ns.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		m := notifyMsg{pid: -1, vars: map[string]string{}, raw: string(buf[:n])}
		if cms, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range cms {
				if cred, err := syscall.ParseUnixCredentials(&cm); err == nil {
					m.pid = cred.Pid
				}
			}
		}
		for _, line := range strings.Split(m.raw, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				m.vars[k] = v
			}
		}
		ns.msgs <- m
	}
}

// next returns the next datagram from pid that sets key, failing the test
// after timeout. Datagrams before it are returned too, in order.
func (ns *notifySocket) next(t *testing.T, pid int, key string, timeout time.Duration) (notifyMsg, []notifyMsg) {
	t.Helper()
	var skipped []notifyMsg
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-ns.msgs:
			if !ok {
				t.Fatalf("notify socket closed while waiting for %s", key)
			}
			if int(m.pid) != pid {
				continue
			}
			if _, ok := m.vars[key]; ok {
				return m, skipped
			}
			skipped = append(skipped, m)
		case <-deadline:
			t.Fatalf("no %s from pgtide (pid %d) on NOTIFY_SOCKET within %v; other datagrams: %v", key, pid, timeout, skipped)
		}
	}
}

// TestNotify: with NOTIFY_SOCKET set, pgtide sends READY=1 (with STATUS=)
// once it listens, RELOADING=1 with MONOTONIC_USEC then READY=1 around each
// SIGHUP (a rejected config too), and STOPPING=1 at SIGTERM.
func TestNotify(t *testing.T) {
	pgtest.Shared(t) // before NOTIFY_SOCKET is set: PostgreSQL must not inherit it
	ns := newNotifySocket(t)
	t.Setenv("NOTIFY_SOCKET", ns.path)
	e := newEnv(t, nil)
	pid := e.tide.Cmd.Process.Pid

	ready, _ := ns.next(t, pid, "READY", 10*time.Second)
	if ready.vars["READY"] != "1" {
		t.Fatalf("READY=%q", ready.vars["READY"])
	}
	if !strings.Contains(ready.vars["STATUS"], "clients: 0") {
		t.Errorf("STATUS with READY=1 = %q, want it to count clients", ready.vars["STATUS"])
	}
	// The daemon must be able to serve by the time it says READY=1.
	a := connect(t, e.URL())
	if n := queryInt(t, a, "SELECT 1"); n != 1 {
		t.Fatal(n)
	}

	reload := func(what string) {
		t.Helper()
		before := time.Now()
		if err := e.tide.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		m, skipped := ns.next(t, pid, "RELOADING", 5*time.Second)
		for _, s := range skipped {
			if _, ok := s.vars["READY"]; ok {
				t.Fatalf("%s: READY=1 before RELOADING=1: %q", what, s.raw)
			}
		}
		usec, err := strconv.ParseInt(m.vars["MONOTONIC_USEC"], 10, 64)
		if m.vars["RELOADING"] != "1" || err != nil || usec <= 0 {
			t.Fatalf("%s: want RELOADING=1 with MONOTONIC_USEC=<microseconds>, got %q", what, m.raw)
		}
		m, _ = ns.next(t, pid, "READY", 5*time.Second)
		if m.vars["READY"] != "1" {
			t.Fatalf("%s: after RELOADING=1: %q", what, m.raw)
		}
		t.Logf("%s: RELOADING=1 ... READY=1 in %v; STATUS=%s", what, time.Since(before), m.vars["STATUS"])
	}
	reload("good config")
	if !pgtest.Eventually(5*time.Second, func() bool { return strings.Contains(e.tide.Logs(), "configuration reloaded") }) {
		t.Fatalf("no reload logged")
	}
	e.rewriteConfig(t, e.conf.TOML(e.pg.Port)+"\nbogus_key = 1\n")
	reload("rejected config")
	if n := queryInt(t, a, "SELECT 2"); n != 2 {
		t.Fatal(n)
	}

	if err := e.tide.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	m, _ := ns.next(t, pid, "STOPPING", 5*time.Second)
	if m.vars["STOPPING"] != "1" {
		t.Fatalf("after SIGTERM: %q", m.raw)
	}
	a.Close(ctxT(t, 5*time.Second))
	if _, err := e.tide.Wait(5 * time.Second); err != nil {
		t.Fatalf("pgtide still running 5 s after the last client left")
	}
	// STOPPING=1 is sent once, not again when the server finishes. pgtide
	// has exited: all it sent is queued ahead of a datagram of ours.
	const barrier = "PGTIDE_TEST_BARRIER=1"
	ns.send(t, barrier)
	for {
		select {
		case m, ok := <-ns.msgs:
			if !ok {
				t.Fatal("notify socket closed before the test's own datagram came")
			}
			if m.raw == barrier {
				return
			}
			if _, dup := m.vars["STOPPING"]; dup && int(m.pid) == pid {
				t.Fatalf("second STOPPING=1: %q", m.raw)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the test's own datagram did not come back within 5 s")
		}
	}
}

// TestSystemdUnit checks systemd/pgtide.service with systemd-analyze verify,
// ExecStart pointed at the freshly built binary.
func TestSystemdUnit(t *testing.T) {
	analyze := needBinary(t, "systemd-analyze", "systemd")
	unit, err := os.ReadFile("../systemd/pgtide.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Type=notify", "NotifyAccess=main", "KillSignal=SIGINT", "ExecReload=/bin/kill -HUP $MAINPID",
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).Match(unit) {
			t.Errorf("pgtide.service lacks the line %q", want)
		}
	}
	bin := pgtest.BuildPgtide(t)
	execStart := regexp.MustCompile(`(?m)^ExecStart=\S+`)
	if !execStart.Match(unit) {
		t.Fatalf("pgtide.service has no ExecStart= line")
	}
	unit = execStart.ReplaceAll(unit, []byte("ExecStart="+bin))
	dir := t.TempDir()
	path := filepath.Join(dir, "pgtide.service")
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", path)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	// Complaints about other units on the machine are not ours; any line
	// about pgtide.service, or a failing exit, is.
	var ours []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, "pgtide.service") || strings.Contains(line, dir) {
			ours = append(ours, line)
		}
	}
	if err != nil || len(ours) > 0 {
		t.Fatalf("systemd-analyze verify pgtide.service: %v\n%s", err, out)
	}
	if len(out) > 0 {
		t.Logf("systemd-analyze verify (about other units):\n%s", out)
	}
}
