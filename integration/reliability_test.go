package integration

// Reliability: what clients see when PostgreSQL restarts, when servers are
// killed idle or mid-transaction, when a backend hangs, when clients vanish,
// during a connection storm, when pgtide runs out of descriptors, and when
// clients send hostile protocol input. Every test ends by checking that
// pgtide's descriptors and goroutines return near their baseline.
// docs/reliability.md maps each fault to its test.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// ---- harness ----------------------------------------------------------------

// relEnv is an env with the metrics endpoint on, in transaction mode unless
// modify says otherwise.
type relEnv struct {
	*env
	metrics string // http://127.0.0.1:PORT
	pid     int    // pgtide's process id
	mon     *pgx.Conn
}

func newRelEnv(t *testing.T, modify func(c *tideConf, db *dbConf)) *relEnv {
	t.Helper()
	mport, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.MaxClientConn = 200
		c.Extra = fmt.Sprintf("metrics_listen = \"127.0.0.1:%d\"\n", mport)
		if modify != nil {
			modify(c, db)
		}
	})
	r := &relEnv{env: e, metrics: fmt.Sprintf("http://127.0.0.1:%d", mport), pid: e.tide.Cmd.Process.Pid}
	if !pgtest.Eventually(5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(r.metrics, "http://"), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("metrics endpoint %s not listening", r.metrics)
	}
	r.mon = super(t, e.pg, "postgres")
	return r
}

// procRSS is pid's resident set size in bytes (VmRSS).
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return -1
}

// procFDs is the number of open descriptors of pid.
func procFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

type leakBase struct{ fds, goroutines int }

func (r *relEnv) goroutines(t *testing.T) int {
	v, ok := scrapeMetrics(t, r.metrics).get("go_goroutines")
	if !ok {
		t.Fatal("/metrics has no go_goroutines")
	}
	return int(v)
}

// baseline records descriptors and goroutines once the pool is warm: a
// client has logged in, run a query and left.
func (r *relEnv) baseline(t *testing.T) leakBase {
	t.Helper()
	c := connect(t, r.URL())
	queryInt(t, c, "SELECT 1")
	c.Close(context.Background())
	var b leakBase
	pgtest.Eventually(3*time.Second, func() bool {
		v, _ := scrapeMetrics(t, r.metrics).get("pgtide_client_connections")
		return v == 0
	})
	b.fds, b.goroutines = procFDs(r.pid), r.goroutines(t)
	t.Logf("baseline: %d fds, %d goroutines, RSS %.1f MiB", b.fds, b.goroutines, float64(procRSS(r.pid))/(1<<20))
	return b
}

// checkLeaks waits (10 s at most) until pgtide is back near b once every
// client has left: descriptors at most b.fds + fdSlack (servers the pool
// opened since, up to its size, plus a little), goroutines at most
// b.goroutines + 5, no client connections, no lent servers, no waiters.
func (r *relEnv) checkLeaks(t *testing.T, b leakBase, fdSlack int) {
	t.Helper()
	var fds, gs int
	var clients, active, waiting float64
	ok := pgtest.Eventually(10*time.Second, func() bool {
		s := scrapeMetrics(t, r.metrics)
		clients, _ = s.get("pgtide_client_connections")
		active, _ = s.get("pgtide_pool_servers", `state="active"`)
		waiting, _ = s.get("pgtide_pool_clients", `state="waiting"`)
		gs, _ = func() (int, bool) { v, ok := s.get("go_goroutines"); return int(v), ok }()
		fds = procFDs(r.pid)
		return clients == 0 && active == 0 && waiting == 0 && fds <= b.fds+fdSlack && gs <= b.goroutines+5
	})
	t.Logf("after: %d fds (baseline %d), %d goroutines (baseline %d), clients %v, active servers %v, waiting %v, RSS %.1f MiB",
		fds, b.fds, gs, b.goroutines, clients, active, waiting, float64(procRSS(r.pid))/(1<<20))
	if !ok {
		t.Errorf("pgtide did not return to baseline within 10 s: %d fds (baseline %d + %d), %d goroutines (baseline %d + 5), %v clients, %v active servers, %v waiting clients",
			fds, b.fds, fdSlack, gs, b.goroutines, clients, active, waiting)
	}
}

// poolServers returns the pool's server gauges summed over states, and the
// waiting clients.
func (r *relEnv) poolServers(t *testing.T) (total, active, waiting float64) {
	s := scrapeMetrics(t, r.metrics)
	for _, st := range []string{"active", "idle", "used", "login"} {
		v, _ := s.get("pgtide_pool_servers", `state="`+st+`"`, `database="`+r.DB+`"`)
		total += v
	}
	active, _ = s.get("pgtide_pool_servers", `state="active"`, `database="`+r.DB+`"`)
	waiting, _ = s.get("pgtide_pool_clients", `state="waiting"`, `database="`+r.DB+`"`)
	return
}

// backends counts the test user's backends in pg_stat_activity, and those
// inside a transaction (state 'idle in transaction%' or an open xact_start).
func (r *relEnv) backends(t *testing.T) (all, inTxn int64) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	err := r.mon.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE state LIKE 'idle in transaction%' OR (state = 'active' AND query NOT LIKE 'DISCARD%'))
		FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'`, r.User).Scan(&all, &inTxn)
	if err != nil {
		t.Fatalf("pg_stat_activity: %v", err)
	}
	return
}

// waitNoOpenTxn waits until no backend of the test user is inside a
// transaction or running a query.
func (r *relEnv) waitNoOpenTxn(t *testing.T, d time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	var all, txn int64
	if !pgtest.Eventually(d, func() bool { all, txn = r.backends(t); return txn == 0 }) {
		rows, _ := r.mon.Query(ctxT(t, 5*time.Second), `SELECT pid, state, coalesce(xact_start::text,''), query FROM pg_stat_activity WHERE usename = $1`, r.User)
		var lines []string
		for rows.Next() {
			var pid int32
			var st, xs, q string
			_ = rows.Scan(&pid, &st, &xs, &q)
			lines = append(lines, fmt.Sprintf("pid %d state %q xact_start %q query %q", pid, st, xs, q))
		}
		rows.Close()
		t.Errorf("%s: after %v, %d of %d backends of %s are still in a transaction or busy:\n%s", what, d, txn, all, r.User, strings.Join(lines, "\n"))
	}
	return time.Since(start)
}

