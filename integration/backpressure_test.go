package integration

// Backpressure: a client that pipelines requests without reading their
// replies must not make pgtide buffer without bound. PostgreSQL stops
// reading such a client once its replies back up; pgtide must too.

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// floodUnread writes copies of msg to c, whose replies are never read, in
// chunks of 256 KiB up to total bytes, and returns how many bytes went out
// before a write stalled for stall (the peer stopped reading) or all did.
func floodUnread(c *net.TCPConn, msg []byte, total int, stall time.Duration) int {
	chunk := make([]byte, 0, 256<<10+len(msg))
	for len(chunk) < 256<<10 {
		chunk = append(chunk, msg...)
	}
	written := 0
	for written < total {
		_ = c.SetWriteDeadline(time.Now().Add(stall))
		n, err := c.Write(chunk)
		written += n
		if err != nil {
			break
		}
	}
	_ = c.SetWriteDeadline(time.Time{})
	return written
}

// closeStmtMsg is a Close of the named statement.
func closeStmtMsg(name string) []byte {
	b := []byte{'C', 0, 0, 0, 0, 'S'}
	b = append(append(b, name...), 0)
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-1))
	return b
}

// TestUnreadPipelineBounded: inside a transaction, a client that never
// reads sends a stream of Close messages of a named statement (transaction
// mode: pgtide answers them itself, nothing goes to the server), or of
// Syncs (transaction and session mode). PostgreSQL directly stops reading
// after a few MiB; pgtide must stop too, and its RSS stay bounded. Before
// the fix, 32 MiB of Closes all went in and pgtide's RSS grew by 740 MiB
// (a queue entry of 80 bytes per 8-byte message, never written to the
// server, so nothing pushed back); 16 MiB of Syncs grew it by 450 MiB.
func TestUnreadPipelineBounded(t *testing.T) {
	cases := []struct {
		name, mode string
		msg        []byte
		prepare    bool
	}{
		{"close_answered_by_pgtide", "transaction", closeStmtMsg("s"), true},
		{"sync_transaction", "transaction", []byte{'S', 0, 0, 0, 4}, false},
		{"sync_session", "session", []byte{'S', 0, 0, 0, 4}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRelEnv(t, func(c *tideConf, db *dbConf) { c.PoolMode = tc.mode })
			const total = 32 << 20
			for _, target := range []struct{ name, url string }{{"direct", r.DirectURL()}, {"pgtide", r.URL()}} {
				conn, fe := rawLogin(t, target.url)
				_ = conn.SetReadBuffer(4096)
				send(t, conn, &pgproto3.Query{String: "BEGIN"})
				if _, err := readUntil(t, conn, fe, 5*time.Second, 'Z'); err != nil {
					t.Fatal(err)
				}
				if tc.prepare {
					send(t, conn, &pgproto3.Parse{Name: "s", Query: "SELECT 1"}, &pgproto3.Sync{})
					if _, err := readUntil(t, conn, fe, 5*time.Second, 'Z'); err != nil {
						t.Fatal(err)
					}
				}
				rss0 := procRSS(r.pid)
				written := floodUnread(conn, tc.msg, total, 3*time.Second)
				grew := procRSS(r.pid) - rss0
				t.Logf("%s: took %.1f MiB of %d MiB before it stopped reading; pgtide RSS +%.1f MiB",
					target.name, float64(written)/(1<<20), total>>20, float64(grew)/(1<<20))
				if written >= total {
					t.Errorf("%s read all %d MiB from a client that never reads its replies", target.name, total>>20)
				}
				if target.name == "pgtide" && grew > 64<<20 {
					t.Errorf("pgtide's RSS grew by %.1f MiB (limit 64 MiB) for one client that does not read", float64(grew)/(1<<20))
				}
				reset(conn)
			}
		})
	}
}

