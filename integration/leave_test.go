package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// leaveEnv is a pgtide with one server for its database in mode, and a
// table "left" (id int) in that database.
func leaveEnv(t *testing.T, mode string) (*env, *pgx.Conn) {
	e := tbTxnEnv(t, mode, 1)
	setup := connect(t, e.DirectURL())
	if _, err := setup.Exec(ctxT(t, 10*time.Second), "CREATE TABLE left_rows (id int)"); err != nil {
		t.Fatal(err)
	}
	return e, super(t, e.pg, e.DB)
}

// backendPID connects to url and returns the connection and its backend.
func backendPID(t *testing.T, url string) (*pgconn.PgConn, string) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	c, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Exec(ctx, "SELECT pg_backend_pid()::text").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return c, string(res[0].Rows[0][0])
}

// leftSettled waits until what a client that left sent is done with: directly,
// its backend has exited; through pgtide (pool_size 1), another client's
// query runs, which it can only once the server is back in the pool.
func leftSettled(t *testing.T, e *env, mon *pgx.Conn, direct bool, pid string) {
	t.Helper()
	if direct {
		pgtest.WaitUntil(t, 10*time.Second, "backend "+pid+" to exit", func() bool {
			var n int
			err := mon.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", pid).Scan(&n)
			return err == nil && n == 0
		})
		return
	}
	c := connect(t, e.URL())
	if _, err := c.Exec(ctxT(t, 15*time.Second), "SELECT 1"); err != nil {
		t.Fatalf("another client after the first left: %v", err)
	}
	c.Close(context.Background())
}

// TestLeaveMidExtendedBatchRollsBack: a client whose extended batch ran an
// INSERT (its CommandComplete came back, after a Flush) and that leaves
// before its Sync, with Terminate or by closing its socket. PostgreSQL
// ends the session with the batch's implicit transaction rolled back: the
// row is not there. Before, pgtide sent the Sync itself, which committed
// the row: half a batch committed for a client that never finished it
// (DESIGN.md invariant 9).
func TestLeaveMidExtendedBatchRollsBack(t *testing.T) {
	for _, mode := range []string{"session", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			e, mon := leaveEnv(t, mode)
			id := 0
			for _, how := range []string{"terminate", "close"} {
				for _, target := range []string{"direct", "pgtide"} {
					id++
					url := e.URL()
					if target == "direct" {
						url = e.DirectURL()
					}
					c, pid := backendPID(t, url)
					fr := c.Frontend()
					fr.Send(&pgproto3.Parse{Query: fmt.Sprintf("INSERT INTO left_rows VALUES (%d)", id)})
					fr.Send(&pgproto3.Bind{})
					fr.Send(&pgproto3.Execute{})
					fr.Send(&pgproto3.Flush{})
					if err := fr.Flush(); err != nil {
						t.Fatal(err)
					}
					_ = c.Conn().SetReadDeadline(time.Now().Add(10 * time.Second))
					for {
						m, err := fr.Receive()
						if err != nil {
							t.Fatalf("%s: waiting for the INSERT's CommandComplete: %v", target, err)
						}
						if _, ok := m.(*pgproto3.CommandComplete); ok {
							break
						}
					}
					if how == "terminate" {
						fr.Send(&pgproto3.Terminate{})
						_ = fr.Flush()
					}
					_ = c.Conn().Close()
					leftSettled(t, e, mon, target == "direct", pid)
					if n := queryInt(t, mon, "SELECT count(*) FROM left_rows WHERE id = $1", id); n != 0 {
						t.Errorf("%s, client left with %s before its Sync: the batch's INSERT was committed (%d rows)", target, how, n)
					}
				}
			}
		})
	}
}

// TestTerminateLetsPipelinedQueryFinish: a client that writes a statement
// and Terminate behind it, without waiting for the reply (a fire-and-forget
// INSERT, a driver closed while its query runs). PostgreSQL runs the
// statement to its end, then reads the Terminate: the row is committed.
// Before, pgtide cancelled the statement when it read the Terminate, as for
// a client that vanished: the row never came. Simple and extended protocol.
func TestTerminateLetsPipelinedQueryFinish(t *testing.T) {
	for _, mode := range []string{"session", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			e, mon := leaveEnv(t, mode)
			id := 0
			for _, proto := range []string{"simple", "extended"} {
				for _, target := range []string{"direct", "pgtide"} {
					id++
					url := e.URL()
					if target == "direct" {
						url = e.DirectURL()
					}
					c, _ := backendPID(t, url)
					fr := c.Frontend()
					// The statement is still running when the Terminate arrives.
					q := fmt.Sprintf("INSERT INTO left_rows SELECT %d FROM pg_sleep(0.3)", id)
					if proto == "simple" {
						fr.Send(&pgproto3.Query{String: q})
					} else {
						fr.Send(&pgproto3.Parse{Query: q})
						fr.Send(&pgproto3.Bind{})
						fr.Send(&pgproto3.Execute{})
						fr.Send(&pgproto3.Sync{})
					}
					fr.Send(&pgproto3.Terminate{})
					if err := fr.Flush(); err != nil {
						t.Fatal(err)
					}
					_ = c.Conn().Close()
					if !pgtest.Eventually(10*time.Second, func() bool {
						var n int
						err := mon.QueryRow(context.Background(), "SELECT count(*) FROM left_rows WHERE id = $1", id).Scan(&n)
						return err == nil && n == 1
					}) {
						t.Errorf("%s, %s protocol: the statement sent before Terminate never committed its row", target, proto)
					}
				}
			}
		})
	}
}