// rawLogin logs in through pgtide with pgconn and hijacks the socket: the
// caller drives the protocol with the returned Frontend.
func rawLogin(t *testing.T, url string) (*net.TCPConn, *pgproto3.Frontend) {
	t.Helper()
	tc, fe, _, _ := rawLoginKey(t, url)
	return tc, fe
}

// rawLoginKey is rawLogin that also returns the cancel key pgtide minted.
func rawLoginKey(t *testing.T, url string) (*net.TCPConn, *pgproto3.Frontend, uint32, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	tc := hc.Conn.(*net.TCPConn)
	t.Cleanup(func() { tc.Close() })
	// hc.Frontend reads through pgconn's background reader, which may hold
	// a read the login left in flight: a new Frontend on tc could lose the
	// first reply to it.
	return tc, hc.Frontend, hc.PID, hc.SecretKey
}

// send encodes and writes messages.
func send(t *testing.T, c net.Conn, msgs ...pgproto3.FrontendMessage) {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readUntil reads messages until one of type stop ('Z' ReadyForQuery, 'E'
// ErrorResponse, 'G' CopyInResponse) and returns it; an ErrorResponse is
// returned as err when stop is not 'E'.
func readUntil(t *testing.T, c net.Conn, fe *pgproto3.Frontend, d time.Duration, stop byte) (pgproto3.BackendMessage, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	for {
		m, err := fe.Receive()
		if err != nil {
			return nil, err
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			if stop == 'E' {
				return m, nil
			}
			return nil, fmt.Errorf("ErrorResponse %s %s: %s", m.Severity, m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			if stop == 'Z' {
				return m, nil
			}
		case *pgproto3.CopyInResponse:
			if stop == 'G' {
				return m, nil
			}
		}
	}
}

// expectError reads until an ErrorResponse and checks its SQLSTATE.
func expectError(t *testing.T, c net.Conn, fe *pgproto3.Frontend, d time.Duration, code string) *pgproto3.ErrorResponse {
	t.Helper()
	m, err := readUntil(t, c, fe, d, 'E')
	if err != nil {
		t.Errorf("want ErrorResponse %s within %v, got %v", code, d, err)
		return nil
	}
	er := m.(*pgproto3.ErrorResponse)
	if er.Code != code {
		t.Errorf("want SQLSTATE %s, got %s %s: %s", code, er.Severity, er.Code, er.Message)
	}
	return er
}

// reset closes c with an RST (SO_LINGER 0): a client that vanishes.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// pingAll runs SELECT 1 on every connection and fails on any error.
func pingAll(t *testing.T, what string, cs ...*pgx.Conn) {
	t.Helper()
	for i, c := range cs {
		var n int
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.QueryRow(ctx, "SELECT 1").Scan(&n)
		cancel()
		if err != nil || n != 1 {
			t.Errorf("%s: bystander %d: SELECT 1 = %d, %v", what, i, n, err)
		}
	}
}

// ---- 1. PostgreSQL restart under load ---------------------------------------

var connClassErr = regexp.MustCompile(`(?i)57P01|57P02|08006|08003|08P01|terminating connection|server connection lost|server closed the connection|connection to server .* failed|the database system is (shutting down|starting up)|could not receive data|could not send data|EOF|connection reset`)

// TestReliabilityPGRestartUnderLoad: PostgreSQL restarts while pgbench -S
// runs through pgtide (transaction mode, pool_size 5, 10 clients). Only
// transactions in flight may fail, with connection-class errors; pgtide
// recovers by itself; a fresh pgbench has 0 failures; the pool is back to
// at most 5 servers with nobody waiting.
func TestReliabilityPGRestartUnderLoad(t *testing.T) {
	needBinary(t, "pgbench", "postgresql-client")
	// A server of its own: the restart must not disturb other tests' pools.
	pg := pgtest.StartPostgres(t)
	mport, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, pg: pg, User: "reluser", DB: "reldb", Pass: "Rel-pw-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	e.secrets = []string{e.Pass, pg.Password}
	pgtest.CreateRole(t, pg, e.User, e.Pass)
	pgtest.CreateDatabase(t, pg, e.DB, e.User)
	e.conf = defaultConf()
	e.conf.PoolMode = "transaction"
	e.conf.MaxClientConn = 200
	e.conf.Extra = fmt.Sprintf("metrics_listen = \"127.0.0.1:%d\"\n", mport)
	e.conf.Databases = []dbConf{{Name: e.DB, PoolSize: 5}}
	e.conf.Users[e.User] = e.Pass
	e.tide = pgtest.StartPgtide(t, e.conf.TOML(pg.Port))
	t.Cleanup(e.checkNoSecrets)
	r := &relEnv{env: e, metrics: fmt.Sprintf("http://127.0.0.1:%d", mport), pid: e.tide.Cmd.Process.Pid}
	pgtest.Eventually(5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(r.metrics, "http://"), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	if out, err := tbPgbench(t, e, pg.Host, pg.Port, "-i", "-s", "1", "-q"); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	base := r.baseline(t)

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := tbPgbench(t, e, e.tide.Host, e.tide.Port, "-S", "-c", "10", "-j", "2", "-T", "8")
		done <- result{out, err}
	}()
	time.Sleep(2 * time.Second) // restart in the middle of pgbench's 8 s run
	rs := time.Now()
	pg.Restart(t)
	t.Logf("PostgreSQL restarted in %v", time.Since(rs).Round(time.Millisecond))
	res := <-done
	t.Logf("pgbench during the restart (exit: %v):\n%s", res.err, res.out)
	// Every error line must be a connection-class failure.
	var bad []string
	aborted, errLines := 0, 0
	for _, line := range strings.Split(res.out, "\n") {
		l := strings.ToLower(line)
		if strings.Contains(l, "aborted in command") || strings.Contains(l, "aborted") && strings.Contains(l, "client") {
			aborted++
		}
		if !(strings.Contains(l, "error") || strings.Contains(l, "fatal")) {
			continue
		}
		if strings.Contains(l, "number of failed") || strings.Contains(l, "run was aborted") {
			continue
		}
		errLines++
		if !connClassErr.MatchString(line) {
			bad = append(bad, line)
		}
	}
	t.Logf("pgbench error lines: %d, all connection-class: %v", errLines, len(bad) == 0)
	if len(bad) > 0 {
		t.Errorf("pgbench reported errors that are not connection-class:\n%s", strings.Join(bad, "\n"))
	}
	if m := tbProcessedRe.FindStringSubmatch(res.out); m == nil || m[1] == "0" {
		t.Errorf("pgbench processed no transactions during the restart run")
	}
	t.Logf("aborted-client lines: %d (pool_size 5: at most 5 transactions were in flight)", aborted)

	// Recovery, without restarting pgtide: new clients and a fresh run.
	c := connect(t, r.URL())
	queryInt(t, c, "SELECT count(*) FROM pgbench_branches")
	c.Close(context.Background())
	out, err := tbPgbench(t, e, e.tide.Host, e.tide.Port, "-S", "-c", "10", "-j", "2", "-T", "3")
	if err != nil {
		t.Errorf("pgbench after the restart: %v\n%s", err, out)
	}
	if m := tbFailedRe.FindStringSubmatch(out); m == nil || m[1] != "0" {
		t.Errorf("pgbench after the restart: want 0 failed transactions:\n%s", out)
	}
	if strings.Contains(strings.ToLower(out), "aborted") {
		t.Errorf("pgbench after the restart: aborted clients:\n%s", out)
	}
	if m := tbProcessedRe.FindStringSubmatch(out); m != nil {
		t.Logf("pgbench after the restart: %s transactions", m[1])
	}
	// No slot leaked: 5 transactions of 0.5 s run at once on the 5 servers.
	var slotWG sync.WaitGroup
	slotStart := time.Now()
	for i := 0; i < 5; i++ {
		c := connect(t, r.URL())
		slotWG.Add(1)
		go func() {
			defer slotWG.Done()
			defer c.Close(context.Background())
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, "SELECT pg_sleep(0.5)"); return err }); err != nil {
				t.Errorf("slot check: %v", err)
			}
		}()
	}
	slotWG.Wait()
	if el := time.Since(slotStart); el > 1400*time.Millisecond {
		t.Errorf("5 concurrent 0.5 s transactions took %v on pool_size 5: server slots leaked by the restart", el)
	} else {
		t.Logf("5 concurrent 0.5 s transactions took %v: all 5 slots usable", el.Round(time.Millisecond))
	}
	var total, active, waiting float64
	if !pgtest.Eventually(5*time.Second, func() bool {
		total, active, waiting = r.poolServers(t)
		return total <= 5 && active == 0 && waiting == 0
	}) {
		t.Errorf("pool after recovery: %v servers (pool_size 5), %v active, %v waiting clients", total, active, waiting)
	}
	t.Logf("pool after recovery: %v servers, %v active, %v waiting", total, active, waiting)
	r.checkLeaks(t, base, 6)
	if r.tide.Exited() {
		t.Fatal("pgtide exited")
	}
}

