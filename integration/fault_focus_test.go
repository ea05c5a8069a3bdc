package integration

// Focused fault cases found by the fault mix (fault_mix_test.go): each one
// deterministic, each against a real PostgreSQL behind a chaosRelay.

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// untilEnd reads to the end of the connection and returns the errors the
// client was sent and whether a ReadyForQuery came (the statement ran).
func (r *rawSession) untilEnd(t *testing.T) (errs []*pgproto3.ErrorResponse, ready bool) {
	t.Helper()
	_ = r.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		m, err := r.fe.Receive()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the session did not end within 15 s")
			}
			return errs, ready
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			cp := *m
			errs = append(errs, &cp)
		case *pgproto3.ReadyForQuery:
			ready = true
		}
	}
}

// TestFaultResetWhileHeldIdle: a client is idle inside its transaction
// (transaction mode: its server held, unread, between statements) when
// the network resets the server's connection. Its next statement must not
// run anywhere, and the client must be told why: FATAL 08006 server
// connection lost, once, not a bare close of its connection.
func TestFaultResetWhileHeldIdle(t *testing.T) {
	pg := pgtest.Shared(t)
	relay := startChaosRelay(t, pg.Addr())
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.PGPort = relay.port()
		db.PoolSize = 1
	})
	direct := connect(t, e.DirectURL())
	if _, err := direct.Exec(ctxT(t, 30*time.Second), "CREATE TABLE held (i int)"); err != nil {
		t.Fatal(err)
	}
	mon := super(t, e.pg, e.DB)
	for i := 0; i < 20; i++ {
		r, err := dialRaw(ctxT(t, 30*time.Second), e.URL())
		if err != nil {
			t.Fatal(err)
		}
		_ = r.conn.SetDeadline(time.Now().Add(30 * time.Second))
		if err := r.query("BEGIN; INSERT INTO held VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		if st, pe, err := r.untilReady(); err != nil || pe != nil || st != 'T' {
			t.Fatalf("BEGIN: status %c, error %v, %v", st, pe, err)
		}
		var pid, port int
		if err := mon.QueryRow(ctxT(t, 10*time.Second), `SELECT pid, client_port FROM pg_stat_activity
			WHERE datname = $1 AND state = 'idle in transaction'`, e.DB).Scan(&pid, &port); err != nil {
			t.Fatalf("the client's backend: %v", err)
		}
		// That backend's own connection: another one through the relay (a
		// cancel request's, the last server's not yet torn down) would
		// leave it untouched.
		p := relay.pickBackend(port)
		if p == nil {
			t.Fatalf("the backend's connection (port %d) is not through the relay", port)
		}
		p.reset()
		// The reset reached both ends once the backend is gone.
		pgtest.WaitUntil(t, 10*time.Second, "the backend gone", func() bool {
			return queryInt(t, mon, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 0
		})
		_ = r.query("INSERT INTO held VALUES (2)")
		errs, ready := r.untilEnd(t)
		r.conn.Close()
		if ready {
			t.Fatalf("iteration %d: the statement after the reset got a ReadyForQuery: it ran", i)
		}
		if len(errs) != 1 || errs[0].Code != "08006" || errs[0].Severity != "FATAL" {
			var got []string
			for _, er := range errs {
				got = append(got, er.Severity+" "+er.Code+" "+er.Message)
			}
			t.Fatalf("iteration %d: the client was told %q after its server's connection was reset; want one FATAL 08006", i, got)
		}
	}
	if n := queryInt(t, direct, "SELECT count(*) FROM held"); n != 0 {
		t.Fatalf("%d rows exist; none may", n)
	}
}
