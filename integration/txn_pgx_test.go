package integration

// Transaction pooling with real drivers, pgx v5 part: more clients than
// servers, pgx's default exec mode (QueryExecModeCacheStatement, i.e.
// protocol-level named prepared statements that must follow the client onto
// whichever server it gets next), pipelined batches, COPY, and cancel routing.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// drvTxnEnv starts pgtide in transaction mode with poolSize servers for a
// fresh database and role, allowing plenty of clients.
func drvTxnEnv(t *testing.T, poolSize int) *env {
	t.Helper()
	return newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.MaxClientConn = 300
		db.PoolMode = "transaction"
		db.PoolSize = poolSize
	})
}

// drvConnect opens a pgx connection with pgx's defaults (statement cache),
// checking that the default really is QueryExecModeCacheStatement.
func drvConnect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	c := connect(t, url)
	if m := c.Config().DefaultQueryExecMode; m != pgx.QueryExecModeCacheStatement {
		t.Fatalf("pgx default exec mode is %v, want QueryExecModeCacheStatement", m)
	}
	return c
}

// TestTxnPgxStatementCacheManyClients: 30 pgx.Conns share 3 servers; each runs
// parameterized statements (some texts shared by all clients, some unique to
// one client) in many transactions, committed or rolled back, and checks every
// result. pgx prepares each text once per connection and then only sends
// Bind/Execute with the statement's name, so pgtide must make the statement
// exist on whichever server the client lands on.
func TestTxnPgxStatementCacheManyClients(t *testing.T) {
	const (
		poolSize = 3
		clients  = 30
		rounds   = 15
	)
	e := drvTxnEnv(t, poolSize)
	setup := drvConnect(t, e.URL())
	ctx := ctxT(t, 90*time.Second)
	if _, err := setup.Exec(ctx, "CREATE TABLE txn_items (gid int NOT NULL, i int NOT NULL, v bigint NOT NULL, note text, PRIMARY KEY (gid, i))"); err != nil {
		t.Fatal(err)
	}

	var (
		mu   sync.Mutex
		pids = map[uint32]bool{}
	)
	// Sample how many server backends pgtide holds for this role at once.
	sampler := super(t, e.pg, "postgres")
	stopSampling := make(chan struct{})
	sampled := make(chan int64, 1)
	go func() {
		var most int64
		defer func() { sampled <- most }()
		for {
			select {
			case <-stopSampling:
				return
			default:
			}
			var n int64
			if err := sampler.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'", e.User).Scan(&n); err != nil {
				return
			}
			if n > most {
				most = n
			}
			time.Sleep(2 * time.Millisecond) // the sampling pace
		}
	}()
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for g := 0; g < clients; g++ {
		wg.Add(1)
		go func(gid int) {
			defer wg.Done()
			errs <- func() error {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				c, err := pgx.Connect(cctx, e.URL())
				if err != nil {
					return fmt.Errorf("client %d connect: %w", gid, err)
				}
				defer c.Close(context.Background())
				var sum int64 // committed sum of v for this gid
				uniqueSQL := fmt.Sprintf("SELECT $1::int8 * %d + $2::int8 AS r /* client %d */", gid+1, gid)
				for r := 0; r < rounds; r++ {
					// Autocommit statement outside any transaction block.
					var prod int64
					if err := c.QueryRow(cctx, "SELECT $1::int8 * $2::int8", int64(gid), int64(r)).Scan(&prod); err != nil {
						return fmt.Errorf("client %d round %d autocommit select: %w", gid, r, err)
					}
					if prod != int64(gid*r) {
						return fmt.Errorf("client %d round %d: %d*%d = %d", gid, r, gid, r, prod)
					}

					tx, err := c.Begin(cctx)
					if err != nil {
						return fmt.Errorf("client %d round %d begin: %w", gid, r, err)
					}
					v := int64(gid*1000 + r)
					note := fmt.Sprintf("g%d-r%d-%s", gid, r, strings.Repeat("x", r))
					if _, err := tx.Exec(cctx, "INSERT INTO txn_items (gid, i, v, note) VALUES ($1, $2, $3, $4)", gid, r, v, note); err != nil {
						return fmt.Errorf("client %d round %d insert: %w", gid, r, err)
					}
					var got int64
					var n int64
					if err := tx.QueryRow(cctx, "SELECT coalesce(sum(v), 0)::int8, count(*) FROM txn_items WHERE gid = $1", gid).Scan(&got, &n); err != nil {
						return fmt.Errorf("client %d round %d sum: %w", gid, r, err)
					}
					if got != sum+v {
						return fmt.Errorf("client %d round %d: sum in txn = %d, want %d", gid, r, got, sum+v)
					}
					var s string
					if err := tx.QueryRow(cctx, "SELECT note || '/' || $2::text FROM txn_items WHERE gid = $1 AND i = $3", gid, "tail", r).Scan(&s); err != nil {
						return fmt.Errorf("client %d round %d note: %w", gid, r, err)
					}
					if s != note+"/tail" {
						return fmt.Errorf("client %d round %d note = %q, want %q", gid, r, s, note+"/tail")
					}
					var u int64
					if err := tx.QueryRow(cctx, uniqueSQL, int64(r), int64(7)).Scan(&u); err != nil {
						return fmt.Errorf("client %d round %d unique statement: %w", gid, r, err)
					}
					if u != int64(r)*int64(gid+1)+7 {
						return fmt.Errorf("client %d round %d unique statement = %d, want %d", gid, r, u, int64(r)*int64(gid+1)+7)
					}
					var pid uint32
					if err := tx.QueryRow(cctx, "SELECT pg_backend_pid()::int8 + $1::int8", int64(0)).Scan(&pid); err != nil {
						return fmt.Errorf("client %d round %d pid: %w", gid, r, err)
					}
					mu.Lock()
					pids[pid] = true
					mu.Unlock()
					if r%4 == 3 {
						if err := tx.Rollback(cctx); err != nil {
							return fmt.Errorf("client %d round %d rollback: %w", gid, r, err)
						}
					} else {
						if err := tx.Commit(cctx); err != nil {
							return fmt.Errorf("client %d round %d commit: %w", gid, r, err)
						}
						sum += v
					}
					// After the transaction: the committed state, seen outside it.
					if err := c.QueryRow(cctx, "SELECT coalesce(sum(v), 0)::int8, count(*) FROM txn_items WHERE gid = $1", gid).Scan(&got, &n); err != nil {
						return fmt.Errorf("client %d round %d sum after: %w", gid, r, err)
					}
					if got != sum {
						return fmt.Errorf("client %d round %d: committed sum = %d, want %d (rolled back=%v)", gid, r, got, sum, r%4 == 3)
					}
				}
				return nil
			}()
		}(g)
	}
	wg.Wait()
	close(stopSampling)
	most := <-sampled
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			if failed <= 10 {
				t.Error(err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d clients failed", failed, clients)
	}

	// The pool really was shared: at most poolSize backends at once served
	// 30 clients. (Distinct PIDs over the run may exceed pool_size when
	// pgtide closes and replaces a server, so they are only logged.)
	t.Logf("%d clients were served by %d distinct server backends; at most %d at once", clients, len(pids), most)
	if most > poolSize {
		t.Errorf("pg_stat_activity showed %d backends for the role at once, want <= pool_size %d", most, poolSize)
	}
	if most == 0 {
		t.Errorf("sampler saw no backends for the role")
	}
	committedPerClient := 0
	for r := 0; r < rounds; r++ {
		if r%4 != 3 {
			committedPerClient++
		}
	}
	direct := super(t, e.pg, e.DB)
	var n int64
	if err := direct.QueryRow(ctx, "SELECT count(*) FROM txn_items").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != int64(clients*committedPerClient) {
		t.Fatalf("rows committed = %d, want %d", n, clients*committedPerClient)
	}
}

