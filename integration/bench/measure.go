package main

// The measurements: pgbench runs with proxy CPU and RSS, idle-client memory,
// single-client round-trip latency.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtide/pgtide/cmd/pgtide/pgcluster"
)

// target is one thing pgbench talks to.
type target struct {
	key   string // "direct", "pgbouncer", "pgtide", "forwarder", "pgtide1"
	label string
	port  int
	proc  *child // nil for direct
}

// runResult is one pgbench run against one target.
type runResult struct {
	tps        float64
	latMs      float64
	tx         int64
	cpuUs      float64 // proxy CPU µs per transaction, steady state; <0 when not measured
	cpuWholeUs float64 // the same over the whole pgbench run, logins included
	rssKB      int64   // peak proxy VmRSS sampled during the run; <0 when not measured
	err        string  // non-empty when pgbench failed or the proxy died
	output     string
}

var (
	reTPS      = regexp.MustCompile(`tps = ([0-9.]+) \(`)
	reLat      = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
	reTx       = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	reFailed   = regexp.MustCompile(`number of failed transactions: (\d+)`)
	reProgress = regexp.MustCompile(`^progress: ([0-9.]+) s, ([0-9.]+) tps`)
)

// pgbenchEnv is the environment for pgbench: ours without PG*, plus the password.
func pgbenchEnv(password string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return append(env, "PGPASSWORD="+password, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10")
}

// runPgbench runs pgbench with args against t and measures the proxy around it.
func runPgbench(t *target, user, password string, args []string, timeout time.Duration) runResult {
	full := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(t.port), "-U", user, "-P", "1"}, args...)
	full = append(full, "bench")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "pgbench", full...)
	cmd.Env = pgbenchEnv(password)
	var out syncBuffer
	cmd.Stdout = &out

	res := runResult{cpuUs: -1, rssKB: -1}
	var cpu0 float64
	// Steady-state CPU: pgbench -P 1 prints a progress line every second
	// once its clients are connected; the proxy CPU between the first and
	// the last line, over the transactions those lines report, leaves the
	// logins (SCRAM) out, as pgbench's own "tps ... without initial
	// connection time" does. (With -C a login is part of every transaction
	// and stays in.)
	var prog struct {
		n         int
		cpuFirst  float64
		cpuLast   float64
		tLast     float64
		txBetween float64
	}
	cmd.Stderr = &lineWriter{onLine: func(line string) {
		m := reProgress.FindStringSubmatch(line)
		if m == nil {
			out.Write([]byte(line + "\n"))
			return
		}
		if t.proc == nil {
			return
		}
		c, err := cpuSeconds(t.proc.pid())
		if err != nil {
			return
		}
		ts, _ := strconv.ParseFloat(m[1], 64)
		tps, _ := strconv.ParseFloat(m[2], 64)
		if prog.n == 0 {
			prog.cpuFirst = c
		} else {
			prog.txBetween += tps * (ts - prog.tLast)
		}
		prog.n++
		prog.cpuLast, prog.tLast = c, ts
	}}
	var peak atomic.Int64
	peak.Store(-1)
	stopSampler := make(chan struct{})
	var samplerDone sync.WaitGroup
	if t.proc != nil {
		cpu0, _ = cpuSeconds(t.proc.pid())
		samplerDone.Add(1)
		go func() {
			defer samplerDone.Done()
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				if v, err := rssKB(t.proc.pid()); err == nil && v > peak.Load() {
					peak.Store(v)
				}
				select {
				case <-stopSampler:
					return
				case <-tick.C:
				}
			}
		}()
	}
	err := cmd.Run()
	if lw, ok := cmd.Stderr.(*lineWriter); ok && len(lw.buf) > 0 {
		lw.onLine(string(lw.buf))
	}
	close(stopSampler)
	samplerDone.Wait()
	res.output = out.String()
	if m := reTPS.FindStringSubmatch(res.output); m != nil {
		res.tps, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reLat.FindStringSubmatch(res.output); m != nil {
		res.latMs, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reTx.FindStringSubmatch(res.output); m != nil {
		res.tx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if t.proc != nil {
		if prog.n >= 2 && prog.txBetween > 0 {
			res.cpuUs = (prog.cpuLast - prog.cpuFirst) * 1e6 / prog.txBetween
		} else if cpu1, err := cpuSeconds(t.proc.pid()); err == nil && res.tx > 0 {
			res.cpuUs = (cpu1 - cpu0) * 1e6 / float64(res.tx) // whole run, logins included
		}
		res.cpuWholeUs = -1
		if cpu1, err := cpuSeconds(t.proc.pid()); err == nil && res.tx > 0 {
			res.cpuWholeUs = (cpu1 - cpu0) * 1e6 / float64(res.tx)
		}
		res.rssKB = peak.Load()
	}
	switch {
	case ctx.Err() != nil:
		res.err = fmt.Sprintf("pgbench hung: killed after %v", timeout)
	case err != nil:
		res.err = fmt.Sprintf("pgbench: %v", err)
	case res.tx == 0 || res.tps == 0:
		res.err = "pgbench reported no transactions (its -T clock runs while the clients log in: on a loaded machine the logins can outlast -T)"
	}
	if m := reFailed.FindStringSubmatch(res.output); m != nil && m[1] != "0" {
		if res.err == "" {
			res.err = "pgbench: " + m[1] + " failed transactions"
		}
	}
	if t.proc != nil && t.proc.exited() {
		res.err = fmt.Sprintf("%s exited (%v); log tail:\n%s", t.label, t.proc.cmd.ProcessState, tail(t.proc.logs.String(), 20))
	}
	return res
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// idleResult is the memory cost of n idle, logged-in clients on one pooler.
type idleResult struct {
	n          int
	connected  int
	before     int64 // VmRSS KiB
	after      int64
	perClientB float64
	connectSec float64
	err        string
}

// measureIdle logs n clients in (64 at a time), waits for the pooler to
// settle, and reports its VmRSS delta per client; then closes them.
func measureIdle(t *target, user, password string, n int, settle time.Duration) idleResult {
	res := idleResult{n: n}
	before, err := rssKB(t.proc.pid())
	if err != nil {
		res.err = err.Error()
		return res
	}
	res.before = before
	conns := make([]*pgconn.PgConn, n)
	var firstErr atomic.Value
	var failed atomic.Int64
	cs := pgcluster.ConnURL("127.0.0.1", t.port, "bench", user, password)
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := pgconn.Connect(ctx, cs)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			conns[i] = c
		}(i)
	}
	wg.Wait()
	res.connectSec = time.Since(start).Seconds()
	res.connected = n - int(failed.Load())
	time.Sleep(settle)
	// Every client must still be usable: a pooler that dropped idle
	// clients has not held them.
	if after, err := rssKB(t.proc.pid()); err == nil {
		res.after = after
	}
	if res.connected > 0 {
		res.perClientB = float64(res.after-res.before) * 1024 / float64(res.connected)
	}
	var qfailed atomic.Int64
	for i := 0; i < n; i++ {
		c := conns[i]
		if c == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if i%50 == 0 { // sample: a query on every 50th idle client
				if _, err := c.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
					qfailed.Add(1)
					firstErr.CompareAndSwap(nil, "query after idle: "+err.Error())
				}
			}
			c.Close(ctx)
		}()
	}
	wg.Wait()
	if f := failed.Load() + qfailed.Load(); f > 0 {
		res.err = fmt.Sprintf("%d connects failed, %d sampled queries failed; first error: %v", failed.Load(), qfailed.Load(), firstErr.Load())
	}
	if t.proc.exited() {
		res.err = fmt.Sprintf("%s exited (%v); log tail:\n%s", t.label, t.proc.cmd.ProcessState, tail(t.proc.logs.String(), 20))
	}
	return res
}

