package integration

// Atomicity under server faults (DESIGN.md invariant 9): a statement runs
// inside the transaction its client put it in, or nowhere. When the server
// a client holds dies mid-transaction, nothing the client sends after that
// may reach any server: the session is over. docs/reliability.md maps each
// fault to what the client sees.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// rawSession is a logged-in client connection driven message by message.
type rawSession struct {
	conn     net.Conn
	fe       *pgproto3.Frontend
	sawFatal bool // the server's own FATAL arrived
	errors   int  // ErrorResponses after the server was terminated
}

func dialRaw(ctx context.Context, url string) (*rawSession, error) {
	pc, err := pgconn.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	hc, err := pc.Hijack()
	if err != nil {
		return nil, err
	}
	// hc.Frontend, not a new one: it reads through pgconn's background
	// reader, which may hold a read left in flight by the login and would
	// otherwise swallow the first reply.
	return &rawSession{conn: hc.Conn, fe: hc.Frontend}, nil
}

func (r *rawSession) query(sql string) error {
	r.fe.Send(&pgproto3.Query{String: sql})
	return r.fe.Flush()
}

// untilReady reads to the next ReadyForQuery and returns its status and the
// first error the server sent.
func (r *rawSession) untilReady() (status byte, pgErr *pgproto3.ErrorResponse, err error) {
	for {
		m, err := r.fe.Receive()
		if err != nil {
			return 0, pgErr, err
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			if pgErr == nil {
				cp := *m
				pgErr = &cp
			}
		case *pgproto3.ReadyForQuery:
			return m.TxStatus, pgErr, nil
		}
	}
}

// TestAtomicityLostServerNextStatement is issue 11's focused loop: BEGIN and
// a first INSERT, then the client's own backend is terminated, and a second
// INSERT is sent either the moment the server's FATAL arrives or after a
// random 0-2 ms delay. The second INSERT must never run: no row may exist.
// Before the fix, pgtide borrowed a fresh server for it and it committed on
// its own.
func TestAtomicityLostServerNextStatement(t *testing.T) {
	for _, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) {
			iters := 500 // per timing
			if mode == "session" {
				iters = 200 // the same code path decides; fewer suffice
			}
			if testing.Short() {
				iters = 100
			}
			testLostServerNextStatement(t, mode, iters)
		})
	}
}

func testLostServerNextStatement(t *testing.T, mode string, iters int) {
	admPass := "Adm-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = mode
		c.MaxClientConn = 200
		db.PoolSize = 4
		c.Extra = "admin_users = [\"adm\"]\n"
		c.Users["adm"] = admPass
	})
	e.secrets = append(e.secrets, admPass)
	admin := connect(t, e.DirectURL())
	if _, err := admin.Exec(ctxT(t, 30*time.Second), "CREATE TABLE r (i int, what text)"); err != nil {
		t.Fatal(err)
	}
	const workers = 4
	var next atomic.Int64
	var fatals, conns atomic.Int64
	ctx := ctxT(t, 5*time.Minute)
	for _, onFatal := range []bool{true, false} {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		next.Store(0)
		base := 0
		if !onFatal {
			base = iters
		}
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
				for {
					i := int(next.Add(1))
					if i > iters {
						return
					}
					i += base
					r, err := dialRaw(ctx, e.URL())
					if err != nil {
						errs <- fmt.Errorf("iteration %d: connect: %w", i, err)
						return
					}
					conns.Add(1)
					if err := lostServerIteration(r, i, onFatal, rng); err != nil {
						if rows, qerr := admin.Query(ctx, "SELECT pid, state, coalesce(wait_event_type,''), coalesce(wait_event,''), query FROM pg_stat_activity WHERE datname = $1", e.DB); qerr == nil {
							for rows.Next() {
								var pid int
								var st, wt, we, q string
								_ = rows.Scan(&pid, &st, &wt, &we, &q)
								t.Logf("backend %d: %s %s/%s %q", pid, st, wt, we, q)
							}
							rows.Close()
						}
						if adm, aerr := pgconn.Connect(ctx, e.tide.ConnString("pgtide", "adm", admPass)); aerr == nil {
							for _, q := range []string{"SHOW CLIENTS", "SHOW SERVERS", "SHOW POOLS"} {
								res, qerr := adm.Exec(ctx, q).ReadAll()
								if qerr == nil && len(res) > 0 {
									for _, row := range res[0].Rows {
										var cols []string
										for i, v := range row {
											cols = append(cols, string(res[0].FieldDescriptions[i].Name)+"="+string(v))
										}
										t.Logf("%s: %s", q, strings.Join(cols, " "))
									}
								}
							}
							adm.Close(ctx)
						}
						_ = e.tide.Signal(syscall.SIGABRT)  // goroutine dump into pgtide's output
						_, _ = e.tide.Wait(5 * time.Second) // written in full once it exits
						r.conn.Close()
						errs <- fmt.Errorf("iteration %d: %w", i, err)
						return
					}
					if r.sawFatal {
						fatals.Add(1)
					}
					r.conn.Close()
				}
			}()
		}
		wg.Wait()
		close(errs)
		failed := false
		for err := range errs {
			t.Error(err)
			failed = true
		}
		if failed {
			t.FailNow()
		}
	}
	// Count once pgtide has no client of the database left and nothing runs
	// there: a stray statement would have landed by then.
	settled(t, console(t, e.tide.ConnString("pgtide", "adm", admPass)), admin, e.DB)
	var rows []string
	res, err := admin.Query(ctxT(t, 30*time.Second), "SELECT i, what FROM r ORDER BY i")
	if err != nil {
		t.Fatal(err)
	}
	for res.Next() {
		var i int
		var what string
		if err := res.Scan(&i, &what); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, fmt.Sprintf("%d:%s", i, what))
	}
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d iterations (%d per timing), %d connections, %d saw the server's FATAL", 2*iters, iters, conns.Load(), fatals.Load())
	if len(rows) > 0 {
		t.Fatalf("%d rows exist; none may (a statement ran outside its client's transaction): %v", len(rows), rows[:min(len(rows), 20)])
	}
	// Servers are not held by dead sessions: the whole pool still serves
	// pool_size transactions at once.
	checkPoolUsable(t, e.URL(), 4)
}