// ---- 2. servers killed while idle in the pool -------------------------------

// TestReliabilityIdleServersKilled: every idle server of the pool is
// terminated with pg_terminate_backend while no client holds one; the
// clients' next queries succeed (pgtide checks liveness before lending).
func TestReliabilityIdleServersKilled(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) { db.PoolSize = 3 })
	base := r.baseline(t)
	ctx := ctxT(t, 60*time.Second)
	const n = 3
	clients := make([]*pgx.Conn, n)
	txs := make([]pgx.Tx, n)
	old := map[int64]bool{}
	for i := range clients {
		clients[i] = connect(t, r.URL())
		tx, err := clients[i].Begin(ctx) // hold: all n servers open at once
		if err != nil {
			t.Fatal(err)
		}
		txs[i] = tx
		var pid int64
		if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		old[pid] = true
	}
	for _, tx := range txs {
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(old) != n {
		t.Fatalf("want %d distinct servers, got %v", n, old)
	}
	var killed int64
	if err := r.mon.QueryRow(ctx, "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1", r.User).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if !pgtest.Eventually(5*time.Second, func() bool { all, _ := r.backends(t); return all == 0 }) {
		t.Fatal("terminated backends did not go away")
	}
	t.Logf("terminated %d idle servers %v", killed, old)
	for round := 0; round < 3; round++ {
		for i, c := range clients {
			var pid int64
			if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				t.Errorf("round %d client %d: query after its servers were killed: %v", round, i, err)
				continue
			}
			if old[pid] {
				t.Errorf("round %d client %d: served by killed backend %d", round, i, pid)
			}
		}
	}
	// Again, with the clients querying concurrently right after the kill.
	if err := r.mon.QueryRow(ctx, "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1", r.User).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	t.Logf("second kill: %d servers terminated", killed)
	pgtest.Eventually(5*time.Second, func() bool { all, _ := r.backends(t); return all == 0 })
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var one int
			if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Errorf("concurrent client %d after the second kill: %v", i, err)
			}
		}()
	}
	wg.Wait()
	for _, c := range clients {
		c.Close(context.Background())
	}
	r.checkLeaks(t, base, 4)
}

// ---- 3. server killed mid-transaction ---------------------------------------

