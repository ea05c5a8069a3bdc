package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// Copy messages in transaction mode that belong to no COPY the server is
// in: a client must not be able to hold a server with them, nor have them
// reach a server after it went back to the pool.

// TestTxnStrayCopyHoldsNoServer: one CopyData (or CopyDone) sent outside
// COPY, with no transaction open, borrows no server (PostgreSQL ignores
// them there, and so does pgtide). Before the fix it borrowed one that
// nothing gave back, as no ReadyForQuery ever answered it: with pool_size 1
// every other client waited until query_wait_timeout.
func TestTxnStrayCopyHoldsNoServer(t *testing.T) {
	for _, msg := range []pgproto3.FrontendMessage{&pgproto3.CopyData{Data: []byte("x")}, &pgproto3.CopyDone{}} {
		t.Run(fmt.Sprintf("%T", msg), func(t *testing.T) {
			r := newRelEnv(t, func(c *tideConf, db *dbConf) {
				db.PoolSize = 1
				c.Extra += "query_wait_timeout = \"3s\"\n"
			})
			h, _ := rawLogin(t, r.URL())
			send(t, h, msg)
			// Time to misbehave: before the fix a server was borrowed
			// here; nothing observable happens when it is not.
			time.Sleep(300 * time.Millisecond)
			_, active, _ := r.poolServers(t)
			t.Logf("active servers after the hostile message: %v", active)
			v := connect(t, r.URL())
			var n int
			ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
			defer cancel()
			start := time.Now()
			err := v.QueryRow(ctx, "SELECT 1").Scan(&n)
			if err != nil {
				t.Errorf("bystander SELECT 1 failed after %v: %v (sqlstate %s): the hostile client holds the only server", time.Since(start).Round(time.Millisecond), err, sqlState(err))
			}
		})
	}
}