// drvBatchChecks runs the batch checks on one connection to url; it is run
// straight against PostgreSQL first so that a wrong expectation is told apart
// from a pgtide bug.
func drvBatchChecks(t *testing.T, url string) {
	ctx := ctxT(t, 60*time.Second)
	c := drvConnect(t, url)
	if _, err := c.Exec(ctx, "CREATE TABLE IF NOT EXISTS txn_batch (id int PRIMARY KEY, label text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "TRUNCATE txn_batch"); err != nil {
		t.Fatal(err)
	}

	// 20 queries: inserts and selects interleaved, each result checked.
	b := &pgx.Batch{}
	type check func(br pgx.BatchResults) error
	var checks []check
	for i := 0; i < 20; i++ {
		i := i
		switch i % 3 {
		case 0, 1:
			b.Queue("INSERT INTO txn_batch (id, label) VALUES ($1, $2)", i, fmt.Sprintf("row-%d", i))
			checks = append(checks, func(br pgx.BatchResults) error {
				tag, err := br.Exec()
				if err != nil {
					return fmt.Errorf("batch query %d (insert): %w", i, err)
				}
				if tag.String() != "INSERT 0 1" {
					return fmt.Errorf("batch query %d: tag %q", i, tag.String())
				}
				return nil
			})
		case 2:
			// Sees the inserts queued before it in the same batch.
			b.Queue("SELECT count(*), coalesce(max(id), -1), $1::text FROM txn_batch", fmt.Sprintf("echo-%d", i))
			want := int64(0)
			for j := 0; j < i; j++ {
				if j%3 != 2 {
					want++
				}
			}
			checks = append(checks, func(br pgx.BatchResults) error {
				var n int64
				var maxID int32
				var echo string
				if err := br.QueryRow().Scan(&n, &maxID, &echo); err != nil {
					return fmt.Errorf("batch query %d (select): %w", i, err)
				}
				if n != want || int(maxID) != i-1 || echo != fmt.Sprintf("echo-%d", i) {
					return fmt.Errorf("batch query %d: got count=%d max=%d echo=%q; want %d, %d, echo-%d", i, n, maxID, echo, want, i-1, i)
				}
				return nil
			})
		}
	}
	br := c.SendBatch(ctx, b)
	for _, ck := range checks {
		if err := ck(br); err != nil {
			br.Close()
			t.Fatal(err)
		}
	}
	if err := br.Close(); err != nil {
		t.Fatalf("batch close: %v", err)
	}
	var n int64
	if err := c.QueryRow(ctx, "SELECT count(*) FROM txn_batch").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 14 {
		t.Fatalf("after batch: %d rows, want 14", n)
	}

	// A separate batch with a failure in the middle: the error surfaces at
	// that query, the batch (one implicit transaction up to its Sync) leaves
	// nothing behind, and the connection stays usable.
	b = &pgx.Batch{}
	b.Queue("INSERT INTO txn_batch (id, label) VALUES ($1, $2)", 100, "before-failure")
	b.Queue("SELECT $1::int / 0", 1)
	b.Queue("INSERT INTO txn_batch (id, label) VALUES ($1, $2)", 101, "after-failure")
	b.Queue("SELECT $1::int", 5)
	br = c.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		t.Fatalf("failing batch, first insert: %v", err)
	}
	var x int32
	err := br.QueryRow().Scan(&x)
	if sqlState(err) != "22012" {
		t.Fatalf("failing batch, division by zero: err = %v, want SQLSTATE 22012", err)
	}
	if _, err := br.Exec(); err == nil {
		t.Fatalf("failing batch: query after the error succeeded")
	}
	if err := br.Close(); err == nil {
		t.Fatalf("failing batch: Close returned no error")
	}
	for i := 0; i < 3; i++ {
		var label string
		if err := c.QueryRow(ctx, "SELECT coalesce(string_agg(label, ',' ORDER BY id), '') FROM txn_batch WHERE id >= $1", 100).Scan(&label); err != nil {
			t.Fatalf("connection unusable after failed batch: %v", err)
		}
		if label != "" {
			t.Fatalf("rows from the failed batch are visible: %q", label)
		}
		if err := c.QueryRow(ctx, "SELECT count(*) FROM txn_batch").Scan(&n); err != nil {
			t.Fatalf("connection unusable after failed batch: %v", err)
		}
		if n != 14 {
			t.Fatalf("after failed batch: %d rows, want 14", n)
		}
	}
	// And a batch after the failed one still works.
	b = &pgx.Batch{}
	b.Queue("INSERT INTO txn_batch (id, label) VALUES ($1, $2)", 200, "later")
	b.Queue("SELECT label FROM txn_batch WHERE id = $1", 200)
	br = c.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		t.Fatalf("batch after failure, insert: %v", err)
	}
	var label string
	if err := br.QueryRow().Scan(&label); err != nil || label != "later" {
		t.Fatalf("batch after failure, select: %q, %v", label, err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestTxnPgxBatch: pgx SendBatch (pipelined, one Sync) in transaction mode,
// with other clients competing for the servers.
func TestTxnPgxBatch(t *testing.T) {
	e := drvTxnEnv(t, 3)
	directDB := e.DB + "_direct"
	e.pg.Exec(t, fmt.Sprintf("CREATE DATABASE %s OWNER %s", directDB, e.User))
	t.Run("direct", func(t *testing.T) {
		drvBatchChecks(t, e.pg.ConnString(directDB, e.User, e.Pass))
	})
	t.Run("pgtide", func(t *testing.T) {
		// Background load so the batch client competes for the 3 servers.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		loadErr := make(chan error, 6)
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				c, err := pgx.Connect(context.Background(), e.URL())
				if err != nil {
					loadErr <- err
					return
				}
				defer c.Close(context.Background())
				for k := 0; ; k++ {
					select {
					case <-stop:
						return
					default:
					}
					var got int64
					if err := c.QueryRow(context.Background(), "SELECT $1::int8 + $2::int8", int64(i), int64(k)).Scan(&got); err != nil {
						loadErr <- fmt.Errorf("load client %d: %w", i, err)
						return
					}
					if got != int64(i+k) {
						loadErr <- fmt.Errorf("load client %d: %d+%d = %d", i, i, k, got)
						return
					}
				}
			}(i)
		}
		drvBatchChecks(t, e.URL())
		close(stop)
		wg.Wait()
		close(loadErr)
		for err := range loadErr {
			t.Error(err)
		}
	})
}

