package pool

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/integration/pgtest"
	"github.com/pgtide/pgtide/proxy/wire"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-ch
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func tcpConn(nc net.Conn) *Conn {
	now := time.Now()
	return &Conn{Net: nc, Reader: wire.NewReader(nc, 512), TxStatus: 'I', Addr: nc.RemoteAddr(),
		Params: map[string]string{}, Applied: map[string]AppliedParam{}, created: now, lastUsed: now}
}

func TestAliveIdleTCP(t *testing.T) {
	t.Parallel()
	c, _ := tcpPair(t)
	conn := tcpConn(c)
	for range 3 { // MSG_PEEK: checking must not consume or change anything
		if !conn.Alive() {
			t.Fatal("idle conn with a live peer reported dead")
		}
	}
}

func TestAliveFalseAfterPeerSendsByte(t *testing.T) {
	t.Parallel()
	c, s := tcpPair(t)
	conn := tcpConn(c)
	if _, err := s.Write([]byte{'N'}); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitUntil(t, 2*time.Second, "Alive to see the byte", func() bool { return !conn.Alive() })
	// The byte is only peeked: it is still there to read.
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	var b [1]byte
	if n, err := c.Read(b[:]); n != 1 || b[0] != 'N' {
		t.Fatalf("read after Alive: %d %v %q", n, err, b[:n])
	}
}

func TestAliveFalseAfterPeerCloses(t *testing.T) {
	t.Parallel()
	c, s := tcpPair(t)
	conn := tcpConn(c)
	s.Close()
	pgtest.WaitUntil(t, 2*time.Second, "Alive to see the close", func() bool { return !conn.Alive() })
}

func TestAliveFalseWithBufferedBytes(t *testing.T) {
	t.Parallel()
	c, s := tcpPair(t)
	conn := tcpConn(c)
	if _, err := s.Write([]byte{'Z', 0, 0, 0, 5, 'I', 'N'}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := conn.Reader.ReadMessage(100); err != nil {
		t.Fatal(err)
	}
	// One byte left in the Reader's buffer (or still in the socket).
	pgtest.WaitUntil(t, 2*time.Second, "leftover byte to be seen", func() bool { return !conn.Alive() })
}

func TestAliveFalseAfterLocalClose(t *testing.T) {
	t.Parallel()
	c, _ := tcpPair(t)
	conn := tcpConn(c)
	c.Close()
	if conn.Alive() {
		t.Fatal("closed conn reported alive")
	}
}

// An idle conn whose server went away is not lent: Acquire closes it and
// dials a new one.
func TestAcquireSkipsDeadIdleConn(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var peers []*net.TCPConn
	dials := 0
	dial := func(ctx context.Context) (*Conn, error) {
		c, s := tcpPair(t)
		mu.Lock()
		peers = append(peers, s)
		dials++
		mu.Unlock()
		return tcpConn(c), nil
	}
	p := New(Options{Size: 1}, dial, zerolog.Nop())
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c1, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.Release(c1)
	mu.Lock()
	peers[0].Close() // the server dies while its conn is idle
	mu.Unlock()
	pgtest.WaitUntil(t, 2*time.Second, "peer close to arrive", func() bool { return !c1.Alive() })
	c2, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c2 == c1 {
		t.Fatal("dead idle conn was lent")
	}
	if s := p.Stats(); s.Open != 1 || s.Dialed != 2 {
		t.Fatalf("stats = %+v", s)
	}
	p.Release(c2)
}

// A conn handed straight from Release to a waiter is checked too.
func TestWaiterSkipsDeadReleasedConn(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var peers []*net.TCPConn
	dial := func(ctx context.Context) (*Conn, error) {
		c, s := tcpPair(t)
		mu.Lock()
		peers = append(peers, s)
		mu.Unlock()
		return tcpConn(c), nil
	}
	p := New(Options{Size: 1}, dial, zerolog.Nop())
	defer p.Close()
	c1 := acquire(t, p)
	w := startWaiter(t, context.Background(), p)
	mu.Lock()
	peers[0].Close()
	mu.Unlock()
	pgtest.WaitUntil(t, 2*time.Second, "peer close to arrive", func() bool { return !c1.Alive() })
	p.Release(c1)
	r := recv(t, w)
	if r.err != nil || r.c == c1 {
		t.Fatalf("waiter got %v, %v; want a fresh conn", r.c, r.err)
	}
	p.Release(r.c)
}

// WriteThenWait: the peer gets the bytes, and the call returns once the
// reply is readable, which the reader then gets whole (the readiness reset
// before the write cannot lose a reply that comes at once).
func TestWriteThenWaitReply(t *testing.T) {
	t.Parallel()
	c, s := tcpPair(t)
	conn := tcpConn(c)
	go func() {
		buf := make([]byte, 5)
		for range 200 {
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			_, _ = s.Write(buf) // echo at once: the reply often beats the wait
		}
	}()
	for i := range 200 {
		msg := []byte{'Q', 0, 0, 0, byte(i)}
		n, ok, err := conn.WriteThenWait(msg)
		if !ok || err != nil || n != len(msg) {
			t.Fatalf("round %d: WriteThenWait = %d, %v, %v", i, n, ok, err)
		}
		if conn.Reader.Len() != 0 {
			t.Fatalf("round %d: the wait read bytes itself", i)
		}
		if err := conn.Reader.Fill(); err != nil {
			t.Fatal(err)
		}
		for conn.Reader.Len() < 5 {
			if err := conn.Reader.Fill(); err != nil {
				t.Fatal(err)
			}
		}
		if got := conn.Reader.Buffered()[:5]; string(got) != string(msg) {
			t.Fatalf("round %d: read back %v, want %v", i, got, msg)
		}
		conn.Reader.Discard(5)
	}
}

// A peer that reads nothing: the socket's buffers fill, and WriteThenWait
// returns what it wrote with no error (the caller writes the rest as usual);
// with a read deadline and no reply, the wait ends with the deadline's error.
func TestWriteThenWaitFullBufferAndDeadline(t *testing.T) {
	t.Parallel()
	c, _ := tcpPair(t)
	conn := tcpConn(c)
	big := make([]byte, 64<<20)
	n, ok, err := conn.WriteThenWait(big)
	if !ok || err != nil || n == 0 || n >= len(big) {
		t.Fatalf("WriteThenWait(64 MiB) to a peer that reads nothing = %d, %v, %v; want a partial write and no error", n, ok, err)
	}
	c2, _ := tcpPair(t)
	conn2 := tcpConn(c2)
	_ = c2.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	n, ok, err = conn2.WriteThenWait([]byte("x"))
	var ne net.Error
	if !ok || n != 1 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("WriteThenWait with no reply = %d, %v, %v; want 1, true and a timeout", n, ok, err)
	}
}

