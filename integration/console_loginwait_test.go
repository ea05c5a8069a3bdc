package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestConsoleLoginWaitingAtPause: a client that logs in to a paused
// database waits for a server in its login. PgBouncer lists it in SHOW
// CLIENTS as "waiting" and counts it in SHOW POOLS cl_waiting (and
// KILL_CLIENT closes it); pgtide showed nothing at all, so an operator
// watching a PAUSE saw no queue while logins piled up.
func TestConsoleLoginWaitingAtPause(t *testing.T) {
	a := newAdminEnv(t)
	adm := console(t, a.adminURL())
	mustAdmin(t, adm, "PAUSE "+a.DB)

	type res struct {
		c   *pgx.Conn
		err error
	}
	login := func() chan res {
		ch := make(chan res, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := pgx.Connect(ctx, a.URL()+"&application_name=loginwait")
			ch <- res{c, err}
		}()
		return ch
	}
	waitingRow := func() adminRow {
		var row adminRow
		pgtest.WaitUntil(t, 10*time.Second, "the login waiting at PAUSE to show in SHOW CLIENTS", func() bool {
			for _, r := range mustAdmin(t, adm, "SHOW CLIENTS") {
				if r["database"] == a.DB && r["user"] == a.User {
					row = r
					return r["state"] == "waiting"
				}
			}
			return false
		})
		return row
	}

	first := login()
	row := waitingRow()
	if row["id"] == "" || row["id"] == "0" {
		t.Fatalf("waiting login has no id: %v", row)
	}
	pools := mustAdmin(t, adm, "SHOW POOLS")
	p := findRow(pools, "database", a.DB)
	if p == nil || p["cl_waiting"] != "1" {
		t.Fatalf("SHOW POOLS during PAUSE with one login waiting: want cl_waiting 1, got %v", p)
	}

	// KILL_CLIENT of the waiting login closes it with 57P01.
	mustAdmin(t, adm, "KILL_CLIENT "+row["id"])
	select {
	case r := <-first:
		if r.err == nil {
			r.c.Close(context.Background())
			t.Fatal("a login killed while waiting at PAUSE logged in")
		}
		if got := sqlState(r.err); got != "57P01" {
			t.Fatalf("killed login: want 57P01, got %q (%v)", got, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("KILL_CLIENT did not end the waiting login")
	}

	// Another waiting login gets in at RESUME and works.
	second := login()
	waitingRow()
	mustAdmin(t, adm, "RESUME "+a.DB)
	r := <-second
	if r.err != nil {
		t.Fatalf("login waiting at PAUSE, after RESUME: %v", r.err)
	}
	defer r.c.Close(context.Background())
	if got := queryInt(t, r.c, "select 41 + 1"); got != 42 {
		t.Fatalf("select: %d", got)
	}
	pgtest.WaitUntil(t, 10*time.Second, "no client waiting after RESUME", func() bool {
		p := findRow(mustAdmin(t, adm, "SHOW POOLS"), "database", a.DB)
		return p != nil && p["cl_waiting"] == "0"
	})
}

// TestShowStatsCountsLoginAssignments: PgBouncer counts every time it
// links a server to a client in server_assignment_count, the server a
// login borrows included (its test_show_stats: 5 session-mode connections,
// 5 assignments). pgtide did not count the server a login borrows (the
// first login with a set of startup settings, which in session mode keeps
// it), so 3 session-mode connections showed 2.
func TestShowStatsCountsLoginAssignments(t *testing.T) {
	stamp := fmt.Sprint(time.Now().UnixNano())
	admPass := "Adm-" + stamp
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "session"
		c.Extra = "admin_users = [\"adm\"]\n"
		c.Users["adm"] = admPass
	})
	e.secrets = append(e.secrets, admPass)
	adm := console(t, e.tide.ConnString("pgtide", "adm", admPass))
	for i := range 3 {
		c := connect(t, e.URL())
		// One simple query: one transaction (pgx's extended protocol
		// would answer two Syncs).
		if _, err := c.PgConn().Exec(ctxT(t, 10*time.Second), fmt.Sprintf("select %d", i)).ReadAll(); err != nil {
			t.Fatal(err)
		}
		c.Close(context.Background())
	}
	var row adminRow
	pgtest.WaitUntil(t, 10*time.Second, "SHOW STATS to count 3 transactions", func() bool {
		row = findRow(mustAdmin(t, adm, "SHOW STATS"), "database", e.DB)
		return row != nil && row["total_xact_count"] == "3"
	})
	if got := row["total_server_assignment_count"]; got != "3" {
		t.Fatalf("3 session-mode connections: want total_server_assignment_count 3, got %s (%v)", got, row)
	}
}

// TestStatsWaitAtPause: a query held at PAUSE waits for a server. PgBouncer
// counts that in total_wait_time; pgtide counted nothing (only a wait in
// the pool's queue counted) and put the whole pause into the query's and
// the transaction's time instead.
func TestStatsWaitAtPause(t *testing.T) {
	a := newAdminEnv(t)
	adm := console(t, a.adminURL())
	stats := func() adminRow {
		t.Helper()
		st := findRow(mustAdmin(t, adm, "SHOW STATS"), "database", a.DB)
		if st == nil {
			t.Fatalf("SHOW STATS has no row for %s", a.DB)
		}
		return st
	}
	c := connect(t, a.URL())
	if _, err := c.PgConn().Exec(ctxT(t, 10*time.Second), "select 1").ReadAll(); err != nil {
		t.Fatal(err)
	}
	before := stats()
	mustAdmin(t, adm, "PAUSE "+a.DB)
	done := make(chan error, 1)
	go func() {
		_, err := c.PgConn().Exec(context.Background(), "select 2").ReadAll()
		done <- err
	}()
	const held = 300 * time.Millisecond
	pgtest.WaitUntil(t, 10*time.Second, "the query to wait at PAUSE for 300ms", func() bool {
		for _, r := range mustAdmin(t, adm, "SHOW CLIENTS") {
			if r["database"] == a.DB && r["state"] == "waiting" {
				w := time.Duration(atoi(t, r["wait"]))*time.Second + time.Duration(atoi(t, r["wait_us"]))*time.Microsecond
				return w >= held
			}
		}
		return false
	})
	mustAdmin(t, adm, "RESUME "+a.DB)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var after adminRow
	pgtest.WaitUntil(t, 10*time.Second, "SHOW STATS to count the query", func() bool {
		after = stats()
		return atoi(t, after["total_query_count"]) > atoi(t, before["total_query_count"])
	})
	wait := atoi(t, after["total_wait_time"]) - atoi(t, before["total_wait_time"])
	query := atoi(t, after["total_query_time"]) - atoi(t, before["total_query_time"])
	if wait < held.Microseconds() {
		t.Errorf("a query held at PAUSE for over %v added %d µs to total_wait_time", held, wait)
	}
	if query >= held.Microseconds() {
		t.Errorf("the wait at PAUSE counted as query time: total_query_time grew by %d µs", query)
	}
}