// TestTxnCopyWriteNotAfterRelease: batches of CopyData + CopyDone sent
// (outside COPY) while a Query still runs queue no request, so the pump may
// give the server back at that Query's ReadyForQuery while the client
// goroutine is writing such a batch to it. Before the fix the next
// borrower's bytes landed inside the half-written frame (PostgreSQL:
// "invalid frontend message type 65", 'A' from the payload). Now the pump
// waits for a write under way, and no write starts once the server is
// gone (session.toAttached).
func TestTxnCopyWriteNotAfterRelease(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) {
		db.PoolSize = 1
		c.Extra += "query_wait_timeout = \"20s\"\n"
	})
	h, _ := rawLogin(t, r.URL())
	send(t, h, &pgproto3.Query{String: "SELECT pg_sleep(1.5)"})
	// Drain what pgtide sends to h, so it never blocks on us.
	go func() {
		var buf [4096]byte
		for {
			if _, err := h.Read(buf[:]); err != nil {
				return
			}
		}
	}()
	var written atomic.Int64
	stopW := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Batches of 7 CopyData of 1,000 zero bytes and a CopyDone (~7 KB),
		// so each fits pgtide's read buffer as one batch.
		var chunk []byte
		for i := 0; i < 7; i++ {
			chunk, _ = (&pgproto3.CopyData{Data: bytes.Repeat([]byte("A"), 1000)}).Encode(chunk)
		}
		chunk, _ = (&pgproto3.CopyDone{}).Encode(chunk)
		// No write deadline: a timed-out write could cut a frame and
		// corrupt this client's own stream. The test closes h to stop.
		deadline := time.Now().Add(4 * time.Second)
		for time.Now().Before(deadline) && written.Load() < 24<<20 {
			select {
			case <-stopW:
				return
			default:
			}
			n, err := h.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	// Victims: wait for the server while the hostile query sleeps.
	pgtest.WaitUntil(t, 5*time.Second, "the hostile query on the only server", func() bool {
		_, active, _ := r.poolServers(t)
		return active == 1
	})
	var fails atomic.Int64
	var firstErr atomic.Value
	var vwg sync.WaitGroup
	for i := 0; i < 4; i++ {
		vwg.Add(1)
		go func() {
			defer vwg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
			defer cancel()
			v, err := pgx.Connect(ctx, r.URL())
			if err != nil {
				fails.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			defer v.Close(context.Background())
			for j := 0; j < 20; j++ {
				var s string
				want := fmt.Sprintf("victim-%d-%d", i, j)
				qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
				err := v.QueryRow(qctx, "SELECT $1::text", want).Scan(&s)
				qcancel()
				if err != nil || s != want {
					fails.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%v (sqlstate %s) got %q", err, sqlState(err), s))
					t.Logf("victim %d query %d: %v (sqlstate %s) got %q", i, j, err, sqlState(err), s)
					return
				}
			}
		}()
	}
	vwg.Wait()
	close(stopW)
	h.Close()
	wg.Wait()
	t.Logf("hostile client wrote %d bytes", written.Load())
	for _, l := range strings.Split(r.pg.Logs(), "\n") {
		if strings.Contains(l, r.User) && (strings.Contains(l, "FATAL") || strings.Contains(l, "ERROR")) {
			t.Logf("postgres: %s", l)
		}
	}
	if f := fails.Load(); f > 0 {
		t.Errorf("%d victim(s) failed; first: %v", f, firstErr.Load())
	}
}

// TestTxnLateCopyDoneHoldsNoServer: pgx's CopyFrom, when the server
// reports an error mid-COPY, still sends CopyData it had buffered and a
// CopyDone after the server's ErrorResponse and ReadyForQuery. In
// transaction mode the server has gone back to the pool by then; before
// the fix those late messages borrowed another server, which the idle
// client then kept.
func TestTxnLateCopyDoneHoldsNoServer(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) {
		db.PoolSize = 1
		c.Extra += "query_wait_timeout = \"3s\"\n"
	})
	setup := connect(t, r.DirectURL())
	if _, err := setup.Exec(ctxT(t, 10*time.Second), "CREATE TABLE late_copy (i int CHECK (i <> 7))"); err != nil {
		t.Fatal(err)
	}
	c := connect(t, r.URL())
	rows := make([][]any, 2_000_000)
	for i := range rows {
		rows[i] = []any{int32(i)}
	}
	_, err := c.CopyFrom(ctxT(t, 30*time.Second), pgx.Identifier{"late_copy"}, []string{"i"}, pgx.CopyFromRows(rows))
	t.Logf("CopyFrom: %v (sqlstate %s)", err, sqlState(err))
	if sqlState(err) != "23514" {
		t.Fatalf("want 23514, got %v", err)
	}
	// Time for the late CopyData/CopyDone to arrive: before the fix they
	// borrowed a server here; nothing observable happens when they do not.
	time.Sleep(500 * time.Millisecond)
	_, active, _ := r.poolServers(t)
	t.Logf("active servers with the COPY client idle: %v", active)
	v := connect(t, r.URL())
	var n int
	start := time.Now()
	if err := v.QueryRow(ctxT(t, 6*time.Second), "SELECT 1").Scan(&n); err != nil {
		t.Errorf("bystander SELECT 1 failed after %v: %v (sqlstate %s)", time.Since(start).Round(time.Millisecond), err, sqlState(err))
	}
}

// copyDataHeader is the 5-byte header of a CopyData of n payload bytes.
func copyDataHeader(n int) []byte {
	b := []byte{'d', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+n))
	return b
}

