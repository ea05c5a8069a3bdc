package admin

import (
	"slices"
	"time"
)

// statsPeriod is how often SHOW STATS averages are recomputed (PgBouncer's
// stats_period default).
const statsPeriod = 60 * time.Second

// nStat is the number of SHOW STATS counters, in column order:
// server_assignment_count, xact_count, query_count, received, sent,
// xact_time, query_time, wait_time, client_parse_count,
// server_parse_count, bind_count, as PgBouncer 1.25's (a later console
// adds client_login_count).
const nStat = 11

// statsWindow holds the sample that starts the current period and the
// averages of the last completed one (under Console.mu).
type statsWindow struct {
	at   time.Time
	last map[string]Totals
	avg  map[string][nStat]int64
}

func (t *Totals) add(o Totals) {
	t.Assign += o.Assign
	t.Xact += o.Xact
	t.Query += o.Query
	t.Recv += o.Recv
	t.Sent += o.Sent
	t.XactNs += o.XactNs
	t.QueryNs += o.QueryNs
	t.WaitNs += o.WaitNs
	t.ClientParse += o.ClientParse
	t.ServerParse += o.ServerParse
	t.Bind += o.Bind
}

// values are the totals in column order; times in microseconds.
func (t Totals) values() [nStat]uint64 {
	us := func(ns int64) uint64 { return uint64(max(ns, 0) / 1e3) }
	return [nStat]uint64{t.Assign, t.Xact, t.Query, t.Recv, t.Sent, us(t.XactNs), us(t.QueryNs), us(t.WaitNs),
		t.ClientParse, t.ServerParse, t.Bind}
}

func (c *Console) dbTotals() map[string]Totals {
	out := map[string]Totals{}
	for _, p := range c.b.PoolRows() {
		t := out[p.Database]
		t.add(p.Totals)
		out[p.Database] = t
	}
	return out
}

// averages over secs seconds between two samples: rates per second, and
// mean durations in microseconds (a transaction's over transactions, a
// query's over queries, a wait over server assignments). Counters can go
// back (a pool replaced by a reload starts from zero): negative deltas
// count as zero.
func averages(now, then Totals, secs float64) [nStat]int64 {
	d := func(a, b uint64) float64 {
		if a < b {
			return 0
		}
		return float64(a - b)
	}
	dn := func(a, b int64) float64 { return float64(max(a-b, 0)) }
	per := func(x float64) int64 {
		if secs <= 0 {
			return 0
		}
		return int64(x / secs)
	}
	mean := func(ns, n float64) int64 {
		if n == 0 {
			return 0
		}
		return int64(ns / n / 1e3)
	}
	xact, query, assign := d(now.Xact, then.Xact), d(now.Query, then.Query), d(now.Assign, then.Assign)
	return [nStat]int64{per(assign), per(xact), per(query), per(d(now.Recv, then.Recv)), per(d(now.Sent, then.Sent)),
		mean(dn(now.XactNs, then.XactNs), xact), mean(dn(now.QueryNs, then.QueryNs), query),
		mean(dn(now.WaitNs, then.WaitNs), assign), per(d(now.ClientParse, then.ClientParse)),
		per(d(now.ServerParse, then.ServerParse)), per(d(now.Bind, then.Bind))}
}

// statsTicker closes a statistics period every statsPeriod. It starts with
// the first console, so the first averages cover the time since then.
func (c *Console) statsTicker() {
	c.rotateStats(time.Now())
	t := time.NewTicker(statsPeriod)
	defer t.Stop()
	for {
		select {
		case <-c.b.Done():
			return
		case now := <-t.C:
			c.rotateStats(now)
		}
	}
}

func (c *Console) rotateStats(now time.Time) {
	tot := c.dbTotals()
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &c.stats
	if w.last != nil {
		secs := now.Sub(w.at).Seconds()
		w.avg = map[string][nStat]int64{}
		for db, t := range tot {
			w.avg[db] = averages(t, w.last[db], secs)
		}
	}
	w.at, w.last = now, tot
}

