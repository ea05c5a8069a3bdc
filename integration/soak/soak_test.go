//go:build soak

// Package soak is a bounded soak run of pgtide (not run in CI): mixed
// pgbench workloads in transaction and session mode, random client kills
// (SIGKILL of pgbench processes: clients that vanish mid-transaction),
// random pg_terminate_backend of servers, and one PostgreSQL restart
// half-way, while pgtide's RSS, goroutines, descriptors, pool gauges and
// the workloads' errors are sampled every 10 s into a CSV.
//
// Run it with integration/soak/soak.sh.
package soak

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtide/pgtide/integration/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func envDur(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err == nil {
			return d
		}
	}
	return def
}

func scrape(url string) map[string]float64 {
	out := map[string]float64{}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		name, labels, _ := strings.Cut(line[:i], "{")
		out[name] += v
		for _, st := range []string{"active", "idle", "waiting", "login", "used"} {
			if strings.Contains(labels, `state="`+st+`"`) {
				out[name+"."+st] += v
			}
		}
	}
	return out
}

func rss(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return -1
}

func fds(pid int) int {
	e, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(e)
}

var (
	failedRe    = regexp.MustCompile(`number of failed transactions: (\d+)`)
	processedRe = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	abortedRe   = regexp.MustCompile(`(?m)^.*client \d+ (script \d+ )?aborted.*$`)
	errLineRe   = regexp.MustCompile(`(?m)^.*(error|FATAL).*$`)
)