// TestTxnPgxCopyFrom: CopyFrom of 10,000 rows through a transaction-mode pool.
func TestTxnPgxCopyFrom(t *testing.T) {
	e := drvTxnEnv(t, 3)
	c := drvConnect(t, e.URL())
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.Exec(ctx, "CREATE TABLE txn_copy (id int PRIMARY KEY, name text NOT NULL, score float8)"); err != nil {
		t.Fatal(err)
	}
	const rows = 10000
	src := make([][]any, rows)
	for i := range src {
		src[i] = []any{int32(i + 1), fmt.Sprintf("name-%05d", i+1), float64(i) / 2}
	}
	n, err := c.CopyFrom(ctx, pgx.Identifier{"txn_copy"}, []string{"id", "name", "score"}, pgx.CopyFromRows(src))
	if err != nil {
		t.Fatal(err)
	}
	if n != rows {
		t.Fatalf("CopyFrom reported %d rows, want %d", n, rows)
	}
	var cnt, sumID int64
	var last string
	if err := c.QueryRow(ctx, "SELECT count(*), sum(id), max(name) FROM txn_copy").Scan(&cnt, &sumID, &last); err != nil {
		t.Fatal(err)
	}
	if cnt != rows || sumID != rows*(rows+1)/2 || last != fmt.Sprintf("name-%05d", rows) {
		t.Fatalf("after COPY: count=%d sum(id)=%d max(name)=%q", cnt, sumID, last)
	}
	// Visible to another client (committed), and a second COPY into a
	// duplicate key fails cleanly and leaves the connection usable.
	other := drvConnect(t, e.URL())
	if got := queryInt(t, other, "SELECT count(*) FROM txn_copy"); got != rows {
		t.Fatalf("other client sees %d rows", got)
	}
	_, err = c.CopyFrom(ctx, pgx.Identifier{"txn_copy"}, []string{"id", "name", "score"},
		pgx.CopyFromRows([][]any{{int32(rows + 1), "new", 1.0}, {int32(1), "dup", 1.0}}))
	if sqlState(err) != "23505" {
		t.Fatalf("COPY with a duplicate key: err = %v, want SQLSTATE 23505", err)
	}
	if got := queryInt(t, c, "SELECT count(*) FROM txn_copy WHERE id > $1", rows); got != 0 {
		t.Fatalf("failed COPY left %d rows", got)
	}
}

