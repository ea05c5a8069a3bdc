package pgtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// goTool returns the go command that built this test binary's toolchain.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if out, err := exec.Command("/usr/local/go/bin/go", "env", "GOROOT").Output(); err == nil {
		return filepath.Join(strings.TrimSpace(string(out)), "bin", "go")
	}
	return "go"
}

// BuildPgtide builds github.com/pgtide/pgtide/cmd/pgtide once per test binary
// (with -race when this test binary has it) and returns the binary's path.
func BuildPgtide(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp(os.TempDir(), "pgtide-bin-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "pgtide")
		args := []string{"build", "-o", buildBin}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/pgtide/pgtide/cmd/pgtide")
		cmd := exec.Command(goTool(), args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("pgtest: building pgtide failed: %v", buildErr)
	}
	return buildBin
}

func cleanupBuild() {
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
}

// Pgtide is a running pgtide daemon started by StartPgtide.
type Pgtide struct {
	Host       string // "127.0.0.1"
	Port       int
	Addr       string // "127.0.0.1:PORT"
	Cmd        *exec.Cmd
	ConfigPath string

	logs     *syncBuffer
	done     chan struct{} // closed when the process has exited
	exitCode int
	waitErr  error
}

// StartPgtide writes configTOML (with every "{{PORT}}" replaced by a free
// port) to a file, runs `pgtide -config FILE`, and waits until the port
// accepts TCP connections. t.Cleanup sends SIGTERM, waits 5 s, then SIGKILL.
func StartPgtide(t testing.TB, configTOML string) *Pgtide {
	t.Helper()
	bin := BuildPgtide(t)
	dir := t.TempDir()
	var p *Pgtide
	for attempt := 0; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			t.Fatalf("pgtest: free port: %v", err)
		}
		p = &Pgtide{
			Host:       "127.0.0.1",
			Port:       port,
			Addr:       net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			ConfigPath: filepath.Join(dir, "pgtide.toml"),
			logs:       &syncBuffer{},
			done:       make(chan struct{}),
		}
		if err := os.WriteFile(p.ConfigPath, []byte(strings.ReplaceAll(configTOML, "{{PORT}}", strconv.Itoa(port))), 0o600); err != nil {
			t.Fatalf("pgtest: write config: %v", err)
		}
		p.Cmd = exec.Command(bin, "-config", p.ConfigPath)
		p.Cmd.Stdout = p.logs
		p.Cmd.Stderr = p.logs
		p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		// A -race binary sleeps 1 s at exit by default (atexit_sleep_ms),
		// which would distort every shutdown timing.
		gorace := "atexit_sleep_ms=0"
		if v := os.Getenv("GORACE"); v != "" {
			gorace = v + " " + gorace
		}
		p.Cmd.Env = append(os.Environ(), "GORACE="+gorace)
		if err := p.Cmd.Start(); err != nil {
			t.Fatalf("pgtest: start pgtide: %v", err)
		}
		go func(p *Pgtide) {
			err := p.Cmd.Wait()
			p.waitErr = err
			p.exitCode = p.Cmd.ProcessState.ExitCode()
			close(p.done)
		}(p)
		err = p.waitListening(15 * time.Second)
		if err == nil {
			break
		}
		p.kill()
		if attempt < 2 && strings.Contains(p.Logs(), "address already in use") {
			continue
		}
		t.Fatalf("pgtest: %v\nconfig:\n%s\npgtide output:\n%s", err, configTOML, p.Logs())
	}
	t.Cleanup(func() {
		_ = p.Signal(syscall.SIGTERM)
		if _, err := p.Wait(5 * time.Second); err != nil {
			p.kill()
		}
		if strings.Contains(p.Logs(), "WARNING: DATA RACE") {
			t.Errorf("pgtide (built with -race) reported a data race")
		}
		if t.Failed() {
			t.Logf("pgtide output:\n%s", p.Logs())
		}
	})
	return p
}

func (p *Pgtide) waitListening(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("pgtide exited during startup with code %d", p.exitCode)
		default:
		}
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("pgtide did not listen on %s within %v", p.Addr, timeout)
}

func (p *Pgtide) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// Logs returns everything pgtide wrote to stdout and stderr so far.
func (p *Pgtide) Logs() string { return p.logs.String() }

// Signal sends sig to the pgtide process.
func (p *Pgtide) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// ErrStillRunning is returned by Wait when the process did not exit in time.
var ErrStillRunning = errors.New("pgtide still running")

// Wait waits up to timeout for the process to exit and returns its exit code
// (-1 when killed by a signal). It returns ErrStillRunning on timeout.
func (p *Pgtide) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
		return p.exitCode, nil
	case <-time.After(timeout):
		return 0, ErrStillRunning
	}
}

// Exited reports whether the process has exited.
func (p *Pgtide) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ConnString returns a postgres:// URL that connects through pgtide.
func (p *Pgtide) ConnString(db, user, password string) string {
	return connURL(p.Host, p.Port, db, user, password)
}
