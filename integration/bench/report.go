package main

// The markdown report.

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

type rowResult struct {
	spec rowSpec
	runs map[string][]runResult // by target key, one per round
}

type idleRow struct {
	target string
	res    idleResult
}

type report struct {
	opts    options
	started time.Time
	elapsed time.Duration
	nofile  uint64
	env     map[string]string
	rows    []rowResult
	latency map[string]latResult
	idle    []idleRow
}

// median of the successful runs' metric; ok=false when none succeeded or
// the metric was not measured.
func median(runs []runResult, f func(runResult) float64) (float64, bool) {
	var v []float64
	for _, r := range runs {
		if r.err != "" {
			continue
		}
		if x := f(r); x >= 0 {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return 0, false
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

func failedCount(runs []runResult) int {
	n := 0
	for _, r := range runs {
		if r.err != "" {
			n++
		}
	}
	return n
}

// cell formats the median of a metric for one target in one row.
func (rr rowResult) cell(key string, f func(runResult) float64, format string) string {
	runs, ok := rr.runs[key]
	if !ok {
		return "—"
	}
	v, ok := median(runs, f)
	nf := failedCount(runs)
	if !ok {
		if nf > 0 {
			return "**FAIL**"
		}
		return "—"
	}
	s := fmt.Sprintf(format, v)
	if nf > 0 {
		s += fmt.Sprintf(" (%d/%d failed)", nf, len(runs))
	}
	return s
}

func (rr rowResult) ratio(a, b string, f func(runResult) float64) string {
	ra, oka := rr.runs[a]
	rb, okb := rr.runs[b]
	if !oka || !okb {
		return "—"
	}
	va, oka := median(ra, f)
	vb, okb := median(rb, f)
	if !oka || !okb || vb == 0 {
		return "n/a"
	}
	return fmt.Sprintf("**%.2f×**", va/vb)
}

var (
	fTPS = func(r runResult) float64 { return r.tps }
	fLat = func(r runResult) float64 { return r.latMs }
	fCPU = func(r runResult) float64 { return r.cpuUs }
	fRSS = func(r runResult) float64 {
		if r.rssKB < 0 {
			return -1
		}
		return float64(r.rssKB) / 1024
	}
)

func (rep *report) markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	e := rep.env
	w("## pgtide vs PgBouncer: %s\n\n", e["date"])
	w("- Machine: %s CPUs (%s), %s; RLIMIT_NOFILE %d\n", e["cpus"], e["cpu"], e["kernel"], rep.nofile)
	w("- %s; %s; %s\n", e["postgres"], e["pgbench"], e["pgbouncer"])
	w("- %s (%s), %s\n", e["pgtide"], e["commit"], e["go"])
	secret := "the plaintext password"
	if rep.opts.pgbAuth == "scram" {
		secret = "the role's SCRAM verifier"
	}
	w("- Pool size %d, transaction mode, SCRAM (PgBouncer's auth_file holds %s; pgtide's [users] the plaintext password), PostgreSQL fsync=off, `pgbench -i -s 10`\n", poolSize, secret)
	w("- Proxy CPU per transaction is steady state: utime+stime between pgbench's first and last `-P 1` progress line, over the transactions those lines count (logins excluded, except with `-C` where each transaction logs in)\n")
	w("- %d interleaved round(s) of `-T %d` per row (direct, PgBouncer, pgtide, forwarder, …); medians; run took %s\n",
		rep.opts.rounds, rep.opts.secs, rep.elapsed.Round(time.Second))
	fwd := "naive: a goroutine per direction through Go's net"
	if rep.opts.fwdKind == "loop" {
		fwd = "loop: one epoll loop over raw non-blocking sockets, waiting in Go's poller"
	}
	w("- Forwarder: %s; it does not pool (a PostgreSQL connection per client)\n\n", fwd)

	if len(rep.rows) > 0 {
		w("### Throughput (TPS, median)\n\n")
		w("| Row | direct | forwarder | PgBouncer | pgtide | pgtide÷PgBouncer | pgtide÷direct |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, rr := range rep.rows {
			w("| %s | %s | %s | %s | %s | %s | %s |\n", rr.spec.label,
				rr.cell("direct", fTPS, "%.0f"), rr.cell("forwarder", fTPS, "%.0f"),
				rr.cell("pgbouncer", fTPS, "%.0f"), rr.cell("pgtide", fTPS, "%.0f"),
				rr.ratio("pgtide", "pgbouncer", fTPS), rr.ratio("pgtide", "direct", fTPS))
		}
		w("\n### Average latency (ms, pgbench, median)\n\n")
		w("| Row | direct | forwarder | PgBouncer | pgtide | pgtide÷PgBouncer |\n|---|---:|---:|---:|---:|---:|\n")
		for _, rr := range rep.rows {
			w("| %s | %s | %s | %s | %s | %s |\n", rr.spec.label,
				rr.cell("direct", fLat, "%.3f"), rr.cell("forwarder", fLat, "%.3f"),
				rr.cell("pgbouncer", fLat, "%.3f"), rr.cell("pgtide", fLat, "%.3f"),
				rr.ratio("pgtide", "pgbouncer", fLat))
		}
		w("\n### Proxy CPU per transaction (µs, utime+stime from /proc/PID/stat, median)\n\n")
		w("| Row | forwarder | PgBouncer | pgtide | pgtide÷PgBouncer |\n|---|---:|---:|---:|---:|\n")
		for _, rr := range rep.rows {
			w("| %s | %s | %s | %s | %s |\n", rr.spec.label,
				rr.cell("forwarder", fCPU, "%.1f"), rr.cell("pgbouncer", fCPU, "%.1f"),
				rr.cell("pgtide", fCPU, "%.1f"), rr.ratio("pgtide", "pgbouncer", fCPU))
		}
		w("\n### Proxy RSS (MiB, peak VmRSS sampled during the run, median)\n\n")
		w("| Row | forwarder | PgBouncer | pgtide | pgtide÷PgBouncer |\n|---|---:|---:|---:|---:|\n")
		for _, rr := range rep.rows {
			w("| %s | %s | %s | %s | %s |\n", rr.spec.label,
				rr.cell("forwarder", fRSS, "%.1f"), rr.cell("pgbouncer", fRSS, "%.1f"),
				rr.cell("pgtide", fRSS, "%.1f"), rr.ratio("pgtide", "pgbouncer", fRSS))
		}
		for _, rr := range rep.rows {
			if _, ok := rr.runs["pgtide1"]; !ok {
				continue
			}
			w("\n### threads (%s)\n\n", rr.spec.label)
			w("| | TPS | avg latency (ms) | CPU µs/tx | RSS MiB | TPS ÷ PgBouncer | CPU ÷ PgBouncer |\n|---|---:|---:|---:|---:|---:|---:|\n")
			for _, k := range []string{"pgbouncer", "pgtide", "pgtide1"} {
				label := map[string]string{"pgbouncer": "PgBouncer", "pgtide": fmt.Sprintf("pgtide, threads=%d (default: auto)", autoThreads()), "pgtide1": fmt.Sprintf("pgtide, threads=%d", altThreads())}[k]
				w("| %s | %s | %s | %s | %s | %s | %s |\n", label,
					rr.cell(k, fTPS, "%.0f"), rr.cell(k, fLat, "%.3f"), rr.cell(k, fCPU, "%.1f"), rr.cell(k, fRSS, "%.1f"),
					rr.ratio(k, "pgbouncer", fTPS), rr.ratio(k, "pgbouncer", fCPU))
			}
		}
	}

	if rep.latency != nil {
		w("\n### Single-client `SELECT 1` round trip (pgconn, simple protocol, %d queries, interleaved in blocks of 250)\n\n", rep.opts.latN)
		w("| Target | p50 (µs) | p99 (µs) | added p50 vs direct (µs) |\n|---|---:|---:|---:|\n")
		d, dok := rep.latency["direct"]
		for _, k := range std {
			l := rep.latency[k]
			label := map[string]string{"direct": "direct", "pgbouncer": "PgBouncer", "pgtide": "pgtide", "forwarder": "forwarder"}[k]
			if l.err != "" {
				w("| %s | **FAIL** | | `%s` |\n", label, l.err)
				continue
			}
			added := "—"
			if k != "direct" && dok && d.err == "" {
				added = fmt.Sprintf("%+.1f", us(l.p50-d.p50))
			}
			w("| %s | %.1f | %.1f | %s |\n", label, us(l.p50), us(l.p99), added)
		}
		if p, t := rep.latency["pgbouncer"], rep.latency["pgtide"]; p.err == "" && t.err == "" && p.n > 0 && t.n > 0 {
			w("\npgtide's added p50 minus PgBouncer's: **%+.1f µs** (target ≤ +10 µs).\n", us(t.p50-p.p50))
		}
	}

	if len(rep.idle) > 0 {
		w("\n### Memory per idle client (VmRSS delta ÷ clients, 3 s after the last login)\n\n")
		w("| Idle clients | Pooler | logged in | RSS before (MiB) | RSS after (MiB) | bytes per client | login time (s) | errors |\n|---:|---|---:|---:|---:|---:|---:|---|\n")
		per := map[string]map[int]float64{}
		for _, ir := range rep.idle {
			r := ir.res
			errs := "none"
			if r.err != "" {
				errs = "`" + strings.ReplaceAll(r.err, "\n", " ⏎ ") + "`"
			}
			w("| %d | %s | %d | %.1f | %.1f | %.0f | %.1f | %s |\n", r.n, ir.target, r.connected,
				float64(r.before)/1024, float64(r.after)/1024, r.perClientB, r.connectSec, errs)
			if per[ir.target] == nil {
				per[ir.target] = map[int]float64{}
			}
			per[ir.target][r.n] = r.perClientB
		}
		var ns []int
		for n := range per["pgtide"] {
			ns = append(ns, n)
		}
		sort.Ints(ns)
		for _, n := range ns {
			if pb, ok := per["PgBouncer"][n]; ok && pb > 0 {
				w("\n%d idle clients: pgtide ÷ PgBouncer = **%.2f×** per client.", n, per["pgtide"][n]/pb)
			}
		}
		w("\n")
	}

	// Failures, with pgbench's own words.
	var fails []string
	for _, rr := range rep.rows {
		for _, k := range rr.spec.targetsOr() {
			for i, r := range rr.runs[k] {
				if r.err != "" {
					fails = append(fails, fmt.Sprintf("**%s, %s, round %d**: %s\n\n```\n%s\n```\n", rr.spec.label, k, i+1, r.err, errorLines(r.output, 3, 8)))
				}
			}
		}
	}
	if len(fails) > 0 {
		w("\n### Failures\n\n")
		// Identical failures in every round: show each distinct one once.
		seen := map[string]bool{}
		for _, f := range fails {
			key := f[strings.Index(f, "**:"):]
			if seen[key] {
				continue
			}
			seen[key] = true
			w("%s\n", f)
		}
	}

	if len(rep.rows) > 0 {
		w("\n<details><summary>Every run (TPS / µs CPU per tx)</summary>\n\n")
		w("| Row | Target | rounds |\n|---|---|---|\n")
		for _, rr := range rep.rows {
			for _, k := range rr.spec.targetsOr() {
				var parts []string
				for _, r := range rr.runs[k] {
					if r.err != "" {
						parts = append(parts, "FAIL")
					} else if r.cpuUs >= 0 {
						parts = append(parts, fmt.Sprintf("%.0f / %.1f", r.tps, r.cpuUs))
					} else {
						parts = append(parts, fmt.Sprintf("%.0f", r.tps))
					}
				}
				w("| %s | %s | %s |\n", rr.spec.key, k, strings.Join(parts, " · "))
			}
		}
		w("\n</details>\n")
	}
	return b.String()
}

func us(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)*10) / 10 }

// errorLines is the first n lines of out that mention an error, then its
// last m lines.
func errorLines(out string, n, m int) string {
	var errs []string
	for _, l := range strings.Split(out, "\n") {
		if len(errs) < n && (strings.Contains(l, "error") || strings.Contains(l, "ERROR") || strings.Contains(l, "FATAL")) {
			errs = append(errs, l)
		}
	}
	t := tail(out, m)
	if len(errs) == 0 {
		return t
	}
	return strings.Join(errs, "\n") + "\n…\n" + t
}
