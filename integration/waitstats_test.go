package integration

import (
	"testing"
	"time"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestStatsWaitTime: SHOW STATS' total_wait_time counts the time clients
// really waited for a server, and nothing for borrows that found one idle
// (as PgBouncer's wait time). Pool size 1, transaction mode.
func TestStatsWaitTime(t *testing.T) {
	a := newAdminEnv(t)
	adm := console(t, a.adminURL())
	ctx := ctxT(t, 60*time.Second)
	waitUs := func() int64 {
		t.Helper()
		st := findRow(mustAdmin(t, adm, "SHOW STATS"), "database", a.DB)
		if st == nil {
			t.Fatalf("SHOW STATS has no row for %s", a.DB)
		}
		return atoi(t, st["total_wait_time"])
	}

	b := connect(t, a.URL())
	queryInt(t, b, "select 1") // the first borrow dials: that is a wait
	before := waitUs()
	for i := range 50 {
		if got := queryInt(t, b, "select $1::int", i); got != int64(i) {
			t.Fatalf("select %d returned %d", i, got)
		}
	}
	if d := waitUs() - before; d != 0 {
		t.Fatalf("50 borrows of an idle server added %d µs of wait time, want 0", d)
	}

	// Now b waits while another client holds the only server.
	other := connect(t, a.URL())
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	before = waitUs()
	done := make(chan int64, 1)
	go func() {
		var n int64
		_ = b.QueryRow(ctx, "select 42").Scan(&n)
		done <- n
	}()
	pgtest.WaitUntil(t, 10*time.Second, "the client to wait for the server", func() bool {
		p := findRow(mustAdmin(t, adm, "SHOW POOLS"), "database", a.DB)
		return p != nil && p["cl_waiting"] == "1"
	})
	// b waits from before seen until after the commit is sent: at least this long.
	seen := time.Now()
	for range 20 { // hold the server a little longer, doing console round trips
		mustAdmin(t, adm, "SHOW POOLS")
	}
	atLeast := time.Since(seen)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := <-done; n != 42 {
		t.Fatalf("the waiting client got %d, want 42", n)
	}
	if d := waitUs() - before; d <= 0 || d < atLeast.Microseconds() {
		t.Fatalf("a client that waited at least %v for the server added %d µs of wait time", atLeast, d)
	}
}
