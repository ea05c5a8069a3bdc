package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// TestCancelWaitTimeout: a cancel request that the server does not accept
// is given up after cancel_wait_timeout (before, a fixed 5 s), so the
// client's cancel connection and the server's next borrower are not held.
func TestCancelWaitTimeout(t *testing.T) {
	// A "server" that accepts the cancel connection and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	defer func() {
		select {
		case c := <-accepted:
			c.Close()
		default:
		}
	}()

	cfg := config.Default()
	cfg.CancelWaitTimeout = config.Duration{Duration: 300 * time.Millisecond}
	s := New(cfg, zerolog.Nop())
	ss := &session{srv: s, want: map[string]string{}}
	ss.sc = &pool.Conn{Addr: ln.Addr(), PID: 42, Secret: []byte{1, 2, 3, 4}}
	ss.q.push(entry{kind: wire.FeQuery}) // a query is running: a cancel is sent

	done := make(chan struct{})
	go func() { ss.cancel(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("the cancel request was not given up after cancel_wait_timeout (300ms)")
	}
}

// TestQueryTimeoutLateTimerSparesNextQuery: a query_timeout timer that
// fires as its query ends, after the client's next query was queued (Stop
// came too late), must not cancel that next query, which has run for less
// than query_timeout; it waits its own turn. A query that did run
// query_timeout is cancelled.
func TestQueryTimeoutLateTimerSparesNextQuery(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // where a cancel request would go
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := config.Default()
	cfg.QueryTimeout = config.Duration{Duration: time.Hour}
	cfg.CancelWaitTimeout = config.Duration{Duration: 100 * time.Millisecond}
	s := New(cfg, zerolog.Nop())
	ss := &session{srv: s, want: map[string]string{}}
	ss.sc = &pool.Conn{Addr: ln.Addr(), PID: 42, Secret: []byte{1, 2, 3, 4}}
	ss.q.push(entry{kind: wire.FeQuery})
	ss.queryTimer = time.AfterFunc(time.Hour, func() {})
	defer ss.queryTimer.Stop()
	cancelSent := func() bool {
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(50 * time.Millisecond))
		c, err := ln.Accept()
		if err != nil {
			return false
		}
		c.Close()
		return true
	}

	ss.queryStart = time.Now() // the next query, just queued
	ss.queryTimedOut()         // the late timer of the one before
	if cancelSent() {
		t.Fatal("a late query_timeout timer cancelled the next query")
	}

	ss.queryStart = time.Now().Add(-2 * time.Hour) // a query past query_timeout
	ss.queryTimedOut()
	if !cancelSent() {
		t.Fatal("a query past query_timeout was not cancelled")
	}
}