// TestReliabilityServerKilledMidTransaction: the backend of a client inside
// a transaction (idle in it, or running a query) is terminated; that client
// gets an error, four other clients running transactions all along see none.
func TestReliabilityServerKilledMidTransaction(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) { db.PoolSize = 6 })
	base := r.baseline(t)
	ctx := ctxT(t, 60*time.Second)
	setup := connect(t, r.DirectURL())
	if _, err := setup.Exec(ctx, "CREATE TABLE kt (client int, n int)"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var okTx atomic.Int64
	var bys []*pgx.Conn
	for i := 0; i < 4; i++ {
		c := connect(t, r.URL())
		bys = append(bys, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, "INSERT INTO kt VALUES ($1, $2)", i, n); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, "SELECT pg_sleep(0.005)")
					return err
				})
				if err != nil {
					t.Errorf("bystander %d, transaction %d: %v", i, n, err)
					return
				}
				okTx.Add(1)
			}
		}()
	}

	// Victim A: idle inside a transaction.
	a := connect(t, r.URL())
	txA, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pidA := queryIntTx(t, txA, "SELECT pg_backend_pid()")
	// Victim B: running a query inside a transaction.
	b := connect(t, r.URL())
	txB, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pidB := queryIntTx(t, txB, "SELECT pg_backend_pid()")
	errB := make(chan error, 1)
	go func() { _, err := txB.Exec(ctx, "SELECT pg_sleep(20)"); errB <- err }()
	waitRunning(t, r.mon, "SELECT pg_sleep(20)", 1)

	var ok bool
	if err := r.mon.QueryRow(ctx, "SELECT pg_terminate_backend($1) AND pg_terminate_backend($2)", pidA, pidB).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminate %d, %d: %v %v", pidA, pidB, ok, err)
	}
	select {
	case err := <-errB:
		if err == nil {
			t.Error("victim B: pg_sleep(20) succeeded after its backend was killed")
		} else {
			t.Logf("victim B (running) got: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("victim B: no error 5 s after its backend was killed")
	}
	pgtest.WaitUntil(t, 5*time.Second, "both victims' backends to exit", func() bool {
		var n int
		err := r.mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid IN ($1, $2)", pidA, pidB).Scan(&n)
		return err == nil && n == 0
	})
	if _, err := txA.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("victim A: query in the transaction succeeded after its backend was killed")
	} else {
		t.Logf("victim A (idle in transaction) got: %v", err)
	}
	// The bystanders go on committing after the kills.
	atKill := okTx.Load()
	pgtest.WaitUntil(t, 10*time.Second, "bystanders to commit after the kills", func() bool { return okTx.Load() >= atKill+20 })
	close(stop)
	wg.Wait()
	t.Logf("bystanders committed %d transactions without error", okTx.Load())
	for _, c := range bys {
		c.Close(context.Background())
	}
	a.Close(context.Background())
	b.Close(context.Background())
	c := connect(t, r.URL())
	queryInt(t, c, "SELECT 1")
	c.Close(context.Background())
	r.waitNoOpenTxn(t, 5*time.Second, "after the kill")
	r.checkLeaks(t, base, 7)
}

func queryIntTx(t *testing.T, tx pgx.Tx, sql string) int64 {
	t.Helper()
	var n int64
	if err := tx.QueryRow(ctxT(t, 10*time.Second), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// ---- 4. hung backend: query_timeout and idle_transaction_timeout -------------

// TestReliabilityHungBackend: a client blocked on a lock is cancelled by
// query_timeout with 57014; a client idle in BEGIN is closed by
// idle_transaction_timeout with 25P03 and its server rolled back and reused.
func TestReliabilityHungBackend(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) {
		db.PoolSize = 1
		c.Extra += "query_timeout = \"1s\"\nidle_transaction_timeout = \"1s\"\n"
	})
	base := r.baseline(t)
	ctx := ctxT(t, 60*time.Second)
	setup := connect(t, r.DirectURL())
	if _, err := setup.Exec(ctx, "CREATE TABLE hung (x int)"); err != nil {
		t.Fatal(err)
	}

	t.Run("query_timeout_on_lock", func(t *testing.T) {
		locker := connect(t, r.DirectURL())
		ltx, err := locker.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ltx.Exec(ctx, "LOCK TABLE hung"); err != nil {
			t.Fatal(err)
		}
		c := connect(t, r.URL())
		start := time.Now()
		_, err = c.Exec(ctx, "SELECT count(*) FROM hung")
		el := time.Since(start)
		if sqlState(err) != "57014" {
			t.Errorf("blocked query: want 57014, got %v after %v", err, el)
		}
		if el > 2500*time.Millisecond {
			t.Errorf("blocked query cancelled after %v, want about 1 s", el)
		}
		t.Logf("blocked query got %v after %v", err, el.Round(time.Millisecond))
		_ = ltx.Rollback(ctx)
		if n := queryInt(t, c, "SELECT count(*) FROM hung"); n != 0 {
			t.Errorf("count = %d", n)
		}
		c.Close(ctx)
	})

	t.Run("idle_transaction_timeout", func(t *testing.T) {
		conn, fe := rawLogin(t, r.URL())
		send(t, conn, &pgproto3.Query{String: "BEGIN; INSERT INTO hung VALUES (42); SELECT pg_backend_pid()"})
		var pid int64
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if d, ok := m.(*pgproto3.DataRow); ok {
				pid, _ = strconv.ParseInt(string(d.Values[0]), 10, 64)
			}
			if z, ok := m.(*pgproto3.ReadyForQuery); ok {
				if z.TxStatus != 'T' {
					t.Fatalf("status %c after BEGIN", z.TxStatus)
				}
				break
			}
		}
		start := time.Now()
		er := expectError(t, conn, fe, 4*time.Second, "25P03")
		if er != nil {
			t.Logf("idle client got %s %s %q after %v", er.Severity, er.Code, er.Message, time.Since(start).Round(time.Millisecond))
		}
		c := connect(t, r.URL())
		if got := queryInt(t, c, "SELECT pg_backend_pid()"); got != pid {
			t.Errorf("next client served by backend %d, want the rolled-back %d reused (pool_size 1)", got, pid)
		}
		if n := queryInt(t, c, "SELECT count(*) FROM hung WHERE x = 42"); n != 0 {
			t.Errorf("the timed-out transaction's row is visible: not rolled back")
		}
		c.Close(ctx)
		r.waitNoOpenTxn(t, 3*time.Second, "after idle_transaction_timeout")
	})
	r.checkLeaks(t, base, 2)
}

