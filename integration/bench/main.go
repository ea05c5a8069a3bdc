// Command bench compares pgtide with PgBouncer on the same machine in one
// run (issue 7): it starts a throwaway PostgreSQL, PgBouncer (Debian's,
// transaction mode, SCRAM) and pgtide (built from this tree, transaction
// mode), plus a naive Go TCP forwarder as the floor, and runs pgbench against
// direct / PgBouncer / pgtide / forwarder interleaved (A B C D A B C D …),
// reporting medians and the pgtide÷PgBouncer ratio per row: TPS, average
// latency, proxy CPU µs per transaction (utime+stime from /proc/PID/stat)
// and proxy RSS. Then idle-client memory for both poolers and single-client
// SELECT 1 round-trip latency. The result is a markdown report on stdout
// (and in -o FILE); progress goes to stderr.
//
//	go run ./integration/bench                 # 3 rounds of -T 10 per row
//	go run ./integration/bench -quick          # 1 round of -T 3
//	go run ./integration/bench -rows S64,C16 -rounds 5 -o /tmp/bench.md
//
// See docs/performance.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtide/pgtide/cmd/pgtide/pgcluster"
)

const (
	benchUser = "bench"
	poolSize  = 20
)

// rowSpec is one pgbench workload.
type rowSpec struct {
	key     string
	label   string
	args    []string
	targets []string // target keys, in run order
	// minSecs is the least -T for this row: pgbench's -T clock starts
	// before its clients have logged in, and 256 SCRAM logins straight to
	// PostgreSQL on a busy 2-core machine can take longer than -quick's 3 s.
	minSecs int
}

var std = []string{"direct", "pgbouncer", "pgtide", "forwarder"}

func allRows() []rowSpec {
	j := func(c int, a ...string) []string {
		a = append(a, "-c", strconv.Itoa(c))
		if c >= 2 {
			a = append(a, "-j", "2")
		}
		return a
	}
	return []rowSpec{
		{key: "S1", label: "`-S`, 1 client", args: j(1, "-S")},
		{key: "S16", label: "`-S`, 16 clients", args: j(16, "-S")},
		{key: "S64", label: "`-S`, 64 clients", args: j(64, "-S"), targets: append(append([]string{}, std...), "pgtide1")},
		{key: "S256", label: "`-S`, 256 clients", args: j(256, "-S"), minSecs: 10},
		{key: "B16", label: "TPC-B, 16 clients", args: j(16)},
		{key: "B64", label: "TPC-B, 64 clients", args: j(64)},
		{key: "X64", label: "`-M extended -S`, 64 clients", args: j(64, "-M", "extended", "-S")},
		{key: "P64", label: "`-M prepared -S`, 64 clients", args: j(64, "-M", "prepared", "-S")},
		{key: "C16", label: "`-C -S`, 16 clients (connect per tx, SCRAM)", args: j(16, "-C", "-S")},
	}
}

type options struct {
	rounds    int
	secs      int
	rows      string
	idle      string
	latN      int
	out       string
	pgtideBin string
	pgbAuth   string
	skipIdle  bool
	skipLat   bool
	fwdKind   string
}

