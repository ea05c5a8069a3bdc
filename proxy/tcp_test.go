package proxy

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgtide/pgtide/proxy/config"
)

// TestListenerTCPOptions: a socket accepted from a listener tuneListeners
// set up, and given tuneAccepted, has the TCP options tuneTCP would have
// given it (Linux copies the keepalive ones from the listener), for the
// defaults, explicit values and keepalive off; and after a reload
// (tuneListeners again) new sockets get the new ones.
func TestListenerTCPOptions(t *testing.T) {
	opts := []struct {
		name       string
		level, opt int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
		{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT},
	}
	read := func(t *testing.T, c net.Conn) []int {
		t.Helper()
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var got []int
		_ = rc.Control(func(fd uintptr) {
			for _, o := range opts {
				v, err := unix.GetsockoptInt(int(fd), o.level, o.opt)
				if err != nil {
					t.Fatalf("%s: %v", o.name, err)
				}
				got = append(got, v)
			}
		})
		return got
	}
	accept := func(t *testing.T, ln net.Listener) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte{0}); err != nil { // tcp_defer_accept holds a silent one back
			t.Fatal(err)
		}
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	// What tuneTCP gives a socket accepted from a listener with no options.
	plain, err := listenTCP("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	ln, err := listenTCP("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &Server{listeners: []net.Listener{ln}}

	dflt := config.Default()
	custom := config.Default()
	custom.TCPKeepIdle = config.Duration{Duration: 7 * time.Second}
	custom.TCPKeepIntvl = config.Duration{Duration: 2500 * time.Millisecond} // rounded up, as Go does
	custom.TCPKeepCnt = 4
	custom.TCPUserTimeout = config.Duration{Duration: 9 * time.Second}
	off := config.Default()
	off.TCPKeepalive = false
	// In this order, a reload from custom back to the defaults must also
	// take TCP_USER_TIMEOUT back to 0.
	for _, tc := range []struct {
		name string
		cfg  *config.Config
	}{{"defaults", dflt}, {"custom", custom}, {"reloaded to defaults", dflt}, {"keepalive off", off}} {
		t.Run(tc.name, func(t *testing.T) {
			ref := accept(t, plain)
			tuneTCP(ref, tc.cfg)
			want := read(t, ref)
			s.tuneListeners(tc.cfg)
			if !s.listenTuned.Load() {
				t.Fatal("tuneListeners failed")
			}
			a := accept(t, ln)
			s.tuneAccepted(a, tc.cfg)
			got := read(t, a)
			for i, o := range opts {
				if got[i] != want[i] {
					t.Errorf("%s = %d on the accepted socket, want %d (as tuneTCP sets it)", o.name, got[i], want[i])
				}
			}
		})
	}
	// The values themselves, for the custom configuration.
	s.tuneListeners(custom)
	a := accept(t, ln)
	s.tuneAccepted(a, custom)
	got := read(t, a)
	if want := []int{1, 7, 3, 4, 9000}; !equalInts(got, want) {
		t.Errorf("custom: accepted socket has %v, want %v", got, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestListenerDeferAccept: with tcp_defer_accept (the default) a TCP
// listener hands over a connection only once its first bytes arrived, as
// PgBouncer's does; a reload that turns it off hands silent connections
// over at once.
func TestListenerDeferAccept(t *testing.T) {
	ln, err := listenTCP("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &Server{listeners: []net.Listener{ln}}
	tl := ln.(*net.TCPListener)
	deferSecs := func() int {
		rc, err := tl.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		var gerr error
		_ = rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT) })
		if gerr != nil {
			t.Fatal(gerr)
		}
		return v
	}
	// accepted reports whether a connection reached Accept within d.
	accepted := func(d time.Duration) (net.Conn, bool) {
		_ = tl.SetDeadline(time.Now().Add(d))
		a, err := tl.Accept()
		return a, err == nil
	}
	on := config.Default()
	s.tuneListeners(on)
	if v := deferSecs(); v <= 0 {
		t.Fatalf("TCP_DEFER_ACCEPT = %d with tcp_defer_accept on", v)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if a, ok := accepted(300 * time.Millisecond); ok {
		a.Close()
		t.Fatal("a connection that sent nothing was handed over")
	}
	if _, err := c.Write([]byte{0, 0, 0, 8}); err != nil {
		t.Fatal(err)
	}
	a, ok := accepted(5 * time.Second)
	if !ok {
		t.Fatal("a connection that sent its first bytes was not handed over")
	}
	a.Close()

	off := config.Default()
	off.TCPDeferAccept = false
	s.tuneListeners(off)
	if v := deferSecs(); v != 0 {
		t.Fatalf("TCP_DEFER_ACCEPT = %d with tcp_defer_accept off", v)
	}
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	a, ok = accepted(5 * time.Second)
	if !ok {
		t.Fatal("tcp_defer_accept off: a silent connection was not handed over")
	}
	a.Close()
}
