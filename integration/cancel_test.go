package integration

// Cancel requests that pgtide cannot see through (DESIGN.md invariant 5:
// a cancel reaches the backend running that client's query, and only
// that one).

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestCancelGivenUpServerNotReused: a client's cancel request that the
// server has not confirmed within cancel_wait_timeout (here held 700 ms on
// its way, the limit 100 ms) may still arrive. The server it was for must
// not be lent again: before the fix it went back to the pool when the
// client's query ended, and the cancel stopped the next client's query on
// it. Pool size 1, so the next client gets that server unless it is closed.
func TestCancelGivenUpServerNotReused(t *testing.T) {
	pg := pgtest.Shared(t)
	relay := startFaultRelay(t, pg.Addr())
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.Extra = "cancel_wait_timeout = \"100ms\"\n"
		c.PGPort = relay.port()
		db.PoolSize = 1
	})

	ta, fa, pid, key := rawLoginKey(t, e.URL())
	send(t, ta, &pgproto3.Query{String: "SELECT pg_backend_pid()"})
	got, err := readToZ(ta, fa, 10*time.Second)
	if err != nil || len(got) != 4 {
		t.Fatalf("A's first query: %v, %v", got, err)
	}
	pidA := strings.TrimSuffix(strings.TrimPrefix(got[1], "D("), ")")
	tb, fb, _, _ := rawLoginKey(t, e.URL())

	relay.delay.Store(int64(700 * time.Millisecond)) // from now on: the cancel's connection, new servers
	send(t, ta, &pgproto3.Query{String: "SELECT pg_sleep(0.6)"})
	mon := connect(t, e.DirectURL())
	pgtest.WaitUntil(t, 5*time.Second, "A's query running", func() bool {
		var n int
		_ = mon.QueryRow(ctxT(t, 5*time.Second), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int AND state = 'active' AND query LIKE 'SELECT pg_sleep(0.6)%'", pidA).Scan(&n)
		return n == 1
	})
	start := time.Now()
	sendCancel(t, e.tide.Addr, pid, key) // pgtide gives up after 100 ms
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("the cancel request took %v; cancel_wait_timeout is 100ms", d.Round(time.Millisecond))
	}
	// B waits for the one server; A's query ends at 600 ms, the cancel
	// reaches PostgreSQL at about 850 ms, B's query runs 1.5 s.
	send(t, tb, &pgproto3.Query{String: "SELECT pg_backend_pid(), pg_sleep(1.5)"})
	if gotA, err := readToZ(ta, fa, 10*time.Second); err != nil {
		t.Fatalf("A: %v %v", gotA, err)
	}
	gotB, err := readToZ(tb, fb, 10*time.Second)
	if err != nil || len(gotB) != 4 || !strings.HasPrefix(gotB[1], "D(") {
		t.Fatalf("B's query: %v (err %v); want its row: client A's cancel request must not reach it", gotB, err)
	}
	if pidB := strings.TrimSuffix(strings.TrimPrefix(gotB[1], "D("), ",)"); pidB == pidA {
		t.Errorf("B ran on A's server (backend %s), whose cancel request was not confirmed", pidA)
	}
	admin := super(t, pg, "postgres")
	pgtest.WaitUntil(t, 5*time.Second, "A's server closed", func() bool {
		return queryInt(t, admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", pidA) == 0
	})
}
