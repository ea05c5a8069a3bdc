package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestEpollForwarder sends 1 MiB through the epoll-loop forwarder (poller
// wait) to an echo server with small socket buffers and reads it back while
// still writing: every byte must come back, in order, in both directions.
func TestEpollForwarder(t *testing.T) {
	if err := setEpollWait("poller"); err != nil {
		t.Fatal(err)
	}
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			// Small buffers and small reads: a slow peer.
			tc := c.(*net.TCPConn)
			_ = tc.SetReadBuffer(16 << 10)
			_ = tc.SetWriteBuffer(16 << 10)
			go func() {
				_, _ = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 1<<10))
				c.Close()
			}()
		}
	}()
	// Listening before the loop starts: the dial below cannot race it.
	lsa, err := inet4("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := epollListen(lsa)
	if err != nil {
		t.Fatal(err)
	}
	bound, err := unix.Getsockname(ln)
	if err != nil {
		t.Fatal(err)
	}
	tsa, err := inet4(echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = epollServe(ln, tsa) }()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", bound.(*unix.SockaddrInet4).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	want := make([]byte, 1<<20)
	if _, err := rand.Read(want); err != nil {
		t.Fatal(err)
	}
	werr := make(chan error, 1)
	go func() { _, err := c.Write(want); werr <- err }()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the bytes came back changed")
	}
}