// TestTxnPgxCancel: a context cancel of pg_sleep(10) after 200 ms returns
// within 2 s (57014 or a context error); the connection, or a new one, works;
// and the cancel hit only that client's query: two other clients sleeping on
// the other servers of the same pool finish normally.
func TestTxnPgxCancel(t *testing.T) {
	e := drvTxnEnv(t, 3)

	run := func(t *testing.T, cfgMod func(*pgx.ConnConfig), wantUsable bool) {
		ctx := ctxT(t, 60*time.Second)
		cfg, err := pgx.ParseConfig(e.URL())
		if err != nil {
			t.Fatal(err)
		}
		if cfgMod != nil {
			cfgMod(cfg)
		}
		victim, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer victim.Close(context.Background())
		// Warm up: the statement is prepared before the cancel.
		if got := queryInt(t, victim, "SELECT $1::int8", int64(42)); got != 42 {
			t.Fatalf("warm-up = %d", got)
		}

		// Two bystanders hold the other two servers, sleeping 1 s each.
		const bystanders = 2
		started := make(chan struct{}, bystanders)
		byErr := make(chan error, bystanders)
		for i := 0; i < bystanders; i++ {
			go func(i int) {
				c, err := pgx.Connect(ctx, e.URL())
				if err != nil {
					byErr <- err
					started <- struct{}{}
					return
				}
				defer c.Close(context.Background())
				tx, err := c.Begin(ctx)
				if err != nil {
					byErr <- err
					started <- struct{}{}
					return
				}
				started <- struct{}{}
				var s string
				err = tx.QueryRow(ctx, "SELECT pg_sleep(1)::text || $1::text", fmt.Sprint(i)).Scan(&s)
				if err != nil {
					byErr <- fmt.Errorf("bystander %d's pg_sleep(1) failed (cancel hit the wrong backend?): %w", i, err)
					return
				}
				if s != fmt.Sprint(i) {
					byErr <- fmt.Errorf("bystander %d got %q", i, s)
					return
				}
				byErr <- tx.Commit(ctx)
			}(i)
		}
		for i := 0; i < bystanders; i++ {
			<-started
		}
		waitRunning(t, super(t, e.pg, "postgres"), "SELECT pg_sleep(1)::text", bystanders)

		qctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		start := time.Now()
		var s string
		err = victim.QueryRow(qctx, "SELECT pg_sleep(10)::text").Scan(&s)
		took := time.Since(start)
		cancel()
		if err == nil {
			t.Fatalf("pg_sleep(10) was not cancelled (took %v)", took)
		}
		var pe *pgconn.PgError
		isCancel := errors.As(err, &pe) && pe.Code == "57014"
		if !isCancel && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && !pgconn.Timeout(err) {
			t.Fatalf("cancelled query: err = %v (%T), want SQLSTATE 57014 or a context error", err, err)
		}
		if took > 2*time.Second {
			t.Fatalf("cancelled query returned after %v, want < 2s (err %v)", took, err)
		}
		t.Logf("cancel returned after %v: %v", took, err)
		if wantUsable && !isCancel {
			t.Fatalf("with CancelRequestContextWatcherHandler the server should answer 57014, got %v", err)
		}

		for i := 0; i < bystanders; i++ {
			if err := <-byErr; err != nil {
				t.Error(err)
			}
		}

		// The connection (or, if pgx closed it, a new one) works.
		next := victim
		if victim.IsClosed() {
			if wantUsable {
				t.Fatalf("connection closed after a cancel that returned 57014")
			}
			next = drvConnect(t, e.URL())
		}
		wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
		defer wcancel()
		var got int64
		if err := next.QueryRow(wctx, "SELECT $1::int8 * 2", int64(21)).Scan(&got); err != nil || got != 42 {
			t.Fatalf("query after cancel: %d, %v", got, err)
		}
		// No server is left running the abandoned sleep for long: every
		// server of the pool serves a fresh client within a few seconds.
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for i := 0; i < 3; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := pgx.Connect(wctx, e.URL())
				if err != nil {
					errs <- err
					return
				}
				defer c.Close(context.Background())
				tx, err := c.Begin(wctx)
				if err != nil {
					errs <- err
					return
				}
				defer tx.Rollback(context.Background())
				var one int64
				if err := tx.QueryRow(wctx, "SELECT 1::int8 + $1::int8", int64(0)).Scan(&one); err != nil {
					errs <- err
					return
				}
				time.Sleep(300 * time.Millisecond) // hold the server so all three are in use at once
				errs <- nil
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("after cancel, a pool server is not usable: %v", err)
			}
		}
	}

	t.Run("CancelRequest", func(t *testing.T) {
		run(t, func(cfg *pgx.ConnConfig) {
			cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
				return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, CancelRequestDelay: 0, DeadlineDelay: 1500 * time.Millisecond}
			}
		}, true)
	})
	t.Run("DefaultDeadline", func(t *testing.T) {
		run(t, nil, false)
	})
}

