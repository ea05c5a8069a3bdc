package integration

// A randomized fault mix over a transfer ledger (transaction mode): network
// faults between pgtide and PostgreSQL (chaosRelay), backends terminated,
// PostgreSQL restarted (fast and immediate), SIGHUP reloads that change the
// pool's size, mode, lifetimes and server port, console commands (KILL,
// PAUSE/RESUME, RECONNECT, KILL_CLIENT, SUSPEND/RESUME), timeouts expiring
// mid-transaction, and clients that vanish mid-transaction or mid-COMMIT,
// with clients on the extended protocol, the simple protocol, pgx batches
// and raw pipelined queries. Afterwards every transfer must be all there or
// not there, every acknowledged COMMIT present, nothing present that was
// never sent or whose client vanished before COMMIT, and the pool settled.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

const (
	flAccounts = 24
	flStart    = 1000
)

// flLedger is the workload's bookkeeping.
type flLedger struct {
	mu        sync.Mutex
	attempted map[int64]bool // sent, outcome unknown unless below
	acked     map[int64]bool // COMMIT answered "COMMIT"
	vanished  map[int64]bool // the client reset its socket before sending COMMIT
	kinds     map[string]int
	outcomes  map[string]int
	kindOf    map[int64]string
	errs      map[string]int
	other     map[string]int
	// settings: per-connection settings checks; wrongSettings: a client
	// that saw a value it did not set (another client's, or none after its
	// SET was acknowledged).
	settings      int
	wrongSettings []string
}

func (l *flLedger) note(m map[int64]bool, id int64) {
	l.mu.Lock()
	m[id] = true
	l.mu.Unlock()
}

// classify counts how a transaction failed: its SQLSTATE, or how its
// connection ended without one.
func (l *flLedger) classify(kind string, err error) {
	if err == nil {
		return
	}
	what := sqlState(err)
	switch {
	case what != "":
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		what = "EOF"
	case errors.Is(err, context.DeadlineExceeded):
		what = "deadline"
	default:
		what = "other"
		l.mu.Lock()
		if l.other == nil {
			l.other = map[string]int{}
		}
		l.other[err.Error()]++
		l.mu.Unlock()
	}
	l.count(l.errs, kind+":"+what)
}

func (l *flLedger) count(m map[string]int, k string) {
	l.mu.Lock()
	m[k]++
	l.mu.Unlock()
}

// flTransfer is one transfer's statements, the first lock taken on the
// lower account (no deadlocks between well-behaved transfers).
func flTransfer(id int64, rng *rand.Rand) []string {
	a, b := rng.IntN(flAccounts), rng.IntN(flAccounts-1)
	if b >= a {
		b++
	}
	amt := 1 + rng.IntN(50)
	lo, hi, dlo, dhi := a, b, -amt, amt
	if lo > hi {
		lo, hi, dlo, dhi = b, a, amt, -amt
	}
	return []string{
		fmt.Sprintf("INSERT INTO fl_transfers VALUES (%d, %d, %d, %d)", id, a, b, amt),
		fmt.Sprintf("UPDATE fl_accounts SET bal = bal + (%d) WHERE id = %d", dlo, lo),
		fmt.Sprintf("UPDATE fl_accounts SET bal = bal + (%d) WHERE id = %d", dhi, hi),
	}
}

var flModes = []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
	pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol}