func TestSoak(t *testing.T) {
	dur := envDur("SOAK_DURATION", 10*time.Minute)
	csvPath := os.Getenv("SOAK_CSV")
	if csvPath == "" {
		csvPath = fmt.Sprintf("/tmp/pgtide-soak-%d.csv", time.Now().Unix())
	}
	pgbench, err := exec.LookPath("pgbench")
	if err != nil {
		t.Fatalf("pgbench: %v", err)
	}
	pg := pgtest.StartPostgres(t, pgtest.WithSetting("max_connections", "200"))
	const user, pass, db = "soak", "soak-pw", "soak"
	pgtest.CreateRole(t, pg, user, pass)
	pgtest.CreateDatabase(t, pg, db, user)
	mport, _ := pgtest.FreePort()
	conf := fmt.Sprintf(`listen = ["127.0.0.1:{{PORT}}"]
pool_mode = "transaction"
default_pool_size = 10
max_client_conn = 500
log_level = "warn"
log_format = "json"
shutdown_timeout = "5s"
query_wait_timeout = "30s"
metrics_listen = "127.0.0.1:%d"

[databases.soak_tx]
host = "127.0.0.1"
port = %d
dbname = "soak"

[databases.soak_sess]
host = "127.0.0.1"
port = %d
dbname = "soak"
pool_mode = "session"
pool_size = 12

[users.soak]
password = %q
`, mport, pg.Port, pg.Port, pass)
	tide := pgtest.StartPgtide(t, conf)
	pid := tide.Cmd.Process.Pid
	murl := fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)

	run := func(ctx context.Context, host string, port int, dbname string, args ...string) (*exec.Cmd, *bytes.Buffer) {
		full := append([]string{"-h", host, "-p", strconv.Itoa(port), "-U", user}, args...)
		full = append(full, dbname)
		cmd := exec.CommandContext(ctx, pgbench, full...)
		cmd.Env = append(os.Environ(), "PGPASSWORD="+pass, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		return cmd, &out
	}
	initCmd, initOut := run(context.Background(), pg.Host, pg.Port, db, "-i", "-s", "5", "-q")
	if err := initCmd.Run(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, initOut)
	}

	f, err := os.Create(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "elapsed_s,rss_mib,goroutines,fds,clients,sv_active,sv_idle,cl_waiting,xacts_total,pgbench_runs,pgbench_processed,pgbench_failed,pgbench_aborted_clients,pgbench_bad_exits,kills,terminates,restarts")
	w.Flush()

	var runs, processed, failed, aborted, badExits, kills, terms, restarts atomic.Int64
	var procMu sync.Mutex
	procs := map[*exec.Cmd]bool{}
	deadline := time.Now().Add(dur)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	workloads := [][]string{
		{"soak_tx", "-S", "-c", "20", "-j", "2", "-T", "20"},
		{"soak_tx", "-M", "prepared", "-c", "8", "-j", "2", "-T", "20"},
		{"soak_tx", "-M", "extended", "-S", "-c", "10", "-T", "15", "-C"},
		{"soak_sess", "-S", "-c", "6", "-T", "20"},
	}
	var wg sync.WaitGroup
	for _, wl := range workloads {
		wg.Add(1)
		go func(wl []string) {
			defer wg.Done()
			for ctx.Err() == nil {
				cmd, out := run(ctx, tide.Host, tide.Port, wl[0], wl[1:]...)
				if err := cmd.Start(); err != nil {
					badExits.Add(1)
					continue
				}
				procMu.Lock()
				procs[cmd] = true
				procMu.Unlock()
				err := cmd.Wait()
				procMu.Lock()
				delete(procs, cmd)
				procMu.Unlock()
				runs.Add(1)
				s := out.String()
				if m := processedRe.FindStringSubmatch(s); m != nil {
					n, _ := strconv.ParseInt(m[1], 10, 64)
					processed.Add(n)
				}
				if m := failedRe.FindStringSubmatch(s); m != nil {
					n, _ := strconv.ParseInt(m[1], 10, 64)
					failed.Add(n)
				}
				aborted.Add(int64(len(abortedRe.FindAllString(s, -1))))
				if err != nil && ctx.Err() == nil {
					var ee *exec.ExitError
					if !(errorsAs(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled()) {
						badExits.Add(1)
						t.Logf("pgbench %v: %v\n%s", wl, err, strings.Join(errLineRe.FindAllString(s, 4), "\n"))
					}
				}
			}
		}(wl)
	}

	// Chaos: every 5-15 s kill a random pgbench (its clients vanish), or
	// terminate random backends; one PostgreSQL restart half-way.
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewSource(time.Now().UnixNano()))
		restartAt := time.Now().Add(dur / 2)
		restarted := false
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(5+rng.Intn(10)) * time.Second):
			}
			if !restarted && time.Now().After(restartAt) && time.Until(deadline) > 30*time.Second {
				restarted = true
				pg.Restart(t)
				restarts.Add(1)
				continue
			}
			if rng.Intn(2) == 0 {
				procMu.Lock()
				for cmd := range procs {
					if cmd.Process != nil {
						_ = cmd.Process.Signal(syscall.SIGKILL)
						kills.Add(1)
					}
					break
				}
				procMu.Unlock()
			} else {
				c, err := pgx.Connect(ctx, pg.SuperConnString("postgres"))
				if err != nil {
					continue
				}
				var n int64
				_ = c.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM
					(SELECT pid FROM pg_stat_activity WHERE usename = 'soak' ORDER BY random() LIMIT 3) s`).Scan(&n)
				terms.Add(n)
				c.Close(context.Background())
			}
		}
	}()

	start := time.Now()
	sample := func() map[string]float64 {
		m := scrape(murl)
		fmt.Fprintf(w, "%.0f,%.1f,%.0f,%d,%.0f,%.0f,%.0f,%.0f,%.0f,%d,%d,%d,%d,%d,%d,%d,%d\n",
			time.Since(start).Seconds(), rss(pid), m["go_goroutines"], fds(pid), m["pgtide_client_connections"],
			m["pgtide_pool_servers.active"], m["pgtide_pool_servers.idle"], m["pgtide_pool_clients.waiting"],
			m["pgtide_pool_transactions_total"], runs.Load(), processed.Load(), failed.Load(), aborted.Load(),
			badExits.Load(), kills.Load(), terms.Load(), restarts.Load())
		w.Flush()
		return m
	}
	first := sample()
	firstFDs, firstG := fds(pid), first["go_goroutines"]
	maxRSS := rss(pid)
	tick := time.NewTicker(10 * time.Second)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			sample()
			maxRSS = max(maxRSS, rss(pid))
		}
	}
	tick.Stop()
	wg.Wait()
	// Quiet period: every client gone; counts must return near the start.
	time.Sleep(10 * time.Second)
	last := sample()
	lastFDs := fds(pid)
	t.Logf("soak %v: %d pgbench runs, %d transactions, %d failed, %d aborted-client lines, %d bad exits; %d pgbench kills, %d backends terminated, %d PostgreSQL restarts",
		dur, runs.Load(), processed.Load(), failed.Load(), aborted.Load(), badExits.Load(), kills.Load(), terms.Load(), restarts.Load())
	t.Logf("pgtide: RSS max %.1f MiB, now %.1f MiB; goroutines %.0f -> %.0f; fds %d -> %d; clients now %.0f, active servers %.0f, waiting %.0f; CSV %s",
		maxRSS, rss(pid), firstG, last["go_goroutines"], firstFDs, lastFDs, last["pgtide_client_connections"],
		last["pgtide_pool_servers.active"], last["pgtide_pool_clients.waiting"], csvPath)
	if tide.Exited() {
		t.Fatal("pgtide exited during the soak")
	}
	if last["pgtide_client_connections"] != 0 || last["pgtide_pool_servers.active"] != 0 || last["pgtide_pool_clients.waiting"] != 0 {
		t.Errorf("after the quiet period: clients %.0f, active servers %.0f, waiting %.0f (want 0)",
			last["pgtide_client_connections"], last["pgtide_pool_servers.active"], last["pgtide_pool_clients.waiting"])
	}
	if last["go_goroutines"] > firstG+10 {
		t.Errorf("goroutines %.0f at the end, %.0f at the start", last["go_goroutines"], firstG)
	}
	if lastFDs > firstFDs+22+2 { // both pools full (10 + 12) plus slack
		t.Errorf("descriptors %d at the end, %d at the start", lastFDs, firstFDs)
	}
	// A fresh pgbench through pgtide must be clean.
	cmd, out := run(context.Background(), tide.Host, tide.Port, "soak_tx", "-S", "-c", "10", "-T", "3")
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "number of failed transactions: 0") {
		t.Errorf("final pgbench: %v\n%s", err, out)
	}
}

func errorsAs(err error, target **exec.ExitError) bool {
	ee, ok := err.(*exec.ExitError)
	if ok {
		*target = ee
	}
	return ok
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
