package wire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); ch <- c }()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// A raw Reader over a socket reads frames written in pieces, with messages
// larger than its buffer (Ensure grows it), then sees EOF.
func TestRawReaderFramesAndEOF(t *testing.T) {
	a, b := tcpPair(t)
	want := sampleFrames()
	want = append(want, frame{'D', bytes.Repeat([]byte("x"), 100_000)})
	data := encodeFrames(want)
	go func() {
		for off := 0; off < len(data); off += 777 {
			_, _ = b.Write(data[off:min(off+777, len(data))])
		}
		_ = b.Close()
	}()
	r := NewRawReader(a, 512)
	if r.RawConn() == nil {
		t.Fatal("no raw reads on a TCP socket")
	}
	got := readAll(t, r, 1<<20)
	if len(got) != len(want) {
		t.Fatalf("%d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].typ != want[i].typ || !bytes.Equal(got[i].body, want[i].body) {
			t.Fatalf("frame %d differs", i)
		}
	}
	if err := r.Fill(); !errors.Is(err, io.EOF) {
		t.Fatalf("Fill after the peer closed: %v, want EOF", err)
	}
	r.Shrink() // a raw Reader keeps its buffer: no idle-buffer pool games
	if r.Cap() == 0 {
		t.Fatal("Shrink dropped a raw Reader's own buffer")
	}
}

// A read deadline ends a raw read with os.ErrDeadlineExceeded, which the
// proxy tells apart from a failure; the next read works.
func TestRawReaderDeadline(t *testing.T) {
	a, b := tcpPair(t)
	r := NewRawReader(a, 512)
	_ = a.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if err := r.Fill(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Fill past its deadline: %v", err)
	}
	_ = a.SetReadDeadline(time.Time{})
	_, _ = b.Write([]byte("Z\x00\x00\x00\x05I"))
	typ, body, err := r.ReadMessage(1 << 20)
	if err != nil || typ != 'Z' || string(body) != "I" {
		t.Fatalf("after the deadline: %q %q %v", typ, body, err)
	}
}

// Not a socket: NewRawReader is NewReader.
func TestRawReaderPlainReader(t *testing.T) {
	r := NewRawReader(bytes.NewReader(encodeFrames(sampleFrames())), 512)
	if r.RawConn() != nil {
		t.Fatal("raw reads on a bytes.Reader")
	}
	if got := readAll(t, r, 1<<20); len(got) != len(sampleFrames()) {
		t.Fatalf("%d frames", len(got))
	}
}

// Drop lets a half-read message go: nothing buffered, no buffer held.
func TestReaderDrop(t *testing.T) {
	a, b := tcpPair(t)
	_, _ = b.Write([]byte("Q\x00\x10\x00\x00partial"))
	for _, r := range []*Reader{NewIdleReader(a), NewRawReader(a, 512), NewReader(bytes.NewReader([]byte("Q\x00\x10\x00\x00xy")), 512)} {
		if err := r.Fill(); err != nil {
			t.Fatal(err)
		}
		if r.Len() == 0 {
			t.Fatal("nothing buffered before Drop")
		}
		r.Drop()
		if r.Len() != 0 || r.Cap() != 0 {
			t.Fatalf("after Drop: %d bytes buffered in a buffer of %d", r.Len(), r.Cap())
		}
		_, _ = b.Write([]byte("more"))
	}
}