// ---- 5. clients that vanish -------------------------------------------------

// TestReliabilityClientVanishes: clients reset their TCP connection mid
// transaction, mid COPY IN, and while not reading a large result. Each time
// the server is rolled back or closed within seconds, the pool (size 1)
// keeps serving, and pgtide's RSS stays bounded while the client does not
// read.
func TestReliabilityClientVanishes(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) { db.PoolSize = 1 })
	base := r.baseline(t)
	ctx := ctxT(t, 60*time.Second)
	setup := connect(t, r.DirectURL())
	if _, err := setup.Exec(ctx, "CREATE TABLE van (x int)"); err != nil {
		t.Fatal(err)
	}
	after := func(t *testing.T, what string) {
		t.Helper()
		d := r.waitNoOpenTxn(t, 5*time.Second, what)
		c := connect(t, r.URL())
		if n := queryInt(t, c, "SELECT count(*) FROM van"); n != 0 {
			t.Errorf("%s: %d rows of the vanished client's transaction are visible", what, n)
		}
		pid := queryInt(t, c, "SELECT pg_backend_pid()")
		c.Close(ctx)
		t.Logf("%s: server clean after %v; next client served by backend %d", what, d.Round(time.Millisecond), pid)
	}

	t.Run("mid_transaction", func(t *testing.T) {
		conn, fe := rawLogin(t, r.URL())
		send(t, conn, &pgproto3.Query{String: "BEGIN; INSERT INTO van VALUES (1)"})
		if _, err := readUntil(t, conn, fe, 5*time.Second, 'Z'); err != nil {
			t.Fatal(err)
		}
		reset(conn)
		after(t, "reset mid-transaction")
	})

	t.Run("mid_copy_in", func(t *testing.T) {
		conn, fe := rawLogin(t, r.URL())
		send(t, conn, &pgproto3.Query{String: "COPY van FROM STDIN"})
		if _, err := readUntil(t, conn, fe, 5*time.Second, 'G'); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 100; i++ {
			send(t, conn, &pgproto3.CopyData{Data: []byte(strconv.Itoa(i) + "\n")})
		}
		// The rows reached the server: it is inside the COPY.
		pgtest.WaitUntil(t, 5*time.Second, "the server to take the 100 rows", func() bool {
			var n int64
			err := r.mon.QueryRow(ctx, "SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy WHERE datname = $1 AND command = 'COPY FROM'", r.DB).Scan(&n)
			return err == nil && n >= 100
		})
		reset(conn)
		after(t, "reset mid-COPY IN")
	})

	t.Run("copy_in_before_server_answered", func(t *testing.T) {
		// COPY and its data in one write, reset at once: pgtide may not
		// have seen the server's CopyInResponse yet, and then relies on a
		// cancel request, which PostgreSQL ignores if it arrives before the
		// backend has started the query. Timing-dependent: up to 3 tries,
		// stopping at the first slow one.
		for try := 1; try <= 3; try++ {
			conn, _ := rawLogin(t, r.URL())
			send(t, conn, &pgproto3.Query{String: "BEGIN; INSERT INTO van VALUES (7); COPY van FROM STDIN"},
				&pgproto3.CopyData{Data: []byte("1\n2\n")})
			reset(conn)
			start := time.Now()
			var txn int64
			pgtest.Eventually(15*time.Second, func() bool { _, txn = r.backends(t); return txn == 0 })
			d := time.Since(start)
			t.Logf("try %d: server clean after %v", try, d.Round(time.Millisecond))
			if d > 3*time.Second {
				t.Errorf("try %d: the server stayed in COPY/transaction for %v after the client vanished (cancel request lost, finish's 10 s fallback)", try, d.Round(time.Millisecond))
				break
			}
		}
		after(t, "reset right after sending COPY")
	})

	t.Run("large_result_not_read", func(t *testing.T) {
		conn, _ := rawLogin(t, r.URL())
		_ = conn.SetReadBuffer(4096)
		rss0 := procRSS(r.pid)
		send(t, conn, &pgproto3.Query{String: "SELECT generate_series(1, 5000000)"})
		peak := rss0
		for i := 0; i < 30; i++ { // 3 s of not reading
			time.Sleep(100 * time.Millisecond)
			peak = max(peak, procRSS(r.pid))
		}
		var state string
		_ = r.mon.QueryRow(ctx, "SELECT coalesce(string_agg(state || '/' || coalesce(wait_event, ''), ','), '') FROM pg_stat_activity WHERE usename = $1", r.User).Scan(&state)
		t.Logf("client not reading for 3 s: pgtide RSS %.1f MiB -> peak %.1f MiB; backend %s", float64(rss0)/(1<<20), float64(peak)/(1<<20), state)
		if peak-rss0 > 64<<20 {
			t.Errorf("pgtide RSS grew by %.1f MiB while the client did not read (limit 64 MiB)", float64(peak-rss0)/(1<<20))
		}
		reset(conn)
		after(t, "reset while not reading a large result")
	})
	r.checkLeaks(t, base, 2)
}

// ---- 6. connection storm ----------------------------------------------------

// raiseNofile raises this process's soft RLIMIT_NOFILE to at least n (up to
// the hard limit); pgtide, started as a child, inherits it.
func raiseNofile(t *testing.T, n uint64) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < n {
		lim.Cur = min(n, lim.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Logf("setrlimit: %v", err)
		}
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return lim.Cur
}

func startupPacket(user, db string) []byte {
	b, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": user, "database": db}}).Encode(nil)
	return b
}

