package integration

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestTxnQueryAfterFlushReleasesServer: asyncpg's copy_records_to_table
// prepares its introspection query with Parse, Describe and Flush (no
// Sync), then runs COPY ... FROM STDIN as a simple Query. PostgreSQL ran
// the Query, so nothing before it failed, and the Query's end ended the
// implicit transaction of the messages before it: at its ReadyForQuery the
// server is idle as after a Sync. pgtide kept waiting for a Sync that
// asyncpg never sends (its pool's reset on release is a simple Query too),
// so the client held its server until it disconnected and every other
// client of a pool of 1 waited for query_wait_timeout. Each sequence runs
// against PostgreSQL directly and through pgtide; after it, another client
// must get a server, and the prepared statement must still run.
func TestTxnQueryAfterFlushReleasesServer(t *testing.T) {
	e := drvTxnEnv(t, 1)
	ctx := ctxT(t, 60*time.Second)
	setup := connect(t, e.DirectURL())
	if _, err := setup.Exec(ctx, "CREATE TABLE qaf (id int)"); err != nil {
		t.Fatal(err)
	}
	for _, seq := range []struct {
		name string
		run  func(t *testing.T, c net.Conn, fe *pgproto3.Frontend)
	}{
		{"copy", func(t *testing.T, c net.Conn, fe *pgproto3.Frontend) {
			send(t, c, xq("COPY qaf FROM STDIN"))
			if _, err := readUntil(t, c, fe, 5*time.Second, 'G'); err != nil {
				t.Fatal(err)
			}
			send(t, c, xcopy("1\n"), &pgproto3.CopyDone{})
		}},
		{"query", func(t *testing.T, c net.Conn, fe *pgproto3.Frontend) {
			send(t, c, xq("SELECT 2"))
		}},
	} {
		for _, target := range []struct{ name, url string }{{"direct", e.DirectURL()}, {"pgtide", e.URL()}} {
			t.Run(seq.name+"/"+target.name, func(t *testing.T) {
				c, fe := rawLogin(t, target.url)
				send(t, c, xparse("intro", "SELECT id FROM qaf LIMIT 1"), xdescS("intro"), &pgproto3.Flush{})
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				for { // ParseComplete, ParameterDescription, RowDescription
					m, err := fe.Receive()
					if err != nil {
						t.Fatal(err)
					}
					if _, ok := m.(*pgproto3.RowDescription); ok {
						break
					}
				}
				_ = c.SetReadDeadline(time.Time{})
				seq.run(t, c, fe)
				z, err := readUntil(t, c, fe, 5*time.Second, 'Z')
				if err != nil {
					t.Fatal(err)
				}
				if st := z.(*pgproto3.ReadyForQuery).TxStatus; st != 'I' {
					t.Fatalf("status %q after the query", st)
				}
				other := connect(t, target.url)
				octx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				if _, err := other.Exec(octx, "SELECT 1"); err != nil {
					t.Fatalf("another client, while the first is idle: %v", err)
				}
				send(t, c, xbind("", "intro"), xexec("", 0), &pgproto3.Sync{})
				if _, err := readUntil(t, c, fe, 5*time.Second, 'Z'); err != nil {
					t.Fatalf("the prepared statement afterwards: %v", err)
				}
			})
		}
	}
}
