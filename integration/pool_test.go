package integration

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtide/pgtide/integration/pgtest"
)

func TestPoolSizeLimit(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) { db.PoolSize = 2 })
	mon := super(t, e.pg, "postgres")

	const clients = 6
	var maxSeen, samples atomic.Int64
	stop := make(chan struct{})
	monDone := make(chan error, 1)
	go func() {
		ctx := context.Background()
		for {
			var n int64
			if err := mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", e.User).Scan(&n); err != nil {
				monDone <- err
				return
			}
			samples.Add(1)
			for {
				m := maxSeen.Load()
				if n <= m || maxSeen.CompareAndSwap(m, n) {
					break
				}
			}
			select {
			case <-stop:
				monDone <- nil
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	var finished atomic.Int64
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := pgx.Connect(ctx, e.URL())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(context.Background())
			tx, err := c.Begin(ctx)
			if err != nil {
				errs <- err
				return
			}
			if _, err := tx.Exec(ctx, "SELECT pg_sleep(0.3)"); err != nil {
				errs <- err
				return
			}
			if err := tx.Commit(ctx); err != nil {
				errs <- err
				return
			}
			finished.Add(1)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	if err := <-monDone; err != nil {
		t.Fatalf("monitor: %v", err)
	}
	close(errs)
	for err := range errs {
		t.Errorf("client: %v", err)
	}
	if finished.Load() != clients {
		t.Fatalf("%d of %d clients finished", finished.Load(), clients)
	}
	t.Logf("6 clients took %v; max server connections seen %d over %d samples", elapsed, maxSeen.Load(), samples.Load())
	if m := maxSeen.Load(); m > 2 {
		t.Fatalf("pg_stat_activity showed %d backends for %s with pool_size = 2", m, e.User)
	}
	if m := maxSeen.Load(); m < 2 {
		t.Errorf("never saw 2 server connections with 6 waiting clients (max %d): pool not used to its size", m)
	}
	// 6 transactions of 0.3 s on 2 servers take at least 3 rounds.
	if elapsed < 850*time.Millisecond {
		t.Fatalf("6 clients x pg_sleep(0.3) on pool_size 2 finished in %v, < 0.9 s: more than 2 ran at once", elapsed)
	}
}

func TestSessionStateNotLeaked(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) { db.PoolSize = 1 })
	ctx := ctxT(t, 60*time.Second)

	// Defaults as a fresh direct session sees them.
	d := connect(t, e.DirectURL())
	defTimeout := queryString(t, d, "SHOW statement_timeout")
	defSearchPath := queryString(t, d, "SHOW search_path")
	d.Close(ctx)

	a := connect(t, e.URL())
	pidA := queryInt(t, a, "SELECT pg_backend_pid()")
	for _, q := range []string{
		"SET statement_timeout = '7s'",
		"SET application_name = 'leaky_client_a'",
		"SET search_path = 'leaky_schema'",
		"SET myapp.leak = 'from A'",
		"CREATE TEMP TABLE leaky_temp (x int)",
		"PREPARE leaky_stmt AS SELECT 1",
		"SELECT pg_advisory_lock(4711)",
		"LISTEN leaky_channel",
	} {
		if _, err := a.Exec(ctx, q); err != nil {
			t.Fatalf("client A: %s: %v", q, err)
		}
	}
	if got := queryString(t, a, "SHOW statement_timeout"); got != "7s" {
		t.Fatalf("client A: statement_timeout = %q after SET", got)
	}
	a.Close(ctx)

	b := connect(t, e.URL())
	pidB := queryInt(t, b, "SELECT pg_backend_pid()")
	if pidB != pidA {
		t.Fatalf("client B got backend %d, client A had %d: with pool_size 1 the server connection was not reused", pidB, pidA)
	}
	if got := queryString(t, b, "SHOW statement_timeout"); got != defTimeout {
		t.Errorf("client B sees statement_timeout = %q set by client A; want default %q", got, defTimeout)
	}
	if got := queryString(t, b, "SHOW application_name"); got == "leaky_client_a" {
		t.Errorf("client B sees application_name = %q set by client A", got)
	}
	if got := queryString(t, b, "SHOW search_path"); got != defSearchPath {
		t.Errorf("client B sees search_path = %q; want default %q", got, defSearchPath)
	}
	if got := queryString(t, b, "SELECT coalesce(current_setting('myapp.leak', true), '')"); got != "" {
		t.Errorf("client B sees myapp.leak = %q set by client A", got)
	}
	if got := queryString(t, b, "SELECT coalesce(to_regclass('pg_temp.leaky_temp')::text, '')"); got != "" {
		t.Errorf("client B sees client A's temp table %q", got)
	}
	if n := queryInt(t, b, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'leaky_stmt'"); n != 0 {
		t.Errorf("client B sees client A's prepared statement leaky_stmt")
	}
	if n := queryInt(t, b, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"); n != 0 {
		t.Errorf("client B's backend still holds client A's advisory lock")
	}
	if n := queryInt(t, b, "SELECT count(*) FROM pg_listening_channels() c WHERE c = 'leaky_channel'"); n != 0 {
		t.Errorf("client B's backend still listens on client A's channel")
	}

	// Client B's own startup parameters apply.
	b.Close(ctx)
	c := connect(t, e.URL()+"&application_name=client_b_app")
	if got := queryString(t, c, "SHOW application_name"); got != "client_b_app" {
		t.Errorf("client with application_name=client_b_app in its startup packet sees %q", got)
	}
}

