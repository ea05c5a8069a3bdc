package integration

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtide/pgtide/integration/pgtest"
)

var (
	demoPsqlRE    = regexp.MustCompile(`psql "(host=127\.0\.0\.1 port=(\d+) dbname=demo user=demo password=demo)"`)
	demoAdminRE   = regexp.MustCompile(`psql "(host=127\.0\.0\.1 port=\d+ dbname=pgtide user=demo password=demo)" -c "SHOW POOLS"`)
	demoDataDirRE = regexp.MustCompile(`data directory (\S+)`)
)

// TestDemo runs `pgtide demo` as a user would: waits for the lines to try,
// uses them with psql and pgx, presses Ctrl-C (SIGINT to its process group)
// and checks that nothing is left behind.
func TestDemo(t *testing.T) {
	if _, err := pgtest.FindBinDir(); err != nil {
		pgtest.SkipUnlessCI(t, "%v (install the %q apt package or set PGTIDE_PG_BINDIR)", err, pgtest.AptPackage)
	}
	psql := needBinary(t, "psql", "postgresql-client")
	bin := pgtest.BuildPgtide(t)

	cmd := exec.Command(bin, "demo")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &demoBuf{}
	cmd.Stderr = stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	lines := make(chan string, 100)
	out := &demoBuf{}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		done <- cmd.Wait()
	}()
	var rootDir string
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if rootDir != "" && t.Failed() {
			_ = os.RemoveAll(rootDir)
		}
		if t.Failed() {
			t.Logf("demo stdout:\n%s\ndemo stderr:\n%s", out.String(), stderr.String())
		}
	})

	// Wait for the line to try.
	var conninfo string
	var port int
	var dataDir string
	deadline := time.After(60 * time.Second)
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("pgtide demo exited before it was ready")
			}
			out.Write([]byte(l + "\n"))
			if m := demoDataDirRE.FindStringSubmatch(l); m != nil {
				dataDir = m[1]
			}
			if m := demoPsqlRE.FindStringSubmatch(l); m != nil {
				conninfo = m[1]
				port, _ = strconv.Atoi(m[2])
			}
			ready = strings.HasPrefix(l, "Press Ctrl-C")
		case <-deadline:
			t.Fatalf("pgtide demo was not ready within 60s")
		}
	}
	t.Logf("demo ready after %v on port %d", time.Since(start).Round(time.Millisecond), port)
	go func() {
		for l := range lines {
			out.Write([]byte(l + "\n"))
		}
	}()
	if dataDir == "" || conninfo == "" {
		t.Fatalf("no data directory or psql line")
	}
	rootDir = filepath.Dir(dataDir)
	if !strings.Contains(out.String(), "pgbench -i ") || !strings.Contains(out.String(), "pgbench -c 10 -T 10 ") {
		t.Errorf("pgbench lines missing:\n%s", out.String())
	}
	if strings.Contains(out.String(), "not built yet") {
		t.Errorf("demo still says the admin console is not built:\n%s", out.String())
	}
	adminLine := demoAdminRE.FindStringSubmatch(out.String())
	if adminLine == nil {
		t.Fatalf("no admin console line (SHOW POOLS):\n%s", out.String())
	}
	postmaster, children := postmasterPIDs(t, dataDir)

	// psql with the printed line.
	pc := exec.Command(psql, conninfo, "-X", "-Atc", "SELECT current_user || ':' || current_database()")
	pc.Env = append(os.Environ(), "PGPASSWORD=demo")
	got, err := pc.CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "demo:demo" {
		t.Fatalf("psql %q: %v: %s", conninfo, err, got)
	}

	// The console line: SHOW POOLS lists the demo pool psql just used.
	ac := exec.Command(psql, adminLine[1], "-X", "-Atc", "SHOW POOLS")
	got, err = ac.CombinedOutput()
	if err != nil || !strings.Contains(string(got), "demo|demo|") {
		t.Fatalf("psql %q -c 'SHOW POOLS': %v: %s", adminLine[1], err, got)
	}

	// pgx through the same address.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, "postgres://demo:demo@127.0.0.1:"+strconv.Itoa(port)+"/demo?sslmode=disable")
	if err != nil {
		t.Fatalf("pgx connect: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM generate_series(1, $1::int)", 42).Scan(&n); err != nil || n != 42 {
		t.Fatalf("pgx query: %d, %v", n, err)
	}
	conn.Close(ctx)

	// Ctrl-C.
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-done:
		exited = true
	case <-time.After(30 * time.Second):
		t.Fatalf("pgtide demo did not exit within 30s of SIGINT")
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("pgtide demo exited with %v, want 0", ee.ProcessState)
		}
		t.Fatal(err)
	}
	for _, pid := range append([]int{postmaster}, children...) {
		if processAlive(pid) {
			t.Errorf("postgres process %d (postmaster %d) still running after the demo exited", pid, postmaster)
		}
	}
	if pids := processesMentioning(dataDir); len(pids) > 0 {
		t.Errorf("processes with %s in their command line remain: %v", dataDir, pids)
	}
	if _, err := os.Stat(rootDir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s still exists (stat: %v)", rootDir, err)
	}
}

// postmasterPIDs reads the postmaster's pid from DATADIR/postmaster.pid and
// finds its children.
func postmasterPIDs(t *testing.T, dataDir string) (int, []int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatalf("read postmaster.pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	var children []int
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		st, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(st)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			if c, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				children = append(children, c)
			}
		}
	}
	return pid, children
}

func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

func processesMentioning(s string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), s) {
			out = append(out, filepath.Base(filepath.Dir(p))+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// demoBuf is a strings.Builder safe for a writer and readers in other goroutines.
type demoBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (d *demoBuf) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.b.Write(p)
}

func (d *demoBuf) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.b.String()
}
