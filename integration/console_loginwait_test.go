package integration

import (
	"context"
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