func TestClientKilledMidTransaction(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) { db.PoolSize = 1 })
	ctx := ctxT(t, 60*time.Second)
	setup := connect(t, e.URL())
	if _, err := setup.Exec(ctx, "CREATE TABLE killed (id int)"); err != nil {
		t.Fatal(err)
	}
	setup.Close(ctx)

	a, err := pgconn.Connect(ctx, e.URL())
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Exec(ctx, "BEGIN; INSERT INTO killed VALUES (1); SELECT pg_backend_pid()::text, txid_current()::text").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if a.TxStatus() != 'T' {
		t.Fatalf("client A: TxStatus %q after BEGIN, want T", a.TxStatus())
	}
	last := res[len(res)-1].Rows[0]
	pidA, txidA := string(last[0]), string(last[1])
	// Kill the client: drop the socket with a RST, no Terminate.
	raw := a.Conn()
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	raw.Close()

	var notices []string
	var mu sync.Mutex
	cfg, err := pgconn.ParseConfig(e.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		notices = append(notices, n.Code+" "+n.Message)
		mu.Unlock()
	}
	b, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("client B after A was killed (pool_size 1): %v", err)
	}
	defer b.Close(context.Background())
	if b.TxStatus() != 'I' {
		t.Errorf("client B starts with TxStatus %q, want I", b.TxStatus())
	}
	res, err = b.Exec(ctx, "SELECT pg_backend_pid()::text, (SELECT count(*) FROM killed)::text").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	pidB, rows := string(res[0].Rows[0][0]), string(res[0].Rows[0][1])
	if rows != "0" {
		t.Fatalf("client B sees %s rows of killed client A's uncommitted transaction", rows)
	}
	if b.TxStatus() != 'I' {
		t.Errorf("client B: TxStatus %q after a plain SELECT, want I (inherited client A's transaction)", b.TxStatus())
	}
	res, err = b.Exec(ctx, "BEGIN; SELECT txid_current()::text").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	txidB := string(res[1].Rows[0][0])
	if _, err := b.Exec(ctx, "ROLLBACK").ReadAll(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for _, n := range notices {
		if strings.HasPrefix(n, "25001") {
			t.Errorf("client B's BEGIN warned %q: it inherited an open transaction", n)
		}
	}
	mu.Unlock()
	if txidB == txidA {
		t.Errorf("client B's transaction has client A's txid %s", txidA)
	}
	t.Logf("backend A %s txid %s, backend B %s txid %s", pidA, txidA, pidB, txidB)

	// Whatever pgtide did (ROLLBACK or closing the server), A's transaction
	// must be gone from the server and its row never committed.
	mon := super(t, e.pg, e.DB)
	if !pgtest.Eventually(5*time.Second, func() bool {
		var n int64
		err := mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND (state LIKE 'idle in transaction%' OR backend_xid::text = $2)", e.User, txidA).Scan(&n)
		return err == nil && n == 0
	}) {
		t.Errorf("client A's transaction is still open on the server 5 s after it was killed")
	}
	if n := queryInt(t, mon, "SELECT count(*) FROM killed"); n != 0 {
		t.Fatalf("killed client's INSERT was committed (%d rows)", n)
	}
}
