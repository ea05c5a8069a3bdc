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
