package proxy

import (
	"crypto/tls"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgtide/pgtide/proxy/config"
)

// TCP options of client and server sockets: tcp_keepalive, tcp_keepidle,
// tcp_keepintvl, tcp_keepcnt and tcp_user_timeout, as PgBouncer applies them
// to both sides. Keepalive finds peers that vanished without a FIN (a
// crashed host, a dropped NAT entry); tcp_user_timeout bounds how long
// unacknowledged data may wait before the kernel gives the connection up.

// tuneTCP applies the TCP options of cfg to nc if it is a TCP connection
// (also under TLS); unix sockets have none. Failures are ignored: the
// connection works without them.
func tuneTCP(nc net.Conn, cfg *config.Config) {
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return
	}
	// No SetNoDelay: Go's accept and dial set TCP_NODELAY already.
	_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{
		Enable:   cfg.TCPKeepalive,
		Idle:     cfg.TCPKeepIdle.Duration, // 0: Go's 15s
		Interval: cfg.TCPKeepIntvl.Duration,
		Count:    cfg.TCPKeepCnt, // 0: Go's 9
	})
	if ms := cfg.TCPUserTimeout.Milliseconds(); ms > 0 {
		setSockopt(tc, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(ms))
	}
}

// tuneListeners sets the keepalive options of cfg on every TCP listener,
// and records whether all took. Linux copies a listening socket's
// SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT to each socket
// it accepts, so accepted clients need no setsockopt for them: four system
// calls fewer per login (docs/performance.md, "Per-login CPU"). Linux
// refuses TCP_USER_TIMEOUT on a listener: tuneAccepted sets that one.
// Called at Listen and on reload (new clients get the new options, as
// reload.md says). If one fails, each accepted socket gets tuneTCP.
//
// tcp_defer_accept is the listener's own: TCP_DEFER_ACCEPT (45 s when on,
// PgBouncer's value) makes the kernel hand over a connection only once its
// first bytes (the startup packet or SSLRequest) have arrived, so a login
// starts with something to read, and a connection that sends nothing
// costs pgtide nothing until the kernel gives up holding it. A failure
// is ignored: logins work without it.
func (s *Server) tuneListeners(cfg *config.Config) {
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	ok := true
	for _, ln := range s.listeners {
		tl, isTCP := ln.(*net.TCPListener)
		if !isTCP {
			continue
		}
		rc, err := tl.SyscallConn()
		if err != nil {
			ok = false
			continue
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			for _, o := range tcpOptions(cfg) {
				if err := unix.SetsockoptInt(int(fd), o.level, o.opt, o.value); err != nil {
					serr = err
				}
			}
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, deferAcceptSecs(cfg))
		}); err != nil || serr != nil {
			ok = false
		}
	}
	s.listenTuned.Store(ok)
}

type sockopt struct{ level, opt, value int }

// deferAcceptSecs is the listeners' TCP_DEFER_ACCEPT: PgBouncer's 45 s
// when tcp_defer_accept is on, 0 (off) otherwise.
func deferAcceptSecs(cfg *config.Config) int {
	if cfg.TCPDeferAccept {
		return 45
	}
	return 0
}

// tuneAccepted gives an accepted client socket the TCP options of cfg:
// only TCP_USER_TIMEOUT when its listener has the rest (tuneListeners).
func (s *Server) tuneAccepted(nc net.Conn, cfg *config.Config) {
	if !s.listenTuned.Load() {
		tuneTCP(nc, cfg)
		return
	}
	if ms := cfg.TCPUserTimeout.Milliseconds(); ms > 0 {
		if tc, ok := nc.(*net.TCPConn); ok {
			setSockopt(tc, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(ms))
		}
	}
}

// tcpOptions are the keepalive options tuneTCP gives a socket
// (net.TCPConn.SetKeepAliveConfig, 0 = Go's defaults), as setsockopt
// arguments.
func tcpOptions(cfg *config.Config) []sockopt {
	secs := func(d time.Duration, def int) int {
		if d <= 0 {
			return def
		}
		return int((d + time.Second - 1) / time.Second)
	}
	keep := 0
	if cfg.TCPKeepalive {
		keep = 1
	}
	count := cfg.TCPKeepCnt
	if count <= 0 {
		count = 9
	}
	return []sockopt{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, keep},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs(cfg.TCPKeepIdle.Duration, 15)},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, secs(cfg.TCPKeepIntvl.Duration, 15)},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, count},
	}
}

func setSockopt(c syscall.Conn, level, opt, value int) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), level, opt, value) })
}

// setBacklog sets a listening socket's accept queue length (listen_backlog):
// Linux lets listen(2) be called again on a listening socket to change it.
func setBacklog(ln net.Listener, backlog int) error {
	sc, ok := ln.(syscall.Conn)
	if !ok || backlog <= 0 {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = unix.Listen(int(fd), backlog) }); err != nil {
		return err
	}
	return lerr
}
