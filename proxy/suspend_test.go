package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/pgtide/pgtide/integration/pgtest"
	"github.com/pgtide/pgtide/proxy/wire"
)

// tcpPair returns both ends of a loopback TCP connection, the accepted end
// wrapped as serveConn wraps it.
func tcpPair(t *testing.T, ctl *suspendCtl) (*suspendConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := newSuspendConn(sv, ctl)
	t.Cleanup(func() { _ = c.Close(); _ = cl.Close() })
	return c, cl
}

// A read blocked in the kernel (wire's idle reader, through the RawConn) is
// parked by SUSPEND without an error, reads nothing while suspended, and
// gets what the client sent meanwhile after RESUME.
func TestSuspendParksABlockedRead(t *testing.T) {
	var ctl suspendCtl
	c, cl := tcpPair(t, &ctl)
	ctl.arm(c)
	rd := wire.NewIdleReader(c)
	done := make(chan error, 1)
	go func() { done <- rd.Fill() }()
	if !ctl.begin() || ctl.begin() {
		t.Fatal("begin: want true, then false (already suspended)")
	}
	pgtest.WaitUntil(t, 20*time.Second, "the blocked read to park", c.parked.Load)
	if _, err := cl.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("a suspended read returned (%v)", err)
	default:
	}
	if !c.parked.Load() {
		t.Fatal("the read left its park while suspended")
	}
	ctl.resume()
	if err := <-done; err != nil {
		t.Fatalf("the read after RESUME: %v", err)
	}
	if got := string(rd.Buffered()); got != "hello" {
		t.Fatalf("read %q after RESUME; want what was sent while suspended", got)
	}
}

// The owner's read deadline still ends a read while suspended (a timeout
// of the owner's, not SUSPEND's), and a deadline set during SUSPEND is the
// one in force after RESUME.
func TestSuspendKeepsTheOwnersDeadline(t *testing.T) {
	var ctl suspendCtl
	c, _ := tcpPair(t, &ctl)
	ctl.arm(c)
	ctl.begin()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the owner's deadline while suspended: %v; want a timeout", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	ctl.resume()
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after RESUME: %v; want the owner's deadline in force", err)
	}
	_ = c.SetReadDeadline(time.Time{})
}

// Closing the connection (KILL_CLIENT, shutdown) ends a parked read, also
// under TLS, whose reads go through the wrapper's Read.
func TestSuspendCloseEndsAParkedRead(t *testing.T) {
	var ctl suspendCtl
	c, _ := tcpPair(t, &ctl)
	ctl.arm(c)
	ctl.begin()
	defer ctl.resume()
	tc := tls.Server(c, &tls.Config{})
	if asSuspendConn(tc) != c {
		t.Fatal("asSuspendConn does not see through TLS")
	}
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 8)); done <- err }()
	pgtest.WaitUntil(t, 20*time.Second, "the read to park", c.parked.Load)
	_ = tc.Close()
	if err := <-done; err == nil {
		t.Fatal("a parked read of a closed connection returned no error")
	}
	ctl.mu.Lock()
	_, still := ctl.armed[c]
	ctl.mu.Unlock()
	if still {
		t.Error("a closed connection stays armed")
	}
}

// Connections that are not armed (consoles, logins) are never stopped.
func TestSuspendSparesUnarmed(t *testing.T) {
	var ctl suspendCtl
	c, cl := tcpPair(t, &ctl)
	ctl.begin()
	defer ctl.resume()
	if _, err := cl.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 8)); n != 1 || err != nil {
		t.Fatalf("an unarmed connection's read while suspended: %d, %v", n, err)
	}
}

// kill's lingering close (lingerClose) ends the write side of a plain
// client socket, which every accepted socket reaches through its
// suspendConn: the wrapper must pass CloseWrite on, or the close is at once
// and a reset can destroy the FATAL before the client reads it.
func TestSuspendConnCloseWrite(t *testing.T) {
	c, cl := tcpPair(t, &suspendCtl{})
	cw, ok := parkSocket(c).(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("a plain client socket offers no CloseWrite through its suspendConn")
	}
	if _, err := c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = cl.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(cl)
	if err != nil || string(b) != "bye" {
		t.Fatalf("client read %q, %v; want the bytes, then EOF", b, err)
	}
	// The read side stays open: the client's last words are still read.
	if _, err := cl.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); n != 1 || err != nil {
		t.Fatalf("read after CloseWrite: %d, %v", n, err)
	}
}
