package proxy

import (
	"crypto/tls"
	"net"
	"syscall"

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