// TestReliabilityConnectionStorm: 5,000 TCP connections at once against
// max_client_conn 1000: the excess get 53300 promptly, RSS stays bounded,
// clients logged in before the storm keep working throughout.
func TestReliabilityConnectionStorm(t *testing.T) {
	storm, maxConn := 5000, 1000
	if os.Getenv("PGTIDE_STORM_SMALL") != "" {
		storm, maxConn = 2000, 500
	}
	if lim := raiseNofile(t, uint64(storm)*2+1000); lim < uint64(storm)+500 {
		storm = int(lim) - 500
		maxConn = storm / 5
		t.Logf("RLIMIT_NOFILE %d: storm scaled down to %d connections, max_client_conn %d", lim, storm, maxConn)
	}
	r := newRelEnv(t, func(c *tideConf, db *dbConf) { db.PoolSize = 4; c.MaxClientConn = maxConn })
	base := r.baseline(t)
	rss0 := procRSS(r.pid)

	// Bystanders, logged in before the storm, query all through it.
	var by []*pgx.Conn
	for i := 0; i < 3; i++ {
		by = append(by, connect(t, r.URL()))
	}
	stopBy := make(chan struct{})
	var byWG sync.WaitGroup
	var byOK, byErr atomic.Int64
	var byMax atomic.Int64
	for _, c := range by {
		byWG.Add(1)
		go func() {
			defer byWG.Done()
			for {
				select {
				case <-stopBy:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				s := time.Now()
				var n int
				err := c.QueryRow(ctx, "SELECT 1").Scan(&n)
				cancel()
				if d := int64(time.Since(s)); d > byMax.Load() {
					byMax.Store(d)
				}
				if err != nil {
					byErr.Add(1)
					t.Errorf("bystander during the storm: %v", err)
					return
				}
				byOK.Add(1)
				time.Sleep(10 * time.Millisecond) // a bystander's pace, not a storm of its own
			}
		}()
	}

	var peak atomic.Int64
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		for {
			peak.Store(max(peak.Load(), procRSS(r.pid)))
			select {
			case <-stopRSS:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	type outcome struct {
		conn    net.Conn
		kind    string // "admitted", "53300", "other:<code>", "dial: ...", "read: ..."
		latency time.Duration
	}
	pkt := startupPacket(r.User, r.DB)
	outs := make([]outcome, storm)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			s := time.Now()
			c, err := net.DialTimeout("tcp", r.tide.Addr, 15*time.Second)
			if err != nil {
				outs[i] = outcome{kind: "dial: " + err.Error(), latency: time.Since(s)}
				return
			}
			outs[i].conn = c
			_ = c.SetDeadline(time.Now().Add(15 * time.Second))
			if _, err := c.Write(pkt); err != nil {
				outs[i].kind, outs[i].latency = "write: "+err.Error(), time.Since(s)
				return
			}
			m, err := pgproto3.NewFrontend(c, c).Receive()
			outs[i].latency = time.Since(s)
			switch m := m.(type) {
			case *pgproto3.AuthenticationSASL, *pgproto3.AuthenticationMD5Password, *pgproto3.AuthenticationCleartextPassword:
				outs[i].kind = "admitted"
			case *pgproto3.ErrorResponse:
				if m.Code == "53300" {
					outs[i].kind = "53300"
				} else {
					outs[i].kind = "other:" + m.Code
				}
			default:
				outs[i].kind = fmt.Sprintf("read: %T %v", m, err)
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	stormDur := time.Since(t0)
	close(stopRSS)
	<-rssDone

	counts := map[string]int{}
	var maxRej, maxAdm time.Duration
	for _, o := range outs {
		k := o.kind
		if strings.HasPrefix(k, "dial:") || strings.HasPrefix(k, "read:") || strings.HasPrefix(k, "write:") {
			k = k[:strings.IndexByte(k, ':')]
		}
		counts[k]++
		if o.kind == "53300" {
			maxRej = max(maxRej, o.latency)
		}
		if o.kind == "admitted" {
			maxAdm = max(maxAdm, o.latency)
		}
	}
	t.Logf("storm of %d connections (max_client_conn %d) took %v: %v; slowest 53300 after %v, slowest admission after %v",
		storm, maxConn, stormDur.Round(time.Millisecond), counts, maxRej.Round(time.Millisecond), maxAdm.Round(time.Millisecond))
	t.Logf("pgtide RSS: %.1f MiB before, peak %.1f MiB during the storm (%.1f KiB per connection)",
		float64(rss0)/(1<<20), float64(peak.Load())/(1<<20), float64(peak.Load()-rss0)/1024/float64(storm))
	for _, o := range outs {
		if o.kind != "admitted" && o.kind != "53300" {
			t.Errorf("a storm connection ended with %q after %v", o.kind, o.latency)
			break
		}
	}
	if counts["admitted"] > maxConn {
		t.Errorf("%d connections admitted with max_client_conn %d", counts["admitted"], maxConn)
	}
	if counts["53300"] < storm-maxConn {
		t.Errorf("only %d of %d connections got 53300 (max_client_conn %d)", counts["53300"], storm, maxConn)
	}
	if maxRej > 5*time.Second {
		t.Errorf("slowest 53300 took %v, want a few seconds at most", maxRej)
	}
	if grow := peak.Load() - rss0; grow > 512<<20 {
		t.Errorf("pgtide RSS grew by %.1f MiB during the storm", float64(grow)/(1<<20))
	}
	// Every connection under the limit must be admitted: the storm's
	// refused connections must not count against the ones that fit.
	if want := (maxConn - len(by)) * 9 / 10; counts["admitted"] < want {
		t.Errorf("only %d of %d connections admitted with max_client_conn %d and %d clients already in (want at least %d): refused connections still in flight count against the limit",
			counts["admitted"], storm, maxConn, len(by), want)
	}
	close(stopBy)
	byWG.Wait()
	// The limit is exact: admitted storm connections plus the bystanders may
	// fill it. Free one slot (a bystander), then a new client must get in.
	if len(by) > 0 {
		by[0].Close(context.Background())
	}
	// An admitted storm client completes its login: send a password... it
	// has none (SCRAM); instead a fresh pgx client must get in while the
	// storm's admitted connections are still open, once the refusals are done.
	var cerr error
	if !pgtest.Eventually(10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, r.URL())
		if cerr = err; err != nil {
			return false
		}
		defer c.Close(context.Background())
		var n int
		cerr = c.QueryRow(ctx, "SELECT 1").Scan(&n)
		return cerr == nil
	}) {
		t.Errorf("a new client after the storm (with %d storm connections still open): %v", counts["admitted"], cerr)
	}
	t.Logf("bystanders: %d queries ok, %d errors, slowest %v", byOK.Load(), byErr.Load(), time.Duration(byMax.Load()).Round(time.Millisecond))
	for _, o := range outs {
		if o.conn != nil {
			o.conn.Close()
		}
	}
	for _, c := range by {
		c.Close(context.Background())
	}
	// Give the dropped logins time to be noticed (they wait in auth).
	r.checkLeaks(t, base, 5)
}

// ---- 7. descriptor exhaustion -----------------------------------------------

// prlimitNofile sets pid's RLIMIT_NOFILE (prlimit(2)).
func prlimitNofile(pid int, cur, max uint64) error {
	lim := syscall.Rlimit{Cur: cur, Max: max}
	var old syscall.Rlimit
	_, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), uintptr(syscall.RLIMIT_NOFILE),
		uintptr(unsafe.Pointer(&lim)), uintptr(unsafe.Pointer(&old)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// TestReliabilityFDExhaustion: pgtide runs with RLIMIT_NOFILE 64 and gets
// more connections than it can accept: it logs "accept failed", keeps
// running, and serves a new client once the connections are closed.
func TestReliabilityFDExhaustion(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) { db.PoolSize = 2 })
	base := r.baseline(t)
	// A client logged in before the limit keeps working.
	by := connect(t, r.URL())
	if err := prlimitNofile(r.pid, 64, 64); err != nil {
		pgtest.SkipUnlessCI(t, "prlimit: %v", err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			_ = prlimitNofile(r.pid, 20000, 20000)
		}
	}
	defer restore()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	pkt := startupPacket(r.User, r.DB)
	for i := 0; i < 120 && !strings.Contains(r.tide.Logs(), "accept failed"); i++ {
		c, err := net.DialTimeout("tcp", r.tide.Addr, 2*time.Second)
		if err != nil {
			t.Logf("dial %d: %v", i, err)
			break
		}
		_, _ = c.Write(pkt)
		conns = append(conns, c)
		if i > 60 {
			// Paced near the limit, so the loop stops soon after pgtide
			// logs its first failed accept.
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !pgtest.Eventually(5*time.Second, func() bool { return strings.Contains(r.tide.Logs(), "accept failed") }) {
		t.Fatalf("no \"accept failed\" in pgtide's log after %d connections with RLIMIT_NOFILE 64 (%d fds open)", len(conns), procFDs(r.pid))
	}
	t.Logf("%d connections open, pgtide at %d fds: accept failed logged", len(conns), procFDs(r.pid))
	if r.tide.Exited() {
		t.Fatal("pgtide exited on descriptor exhaustion")
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	// With the connections gone (and the limit still 64), a new client works.
	var err error
	ok := pgtest.Eventually(15*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var c *pgx.Conn
		c, err = pgx.Connect(ctx, r.URL())
		if err != nil {
			return false
		}
		defer c.Close(context.Background())
		var n int
		err = c.QueryRow(ctx, "SELECT 1").Scan(&n)
		return err == nil
	})
	if !ok {
		t.Errorf("no new client could work after the connections were closed: %v", err)
	}
	pingAll(t, "after descriptor exhaustion", by)
	by.Close(context.Background())
	restore()
	if r.tide.Exited() {
		t.Fatal("pgtide exited")
	}
	r.checkLeaks(t, base, 3)
}

// ---- 8. hostile protocol input ----------------------------------------------

// TestReliabilityHostileInput: each malformed input gets an error for that
// client only (SQLSTATE read from the ErrorResponse) and a bystander keeps
// working.
func TestReliabilityHostileInput(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) {
		db.PoolSize = 1
		c.Extra += "max_packet_size = 16384\n"
	})
	base := r.baseline(t)
	by := connect(t, r.URL())
	raw := func(t *testing.T) (*net.TCPConn, *pgproto3.Frontend) {
		c, err := net.DialTimeout("tcp", r.tide.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		tc := c.(*net.TCPConn)
		t.Cleanup(func() { tc.Close() })
		return tc, pgproto3.NewFrontend(tc, tc)
	}
	write := func(t *testing.T, c net.Conn, b []byte) {
		if _, err := c.Write(b); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	// closed checks that pgtide closed the connection after the error.
	closed := func(t *testing.T, c net.Conn) {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		var buf [256]byte
		for {
			_, err := c.Read(buf[:])
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Errorf("connection still open 3 s after the error")
				}
				return
			}
		}
	}
	// silent: the connection is closed without a byte, as PostgreSQL
	// closes one on a malformed startup packet (issue 17).
	silent := func(t *testing.T, c net.Conn) []byte {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		got, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("connection still open 3 s after a malformed startup packet")
		}
		return got
	}
	hdr := func(typ byte, n uint32) []byte {
		b := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], n)
		return b
	}
	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"length_below_4", func(t *testing.T) {
			c, fe := rawLogin(t, r.URL())
			write(t, c, hdr('Q', 3))
			expectError(t, c, fe, 3*time.Second, "08P01")
			closed(t, c)
		}},
		{"length_beyond_max_packet_size", func(t *testing.T) {
			c, fe := rawLogin(t, r.URL())
			write(t, c, hdr('Q', 16384+1000)) // header only: must not wait for the body
			expectError(t, c, fe, 3*time.Second, "08P01")
			closed(t, c)
		}},
		{"unknown_message_type_after_login", func(t *testing.T) {
			c, fe := rawLogin(t, r.URL())
			write(t, c, hdr('z', 4))
			expectError(t, c, fe, 3*time.Second, "08P01")
			closed(t, c)
		}},
		{"query_before_auth", func(t *testing.T) {
			c, fe := raw(t)
			write(t, c, startupPacket(r.User, r.DB))
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			m, err := fe.Receive()
			if _, ok := m.(*pgproto3.AuthenticationSASL); !ok {
				t.Fatalf("want AuthenticationSASL, got %T %v", m, err)
			}
			send(t, c, &pgproto3.Query{String: "SELECT 1"})
			expectError(t, c, fe, 3*time.Second, "08P01")
			closed(t, c)
		}},
		{"terminate_mid_batch", func(t *testing.T) {
			c, fe := rawLogin(t, r.URL())
			send(t, c, &pgproto3.Query{String: "BEGIN; INSERT INTO hostile VALUES (1)"})
			if _, err := readUntil(t, c, fe, 5*time.Second, 'Z'); err != nil {
				t.Fatal(err)
			}
			send(t, c, &pgproto3.Parse{Query: "INSERT INTO hostile VALUES (2)"}, &pgproto3.Bind{}, &pgproto3.Terminate{})
			closed(t, c)
			r.waitNoOpenTxn(t, 5*time.Second, "after Terminate mid-batch")
			cc := connect(t, r.URL())
			if n := queryInt(t, cc, "SELECT count(*) FROM hostile"); n != 0 {
				t.Errorf("%d rows of the terminated client's transaction are visible", n)
			}
			cc.Close(context.Background())
		}},
		{"valid_query_then_unknown_type_in_one_packet", func(t *testing.T) {
			// Transaction mode, pool_size 1: BEGIN and an invalid message
			// arrive together. The client gets 08P01; the server must be
			// free for the next client at once, not held until a fallback.
			c, fe := rawLogin(t, r.URL())
			b, _ := (&pgproto3.Query{String: "BEGIN"}).Encode(nil)
			write(t, c, append(b, hdr('z', 4)...))
			expectError(t, c, fe, 3*time.Second, "08P01")
			closed(t, c)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var n int
			err := by.QueryRow(ctx, "SELECT 1").Scan(&n)
			if el := time.Since(start); err != nil || el > 2*time.Second {
				t.Errorf("the next query (pool_size 1) took %v (%v): the server stayed held after the client was refused", el.Round(time.Millisecond), err)
			}
			r.waitNoOpenTxn(t, 3*time.Second, "after BEGIN + invalid message")
		}},
		{"protocol_v2_startup", func(t *testing.T) {
			c, _ := raw(t)
			pkt := make([]byte, 296) // v2 StartupPacket: len, version, database[64], user[32], options[64], unused[64], tty[64]
			binary.BigEndian.PutUint32(pkt, 296)
			binary.BigEndian.PutUint32(pkt[4:], 2<<16)
			copy(pkt[8:], r.DB)
			copy(pkt[72:], r.User)
			write(t, c, pkt)
			// PostgreSQL answers in protocol 2: 'E' and a C string.
			want := "EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n\x00"
			if got := silent(t, c); string(got) != want {
				t.Errorf("got %q, want %q", got, want)
			}
		}},
		{"ssl_request_after_startup", func(t *testing.T) {
			c, fe := rawLogin(t, r.URL())
			write(t, c, []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f})
			expectError(t, c, fe, 3*time.Second, "08P01")
			closed(t, c)
		}},
		{"garbage_startup_http", func(t *testing.T) {
			c, _ := raw(t)
			write(t, c, []byte("GET / HTTP/1.1\r\nHost: pgtide\r\n\r\n"))
			if got := silent(t, c); len(got) > 0 {
				t.Errorf("got %q, want no reply (invalid length of startup packet)", got)
			}
		}},
		{"garbage_startup_short_length", func(t *testing.T) {
			c, _ := raw(t)
			write(t, c, []byte{0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef})
			if got := silent(t, c); len(got) > 0 {
				t.Errorf("got %q, want no reply (invalid length of startup packet)", got)
			}
		}},
		{"garbage_startup_no_terminator", func(t *testing.T) {
			c, fe := raw(t)
			b := []byte{0, 0, 0, 0, 0, 3, 0, 0}
			b = append(b, "user\x00x"...)
			binary.BigEndian.PutUint32(b, uint32(len(b)))
			write(t, c, b)
			expectError(t, c, fe, 3*time.Second, "08P01")
			closed(t, c)
		}},
	}
	setup := connect(t, r.DirectURL())
	if _, err := setup.Exec(ctxT(t, 10*time.Second), "CREATE TABLE hostile (x int)"); err != nil {
		t.Fatal(err)
	}
	setup.Close(context.Background())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t)
			pingAll(t, tc.name, by)
		})
	}
	by.Close(context.Background())
	r.checkLeaks(t, base, 2)
}