func main() {
	fwd := flag.String("forwarder", "", "internal: run as the plain TCP forwarder LISTEN->TARGET")
	efwd := flag.String("forwarder-epoll", "", "run as an epoll-loop TCP forwarder LISTEN->TARGET (a floor for an event-loop core; docs/performance.md)")
	ewait := flag.String("epoll-wait", "poller", "how -forwarder-epoll waits: syscall, raw or poller")
	quick := flag.Bool("quick", false, "1 round of -T 3 per row")
	var o options
	flag.IntVar(&o.rounds, "rounds", 3, "interleaved rounds per row (medians are taken over them)")
	flag.IntVar(&o.secs, "T", 10, "pgbench -T seconds per run")
	flag.StringVar(&o.rows, "rows", "", "comma-separated rows to run (default all): S1,S16,S64,S256,B16,B64,X64,P64,C16; 'none' for no pgbench rows")
	flag.StringVar(&o.idle, "idle", "1000,10000", "idle-client counts for the memory test")
	flag.IntVar(&o.latN, "latency-n", 5000, "SELECT 1 round trips per target for the latency test")
	flag.BoolVar(&o.skipIdle, "skip-idle", false, "skip the idle-client memory test")
	flag.BoolVar(&o.skipLat, "skip-latency", false, "skip the round-trip latency test")
	flag.StringVar(&o.out, "o", "", "also write the markdown report to this file")
	flag.StringVar(&o.pgbAuth, "pgbouncer-secret", "plain", "what PgBouncer's auth_file holds: plain (the plaintext password) or scram (the role's SCRAM verifier from pg_authid)")
	flag.StringVar(&o.pgtideBin, "pgtide-bin", "", "use this pgtide binary instead of building ./cmd/pgtide")
	flag.StringVar(&o.fwdKind, "forwarder-kind", "naive", "the forwarder column: naive (a goroutine per direction) or loop (one epoll loop over raw sockets, -forwarder-epoll)")
	flag.Parse()
	if *fwd != "" {
		// runForwarder serves until its listener fails.
		fmt.Fprintln(os.Stderr, "forwarder:", runForwarder(*fwd))
		os.Exit(1)
	}
	if *efwd != "" {
		err := setEpollWait(*ewait)
		if err == nil {
			err = runEpollForwarder(*efwd)
		}
		fmt.Fprintln(os.Stderr, "forwarder-epoll:", err)
		os.Exit(1)
	}
	if *quick {
		o.rounds, o.secs = 1, 3
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// autoThreads is what pgtide's threads = 0 gives here (cmd/pgtide/threads.go):
// GOMAXPROCS from the environment, else half the CPUs, at least 1.
func autoThreads() int {
	if n, err := strconv.Atoi(os.Getenv("GOMAXPROCS")); err == nil && n > 0 {
		return n
	}
	return max(1, runtime.NumCPU()/2)
}

// altThreads is the second pgtide's threads setting: 2 where the default
// is 1, else 1, so the S64 row shows pgtide on one thread and on two.
func altThreads() int {
	if autoThreads() == 1 {
		return 2
	}
	return 1
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", a...)
}

// raiseNofile lifts RLIMIT_NOFILE as far as it goes; the children inherit it.
func raiseNofile() uint64 {
	var r syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
	for _, want := range []uint64{1 << 17, 65536} {
		if want <= r.Max {
			break
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err == nil {
			return want
		}
	}
	r.Cur = r.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
	return r.Cur
}

func run(o options) error {
	started := time.Now()
	nofile := raiseNofile()
	rows := allRows()
	if o.rows == "none" {
		rows = nil
	} else if o.rows != "" {
		want := map[string]bool{}
		for _, k := range strings.Split(o.rows, ",") {
			want[strings.ToUpper(strings.TrimSpace(k))] = true
		}
		var sel []rowSpec
		for _, r := range rows {
			if want[strings.ToUpper(r.key)] {
				sel = append(sel, r)
				delete(want, strings.ToUpper(r.key))
			}
		}
		if len(want) > 0 {
			return fmt.Errorf("-rows: unknown rows %v", keys(want))
		}
		rows = sel
	}
	var idleNs []int
	if !o.skipIdle {
		for _, s := range strings.Split(o.idle, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				return fmt.Errorf("-idle: bad count %q", s)
			}
			idleNs = append(idleNs, n)
		}
	}
	for _, b := range []string{"pgbench", "pgbouncer", "getconf"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not found on PATH (apt-get install -y pgbouncer postgresql-client)", b)
		}
	}

	tmp, err := os.MkdirTemp("", "pgtide-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	_ = os.Chmod(tmp, 0o755)
	var children []*child
	defer func() {
		for i := len(children) - 1; i >= 0; i-- {
			children[i].stop()
		}
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		logf("interrupted: stopping children")
		for i := len(children) - 1; i >= 0; i-- {
			children[i].stop()
		}
		os.Exit(130)
	}()

	// pgtide binary.
	bin := o.pgtideBin
	builtFrom := "binary " + bin + " (-pgtide-bin)"
	if bin == "" {
		builtFrom = "built from the working tree at " + gitDescribe()
		bin = filepath.Join(tmp, "pgtide")
		logf("building pgtide: go build -o %s ./cmd/pgtide", bin)
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/pgtide")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/pgtide: %v\n%s", err, out)
		}
	}

	// PostgreSQL.
	logf("starting PostgreSQL (fsync=off, max_connections=400)")
	pg, err := pgcluster.Start(pgcluster.Options{
		TempPrefix: "pgtide-bench-pg-",
		Settings:   [][2]string{{"max_connections", "400"}, {"shared_buffers", "128MB"}},
	})
	if err != nil {
		return err
	}
	defer pg.Stop()
	password := "bench-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	if err := createBenchObjects(pg, password); err != nil {
		return err
	}
	logf("pgbench -i -s 10")
	if out, err := exec.Command("pgbench", "-i", "-s", "10", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(pg.Port), "-U", benchUser, "bench").CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %v\n%s", err, out)
	} else {
		_ = out
	}
	// (pgbench -i picks the password up from the environment)

	// Poolers and forwarder.
	ports := map[string]int{"direct": pg.Port}
	for _, k := range []string{"pgbouncer", "pgtide", "pgtide1", "forwarder"} {
		if ports[k], err = pgcluster.FreePort(); err != nil {
			return err
		}
	}
	pgbDir := filepath.Join(tmp, "pgbouncer")
	if err := os.Mkdir(pgbDir, 0o755); err != nil {
		return err
	}
	if cred, _ := postgresCredential(); cred != nil {
		_ = os.Chown(pgbDir, int(cred.Uid), int(cred.Gid))
	}
	secret := password
	switch o.pgbAuth {
	case "plain":
	case "scram":
		if secret, err = scramVerifier(pg); err != nil {
			return err
		}
	default:
		return fmt.Errorf("-pgbouncer-secret: want plain or scram, got %q", o.pgbAuth)
	}
	pgb, err := startPgBouncer(pgbDir, ports["pgbouncer"], pg.Port, benchUser, secret, poolSize)
	if err != nil {
		return err
	}
	children = append(children, pgb)
	tide, err := startPgtide("pgtide", bin, tmp, ports["pgtide"], pg.Port, benchUser, password, poolSize, 0)
	if err != nil {
		return err
	}
	children = append(children, tide)
	needGMP1 := false
	for _, r := range rows {
		for _, t := range r.targetsOr() {
			needGMP1 = needGMP1 || t == "pgtide1"
		}
	}
	var tide1 *child
	if needGMP1 {
		if tide1, err = startPgtide("pgtide1", bin, tmp, ports["pgtide1"], pg.Port, benchUser, password, poolSize, altThreads()); err != nil {
			return err
		}
		children = append(children, tide1)
	}
	fw, err := startForwarder(ports["forwarder"], pg.Port, o.fwdKind)
	if err != nil {
		return err
	}
	children = append(children, fw)
	targets := map[string]*target{
		"direct":    {key: "direct", label: "direct", port: pg.Port},
		"pgbouncer": {key: "pgbouncer", label: "PgBouncer", port: ports["pgbouncer"], proc: pgb},
		"pgtide":    {key: "pgtide", label: "pgtide", port: ports["pgtide"], proc: tide},
		"forwarder": {key: "forwarder", label: "forwarder", port: ports["forwarder"], proc: fw},
	}
	if tide1 != nil {
		targets["pgtide1"] = &target{key: "pgtide1", label: fmt.Sprintf("pgtide threads=%d", altThreads()), port: ports["pgtide1"], proc: tide1}
	}
	for _, k := range []string{"pgbouncer", "pgtide", "pgtide1", "forwarder"} {
		t := targets[k]
		if t == nil {
			continue
		}
		if err := t.proc.waitLogin(pgcluster.ConnURL("127.0.0.1", t.port, "bench", benchUser, password), 20*time.Second); err != nil {
			return err
		}
	}
	rep := &report{opts: o, started: started, nofile: nofile, env: collectEnv(pg.BinDir, bin)}
	rep.env["commit"] = builtFrom
	// Warm up every target: pools filled, pages cached.
	logf("warm-up")
	for _, k := range []string{"direct", "pgbouncer", "pgtide", "pgtide1", "forwarder"} {
		if t := targets[k]; t != nil {
			r := runPgbench(t, benchUser, password, []string{"-S", "-c", "32", "-j", "2", "-T", "2"}, 60*time.Second)
			if r.err != "" {
				logf("warm-up %s: %s\n%s", k, r.err, tail(r.output, 10))
			}
		}
	}

	timeout := time.Duration(o.secs)*time.Second + 120*time.Second
	for _, row := range rows {
		rr := rowResult{spec: row, runs: map[string][]runResult{}}
		for round := 1; round <= o.rounds; round++ {
			for _, k := range row.targetsOr() {
				t := targets[k]
				args := append(append([]string{}, row.args...), "-T", strconv.Itoa(max(o.secs, row.minSecs)))
				r := runPgbench(t, benchUser, password, args, timeout)
				rr.runs[k] = append(rr.runs[k], r)
				if r.err != "" {
					logf("%-5s round %d %-10s FAILED: %s", row.key, round, k, r.err)
				} else {
					logf("%-5s round %d %-10s tps %9.0f  lat %7.3f ms  cpu %6.1f µs/tx  rss %6d KiB", row.key, round, k, r.tps, r.latMs, r.cpuUs, r.rssKB)
				}
				time.Sleep(500 * time.Millisecond)
			}
		}
		rep.rows = append(rep.rows, rr)
	}

	if !o.skipLat && o.latN > 0 {
		logf("single-client SELECT 1 latency, %d round trips per target", o.latN)
		var lt []*target
		for _, k := range std {
			lt = append(lt, targets[k])
		}
		rep.latency = measureLatency(lt, benchUser, password, o.latN)
	}

	for _, n := range idleNs {
		for _, k := range []string{"pgbouncer", "pgtide"} {
			logf("idle clients: %d on %s", n, k)
			ir := measureIdle(targets[k], benchUser, password, n, 3*time.Second)
			if ir.err != "" {
				logf("idle %d %s: %s", n, k, ir.err)
			} else {
				logf("idle %d %s: %.0f B/client (RSS %d -> %d KiB), logins took %.1fs", n, k, ir.perClientB, ir.before, ir.after, ir.connectSec)
			}
			rep.idle = append(rep.idle, idleRow{target: targets[k].label, res: ir})
			time.Sleep(2 * time.Second)
		}
	}

	rep.elapsed = time.Since(started)
	text := rep.markdown()
	fmt.Print(text)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (r rowSpec) targetsOr() []string {
	if r.targets != nil {
		return r.targets
	}
	return std
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// createBenchObjects creates the SCRAM role bench and its database, and
// puts the password in PGPASSWORD for pgbench -i.
func createBenchObjects(pg *pgcluster.Cluster, password string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, pg.SuperConnString("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, sql := range []string{
		"SET password_encryption = 'scram-sha-256'",
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", benchUser, password),
		fmt.Sprintf("CREATE DATABASE bench OWNER %s", benchUser),
	} {
		if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	os.Setenv("PGPASSWORD", password)
	os.Setenv("PGSSLMODE", "disable")
	return nil
}

// collectEnv describes the machine and the versions for the report.
func collectEnv(pgBin, tideBin string) map[string]string {
	first := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	env := map[string]string{
		"date":      time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		"postgres":  first(filepath.Join(pgBin, "postgres"), "--version"),
		"pgbench":   first("pgbench", "--version"),
		"pgbouncer": first("pgbouncer", "--version"),
		"pgtide":    first(tideBin, "-version"),
		"go":        runtime.Version(),
		"kernel":    first("uname", "-sr"),
		"cpus":      strconv.Itoa(runtime.NumCPU()),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					env["cpu"] = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	return env
}

// scramVerifier is the bench role's SCRAM verifier from pg_authid.
func scramVerifier(pg *pgcluster.Cluster) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, pg.SuperConnString("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	res, err := conn.Exec(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = '"+benchUser+"'").ReadAll()
	if err != nil {
		return "", err
	}
	if len(res) == 0 || len(res[0].Rows) == 0 {
		return "", fmt.Errorf("no pg_authid row for %s", benchUser)
	}
	return string(res[0].Rows[0][0]), nil
}

// gitDescribe names the working tree's commit, "-dirty" when it has
// uncommitted changes.
func gitDescribe() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty", "--abbrev=12").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}
