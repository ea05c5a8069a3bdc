package integration

// Large client messages stream through pgtide in pieces (DESIGN.md
// invariant 11): a single CopyData message of many MiB, and in session mode
// a huge Query, reach PostgreSQL intact while pgtide's memory stays at its
// buffers. TestReliabilityHugeDeclaredLength covers headers that claim much
// and send nothing.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

func TestStreamLargeClientMessages(t *testing.T) {
	for _, mode := range []string{"session", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			r := newRelEnv(t, func(c *tideConf, db *dbConf) { c.PoolMode = mode; db.PoolSize = 2 })
			direct := connect(t, r.DirectURL())
			if _, err := direct.Exec(ctxT(t, 30*time.Second), "CREATE TABLE big (n int, pad text)"); err != nil {
				t.Fatal(err)
			}
			base := r.baseline(t)
			rss0 := procRSS(r.pid)

			// One CopyData message of ~96 MiB holding 400,000 rows.
			const rows = 400000
			pad := bytes.Repeat([]byte{'x'}, 240)
			var body bytes.Buffer
			for i := 0; i < rows; i++ {
				body.WriteString(strconv.Itoa(i))
				body.WriteByte('\t')
				body.Write(pad)
				body.WriteByte('\n')
			}
			raw, err := dialRaw(ctxT(t, 30*time.Second), r.URL())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.conn.Close()
			if err := raw.query("COPY big FROM STDIN"); err != nil {
				t.Fatal(err)
			}
			for {
				m, err := raw.fe.Receive()
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := m.(*pgproto3.CopyInResponse); ok {
					break
				}
				if e, ok := m.(*pgproto3.ErrorResponse); ok {
					t.Fatalf("COPY: %s", e.Message)
				}
			}
			hdr := []byte{'d', 0, 0, 0, 0}
			binary.BigEndian.PutUint32(hdr[1:], uint32(body.Len()+4))
			var st byte
			var pe *pgproto3.ErrorResponse
			peak := peakRSS(r.pid, func() {
				if _, err = raw.conn.Write(append(hdr, body.Bytes()...)); err != nil {
					t.Fatal(err)
				}
				raw.fe.Send(&pgproto3.CopyDone{})
				if err = raw.fe.Flush(); err != nil {
					t.Fatal(err)
				}
				st, pe, err = raw.untilReady()
			})
			if err != nil || pe != nil || st != 'I' {
				t.Fatalf("COPY of one %d MiB CopyData: status %c, error %v / %v", body.Len()>>20, st, pe, err)
			}
			if n := queryInt(t, direct, "SELECT count(*) FROM big"); n != rows {
				t.Fatalf("COPY stored %d rows, want %d", n, rows)
			}
			t.Logf("one %d MiB CopyData message: pgtide RSS %.1f MiB -> peak %.1f MiB", body.Len()>>20, float64(rss0)/(1<<20), float64(peak)/(1<<20))
			if peak-rss0 > 32<<20 {
				t.Errorf("pgtide RSS grew by %.1f MiB forwarding one %d MiB message: it was buffered, not streamed", float64(peak-rss0)/(1<<20), body.Len()>>20)
			}

			if mode == "session" {
				// A 24 MiB Query: streamed too, and answered correctly.
				lit := bytes.Repeat([]byte{'y'}, 24<<20)
				if err := raw.query(fmt.Sprintf("SELECT length('%s')", lit)); err != nil {
					t.Fatal(err)
				}
				if got := raw.reply(); got != strconv.Itoa(len(lit)) {
					t.Fatalf("large query returned %q, want %d", got, len(lit))
				}
			}
			raw.conn.Close()
			r.checkLeaks(t, base, 3)
		})
	}
}

