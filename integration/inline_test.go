package integration

// In transaction mode the client goroutine pumps a round trip's replies
// itself (proxy/pump.go drivePump) and only hands the server to a pump
// goroutine when the reply takes longer than inlineFor. These tests hold
// what the goroutine per attachment gave before: a client that leaves or
// is killed during a long query is seen at once, its query cancelled and
// the server lent again; replies of any length and timing arrive whole.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

func TestInlinePumpClientLeavesDuringQuery(t *testing.T) {
	for _, how := range []string{"disconnect", "kill_client"} {
		t.Run(how, func(t *testing.T) {
			a := newAdminEnv(t) // transaction mode, pool_size 1
			mon := super(t, a.pg, "postgres")
			adm := console(t, a.adminURL())
			ctx := ctxT(t, 60*time.Second)
			// Warm the pool, so the victim's query is a borrow at a
			// transaction boundary (the inline path).
			other := connect(t, a.URL())
			if _, err := other.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			nc, fe := rawLogin(t, a.URL()+"&application_name=victim")
			send(t, nc, &pgproto3.Query{String: "SELECT pg_sleep(60)"})
			waitRunning(t, mon, "SELECT pg_sleep(60)", 1)
			switch how {
			case "disconnect":
				_ = nc.Close()
			case "kill_client":
				row := findRow(mustAdmin(t, adm, "SHOW CLIENTS"), "application_name", "victim")
				if row == nil {
					t.Fatal("the victim is not in SHOW CLIENTS")
				}
				mustAdmin(t, adm, "KILL_CLIENT "+row["id"])
				if _, err := readUntil(t, nc, fe, 10*time.Second, 'Z'); err == nil {
					t.Fatal("the killed client got a ReadyForQuery")
				}
			}
			// The one server must come back within seconds: the query is
			// cancelled, not left to run its 60 s.
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if _, err := other.Exec(qctx, "SELECT 1"); err != nil {
				t.Fatalf("pool_size 1: a second client got no server after the first left during pg_sleep(60): %v", err)
			}
			pgtest.WaitUntil(t, 10*time.Second, "pg_sleep(60) to stop", func() bool {
				var n int
				err := mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(60)'").Scan(&n)
				return err == nil && n == 0
			})
		})
	}
}

// Inside a transaction the server waits, unread, for the client's next
// statement (pump.go heldIdle). A server that dies while its client is
// quiet must still be noticed without that statement: the idle sweep
// starts the pump that sees it, the client gets PostgreSQL's FATAL, and
// the pool's slot is free for others.
func TestInlinePumpHeldServerDies(t *testing.T) {
	a := newAdminEnv(t) // transaction mode, pool_size 1
	mon := super(t, a.pg, "postgres")
	ctx := ctxT(t, 60*time.Second)
	nc, fe := rawLogin(t, a.URL())
	send(t, nc, &pgproto3.Query{String: "BEGIN"})
	if _, err := readUntil(t, nc, fe, 10*time.Second, 'Z'); err != nil {
		t.Fatal(err)
	}
	send(t, nc, &pgproto3.Query{String: "SELECT pg_backend_pid()"})
	var pid string
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := m.(*pgproto3.DataRow); ok {
			pid = string(d.Values[0])
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	var ok bool
	if err := mon.QueryRow(ctx, "SELECT pg_terminate_backend($1::int)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminate %s: %v %v", pid, ok, err)
	}
	// The client sends nothing; pgtide must tell it and close it.
	_ = nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	var fatal *pgproto3.ErrorResponse
	for {
		m, err := fe.Receive()
		if err != nil {
			break // closed after the FATAL
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			fatal = e
		}
	}
	if fatal == nil || fatal.Severity != "FATAL" {
		t.Fatalf("a client idle in a transaction whose server was terminated got %+v; want a FATAL", fatal)
	}
	// And the one slot serves another client.
	other := connect(t, a.URL())
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := other.Exec(qctx, "SELECT 1"); err != nil {
		t.Fatalf("pool_size 1: no server for another client after the held one died: %v", err)
	}
}

// A transaction whose client is quiet for longer than the idle sweep (2 s,
// park.go): the sweep wakes the client's read to start the pump goroutine
// for the held server, and the transaction goes on intact, over a plain
// and a TLS client connection (whose read the wake interrupts mid-TLS).
func TestInlinePumpHeldAcrossSweeps(t *testing.T) {
	certs := pgtest.NewCerts(t)
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		db.PoolSize = 2
		c.Extra = clientTLSConf(certs, "prefer")
	})
	direct := connect(t, e.DirectURL())
	ctx := ctxT(t, 60*time.Second)
	if _, err := direct.Exec(ctx, "CREATE TABLE held (who text, n int)"); err != nil {
		t.Fatal(err)
	}
	for _, sslmode := range []string{"disable", "require"} {
		t.Run(sslmode, func(t *testing.T) {
			c := connect(t, tlsURL(e.tide.Port, e.DB, e.User, e.Pass, "sslmode", sslmode))
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO held VALUES ($1, 1)", sslmode); err != nil {
				t.Fatal(err)
			}
			pid := queryIntTx(t, tx, "SELECT pg_backend_pid()")
			// The point of the test: quiet for two sweeps.
			time.Sleep(5 * time.Second)
			// Another client is served meanwhile by the other server.
			other := connect(t, e.URL())
			if queryInt(t, other, "SELECT 7") != 7 {
				t.Fatal("the other client")
			}
			if got := queryIntTx(t, tx, "SELECT pg_backend_pid()"); got != pid {
				t.Fatalf("the transaction moved from backend %d to %d", pid, got)
			}
			if _, err := tx.Exec(ctx, "UPDATE held SET n = 2 WHERE who = $1", sslmode); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := direct.QueryRow(ctx, "SELECT n FROM held WHERE who = $1", sslmode).Scan(&n); err != nil || n != 2 {
				t.Fatalf("after commit: n = %d, %v; want 2", n, err)
			}
		})
	}
}

// A client pinned to its server (LISTEN, transaction mode) keeps it between
// transactions; the server must be read all the time, so a notification
// reaches the quiet client at once, not at the next idle sweep (2-4 s)
// that would start a pump for a server held unread.
func TestInlinePumpPinnedListenerNotified(t *testing.T) {
	e, _ := stateEnv(t, 2, "")
	ctx := ctxT(t, 60*time.Second)
	a := connect(t, e.URL())
	b := connect(t, e.URL())
	for i := range 3 {
		if _, err := a.Exec(ctx, "LISTEN inline_chan"); err != nil {
			t.Fatal(err)
		}
		payload := fmt.Sprint("p", i)
		if _, err := b.Exec(ctx, "SELECT pg_notify('inline_chan', $1)", payload); err != nil {
			t.Fatal(err)
		}
		// Well under the sweep's 2 s, and far over a delivery's time.
		wctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		n, err := a.WaitForNotification(wctx)
		cancel()
		if err != nil {
			t.Fatalf("round %d: the pinned listener got no notification within 1.5 s: %v", i, err)
		}
		if n.Payload != payload {
			t.Fatalf("round %d: payload %q, want %q", i, n.Payload, payload)
		}
	}
}
