package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestCancelRaceNeverHitsOtherClient: PgBouncer's test_cancel_race, in
// transaction mode with two servers for six clients. Some clients cancel
// their own queries at random moments: while they wait for a server, while
// they run, or just after they ended, when the server may already run
// another client's query. A client that never sends a cancel must never see
// 57014 (DESIGN.md invariant 5).
func TestCancelRaceNeverHitsOtherClient(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		db.PoolSize = 2
	})
	ctx, stop := context.WithTimeout(context.Background(), 4*time.Second)
	defer stop()

	var cancelled, victimQueries, cancellerQueries atomic.Int64
	errc := make(chan error, 16)
	var wg sync.WaitGroup
	dial := func() *pgconn.PgConn {
		c, err := pgconn.Connect(ctxT(t, 10*time.Second), e.URL())
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	for i := range 3 {
		c := dial()
		wg.Add(1)
		go func() { // a victim: never cancels
			defer wg.Done()
			for ctx.Err() == nil {
				_, err := c.Exec(context.Background(), "SELECT pg_sleep(0.001)").ReadAll()
				if err != nil {
					errc <- errors.New("victim " + string(rune('0'+i)) + ": " + err.Error())
					return
				}
				victimQueries.Add(1)
			}
		}()
	}
	for range 3 {
		c := dial()
		wg.Add(1)
		go func() { // a canceller: cancels its own query at a random moment
			defer wg.Done()
			r := rand.New(rand.NewPCG(rand.Uint64(), 1))
			for ctx.Err() == nil {
				done := make(chan struct{})
				go func() {
					defer close(done)
					_, err := c.Exec(context.Background(), "SELECT pg_sleep(0.003)").ReadAll()
					if err != nil {
						var pe *pgconn.PgError
						if errors.As(err, &pe) && pe.Code == "57014" {
							cancelled.Add(1)
							return
						}
						errc <- errors.New("canceller: " + err.Error())
					}
				}()
				time.Sleep(time.Duration(r.IntN(4000)) * time.Microsecond)
				cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = c.CancelRequest(cctx)
				ccancel()
				<-done
				cancellerQueries.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	t.Logf("victim queries %d, canceller queries %d, of which cancelled %d",
		victimQueries.Load(), cancellerQueries.Load(), cancelled.Load())
	if victimQueries.Load() == 0 || cancelled.Load() == 0 {
		t.Errorf("the race did not run: %d victim queries, %d cancelled", victimQueries.Load(), cancelled.Load())
	}
}

// cancelUntilAnswered sends the client's cancel request every 50 ms until
// its reply (read by another goroutine into replies) arrives, or 5 s pass.
// A cancel request that finds nothing to cancel is ignored, so the ones
// sent before its query started waiting do no harm; each returns once
// pgtide has handled it, so none is left in flight when the reply is read.
func cancelUntilAnswered(t *testing.T, addr string, pid uint32, key []byte, replies <-chan []string) []string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case r := <-replies:
			return r
		case <-deadline:
			t.Fatal("no reply to the waiting query within 5 s of cancelling it: the cancel request did not end its wait for a server")
			return nil
		case <-time.After(50 * time.Millisecond):
			sendCancel(t, addr, pid, key)
		}
	}
}

// readToZAsync reads up to a ReadyForQuery (readToZ, 20 s) into the
// channel it returns; a read error is the last element.
func readToZAsync(c net.Conn, fe *pgproto3.Frontend) <-chan []string {
	ch := make(chan []string, 1)
	go func() {
		r, err := readToZ(c, fe, 20*time.Second)
		if err != nil {
			r = append(r, "read error: "+err.Error())
		}
		ch <- r
	}()
	return ch
}

// readOneError reads one message, an ErrorResponse as E(severity code
// message), anything else by its type, into the channel it returns.
func readOneError(c net.Conn, fe *pgproto3.Frontend) <-chan []string {
	ch := make(chan []string, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		m, err := fe.Receive()
		if er, ok := m.(*pgproto3.ErrorResponse); ok && err == nil {
			ch <- []string{"E(" + er.Severity + " " + er.Code + " " + er.Message + ")"}
			return
		}
		ch <- []string{fmt.Sprintf("%T %v", m, err)}
	}()
	return ch
}