// latResult is the single-client SELECT 1 round-trip latency through one target.
type latResult struct {
	p50, p99 time.Duration
	n        int
	err      string
}

// measureLatency runs n simple-protocol SELECT 1 on one connection per
// target, interleaved in blocks of 250 queries (A B C D A B C D …) so drift
// on the shared machine hits every target alike.
func measureLatency(targets []*target, user, password string, n int) map[string]latResult {
	out := map[string]latResult{}
	conns := map[string]*pgconn.PgConn{}
	samples := map[string][]time.Duration{}
	ctx := context.Background()
	for _, t := range targets {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := pgconn.Connect(cctx, pgcluster.ConnURL("127.0.0.1", t.port, "bench", user, password))
		cancel()
		if err != nil {
			out[t.key] = latResult{err: err.Error()}
			continue
		}
		defer c.Close(ctx)
		// Warm up.
		for i := 0; i < 200; i++ {
			_, _ = c.Exec(ctx, "SELECT 1").ReadAll()
		}
		conns[t.key] = c
	}
	const block = 250
	for done := 0; done < n; done += block {
		for _, t := range targets {
			c := conns[t.key]
			if c == nil {
				continue
			}
			for i := 0; i < block && done+i < n; i++ {
				st := time.Now()
				_, err := c.Exec(ctx, "SELECT 1").ReadAll()
				d := time.Since(st)
				if err != nil {
					out[t.key] = latResult{err: err.Error()}
					delete(conns, t.key)
					break
				}
				samples[t.key] = append(samples[t.key], d)
			}
		}
	}
	for _, t := range targets {
		s := samples[t.key]
		if _, bad := out[t.key]; bad || len(s) == 0 {
			continue
		}
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		out[t.key] = latResult{p50: s[len(s)/2], p99: s[len(s)*99/100], n: len(s)}
	}
	return out
}

// lineWriter calls onLine for every complete line written to it.
type lineWriter struct {
	buf    []byte
	onLine func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.onLine(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
