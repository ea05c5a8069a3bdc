package integration

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// faultRelay forwards TCP connections to target (PostgreSQL), with faults
// switched on and off by the test (tideConf.PGPort points pgtide at it):
//   - delay: a connection accepted while it is set holds what its client
//     sends for that long before passing it on, even if the client has
//     closed by then: a slow postmaster, a congested link;
//   - cut: while it is set, a connection that gets bytes from its client
//     closes both ends instead of passing them on: a server that dies just
//     as it is used, after the pool's liveness check.
type faultRelay struct {
	ln     net.Listener
	target string
	delay  atomic.Int64 // time.Duration
	cut    atomic.Bool
}

func startFaultRelay(t *testing.T, target string) *faultRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &faultRelay{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.relay(c, time.Duration(r.delay.Load()))
		}
	}()
	return r
}

func (r *faultRelay) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *faultRelay) relay(c net.Conn, delay time.Duration) {
	defer c.Close()
	s, err := net.Dial("tcp", r.target)
	if err != nil {
		return
	}
	defer s.Close()
	done := make(chan struct{})
	go func() { _, _ = io.Copy(c, s); c.Close(); close(done) }()
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
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if r.cut.Load() {
				return // both ends close
			}
			if _, werr := s.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	// The client's side closed: pass that on, and keep s open until the
	// server closes it (a cancel request is acted on after its sender
	// closed).
	_ = s.(*net.TCPConn).CloseWrite()
	<-done
}