// In transaction mode a large Bind (a big bytea parameter) streams too:
// its head is rewritten (the statement's pool name, the length to match)
// and its parameters follow in pieces, with a named statement, the unnamed
// one, and a refused Bind whose rest is dropped.
func TestStreamLargeBindTransactionMode(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) { c.PoolMode = "transaction"; db.PoolSize = 2 })
	ctx := ctxT(t, 2*time.Minute)
	base := r.baseline(t)
	c := connect(t, r.URL())
	payload := bytes.Repeat([]byte{0xab, 0xcd}, 24<<20) // 48 MiB
	measure := func(name string, f func()) {
		t.Helper()
		rss0 := procRSS(r.pid)
		peak := peakRSS(r.pid, f)
		t.Logf("%s: pgtide RSS %.1f MiB -> peak %.1f MiB", name, float64(rss0)/(1<<20), float64(peak)/(1<<20))
		if peak-rss0 > 32<<20 {
			t.Errorf("%s: pgtide RSS grew by %.1f MiB forwarding a %d MiB Bind: it was buffered, not streamed", name, float64(peak-rss0)/(1<<20), len(payload)>>20)
		}
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec} {
		measure(mode.String(), func() {
			var n int64
			if err := c.QueryRow(ctx, "SELECT length($1::bytea)", mode, payload).Scan(&n); err != nil {
				t.Fatalf("%s: %v", mode, err)
			}
			if n != int64(len(payload)) {
				t.Fatalf("%s: length %d, want %d", mode, n, len(payload))
			}
		})
	}
	// The statement still maps after the stream, and a small Bind still works.
	var n int64
	if err := c.QueryRow(ctx, "SELECT length($1::bytea)", []byte("abc")).Scan(&n); err != nil || n != 3 {
		t.Fatalf("small Bind after the large ones: %d, %v", n, err)
	}

	// A Bind of a statement the client never prepared: refused with
	// 26000, the rest of its body dropped, the session goes on.
	raw, err := dialRaw(ctx, r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.conn.Close()
	big := make([]byte, 4<<20)
	bind, err := (&pgproto3.Bind{PreparedStatement: "never_prepared", Parameters: [][]byte{big}}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	sync, _ := (&pgproto3.Sync{}).Encode(nil)
	if _, err := raw.conn.Write(append(bind, sync...)); err != nil {
		t.Fatal(err)
	}
	st, pe, err := raw.untilReady()
	if err != nil || pe == nil || pe.Code != "26000" || st != 'I' {
		t.Fatalf("Bind of an unknown statement: status %c, error %v / %v; want 26000 then ready", st, pe, err)
	}
	if err := raw.query("SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if st, pe, err := raw.untilReady(); err != nil || pe != nil || st != 'I' {
		t.Fatalf("query after the refused Bind: status %c, error %v / %v", st, pe, err)
	}

	// A named statement whose Bind arrives in pieces, the split inside the
	// statement's name: the name is read once it is whole, mapped, and the
	// parameter (200 KiB) follows.
	parse, _ := (&pgproto3.Parse{Name: "s1", Query: "SELECT length($1::bytea)"}).Encode(nil)
	if _, err := raw.conn.Write(append(parse, sync...)); err != nil {
		t.Fatal(err)
	}
	if st, pe, err := raw.untilReady(); err != nil || pe != nil || st != 'I' {
		t.Fatalf("Parse s1: status %c, error %v / %v", st, pe, err)
	}
	param := bytes.Repeat([]byte{7}, 200<<10)
	bind, _ = (&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{param}}).Encode(nil)
	exec, _ := (&pgproto3.Execute{}).Encode(nil)
	cut := 5 + 1 + 1 // header, the empty portal name, "s" of "s1"
	for _, piece := range [][]byte{bind[:cut], bind[cut : cut+100], bind[cut+100:], append(exec, sync...)} {
		if _, err := raw.conn.Write(piece); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the point: pgtide sees the Bind in pieces
	}
	if got := raw.reply(); got != strconv.Itoa(len(param)) {
		t.Fatalf("split Bind of s1 returned %q, want %d", got, len(param))
	}
	raw.conn.Close()
	c.Close(ctx)
	r.checkLeaks(t, base, 3)
}