// TestCancelWhileWaitingForServer: in transaction mode, a client whose query
// waits for a server (the pool's one server is in another client's
// transaction) cancels it. PostgreSQL would stop the query; before this,
// pgtide dropped the cancel request, and the query ran once a server freed,
// after its client had given up on it. Now the query is answered 57014
// without running, in the simple and the extended protocol, and the session
// goes on.
func TestCancelWhileWaitingForServer(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		db.PoolSize = 1
	})
	setup := connect(t, e.URL())
	if _, err := setup.Exec(ctxT(t, 10*time.Second), "CREATE TABLE cw (who text)"); err != nil {
		t.Fatal(err)
	}
	setup.Close(context.Background())

	holder := connect(t, e.URL())
	tx, err := holder.Begin(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctxT(t, 10*time.Second), "SELECT 1"); err != nil {
		t.Fatal(err)
	}

	tb, fb, pid, key := rawLoginKey(t, e.URL())
	read := func() <-chan []string { return readToZAsync(tb, fb) }
	want := "[E(ERROR 57014 canceling statement due to user request) Z(I)]"

	send(t, tb, &pgproto3.Query{String: "INSERT INTO cw VALUES ('simple')"})
	if got := fmt.Sprint(cancelUntilAnswered(t, e.tide.Addr, pid, key, read())); got != want {
		t.Fatalf("simple query cancelled while waiting: %s; want %s", got, want)
	}

	send(t, tb,
		&pgproto3.Parse{Query: "INSERT INTO cw VALUES ($1)"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("extended")}},
		&pgproto3.Execute{},
		&pgproto3.Sync{})
	if got := fmt.Sprint(cancelUntilAnswered(t, e.tide.Addr, pid, key, read())); got != want {
		t.Fatalf("extended query cancelled while waiting: %s; want %s", got, want)
	}

	// Parse, Bind, Execute, Flush: no Sync yet. The error comes at once;
	// what follows up to the Sync is skipped, as after any error.
	send(t, tb,
		&pgproto3.Parse{Query: "INSERT INTO cw VALUES ($1)"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("flushed")}},
		&pgproto3.Execute{},
		&pgproto3.Flush{})
	replies := readOneError(tb, fb)
	if got := fmt.Sprint(cancelUntilAnswered(t, e.tide.Addr, pid, key, replies)); got != "[E(ERROR 57014 canceling statement due to user request)]" {
		t.Fatalf("flushed request cancelled while waiting: %s", got)
	}
	send(t, tb, &pgproto3.Sync{})
	if got, err := readToZ(tb, fb, 20*time.Second); err != nil || fmt.Sprint(got) != "[Z(I)]" {
		t.Fatalf("Sync after the flushed request: %v %v; want [Z(I)]", got, err)
	}

	// Extended messages, then a Query, no Sync: the error is the extended
	// messages', and the Query is skipped up to the Sync with them, as
	// PostgreSQL skips it after an error: no ReadyForQuery for it.
	send(t, tb,
		&pgproto3.Parse{Query: "INSERT INTO cw VALUES ($1)"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("before query")}},
		&pgproto3.Execute{},
		&pgproto3.Query{String: "INSERT INTO cw VALUES ('query')"})
	replies = readOneError(tb, fb)
	if got := fmt.Sprint(cancelUntilAnswered(t, e.tide.Addr, pid, key, replies)); got != "[E(ERROR 57014 canceling statement due to user request)]" {
		t.Fatalf("extended messages and a Query cancelled while waiting: %s", got)
	}

	if err := tx.Commit(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	send(t, tb,
		&pgproto3.Bind{Parameters: [][]byte{[]byte("skipped")}},
		&pgproto3.Execute{},
		&pgproto3.Sync{})
	if got, err := readToZ(tb, fb, 20*time.Second); err != nil || fmt.Sprint(got) != "[Z(I)]" {
		t.Fatalf("Sync after the cancelled request: %v %v; want [Z(I)]", got, err)
	}
	// The session goes on; none of its cancelled statements ran.
	send(t, tb, &pgproto3.Query{String: "SELECT count(*) FROM cw"})
	if got, err := readToZ(tb, fb, 20*time.Second); err != nil || fmt.Sprint(got) != "[T D(0) C(SELECT 1) Z(I)]" {
		t.Fatalf("after the cancels: %v %v; want no rows inserted", got, err)
	}
}

// TestTxnAsyncpgTimeoutWhileWaiting: asyncpg's timeout= on a query that
// waits for the one server (held in another connection's transaction)
// sends a cancel request; the query ends cancelled, never runs, and the
// connection stays usable, as against PostgreSQL directly (where the query
// waits for a table lock instead). Before, the cancel was dropped and the
// script hung until its own 30 s limit.
func TestTxnAsyncpgTimeoutWhileWaiting(t *testing.T) {
	py := needPython(t, "asyncpg", "python3-asyncpg")
	txnPyAgainstBoth(t, py, "txn_asyncpg_waitcancel.py", 1)
}

// TestCancelWhileWaitingForServerSessionMode: in session mode a client
// beyond pool_size logs in at once and waits for a server at its first
// query; a cancel request ends that wait with 57014, and the client gets
// the server once it frees up.
func TestCancelWhileWaitingForServerSessionMode(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "session"
		db.PoolSize = 1
	})
	holder := connect(t, e.URL())
	if _, err := holder.Exec(ctxT(t, 10*time.Second), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	tb, fb, pid, key := rawLoginKey(t, e.URL())
	send(t, tb, &pgproto3.Query{String: "SELECT 'ran'"})
	replies := readToZAsync(tb, fb)
	want := "[E(ERROR 57014 canceling statement due to user request) Z(I)]"
	if got := fmt.Sprint(cancelUntilAnswered(t, e.tide.Addr, pid, key, replies)); got != want {
		t.Fatalf("query cancelled while waiting for the first server: %s; want %s", got, want)
	}
	holder.Close(context.Background())
	send(t, tb, &pgproto3.Query{String: "SELECT 'after'"})
	if got, err := readToZ(tb, fb, 20*time.Second); err != nil || fmt.Sprint(got) != "[T D(after) C(SELECT 1) Z(I)]" {
		t.Fatalf("after the cancel: %v %v", got, err)
	}
}