func (r *rawSession) markFatal() { r.sawFatal = true }

// oneError checks that the client was told once why its session ended.
func (r *rawSession) oneError() error {
	if r.errors != 1 {
		return fmt.Errorf("the client got %d errors after its server was terminated; want exactly one", r.errors)
	}
	return nil
}

func lostServerIteration(r *rawSession, i int, onFatal bool, rng *rand.Rand) error {
	_ = r.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := r.query(fmt.Sprintf("BEGIN; INSERT INTO r VALUES (%d, 'first')", i)); err != nil {
		return err
	}
	st, pe, err := r.untilReady()
	if err != nil {
		return fmt.Errorf("BEGIN: %w", err)
	}
	// 30 s from here for the rest.
	_ = r.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if pe != nil || st != 'T' {
		return fmt.Errorf("BEGIN: status %c, error %v", st, pe)
	}
	if err := r.query("SELECT pg_terminate_backend(pg_backend_pid())"); err != nil {
		return err
	}
	second := fmt.Sprintf("INSERT INTO r VALUES (%d, 'second')", i)
	if onFatal {
		for {
			m, err := r.fe.Receive()
			if err != nil {
				return r.oneError() // the connection ended before any error
			}
			if er, ok := m.(*pgproto3.ErrorResponse); ok {
				r.errors++
				if er.Severity == "FATAL" {
					r.markFatal()
				}
				break
			}
		}
		_ = r.query(second) // may fail: the connection is going away
	} else {
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond) // the fault lands anywhere in the gap
		_ = r.query(second)
	}
	// Read to the end: the session must be over.
	_ = r.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		m, err := r.fe.Receive()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("the session did not end within 30 s after its server was terminated")
			}
			return r.oneError()
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			r.errors++
			if m.Severity == "FATAL" {
				r.markFatal()
			}
		case *pgproto3.ReadyForQuery:
			if m.TxStatus == 'I' {
				// Only possible if the second INSERT ran somewhere.
				return fmt.Errorf("got ReadyForQuery(I) after the server was terminated")
			}
		}
	}
}

