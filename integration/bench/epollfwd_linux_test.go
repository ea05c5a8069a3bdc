package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestEpollForwarder sends 1 MiB through the epoll-loop forwarder (poller
// wait) to an echo server with small socket buffers and reads it back while
// still writing: every byte must come back, in order, in both directions.
func TestEpollForwarder(t *testing.T) { roundTripThrough(t, 1<<20, efWrite) }

// pollerOnce sets the forwarders' wait mode once: forwarders started by
// earlier tests go on running and read it.
var pollerOnce sync.Once

// roundTripThrough runs the check of TestEpollForwarder on size bytes, with
// write as the forwarder's socket write.
func roundTripThrough(t *testing.T, size int, write func(fd int, b []byte) (int, error)) {
	pollerOnce.Do(func() {
		if err := setEpollWait("poller"); err != nil {
			panic(err)
		}
	})
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
	go func() { _ = epollServe(ln, tsa, write) }()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", bound.(*unix.SockaddrInet4).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	want := make([]byte, size)
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

// TestEpollForwarderBackPressure makes every socket look full half the time
// (writes take at most 700 bytes, and every other one none: EAGAIN), so
// every forwarded chunk leaves bytes pending: they must go out, in order,
// once the socket takes them, with the other side not read meanwhile.
func TestEpollForwarderBackPressure(t *testing.T) {
	var calls atomic.Int64
	roundTripThrough(t, 256<<10, func(fd int, b []byte) (int, error) {
		if calls.Add(1)%2 == 0 {
			return -1, unix.EAGAIN
		}
		return unix.Write(fd, b[:min(len(b), 700)])
	})
	if calls.Load() < 100 {
		t.Fatalf("only %d writes: the hook did not stand in", calls.Load())
	}
}