// flClient runs transfers until stop closes, reconnecting after any error.
func flClient(ctx context.Context, l *flLedger, url string, c int, seed uint64, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(seed, uint64(c)))
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	seq := int64(0)
	conns := 0
	var owner, workMem string
	for {
		select {
		case <-stop:
			return
		default:
		}
		if conn == nil || rng.IntN(30) == 0 {
			if conn != nil {
				conn.Close(ctx)
			}
			cfg, err := pgx.ParseConfig(url)
			if err != nil {
				panic(err)
			}
			cfg.DefaultQueryExecMode = flModes[rng.IntN(len(flModes))]
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			conn, err = pgx.ConnectConfig(cctx, cfg)
			cancel()
			if err != nil {
				conn = nil
				time.Sleep(20 * time.Millisecond) // a client's pace between reconnects
				continue
			}
			// Settings of this connection alone: they must follow it to
			// every server it gets and reach no other client.
			conns++
			owner = fmt.Sprintf("c%d.%d", c, conns)
			workMem = fmt.Sprintf("%dkB", 2048+64*c+conns%64)
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = conn.Exec(sctx, fmt.Sprintf("SET fl.owner = '%s'; SET work_mem = '%s'", owner, workMem))
			cancel()
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				continue
			}
		}
		if rng.IntN(3) == 0 {
			var gotOwner, gotMem string
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := conn.QueryRow(sctx, "SELECT coalesce(current_setting('fl.owner', true), '<null>'), current_setting('work_mem')").Scan(&gotOwner, &gotMem)
			cancel()
			if err == nil {
				l.mu.Lock()
				l.settings++
				if gotOwner != owner || gotMem != workMem {
					l.wrongSettings = append(l.wrongSettings, fmt.Sprintf("client %s (work_mem %s) saw fl.owner %q, work_mem %s", owner, workMem, gotOwner, gotMem))
				}
				l.mu.Unlock()
			} else if conn.IsClosed() {
				conn = nil
				continue
			}
		}
		seq++
		id := int64(c)<<32 | seq
		stmts := flTransfer(id, rng)
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		kind, ok, keep := flOne(tctx, l, conn, id, stmts, rng)
		cancel()
		l.count(l.kinds, kind)
		l.mu.Lock()
		l.kindOf[id] = kind
		l.mu.Unlock()
		if ok {
			l.note(l.acked, id)
			l.count(l.outcomes, "acked")
		} else {
			l.count(l.outcomes, "failed")
		}
		if !keep {
			conn.Close(context.Background())
			conn = nil
		}
	}
}

// flOne runs one transfer of a random kind. ok: the client saw its COMMIT
// succeed; keep: the connection may be used again.
func flOne(ctx context.Context, l *flLedger, conn *pgx.Conn, id int64, stmts []string, rng *rand.Rand) (kind string, ok, keep bool) {
	l.note(l.attempted, id)
	switch r := rng.IntN(100); {
	case r < 30:
		kind = "tx"
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, s := range stmts {
				if _, err := tx.Exec(ctx, s); err != nil {
					return err
				}
			}
			return nil
		})
		l.classify(kind, err)
		return kind, err == nil, err == nil
	case r < 45:
		kind = "batch" // BEGIN..COMMIT in one pipelined batch
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		for _, s := range stmts {
			b.Queue(s)
		}
		b.Queue("COMMIT")
		br := conn.SendBatch(ctx, b)
		var err error
		var tag pgconn.CommandTag
		for i := 0; i < len(stmts)+2 && err == nil; i++ {
			tag, err = br.Exec()
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err == nil && tag.String() != "COMMIT" {
			err = fmt.Errorf("COMMIT answered %q", tag)
		}
		l.classify(kind, err)
		if err != nil {
			return kind, false, false
		}
		return kind, true, true
	case r < 58:
		kind = "multi" // one simple Query: BEGIN; ...; COMMIT
		res, err := conn.PgConn().Exec(ctx, "BEGIN; "+strings.Join(stmts, "; ")+"; COMMIT").ReadAll()
		if err == nil && (len(res) != len(stmts)+2 || res[len(res)-1].CommandTag.String() != "COMMIT") {
			err = errors.New("COMMIT not answered COMMIT")
		}
		l.classify(kind, err)
		return kind, err == nil, err == nil
	case r < 68:
		kind = "pipelined" // every statement a Query, all in one write
		return kind, flPipelined(ctx, conn, stmts), false
	case r < 76:
		kind = "slow" // sleeps inside the transaction: query_timeout, idle_transaction_timeout
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for i, s := range stmts {
				if _, err := tx.Exec(ctx, s); err != nil {
					return err
				}
				if i == 0 {
					if rng.IntN(2) == 0 {
						if _, err := tx.Exec(ctx, fmt.Sprintf("SELECT pg_sleep(%g)", float64(rng.IntN(1600))/1000)); err != nil {
							return err
						}
					} else {
						time.Sleep(time.Duration(rng.IntN(1300)) * time.Millisecond) // idle in transaction
					}
				}
			}
			return nil
		})
		l.classify(kind, err)
		return kind, err == nil, err == nil
	case r < 84:
		kind = "vanish" // reset mid-transaction, before COMMIT is sent
		tx, err := conn.Begin(ctx)
		if err == nil {
			for _, s := range stmts[:1+rng.IntN(len(stmts))] {
				if _, err = tx.Exec(ctx, s); err != nil {
					break
				}
			}
		}
		l.note(l.vanished, id)
		resetConn(conn.PgConn().Conn())
		return kind, false, false
	case r < 90:
		kind = "vanish-commit" // COMMIT written, then reset: in doubt
		tx, err := conn.Begin(ctx)
		if err == nil {
			for _, s := range stmts {
				if _, err = tx.Exec(ctx, s); err != nil {
					break
				}
			}
		}
		nc := conn.PgConn().Conn()
		if err == nil {
			q, _ := (&pgproto3.Query{String: "COMMIT"}).Encode(nil)
			_, _ = nc.Write(q)
			if rng.IntN(2) == 0 {
				time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
			}
		} else {
			l.note(l.vanished, id)
		}
		resetConn(nc)
		return kind, false, false
	default:
		kind = "stubborn" // each statement sent after the last reply, errors or not
		return kind, flStubborn(ctx, conn, stmts), false
	}
}