// settled waits until pgtide lists no client of db (consoles aside) and no
// backend of db other than the caller's is running a statement.
func settled(t *testing.T, adm *pgconn.PgConn, direct *pgx.Conn, db string) {
	t.Helper()
	if !pgtest.Eventually(10*time.Second, func() bool {
		for _, r := range mustAdmin(t, adm, "SHOW CLIENTS") {
			if r["database"] == db {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("clients of %s still connected to pgtide after 10 s", db)
	}
	settledBackends(t, direct, db)
}

// settledBackends waits until no backend of db other than direct's own is
// running a statement.
func settledBackends(t *testing.T, direct *pgx.Conn, db string) {
	t.Helper()
	if !pgtest.Eventually(10*time.Second, func() bool {
		return queryInt(t, direct, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = $1 AND pid <> pg_backend_pid() AND state NOT IN ('idle', 'idle in transaction')`, db) == 0
	}) {
		t.Fatalf("backends of %s still running statements after 10 s", db)
	}
}

// checkPoolUsable runs n 0.3 s transactions at once through url and fails
// if they do not all get a server (a server held by a dead session).
func checkPoolUsable(t *testing.T, url string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := make(chan struct{})
	var failed atomic.Int64
	for k := 0; k < n; k++ {
		c := connect(t, url)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "SELECT pg_sleep(0.3)")
				return err
			}); err != nil {
				failed.Add(1)
				t.Errorf("pool check: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if failed.Load() > 0 {
		t.Errorf("%d of %d concurrent transactions did not get a server within 8 s: servers held by dead sessions", failed.Load(), n)
	}
}

// ledger is the fault-injection workload of issue 11: each transaction
// inserts its id into two tables and bumps its client's counter.
type ledger struct {
	url      string
	clients  int
	acked    []map[int64]bool // per client: committed transaction ids the client was told about
	attempts atomic.Int64
	commits  atomic.Int64
	failures atomic.Int64
}

func setupLedger(t *testing.T, c *pgx.Conn, clients int) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	for _, q := range []string{
		"CREATE TABLE ledger_a (tx bigint PRIMARY KEY, client int NOT NULL)",
		"CREATE TABLE ledger_b (tx bigint PRIMARY KEY, client int NOT NULL)",
		"CREATE TABLE ledger_n (client int PRIMARY KEY, n bigint NOT NULL)",
		fmt.Sprintf("INSERT INTO ledger_n SELECT g, 0 FROM generate_series(0, %d) g", clients-1),
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// run drives the workload until stop closes. Each client reconnects after
// any error; a transaction counts as acknowledged only when COMMIT returned
// without error.
func (l *ledger) run(stop <-chan struct{}) {
	l.acked = make([]map[int64]bool, l.clients)
	var wg sync.WaitGroup
	for c := 0; c < l.clients; c++ {
		l.acked[c] = map[int64]bool{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn *pgx.Conn
			seq := int64(0)
			for {
				select {
				case <-stop:
					if conn != nil {
						conn.Close(context.Background())
					}
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				if conn == nil {
					var err error
					if conn, err = pgx.Connect(ctx, l.url); err != nil {
						cancel()
						time.Sleep(20 * time.Millisecond) // a client's pace between reconnects
						continue
					}
				}
				seq++
				tx := int64(c)<<32 | seq
				l.attempts.Add(1)
				err := pgx.BeginFunc(ctx, conn, func(t pgx.Tx) error {
					if _, err := t.Exec(ctx, "INSERT INTO ledger_a VALUES ($1, $2)", tx, c); err != nil {
						return err
					}
					if _, err := t.Exec(ctx, "INSERT INTO ledger_b VALUES ($1, $2)", tx, c); err != nil {
						return err
					}
					_, err := t.Exec(ctx, "UPDATE ledger_n SET n = n + 1 WHERE client = $1", c)
					return err
				})
				cancel()
				if err != nil {
					l.failures.Add(1)
					conn.Close(context.Background())
					conn = nil
					continue
				}
				l.commits.Add(1)
				l.acked[c][tx] = true
			}
		}()
	}
	wg.Wait()
}

// check verifies every transaction's atomicity against the database.
func (l *ledger) check(t *testing.T, c *pgx.Conn) (violations int) {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	report := func(format string, args ...any) {
		violations++
		if violations <= 20 {
			t.Errorf(format, args...)
		}
	}
	a, b := map[int64]int{}, map[int64]int{}
	for tbl, m := range map[string]map[int64]int{"ledger_a": a, "ledger_b": b} {
		rows, err := c.Query(ctx, "SELECT tx, client FROM "+tbl)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var tx int64
			var cl int
			if err := rows.Scan(&tx, &cl); err != nil {
				t.Fatal(err)
			}
			m[tx] = cl
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	for tx := range a {
		if _, ok := b[tx]; !ok {
			report("transaction %#x: row in ledger_a without its ledger_b row", tx)
		}
	}
	for tx := range b {
		if _, ok := a[tx]; !ok {
			report("transaction %#x: row in ledger_b without its ledger_a row", tx)
		}
	}
	perClient := map[int]int64{}
	for _, cl := range a {
		perClient[cl]++
	}
	rows, err := c.Query(ctx, "SELECT client, n FROM ledger_n")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var cl int
		var n int64
		if err := rows.Scan(&cl, &n); err != nil {
			t.Fatal(err)
		}
		if n != perClient[cl] {
			report("client %d: counter %d but %d committed rows", cl, n, perClient[cl])
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for cl, m := range l.acked {
		for tx := range m {
			if _, ok := a[tx]; !ok {
				report("client %d: transaction %#x acknowledged as committed but missing", cl, tx)
			}
		}
	}
	t.Logf("ledger: %d attempts, %d acknowledged commits, %d failed, %d transactions committed, %d violations",
		l.attempts.Load(), l.commits.Load(), l.failures.Load(), len(a), violations)
	return violations
}

// terminateBackends terminates every backend of db except the caller's.
func terminateBackends(ctx context.Context, c *pgx.Conn, db string) (int, error) {
	var n int
	err := c.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid()`, db).Scan(&n)
	return n, err
}

// TestAtomicityLedgerBackendsTerminated runs the ledger (24 clients on a
// pool of 4, transaction mode) while every backend of its database is
// terminated every 150-400 ms, then checks that every transaction is all
// there or not there, counters equal row counts, and no acknowledged commit
// is missing.
func TestAtomicityLedgerBackendsTerminated(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.MaxClientConn = 200
		db.PoolSize = 4
	})
	mon := super(t, e.pg, e.DB)
	setupLedger(t, connect(t, e.DirectURL()), 24)
	l := &ledger{url: e.URL(), clients: 24}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { l.run(stop); close(done) }()
	dur := 12 * time.Second
	if testing.Short() {
		dur = 4 * time.Second
	}
	faults, killed := 0, 0
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		time.Sleep(time.Duration(150+rand.IntN(250)) * time.Millisecond) // random gaps between faults
		n, err := terminateBackends(ctxT(t, 10*time.Second), mon, e.DB)
		if err != nil {
			t.Fatalf("terminate: %v", err)
		}
		faults++
		killed += n
	}
	close(stop)
	<-done
	t.Logf("%d fault rounds, %d backends terminated", faults, killed)
	if l.commits.Load() == 0 {
		t.Fatal("no transaction committed: the workload did not run")
	}
	if v := l.check(t, connect(t, e.DirectURL())); v > 0 {
		t.Fatalf("%d atomicity violations", v)
	}
	checkPoolUsable(t, e.URL(), 4)
}

// TestAtomicityKilledWhileWaiting: a client killed (admin KILL_CLIENT) while
// it waits for a server must not have its statement run when a server
// frees: it was told FATAL. Before the fix its borrow went on waiting and
// ran the INSERT on the next free server.
func TestAtomicityKilledWhileWaiting(t *testing.T) {
	a := newAdminEnv(t) // transaction mode, pool_size 1
	direct := connect(t, a.DirectURL())
	if _, err := direct.Exec(ctxT(t, 30*time.Second), "CREATE TABLE k (i int)"); err != nil {
		t.Fatal(err)
	}
	// Both log in first: a login may need the pool's one server.
	victim, err := dialRaw(ctxT(t, 30*time.Second), a.URL()+"&application_name=waiting_victim")
	if err != nil {
		t.Fatal(err)
	}
	defer victim.conn.Close()
	holder := connect(t, a.URL())
	tx, err := holder.Begin(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctxT(t, 30*time.Second), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if err := victim.query("INSERT INTO k VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	adm := console(t, a.adminURL())
	var id string
	if !pgtest.Eventually(10*time.Second, func() bool {
		row := findRow(mustAdmin(t, adm, "SHOW CLIENTS"), "application_name", "waiting_victim")
		if row != nil && row["state"] == "waiting" {
			id = row["id"]
		}
		return id != ""
	}) {
		t.Fatal("the victim never showed as waiting in SHOW CLIENTS")
	}
	mustAdmin(t, adm, "KILL_CLIENT "+id)
	_ = victim.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		m, err := victim.fe.Receive()
		if err != nil {
			break
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			t.Fatal("the killed client got a ReadyForQuery: its INSERT ran")
		}
	}
	if err := tx.Commit(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	// The server is free now: wait until the killed session is gone and
	// nothing runs, so a leftover borrow would have run the INSERT.
	if !pgtest.Eventually(10*time.Second, func() bool {
		return findRow(mustAdmin(t, adm, "SHOW CLIENTS"), "application_name", "waiting_victim") == nil
	}) {
		t.Fatal("the killed client is still listed by SHOW CLIENTS")
	}
	settledBackends(t, direct, a.DB)
	if _, err := holder.Exec(ctxT(t, 30*time.Second), "SELECT 1"); err != nil {
		t.Fatalf("the pool's one server is not usable after the kill: %v", err)
	}
	if n := queryInt(t, direct, "SELECT count(*) FROM k"); n != 0 {
		t.Fatalf("the killed client's INSERT ran: %d rows", n)
	}
}