// max_message_buffer bounds what all clients together hold in large
// messages pgtide must buffer whole (a Query in transaction mode): a message
// too large for it closes its client with 53200 while others go on, two
// that fit alone do not both get through at once, and the budget is free
// again when they are done.
func TestMaxMessageBuffer(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.Extra += "max_message_buffer = 1048576\n"
	})
	ctx := ctxT(t, time.Minute)
	query := func(size int) []byte {
		q := append(append([]byte("SELECT length('"), bytes.Repeat([]byte{'y'}, size)...), "')\x00"...)
		return append(binary.BigEndian.AppendUint32([]byte{'Q'}, uint32(len(q)+4)), q...)
	}
	outcome := (*rawSession).reply
	dial := func() *rawSession {
		s, err := dialRaw(ctx, r.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.conn.Close() })
		return s
	}
	c := connect(t, r.URL())

	// Alone, 1.5 MiB does not fit: 53200, and nobody else notices.
	big := dial()
	_, _ = big.conn.Write(query(1536 << 10))
	if got := outcome(big); got != "53200" {
		t.Fatalf("a 1.5 MiB Query with max_message_buffer 1 MiB: %q, want 53200", got)
	}
	if queryInt(t, c, "SELECT 1") != 1 {
		t.Fatal("a bystander failed")
	}

	// Two 700 KiB Queries at once, each short of its last byte so that
	// neither can finish: each fits alone, not both together. The one that
	// grew second is refused; the other finishes once its byte comes.
	msg := query(700 << 10)
	want := strconv.Itoa(700 << 10)
	two := []*rawSession{dial(), dial()}
	results := make(chan [2]any, 2)
	for i, s := range two {
		if _, err := s.conn.Write(msg[:len(msg)-1]); err != nil {
			t.Fatal(err)
		}
		go func() { results <- [2]any{i, outcome(s)} }()
	}
	var first [2]any
	select {
	case first = <-results:
	case <-time.After(30 * time.Second):
		t.Fatal("neither of two 700 KiB Queries beside each other was refused (max_message_buffer 1 MiB)")
	}
	if first[1] != "53200" {
		t.Fatalf("two large Queries at once: one ended with %q before its last byte, want 53200", first[1])
	}
	other := two[1-first[0].(int)]
	if _, err := other.conn.Write(msg[len(msg)-1:]); err != nil {
		t.Fatal(err)
	}
	if second := <-results; second[1] != want {
		t.Fatalf("the large Query that fit: %q, want %s", second[1], want)
	}

	// Once they are done their share is free: one after the other, each fits.
	for range 3 {
		s := dial()
		if _, err := s.conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		if got := outcome(s); got != want {
			t.Fatalf("a large Query after the others were done: %q, want %s", got, want)
		}
	}
	if queryInt(t, c, "SELECT 1") != 1 {
		t.Fatal("a bystander failed")
	}
}

// reply reads a reply to its ReadyForQuery (or until the connection
// closes, after a FATAL) and returns the first column of its last row, or
// the SQLSTATE of its error.
func (r *rawSession) reply() string {
	got := ""
	for {
		m, err := r.fe.Receive()
		if err != nil {
			return got
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			got = string(m.Values[0])
		case *pgproto3.ErrorResponse:
			got = m.Code
		case *pgproto3.ReadyForQuery:
			return got
		}
	}
}

// peakRSS runs f while sampling the RSS of process pid, and returns the
// highest value seen (at least the one before f).
func peakRSS(pid int, f func()) int64 {
	peak := procRSS(pid)
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond): // the sampling period
				peak = max(peak, procRSS(pid))
			}
		}
	}()
	f()
	close(stop)
	<-sampled
	return peak
}

