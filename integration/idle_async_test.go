package integration

// The life of idle clients and what servers send them unasked: a parked
// client (proxy/park.go) has no goroutine, so whatever ends it must also
// resume it, or it stays registered forever.

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// idleAdminEnv is newAdminEnv in the given pool mode, pool_size 2.
func idleAdminEnv(t *testing.T, mode string) *adminEnv {
	t.Helper()
	stamp := fmt.Sprint(time.Now().UnixNano())
	a := &adminEnv{admPass: "Adm-" + stamp, statPass: "Stat-" + stamp}
	a.env = newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = mode
		db.PoolSize = 2
		c.Extra = "admin_users = [\"adm\"]\nstats_users = [\"stat\"]\n"
		c.Users["adm"] = a.admPass
		c.Users["stat"] = a.statPass
	})
	a.secrets = append(a.secrets, a.admPass, a.statPass)
	return a
}

// A session-mode client that logged in and sent nothing is parked with the
// server its login borrowed attached. When that server dies (here
// pg_terminate_backend; a PostgreSQL restart does it to every one), the
// client gets PostgreSQL's FATAL and its connection closes, and pgtide must
// forget it: before the fix the session stayed parked on a closed socket
// that no event could wake, listed in SHOW CLIENTS and counted against
// max_client_conn until pgtide exited.
func TestParkedSessionServerTerminated(t *testing.T) {
	a := idleAdminEnv(t, "session")
	mon := super(t, a.pg, "postgres")
	adm := console(t, a.adminURL())
	ctx := ctxT(t, 60*time.Second)

	nc, fe := rawLogin(t, a.URL()+"&application_name=parked_victim")
	if findRow(mustAdmin(t, adm, "SHOW CLIENTS"), "application_name", "parked_victim") == nil {
		t.Fatal("the client is not in SHOW CLIENTS")
	}
	var n int
	if err := mon.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
		a.DB, a.User).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminating the client's server: %d backends, %v", n, err)
	}
	// The client is told with PostgreSQL's own FATAL, then closed.
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var fatal *pgproto3.ErrorResponse
	for {
		m, err := fe.Receive()
		if err != nil {
			break
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			fatal = e
		}
	}
	if fatal == nil || fatal.Code != "57P01" {
		t.Fatalf("the parked client got %+v, want FATAL 57P01", fatal)
	}
	pgtest.WaitUntil(t, 10*time.Second, "the client whose server died to leave SHOW CLIENTS", func() bool {
		return findRow(mustAdmin(t, adm, "SHOW CLIENTS"), "application_name", "parked_victim") == nil
	})
}

// A client that stops reading in the middle of a large result leaves the
// pump blocked writing to it. KILL_CLIENT (and shutdown, which kills every
// session in turn) must still end it at once: before the fix kill waited
// for the pump's write to finish before writing its FATAL, so the console
// command hung for as long as the client did not read, and the client kept
// its server.
func TestKillClientNotReading(t *testing.T) {
	for _, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) {
			a := idleAdminEnv(t, mode)
			adm := console(t, a.adminURL())
			mon := super(t, a.pg, "postgres")
			ctx := ctxT(t, 60*time.Second)
			nc, _ := rawLogin(t, a.URL()+"&application_name=not_reading")
			// About 200 MB: far more than the socket buffers hold.
			send(t, nc, &pgproto3.Query{String: "SELECT repeat('x', 2000) FROM generate_series(1, 100000)"})
			// Every buffer on the way is full: the server waits to write.
			pgtest.WaitUntil(t, 10*time.Second, "the server to block writing the result", func() bool {
				var n int
				err := mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND wait_event = 'ClientWrite'", a.DB).Scan(&n)
				return err == nil && n == 1
			})
			row := findRow(mustAdmin(t, adm, "SHOW CLIENTS"), "application_name", "not_reading")
			if row == nil {
				t.Fatal("the client is not in SHOW CLIENTS")
			}
			done := make(chan error, 1)
			go func() {
				_, err := adminRun(t, adm, "KILL_CLIENT "+row["id"])
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("KILL_CLIENT: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("KILL_CLIENT of a client that does not read did not return within 10 s")
			}
			other := connect(t, a.URL())
			pgtest.WaitUntil(t, 10*time.Second, "the killed client to leave SHOW CLIENTS", func() bool {
				return findRow(mustAdmin(t, console(t, a.adminURL()), "SHOW CLIENTS"), "application_name", "not_reading") == nil
			})
			if queryInt(t, other, "SELECT 1") != 1 {
				t.Fatal("SELECT 1")
			}
		})
	}
}