// resetConn closes a client socket with a reset.
func resetConn(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = nc.Close()
}

// flHijack takes conn's socket over for raw messages, under ctx's deadline.
func flHijack(ctx context.Context, conn *pgx.Conn) (*pgconn.HijackedConn, error) {
	hc, err := conn.PgConn().Hijack()
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = hc.Conn.SetDeadline(dl)
	}
	return hc, nil
}

// flPipelined writes BEGIN, the statements and COMMIT as separate Query
// messages in one write, then reads their replies. It reports whether
// COMMIT was answered COMMIT with status I and nothing failed.
func flPipelined(ctx context.Context, conn *pgx.Conn, stmts []string) bool {
	hc, err := flHijack(ctx, conn)
	if err != nil {
		return false
	}
	defer hc.Conn.Close()
	all := append(append([]string{"BEGIN"}, stmts...), "COMMIT")
	for _, s := range all {
		hc.Frontend.Send(&pgproto3.Query{String: s})
	}
	if hc.Frontend.Flush() != nil {
		return false
	}
	return flReadReplies(hc.Frontend, len(all))
}

// flReadReplies reads n ReadyForQuery-terminated replies and reports
// whether none failed and the last was COMMIT with status I.
func flReadReplies(fe *pgproto3.Frontend, n int) bool {
	okAll, tag, status := flReplies(fe, n)
	return okAll && tag == "COMMIT" && status == 'I'
}

// flReplies reads n ReadyForQuery-terminated replies: whether none failed,
// the last CommandComplete tag and the last status (0: the connection
// ended first).
func flReplies(fe *pgproto3.Frontend, n int) (okAll bool, tag string, status byte) {
	okAll = true
	for n > 0 {
		m, err := fe.Receive()
		if err != nil {
			return false, tag, 0
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			okAll = false
		case *pgproto3.CommandComplete:
			tag = string(m.CommandTag)
		case *pgproto3.ReadyForQuery:
			n--
			status = m.TxStatus
		}
	}
	return okAll, tag, status
}