// A peer that is gone: the write's error, or the wake-up that the reader
// then sees as EOF or a reset; never a wait that does not end.
func TestWriteThenWaitPeerClosed(t *testing.T) {
	t.Parallel()
	c, s := tcpPair(t)
	conn := tcpConn(c)
	_ = s.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, ok, err := conn.WriteThenWait([]byte("Q\x00\x00\x00\x04"))
	if !ok {
		t.Fatal("plain TCP: ok = false")
	}
	if err == nil {
		if n != 5 {
			t.Fatalf("wrote %d of 5 with no error", n)
		}
		ferr := conn.Reader.Fill()
		var ne net.Error
		if ferr == nil || (errors.As(ferr, &ne) && ne.Timeout()) {
			t.Fatalf("after a closed peer the read gave %v; want EOF or a reset", ferr)
		}
	}
}

// TestCancelUnconfirmedNotReused: a cancel request whose connection the
// server has not closed by the deadline may still reach the backend, so
// Cancel says so and the connection is never lent again (Release closes
// it); one the server closes after reading it is confirmed and changes
// nothing.
func TestCancelUnconfirmedNotReused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var closeAfterRead atomic.Bool
	held := make(chan net.Conn, 4) // cancel connections never answered
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var req [16]byte
			if _, err := io.ReadFull(c, req[:]); err != nil || closeAfterRead.Load() {
				c.Close()
				continue
			}
			held <- c
		}
	}()
	defer func() {
		ln.Close()
		<-acceptDone
		close(held)
		for c := range held {
			c.Close()
		}
	}()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 1}, d)

	c := acquire(t, p)
	c.Addr, c.PID, c.Secret = ln.Addr(), 42, []byte{1, 2, 3, 4}
	closeAfterRead.Store(true)
	if err := c.Cancel(context.Background()); err != nil || !c.Reusable() {
		t.Fatalf("confirmed cancel: err %v, reusable %v; want nil, true", err, c.Reusable())
	}
	p.Release(c)
	if got := acquire(t, p); got != c {
		t.Fatal("a connection whose cancel was confirmed was not reused")
	}

	closeAfterRead.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.Cancel(ctx); err == nil || c.Reusable() {
		t.Fatalf("unconfirmed cancel: err %v, reusable %v; want an error, false", err, c.Reusable())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Cancel waited %v past its 100ms deadline", d)
	}
	p.Release(c)
	if !c.Net.(*fakeNet).isClosed() {
		t.Fatal("Release kept a connection whose cancel request may still arrive")
	}
	if got := acquire(t, p); got == c {
		t.Fatal("a connection whose cancel request may still arrive was lent again")
	}
}

// TestPartialMessageNotReused: a connection with a message written in part
// (the server takes its next bytes as the rest) is closed by Release; once
// the rest was written it goes back as any other.
func TestPartialMessageNotReused(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 1}, d)
	c := acquire(t, p)
	c.SetPartial(true)
	c.SetPartial(false) // the rest followed
	p.Release(c)
	if got := acquire(t, p); got != c {
		t.Fatal("a connection whose message was written whole was not reused")
	}
	c.SetPartial(true)
	if c.Reusable() {
		t.Fatal("Reusable with a message written in part")
	}
	p.Release(c)
	if !c.Net.(*fakeNet).isClosed() {
		t.Fatal("Release kept a connection with a message written in part")
	}
	if got := acquire(t, p); got == c {
		t.Fatal("a connection with a message written in part was lent again")
	}
}

// TestCancelResetNotConfirmed: a cancel connection the far end resets
// (a network fault; PostgreSQL itself closes it cleanly once it has read
// the request) says nothing of whether the request arrived, so the server
// is not lent again: the request may still stop another client's query.
func TestCancelResetNotConfirmed(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		var req [16]byte
		_, _ = io.ReadFull(c, req[:])
		_ = c.(*net.TCPConn).SetLinger(0) // close with RST
		c.Close()
	}()
	c := &Conn{Addr: ln.Addr(), PID: 42, Secret: []byte{1, 2, 3, 4}}
	if err := c.Cancel(context.Background()); err == nil || c.Reusable() {
		t.Fatalf("reset cancel connection: err %v, reusable %v; want an error, not reusable", err, c.Reusable())
	}
}
