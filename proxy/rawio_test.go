package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func rawPair(t *testing.T) (w *net.TCPConn, r net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); ch <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-ch
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s
}

// writeRaw writes everything even when the socket's buffer fills (it waits
// in the poller), and the bytes arrive in order.
func TestWriteRawLarge(t *testing.T) {
	w, r := rawPair(t)
	rc, err := w.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	got := make(chan []byte, 1)
	go func() {
		time.Sleep(50 * time.Millisecond) // let the buffers fill first
		b, _ := io.ReadAll(r)
		got <- b
	}()
	n, err := writeRaw(rc, data)
	if err != nil || n != len(data) {
		t.Fatalf("writeRaw = %d, %v", n, err)
	}
	_ = w.CloseWrite()
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("peer got %d bytes, not what was written", len(b))
	}
}

// The socket's write deadline applies while writeRaw waits for room, and a
// closed peer gives the write's error.
func TestWriteRawDeadlineAndReset(t *testing.T) {
	w, r := rawPair(t)
	rc, _ := w.SyscallConn()
	_ = w.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := writeRaw(rc, make([]byte, 64<<20)) // the peer reads nothing
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writeRaw past its deadline: %v", err)
	}
	_ = w.SetWriteDeadline(time.Time{})
	_ = r.(*net.TCPConn).SetLinger(0)
	_ = r.Close() // a reset
	var werr error
	for range 100 {
		if _, werr = writeRaw(rc, []byte("x")); werr != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(werr, syscall.EPIPE) {
		t.Fatalf("writeRaw to a reset peer: %v; want ECONNRESET or EPIPE", werr)
	}
}