// TestTxnPgxPool: 20 client connections (a pool on the client side) and 200
// concurrent queries over 3 servers.
//
// pgxpool itself needs github.com/jackc/puddle/v2, which this module does not
// require; the pool here is the same shape (20 pgx.Conns handed out through a
// channel, each query on whichever conn is free).
func TestTxnPgxPool(t *testing.T) {
	e := drvTxnEnv(t, 3)
	ctx := ctxT(t, 60*time.Second)
	const conns, queries = 20, 200
	pool := make(chan *pgx.Conn, conns)
	for i := 0; i < conns; i++ {
		pool <- drvConnect(t, e.URL())
	}
	var wg sync.WaitGroup
	errs := make(chan error, queries)
	for q := 0; q < queries; q++ {
		wg.Add(1)
		go func(q int) {
			defer wg.Done()
			var c *pgx.Conn
			select {
			case c = <-pool:
			case <-ctx.Done():
				errs <- ctx.Err()
				return
			}
			defer func() { pool <- c }()
			var a int64
			var s string
			var n int64
			if err := c.QueryRow(ctx, "SELECT $1::int8 * 3, repeat($2::text, $3::int), (SELECT count(*) FROM generate_series(1, $1::int8))",
				int64(q), "ab", q%7).Scan(&a, &s, &n); err != nil {
				errs <- fmt.Errorf("query %d: %w", q, err)
				return
			}
			if a != int64(3*q) || s != strings.Repeat("ab", q%7) || n != int64(q) {
				errs <- fmt.Errorf("query %d: got %d %q %d", q, a, s, n)
				return
			}
			errs <- nil
		}(q)
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			if failed <= 10 {
				t.Error(err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d queries failed", failed, queries)
	}
}
