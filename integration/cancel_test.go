package integration

// Cancel requests that pgtide cannot see through (DESIGN.md invariant 5:
// a cancel reaches the backend running that client's query, and only
// that one).

import (
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// delayRelay forwards TCP connections to target. While delay is set, a
// new connection holds what its client sends for that long before passing
// it on, even if the client has closed by then: a slow postmaster, a
// congested link.
type delayRelay struct {
	ln     net.Listener
	target string
	delay  atomic.Int64 // time.Duration
}

func startDelayRelay(t *testing.T, target string) *delayRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &delayRelay{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go d.relay(c, time.Duration(d.delay.Load()))
		}
	}()
	return d
}

func (d *delayRelay) relay(c net.Conn, delay time.Duration) {
	defer c.Close()
	s, err := net.Dial("tcp", d.target)
	if err != nil {
		return
	}
	defer s.Close()
	go func() { _, _ = io.Copy(c, s); c.Close() }()
	if delay > 0 {
		until := time.Now().Add(delay)
		var held []byte
		buf := make([]byte, 4096)
		_ = c.SetReadDeadline(until)
		for {
			n, err := c.Read(buf)
			held = append(held, buf[:n]...)
			if err != nil {
				break
			}
		}
		_ = c.SetReadDeadline(time.Time{})
		time.Sleep(time.Until(until))
		if _, err := s.Write(held); err != nil {
			return
		}
	}
	_, _ = io.Copy(s, c)
	// s stays open until the server closes it: a cancel request is acted
	// on after the client's side closed.
	_, _ = io.Copy(io.Discard, s)
}

func (d *delayRelay) port() int { return d.ln.Addr().(*net.TCPAddr).Port }

// TestCancelGivenUpServerNotReused: a client's cancel request that the
// server has not confirmed within cancel_wait_timeout (here held 700 ms on
// its way, the limit 100 ms) may still arrive. The server it was for must
// not be lent again: before the fix it went back to the pool when the
// client's query ended, and the cancel stopped the next client's query on
// it. Pool size 1, so the next client gets that server unless it is closed.
func TestCancelGivenUpServerNotReused(t *testing.T) {
	pg := pgtest.Shared(t)
	pgtest.BuildPgtide(t)
	relay := startDelayRelay(t, pg.Addr())
	e := &env{t: t, pg: pg}
	e.User, e.DB = uniqueName(t, "u"), uniqueName(t, "d")
	e.Pass = "Pw-" + e.User
	e.secrets = []string{e.Pass, pg.Password}
	pgtest.CreateRole(t, pg, e.User, e.Pass)
	pgtest.CreateDatabase(t, pg, e.DB, e.User)
	e.conf = defaultConf()
	e.conf.PoolMode = "transaction"
	e.conf.Extra = "cancel_wait_timeout = \"100ms\"\n"
	e.conf.Databases = []dbConf{{Name: e.DB, PoolSize: 1}}
	e.conf.Users[e.User] = e.Pass
	e.tide = pgtest.StartPgtide(t, e.conf.TOML(relay.port()))

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
	time.Sleep(150 * time.Millisecond)
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