// TestBackpressureFlushesExtendedBatch: pgtide stops reading a client
// whose queue is long until the replies drain, but PostgreSQL holds the
// replies to an extended batch until Sync or Flush. A Bind and Execute
// followed by 20,000 Closes (answered by pgtide) and only then a Sync, the
// client reading as it writes, must get every reply, as from PostgreSQL
// directly; pgtide sends the server a Flush before it waits.
func TestBackpressureFlushesExtendedBatch(t *testing.T) {
	r := newRelEnv(t, nil)
	var got [2]string
	for i, url := range []string{r.DirectURL(), r.URL()} {
		conn, fe := rawLogin(t, url)
		send(t, conn, &pgproto3.Query{String: "BEGIN"})
		if _, err := readUntil(t, conn, fe, 5*time.Second, 'Z'); err != nil {
			t.Fatal(err)
		}
		send(t, conn, &pgproto3.Parse{Name: "s", Query: "SELECT 1"}, &pgproto3.Sync{})
		if _, err := readUntil(t, conn, fe, 5*time.Second, 'Z'); err != nil {
			t.Fatal(err)
		}
		var b []byte
		b, _ = (&pgproto3.Bind{PreparedStatement: "s"}).Encode(b)
		b, _ = (&pgproto3.Execute{}).Encode(b)
		for j := 0; j < 20000; j++ {
			b = append(b, closeStmtMsg("t")...)
		}
		b, _ = (&pgproto3.Sync{}).Encode(b)
		werr := make(chan error, 1)
		go func() { _, err := conn.Write(b); werr <- err }()
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		counts := map[string]int{}
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatalf("%s: %v after %v", []string{"direct", "pgtide"}[i], err, counts)
			}
			counts[fmt.Sprintf("%T", m)[len("*pgproto3."):]]++
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		got[i] = fmt.Sprint(counts)
	}
	t.Logf("direct: %s", got[0])
	if got[0] != got[1] {
		t.Errorf("through pgtide: %s\ndirect:        %s", got[1], got[0])
	}
}

// TestStatementRegistryFreed: pgtide keeps one copy of each distinct
// statement text per pool, shared by clients and servers. A client (here
// as pgx's statement cache does with SQL it builds with literals) that
// prepares many distinct statements and closes each must not leave them
// all in pgtide: its memory must not grow with the number of statements
// that nobody uses any more. Two rounds of 25,000 statements of 2 kB: the
// second must find the memory the first freed (a round kept about 120 MiB
// before the fix: every text stayed for the life of the pool; PgBouncer
// frees a statement with its last reference).
func TestStatementRegistryFreed(t *testing.T) {
	r := newRelEnv(t, nil)
	conn, fe := rawLogin(t, r.URL())
	pad := strings.Repeat("x", 2000)
	const batches, per = 125, 200 // 25,000 statements a round
	round := func(k int) {
		for i := 0; i < batches; i++ {
			var msgs []pgproto3.FrontendMessage
			for j := 0; j < per; j++ {
				msgs = append(msgs, &pgproto3.Parse{Name: "s", Query: fmt.Sprintf("SELECT %d /* %s */", (k*batches+i)*per+j, pad)},
					&pgproto3.Close{ObjectType: 'S', Name: "s"})
			}
			msgs = append(msgs, &pgproto3.Sync{})
			send(t, conn, msgs...)
			if _, err := readUntil(t, conn, fe, 10*time.Second, 'Z'); err != nil {
				t.Fatal(err)
			}
		}
	}
	rss0 := procRSS(r.pid)
	round(0)
	rss1 := procRSS(r.pid)
	round(1)
	rss2 := procRSS(r.pid)
	t.Logf("pgtide RSS: +%.1f MiB after the first %d statements, +%.1f MiB more after the next %d",
		float64(rss1-rss0)/(1<<20), batches*per, float64(rss2-rss1)/(1<<20), batches*per)
	if grew := rss2 - rss1; grew > 32<<20 {
		t.Errorf("pgtide's RSS grew by %.1f MiB (limit 32 MiB) in the second round: statements no client or server uses are kept", float64(grew)/(1<<20))
	}
}