// flStubborn sends each statement after the reply to the last, whatever it
// was, until the connection ends: a client that ignores errors must still
// never have a statement run outside its transaction.
func flStubborn(ctx context.Context, conn *pgx.Conn, stmts []string) bool {
	hc, err := flHijack(ctx, conn)
	if err != nil {
		return false
	}
	defer hc.Conn.Close()
	all := append(append([]string{"BEGIN"}, stmts...), "COMMIT")
	okAll := true
	for i, s := range all {
		hc.Frontend.Send(&pgproto3.Query{String: s})
		if hc.Frontend.Flush() != nil {
			return false
		}
		ok, tag, status := flReplies(hc.Frontend, 1)
		if status == 0 {
			return false // the connection ended
		}
		okAll = okAll && ok
		if i == len(all)-1 {
			return okAll && tag == "COMMIT" && status == 'I'
		}
	}
	return false
}

// flCheck verifies the ledger against the database.
func flCheck(t *testing.T, c *pgx.Conn, l *flLedger) (violations int) {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	report := func(format string, args ...any) {
		violations++
		if violations <= 20 {
			t.Errorf(format, args...)
		}
	}
	type tr struct{ src, dst, amt int }
	trs := map[int64]tr{}
	rows, err := c.Query(ctx, "SELECT id, src, dst, amt FROM fl_transfers")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		var x tr
		if err := rows.Scan(&id, &x.src, &x.dst, &x.amt); err != nil {
			t.Fatal(err)
		}
		trs[id] = x
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := make([]int64, flAccounts)
	for i := range want {
		want[i] = flStart
	}
	for _, x := range trs {
		want[x.src] -= int64(x.amt)
		want[x.dst] += int64(x.amt)
	}
	var sum int64
	rows, err = c.Query(ctx, "SELECT id, bal FROM fl_accounts ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int
		var bal int64
		if err := rows.Scan(&id, &bal); err != nil {
			t.Fatal(err)
		}
		sum += bal
		if bal != want[id] {
			report("account %d: balance %d, but the committed transfers make it %d (a statement ran outside its transaction)", id, bal, want[id])
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if sum != flAccounts*flStart {
		report("balances sum to %d; want %d", sum, flAccounts*flStart)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for id := range l.acked {
		if _, ok := trs[id]; !ok {
			report("transfer %#x: COMMIT acknowledged but missing", id)
		}
	}
	for id := range trs {
		if !l.attempted[id] {
			report("transfer %#x: present but never sent", id)
		}
		if l.vanished[id] {
			report("transfer %#x: present, but its client reset the connection before sending COMMIT", id)
		}
	}
	doubt := map[string]int{}
	for id := range trs {
		if !l.acked[id] {
			doubt[l.kindOf[id]]++
		}
	}
	t.Logf("in doubt by kind: %v", doubt)
	t.Logf("failures by kind: %v; other errors: %v", l.errs, l.other)
	t.Logf("ledger: %d sent, %d acknowledged, %d committed (%d in doubt), %d vanished before COMMIT; kinds %v; outcomes %v",
		len(l.attempted), len(l.acked), len(trs), len(trs)-len(l.acked), len(l.vanished), l.kinds, l.outcomes)
	return violations
}

// flEnv is the world of the fault mix: its own PostgreSQL (it restarts
// it), two relays in front of it, pgtide pointed at one of them.
type flEnv struct {
	*env
	relays  [2]*chaosRelay
	admPass string
	conf    tideConf
	port    int // the relay the config points at now
}

func (f *flEnv) adminURL() string { return f.tide.ConnString("pgtide", "adm", f.admPass) }

// reload writes conf pointed at port and sends SIGHUP; it waits for the
// reload's log line.
func (f *flEnv) reload(t *testing.T, conf tideConf, port int) {
	t.Helper()
	f.conf, f.port = conf, port
	f.rewriteConfig(t, conf.TOML(port))
	before := strings.Count(f.tide.Logs(), "configuration reloaded")
	if err := f.tide.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitUntil(t, 5*time.Second, "the reload applied", func() bool {
		return strings.Count(f.tide.Logs(), "configuration reloaded") > before
	})
}

const flExtra = `admin_users = ["adm"]
query_timeout = "1200ms"
idle_transaction_timeout = "1s"
query_wait_timeout = "6s"
cancel_wait_timeout = "2s"
server_connect_timeout = "3s"
server_login_retry = "100ms"
`

func newFLEnv(t *testing.T) *flEnv {
	t.Helper()
	pg := pgtest.StartPostgres(t, pgtest.WithSetting("synchronous_commit", "on"),
		pgtest.WithSetting("fsync", "on"), pgtest.WithSetting("full_page_writes", "on"))
	pgtest.BuildPgtide(t)
	f := &flEnv{admPass: "Adm-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	e := &env{t: t, pg: pg, User: "fluser", DB: "fldb", Pass: "Fl-pw-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	e.secrets = []string{e.Pass, pg.Password, f.admPass}
	pgtest.CreateRole(t, pg, e.User, e.Pass)
	pgtest.CreateDatabase(t, pg, e.DB, e.User)
	f.relays[0] = startChaosRelay(t, pg.Addr())
	f.relays[1] = startChaosRelay(t, pg.Addr())
	f.conf = defaultConf()
	f.conf.PoolMode = "transaction"
	f.conf.MaxClientConn = 200
	f.conf.Extra = flExtra
	f.conf.Databases = []dbConf{{Name: e.DB, PoolSize: 4}}
	f.conf.Users[e.User] = e.Pass
	f.conf.Users["adm"] = f.admPass
	f.port = f.relays[0].port()
	e.conf = f.conf
	e.tide = pgtest.StartPgtide(t, f.conf.TOML(f.port))
	t.Cleanup(e.checkNoSecrets)
	f.env = e
	setup := connect(t, e.DirectURL())
	for _, q := range []string{
		"CREATE TABLE fl_accounts (id int PRIMARY KEY, bal bigint NOT NULL)",
		"CREATE TABLE fl_transfers (id bigint PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amt int NOT NULL)",
		fmt.Sprintf("INSERT INTO fl_accounts SELECT g, %d FROM generate_series(0, %d) g", flStart, flAccounts-1),
	} {
		if _, err := setup.Exec(ctxT(t, 30*time.Second), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return f
}

// flAdmin runs a console command on a fresh console connection, bounded by d.
func (f *flEnv) flAdmin(sql string, d time.Duration) ([]adminRow, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := pgconn.Connect(ctx, f.adminURL())
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	res, err := c.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	return rowsByName(res), nil
}

// faultLog is when each fault was injected.
type faultLog struct {
	mu sync.Mutex
	at []time.Time
	k  []string
}

func (fl *faultLog) add(kind string) {
	fl.mu.Lock()
	fl.at = append(fl.at, time.Now())
	fl.k = append(fl.k, kind)
	fl.mu.Unlock()
}

func (fl *faultLog) between(a, b time.Time) []string {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	var out []string
	for i, at := range fl.at {
		if !at.Before(a) && at.Before(b) {
			out = append(out, fmt.Sprintf("%s@+%v", fl.k[i], at.Sub(a).Round(time.Millisecond)))
		}
	}
	return out
}

// flProbe runs short transactions until stop closes and returns the
// longest time between two that succeeded, logging the faults injected
// in that gap.
func flProbe(t *testing.T, url string, fl *faultLog, stop <-chan struct{}) time.Duration {
	var conn *pgx.Conn
	last := time.Now()
	var maxGap time.Duration
	var during []string
	for {
		select {
		case <-stop:
			if conn != nil {
				conn.Close(context.Background())
			}
			t.Logf("probe: longest gap between successful transactions %v; faults in it: %v", maxGap.Round(time.Millisecond), during)
			return maxGap
		case <-time.After(50 * time.Millisecond): // the probe's pace
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		if conn == nil {
			conn, err = pgx.Connect(ctx, url)
		}
		if err == nil {
			err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "SELECT 1")
				return err
			})
		}
		cancel()
		if err != nil {
			if conn != nil {
				conn.Close(context.Background())
				conn = nil
			}
			continue
		}
		now := time.Now()
		if g := now.Sub(last); g > maxGap {
			maxGap, during = g, fl.between(last, now)
		}
		last = now
	}
}

// TestFaultMixLedger runs the fault mix for ~15 s (PGTIDE_FAULT_MIX sets
// the length, PGTIDE_FAULT_SEED the seed; the seed is logged).
func TestFaultMixLedger(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("PGTIDE_FAULT_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	dur := 15 * time.Second
	if v := os.Getenv("PGTIDE_FAULT_MIX"); v != "" {
		dur, _ = time.ParseDuration(v)
	}
	if testing.Short() {
		dur = 5 * time.Second
	}
	t.Logf("seed %d (PGTIDE_FAULT_SEED=%d to repeat the fault schedule), %v", seed, seed, dur)
	f := newFLEnv(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	l := &flLedger{attempted: map[int64]bool{}, acked: map[int64]bool{}, vanished: map[int64]bool{},
		kinds: map[string]int{}, outcomes: map[string]int{}, kindOf: map[int64]string{}, errs: map[string]int{}}
	const clients = 16
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			flClient(context.Background(), l, f.URL(), c, seed, stop)
		}()
	}
	faults := map[string]int{}
	var flog faultLog
	probeStop := make(chan struct{})
	probeDone := make(chan time.Duration, 1)
	go func() { probeDone <- flProbe(t, f.URL(), &flog, probeStop) }()
	base := f.conf
	end := time.Now().Add(dur)
	restarts := 0
	for time.Now().Before(end) {
		time.Sleep(time.Duration(80+rng.IntN(220)) * time.Millisecond) // random gaps between faults
		relay := f.relays[0]
		if f.port == f.relays[1].port() {
			relay = f.relays[1]
		}
		var kind string
		switch r := rng.IntN(100); {
		case r < 18:
			kind = "terminate"
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if mon, err := pgx.Connect(ctx, f.pg.SuperConnString(f.DB)); err == nil {
				_, _ = mon.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
					WHERE datname = $1 AND pid <> pg_backend_pid() ORDER BY random() LIMIT 1`, f.DB)
				mon.Close(ctx)
			}
			cancel()
		case r < 30:
			kind = "relay-reset"
			if p := relay.pick(rng); p != nil {
				p.reset()
			}
		case r < 38:
			kind = "relay-halfclose"
			if p := relay.pick(rng); p != nil {
				p.halfClose()
			}
		case r < 48:
			kind = "relay-stall"
			if p := relay.pick(rng); p != nil {
				p.stall(time.Duration(100+rng.IntN(1400)) * time.Millisecond)
			}
		case r < 52:
			kind = "relay-stall-reset"
			if p := relay.pick(rng); p != nil {
				p.stall(time.Hour)
				d := time.Duration(100+rng.IntN(800)) * time.Millisecond
				time.AfterFunc(d, p.reset)
			}
		case r < 64:
			kind = "reload"
			conf := base
			conf.Databases = []dbConf{{Name: f.DB, PoolSize: 2 + rng.IntN(5)}}
			if rng.IntN(6) == 0 {
				conf.Databases[0].PoolMode = "session"
			}
			extra := flExtra
			switch rng.IntN(3) {
			case 0:
				extra += "server_lifetime = \"300ms\"\n"
			case 1:
				extra += "server_idle_timeout = \"200ms\"\n"
			}
			conf.Extra = extra
			port := f.port
			if rng.IntN(3) == 0 {
				port = f.relays[0].port()
				if port == f.port {
					port = f.relays[1].port()
				}
			}
			f.reload(t, conf, port)
		case r < 68:
			kind = "console-kill"
			_, _ = f.flAdmin("KILL "+f.DB, 3*time.Second)
			_, _ = f.flAdmin("RESUME "+f.DB, 3*time.Second)
		case r < 74:
			kind = "console-pause"
			_, _ = f.flAdmin("PAUSE "+f.DB, time.Duration(100+rng.IntN(1500))*time.Millisecond)
			_, _ = f.flAdmin("RESUME "+f.DB, 3*time.Second)
		case r < 78:
			kind = "console-reconnect"
			_, _ = f.flAdmin("RECONNECT "+f.DB, 3*time.Second)
		case r < 86:
			kind = "console-kill-client"
			if rows, err := f.flAdmin("SHOW CLIENTS", 3*time.Second); err == nil {
				var ids []string
				for _, row := range rows {
					if row["database"] == f.DB {
						ids = append(ids, row["id"])
					}
				}
				if len(ids) > 0 {
					_, _ = f.flAdmin("KILL_CLIENT "+ids[rng.IntN(len(ids))], 3*time.Second)
				}
			}
		case r < 90:
			kind = "console-suspend"
			_, _ = f.flAdmin("SUSPEND", time.Duration(100+rng.IntN(800))*time.Millisecond)
			_, _ = f.flAdmin("RESUME", 3*time.Second)
		default:
			if restarts >= 3 {
				continue
			}
			restarts++
			if rng.IntN(2) == 0 {
				kind = "pg-restart-fast"
				f.pg.Restart(t)
			} else {
				kind = "pg-restart-immediate"
				f.pg.RestartImmediate(t)
			}
		}
		faults[kind]++
		flog.add(kind)
	}
	// The faults end: no stall left, the pool's first config back.
	f.relays[0].unstallAll()
	f.relays[1].unstallAll()
	f.reload(t, base, f.relays[0].port())
	_, _ = f.flAdmin("RESUME", 3*time.Second)
	t.Logf("faults: %v", faults)

	// Recovery: a new transaction succeeds within a few seconds.
	recovered := pgtest.Eventually(5*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, f.URL())
		if err != nil {
			return false
		}
		defer c.Close(ctx)
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "SELECT count(*) FROM fl_accounts")
			return err
		}) == nil
	})
	close(probeStop)
	maxGap := <-probeDone
	close(stop)
	wg.Wait()
	if maxGap > 8*time.Second {
		t.Errorf("the probe went %v without a transaction during the faults", maxGap)
	}
	if !recovered {
		t.Errorf("no transaction succeeded through pgtide within 5 s after the faults ended")
	}
	direct := connect(t, f.pg.SuperConnString(f.DB))
	// Settled: no client of the database in pgtide, nothing lent, no
	// backend idle in transaction, and PostgreSQL's backends are the
	// pool's idle servers.
	var last string
	if !pgtest.Eventually(10*time.Second, func() bool {
		pools, err := f.flAdmin("SHOW POOLS", 3*time.Second)
		if err != nil {
			last = err.Error()
			return false
		}
		p := findRow(pools, "database", f.DB)
		servers, err := f.flAdmin("SHOW SERVERS", 3*time.Second)
		if err != nil {
			last = err.Error()
			return false
		}
		n := 0
		for _, s := range servers {
			if s["database"] == f.DB {
				n++
			}
		}
		var inTxn, backends int
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := direct.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%'), count(*)
			FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'`, f.DB).Scan(&inTxn, &backends); err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("pool %v; %d servers listed; %d backends, %d idle in transaction", p, n, backends, inTxn)
		return p != nil && p["cl_active"] == "0" && p["cl_waiting"] == "0" && p["sv_active"] == "0" &&
			inTxn == 0 && backends == n && n <= 4
	}) {
		t.Errorf("not settled 10 s after the clients left: %s", last)
	}
	if logs := f.tide.Logs(); strings.Contains(logs, "panicked") {
		t.Errorf("pgtide recovered from a panic during the faults (see its output)")
	}
	if len(l.acked) == 0 {
		t.Fatal("no transfer was acknowledged: the workload did not run")
	}
	t.Logf("%d settings checks", l.settings)
	for i, w := range l.wrongSettings {
		if i == 20 {
			t.Errorf("... %d more", len(l.wrongSettings)-20)
			break
		}
		t.Errorf("settings not the client's own: %s", w)
	}
	if v := flCheck(t, direct, l); v > 0 {
		t.Fatalf("%d ledger violations (seed %d)", v, seed)
	}
}