// TestStreamClientVanishesMidMessage: a client vanishes partway through a
// large message pgtide streams to the server (a 1 MiB CopyData in COPY IN,
// a 1 MiB Bind inside a transaction, of which 200 KiB were sent). The
// message is cut on the server: whatever pgtide wrote to clean up (CopyFail
// and Sync, or Sync) would be read as the rest of it, so the server cannot
// be cleaned and must be closed at once. Before the fix pgtide wrote them
// anyway and the only server stayed held for 10 s (finish's fallback).
func TestStreamClientVanishesMidMessage(t *testing.T) {
	for _, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) {
			r := newRelEnv(t, func(c *tideConf, db *dbConf) { c.PoolMode = mode; db.PoolSize = 1 })
			c0 := connect(t, r.URL())
			if _, err := c0.Exec(ctxT(t, 10*time.Second), "CREATE TABLE vs (t text)"); err != nil {
				t.Fatal(err)
			}
			c0.Close(context.Background())
			base := r.baseline(t)
			const big = 1 << 20
			cases := []struct {
				name  string
				setup func(t *testing.T, conn *net.TCPConn, fe *pgproto3.Frontend)
				head  []byte
			}{
				{"copydata", func(t *testing.T, conn *net.TCPConn, fe *pgproto3.Frontend) {
					send(t, conn, &pgproto3.Query{String: "COPY vs FROM STDIN"})
					if _, err := readUntil(t, conn, fe, 5*time.Second, 'G'); err != nil {
						t.Fatal(err)
					}
				}, binary.BigEndian.AppendUint32([]byte{'d'}, 4+big)},
				{"bind", func(t *testing.T, conn *net.TCPConn, fe *pgproto3.Frontend) {
					send(t, conn, &pgproto3.Query{String: "BEGIN"})
					if _, err := readUntil(t, conn, fe, 5*time.Second, 'Z'); err != nil {
						t.Fatal(err)
					}
					send(t, conn, &pgproto3.Parse{Query: "INSERT INTO vs VALUES ($1)"})
				}, func() []byte {
					// Bind: unnamed portal and statement, no parameter
					// formats, one parameter of big bytes, no result formats.
					body := []byte{0, 0, 0, 0, 0, 1}
					body = binary.BigEndian.AppendUint32(body, big)
					b := binary.BigEndian.AppendUint32([]byte{'B'}, uint32(4+len(body)+big+2))
					return append(b, body...)
				}()},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					conn, fe := rawLogin(t, r.URL())
					tc.setup(t, conn, fe)
					part := append(append([]byte(nil), tc.head...), bytes.Repeat([]byte{'x'}, 200<<10)...)
					if _, err := conn.Write(part); err != nil {
						t.Fatal(err)
					}
					time.Sleep(300 * time.Millisecond)
					reset(conn)
					start := time.Now()
					c := connect(t, r.URL())
					defer c.Close(context.Background())
					if n := queryInt(t, c, "SELECT count(*) FROM vs"); n != 0 {
						t.Errorf("%d rows in vs: the cut message's statement ran", n)
					}
					if d := time.Since(start); d > 3*time.Second {
						t.Errorf("the only server stayed held %v after its client vanished mid-message", d.Round(time.Millisecond))
					}
				})
			}
			r.checkLeaks(t, base, 3)
		})
	}
}

// TestStreamCopyEndsMidMessage: the server ends a COPY IN (an error on an
// earlier row) while pgtide is streaming a large CopyData of the client's
// to it. The transaction is over and nothing is owed, but the CopyData is
// cut on the server: had the server gone back to the pool, the next
// client's bytes would be read as the rest of it and that client would
// hang. It is closed instead. Pool size 1, so the next client gets that
// server unless it is closed.
func TestStreamCopyEndsMidMessage(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) { db.PoolSize = 1 })
	c0 := connect(t, r.URL())
	ctx := ctxT(t, 30*time.Second)
	for _, q := range []string{
		"CREATE TABLE ce (i int)",
		`CREATE FUNCTION ce_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.3); RAISE EXCEPTION 'row refused'; END $$`,
		"CREATE TRIGGER ce_slow BEFORE INSERT ON ce FOR EACH ROW EXECUTE FUNCTION ce_slow()",
	} {
		if _, err := c0.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	c0.Close(context.Background())

	conn, fe := rawLogin(t, r.URL())
	send(t, conn, &pgproto3.Query{String: "COPY ce FROM STDIN"})
	if _, err := readUntil(t, conn, fe, 5*time.Second, 'G'); err != nil {
		t.Fatal(err)
	}
	// A first row the server refuses after 300 ms, then the head and 32 KiB
	// of a 1 MiB CopyData, which pgtide streams meanwhile.
	out := append([]byte{'d', 0, 0, 0, 6}, "1\n"...)
	out = binary.BigEndian.AppendUint32(append(out, 'd'), 4+1<<20)
	out = append(out, bytes.Repeat([]byte("2\n"), 16<<10)...)
	if _, err := conn.Write(out); err != nil {
		t.Fatal(err)
	}
	if m, err := readUntil(t, conn, fe, 5*time.Second, 'E'); err != nil || !strings.Contains(m.(*pgproto3.ErrorResponse).Message, "row refused") {
		t.Fatalf("COPY: %v, %v; want the trigger's error", m, err)
	}
	if _, err := readUntil(t, conn, fe, 5*time.Second, 'Z'); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitUntil(t, 5*time.Second, "the COPY's server given back or closed", func() bool {
		_, active, _ := r.poolServers(t)
		return active == 0
	})
	c := connect(t, r.URL())
	defer c.Close(context.Background())
	qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n int
	if err := c.QueryRow(qctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("the next client's SELECT 1: %d, %v; it got the server the cut CopyData is on", n, err)
	}
}
