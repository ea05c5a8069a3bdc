package pgtest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// StartPgtideAt runs a second pgtide on port (online restart: the port is
// already served by another pgtide with so_reuseport) and waits until its
// log says it has started. configTOML's "{{PORT}}" becomes port. Cleanup as
// in StartPgtide.
func StartPgtideAt(t testing.TB, configTOML string, port int) *Pgtide {
	t.Helper()
	bin := BuildPgtide(t)
	p := &Pgtide{
		Host:       "127.0.0.1",
		Port:       port,
		Addr:       net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		ConfigPath: filepath.Join(t.TempDir(), "pgtide.toml"),
		logs:       &syncBuffer{},
		done:       make(chan struct{}),
	}
	if err := os.WriteFile(p.ConfigPath, []byte(strings.ReplaceAll(configTOML, "{{PORT}}", strconv.Itoa(port))), 0o600); err != nil {
		t.Fatalf("pgtest: write config: %v", err)
	}
	p.Cmd = exec.Command(bin, "-config", p.ConfigPath)
	p.Cmd.Stdout, p.Cmd.Stderr = p.logs, p.logs
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	gorace := "atexit_sleep_ms=0"
	if v := os.Getenv("GORACE"); v != "" {
		gorace = v + " " + gorace
	}
	p.Cmd.Env = append(os.Environ(), "GORACE="+gorace)
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("pgtest: start pgtide: %v", err)
	}
	go func() {
		p.waitErr = p.Cmd.Wait()
		p.exitCode = p.Cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.Signal(syscall.SIGTERM)
		if _, err := p.Wait(5 * time.Second); err != nil {
			p.kill()
		}
		if strings.Contains(p.Logs(), "WARNING: DATA RACE") {
			t.Errorf("pgtide (built with -race) reported a data race")
		}
		if t.Failed() {
			t.Logf("second pgtide output:\n%s", p.Logs())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.Logs(), "pgtide started") {
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("pgtest: second pgtide on port %d did not start (exited: %v)\noutput:\n%s", port, p.Exited(), p.Logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}