// ---- declared lengths up to the default max_packet_size ----------------------

// TestReliabilityHugeDeclaredLength: with the default max_packet_size
// (1 GiB), logged-in clients send a 5-byte header declaring a ~1 GiB Query
// and nothing more. pgtide must not commit memory for bodies that never
// come: RSS stays within +64 MiB, a bystander keeps working.
func TestReliabilityHugeDeclaredLength(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) { db.PoolSize = 2 })
	base := r.baseline(t)
	by := connect(t, r.URL())
	rss0 := procRSS(r.pid)
	var conns []*net.TCPConn
	for i := 0; i < 8; i++ {
		c, _ := rawLogin(t, r.URL())
		b := []byte{'Q', 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], 1<<30-16)
		if _, err := c.Write(append(b, "SELECT "...)); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	peak := rss0
	for i := 0; i < 20; i++ { // 1 s for pgtide to (not) commit memory
		time.Sleep(50 * time.Millisecond)
		peak = max(peak, procRSS(r.pid))
	}
	t.Logf("8 clients declaring 1 GiB messages: pgtide RSS %.1f MiB -> peak %.1f MiB", float64(rss0)/(1<<20), float64(peak)/(1<<20))
	if peak-rss0 > 64<<20 {
		t.Errorf("pgtide RSS grew by %.1f MiB for 8 declared-but-unsent 1 GiB messages", float64(peak-rss0)/(1<<20))
	}
	pingAll(t, "with huge declared messages pending", by)
	for _, c := range conns {
		c.Close()
	}
	by.Close(context.Background())
	r.checkLeaks(t, base, 3)
}