// currentAverages returns the last completed period's averages; before
// the first period ends, those since the first sample.
func (c *Console) currentAverages(tot map[string]Totals, now time.Time) map[string][nStat]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stats.avg != nil {
		return c.stats.avg
	}
	out := map[string][nStat]int64{}
	if c.stats.last == nil {
		return out
	}
	secs := now.Sub(c.stats.at).Seconds()
	for db, t := range tot {
		out[db] = averages(t, c.stats.last[db], secs)
	}
	return out
}

// statNames are the counters' names in SHOW STATS_TOTALS; SHOW STATS
// prefixes them with total_ (received and sent without bytes_).
var statNames = [nStat]string{"server_assignment_count", "xact_count", "query_count", "bytes_received",
	"bytes_sent", "xact_time", "query_time", "wait_time", "client_parse_count", "server_parse_count",
	"bind_count"}

// statsCols are the columns of SHOW STATS, STATS_TOTALS and STATS_AVERAGES
// after "database", as PgBouncer names them.
func statsCols(subject string) []string {
	var spec []string
	for i, n := range statNames {
		switch subject {
		case "STATS":
			switch i {
			case 3:
				n = "received"
			case 4:
				n = "sent"
			}
			spec = append(spec, "total_"+n+":N")
		case "STATS_TOTALS":
			spec = append(spec, n+":N")
		case "STATS_AVERAGES":
			if i >= 8 && i <= 10 {
				n = "avg_" + n
			}
			spec = append(spec, n+":N")
		}
	}
	if subject == "STATS" {
		for i, n := range statNames {
			switch i {
			case 3:
				n = "recv"
			case 4:
				n = "sent"
			}
			spec = append(spec, "avg_"+n+":N")
		}
	}
	return spec
}

func (c *Console) showStats(subject string, now time.Time) table {
	tot := c.dbTotals()
	avg := c.currentAverages(tot, now)
	names := make([]string, 0, len(tot))
	for db := range tot {
		names = append(names, db)
	}
	slices.Sort(names)
	t := table{cols: cols(append([]string{"database"}, statsCols(subject)...)...)}
	for _, db := range names {
		row := []any{db}
		if subject != "STATS_AVERAGES" {
			for _, v := range tot[db].values() {
				row = append(row, v)
			}
		}
		if subject != "STATS_TOTALS" {
			for _, v := range avg[db] {
				row = append(row, v)
			}
		}
		t.add(row...)
	}
	return t
}

// totalsNames are SHOW TOTALS' row names after total_ and avg_: PgBouncer
// names them after its struct fields.
var totalsNames = [nStat]string{"server_assignment_count", "xact_count", "query_count", "client_bytes",
	"server_bytes", "xact_time", "query_time", "wait_time", "ps_client_parse_count", "ps_server_parse_count",
	"ps_bind_count"}

// showTotals is SHOW TOTALS: SHOW STATS summed over every database, one
// counter a row.
func (c *Console) showTotals(now time.Time) table {
	tot := c.dbTotals()
	avg := c.currentAverages(tot, now)
	var sum Totals
	var rates [nStat]int64
	for _, t := range tot {
		sum.add(t)
	}
	for _, a := range avg {
		for i, v := range a {
			rates[i] += v
		}
	}
	// Rates add up across databases; mean durations do not: weigh each
	// database's by its rate of transactions, queries and assignments.
	for k, weight := range [3]int{1, 2, 0} {
		var num, den float64
		for _, a := range avg {
			num += float64(a[5+k]) * float64(a[weight])
			den += float64(a[weight])
		}
		rates[5+k] = 0
		if den > 0 {
			rates[5+k] = int64(num / den)
		}
	}
	t := table{cols: cols("name", "value:N")}
	for i, v := range sum.values() {
		t.add("total_"+totalsNames[i], v)
	}
	for i, v := range rates {
		t.add("avg_"+totalsNames[i], v)
	}
	return t
}