// TestTxnCopyStreamCutByServerError: transaction mode, pool_size 1. A
// client in COPY FROM STDIN sends a CopyData with a bad row and, in the
// same write, the first 100 KB of a 200 KB CopyData (streamed: >= 64 KB,
// copyIn). PostgreSQL fails the COPY on the bad row and answers
// ErrorResponse + ReadyForQuery I while only part of the next CopyData
// frame has reached it. Before the fix pgtide gave the server back there:
// it waited for the rest of that frame and read the next client's bytes as
// its body (that client timed out). Now such a server is closed, and the
// next client gets a fresh one at once.
func TestTxnCopyStreamCutByServerError(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) {
		db.PoolSize = 1
		c.Extra += "query_wait_timeout = \"10s\"\n"
	})
	owner := connect(t, r.DirectURL())
	if _, err := owner.Exec(ctxT(t, 10*time.Second), "CREATE TABLE ct (a int)"); err != nil {
		t.Fatal(err)
	}
	for _, target := range []struct{ name, url string }{{"direct", r.DirectURL()}, {"pgtide", r.URL()}} {
		t.Run(target.name, func(t *testing.T) {
			h, fe := rawLogin(t, target.url)
			send(t, h, &pgproto3.Query{String: "COPY ct FROM STDIN"})
			if _, err := readUntil(t, h, fe, 5*time.Second, 'G'); err != nil {
				t.Fatalf("CopyInResponse: %v", err)
			}
			var w []byte
			w, _ = (&pgproto3.CopyData{Data: []byte("notanint\n")}).Encode(w)
			w = append(w, copyDataHeader(200_000)...)
			w = append(w, bytes.Repeat([]byte("1\n"), 50_000)...) // 100 KB of the 200 KB
			if _, err := h.Write(w); err != nil {
				t.Fatal(err)
			}
			expectError(t, h, fe, 5*time.Second, "22P02")
			if _, err := readUntil(t, h, fe, 5*time.Second, 'Z'); err != nil {
				t.Fatalf("ReadyForQuery after the COPY error: %v", err)
			}
			if target.name == "pgtide" {
				pgtest.WaitUntil(t, 5*time.Second, "the COPY's server given back or closed", func() bool {
					_, active, _ := r.poolServers(t)
					return active == 0
				})
			}
			// A second client on the (only) server.
			v := connect(t, target.url)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var n int
			start := time.Now()
			if err := v.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
				t.Errorf("%s: the next client's SELECT 1 failed after %v: %v (sqlstate %s)", target.name, time.Since(start).Round(time.Millisecond), err, sqlState(err))
			}
			h.Close()
		})
	}
}

// TestTxnSyncInCopyInHoldsNoServer: PostgreSQL ignores a Sync (or Flush)
// that arrives during COPY IN (CopyGetData), as libpq may send one without
// noticing its command was a COPY: it gets no ReadyForQuery. In transaction
// mode pgtide queued one as owed, so after the COPY the client, idle
// outside any transaction, held its server forever: with pool_size 1 every
// other client waited until query_wait_timeout. The replies must be
// PostgreSQL's, and the server must go back to the pool.
func TestTxnSyncInCopyInHoldsNoServer(t *testing.T) {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) {
		db.PoolSize = 1
		c.Extra += "query_wait_timeout = \"3s\"\n"
	})
	setup := connect(t, r.DirectURL())
	if _, err := setup.Exec(ctxT(t, 5*time.Second), "CREATE TABLE synccopy (x int)"); err != nil {
		t.Fatal(err)
	}
	var got [2][]string
	for i, url := range []string{r.DirectURL(), r.URL()} {
		conn, fe := rawLogin(t, url)
		send(t, conn, &pgproto3.Query{String: "COPY synccopy FROM STDIN"})
		if _, err := readUntil(t, conn, fe, 5*time.Second, 'G'); err != nil {
			t.Fatal(err)
		}
		send(t, conn, &pgproto3.Sync{}, &pgproto3.CopyData{Data: []byte("1\n")}, &pgproto3.Sync{}, &pgproto3.CopyDone{})
		out, err := readToZ(conn, fe, 5*time.Second)
		if err != nil {
			t.Fatalf("%d: %v after %v", i, err, out)
		}
		got[i] = out
		// The extended protocol: the client's Sync after Execute reaches
		// the server during its COPY IN, one more inside it.
		send(t, conn, &pgproto3.Parse{Query: "COPY synccopy FROM STDIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		if _, err := readUntil(t, conn, fe, 5*time.Second, 'G'); err != nil {
			t.Fatal(err)
		}
		send(t, conn, &pgproto3.CopyData{Data: []byte("2\n")}, &pgproto3.Sync{}, &pgproto3.CopyDone{}, &pgproto3.Sync{})
		out, err = readToZ(conn, fe, 5*time.Second)
		if err != nil {
			t.Fatalf("%d: %v after %v", i, err, out)
		}
		got[i] = append(got[i], out...)
	}
	t.Logf("direct: %v", got[0])
	if fmt.Sprint(got[0]) != fmt.Sprint(got[1]) {
		t.Errorf("through pgtide: %v\ndirect:        %v", got[1], got[0])
	}
	// The client is idle outside a transaction: its server is the pool's.
	v := connect(t, r.URL())
	if n := queryInt(t, v, "SELECT count(*) FROM synccopy"); n != 4 {
		t.Errorf("%d rows, want 4", n)
	}
}
