package proxy

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Listening for online restart (so_reuseport).
//
// With so_reuseport on, every TCP listener sets SO_REUSEPORT before bind, so
// a second pgtide can bind the same address while the first one drains: the
// kernel spreads new connections over both. When the old process stops
// accepting (SIGINT, SIGTERM, SHUTDOWN) it leaves the reuseport group by
// closing its listener. Closing a listener resets the connections still in
// its accept queue, so stopListening first accepts whatever the kernel has
// queued (those clients are served as if they had come a moment earlier),
// then closes. A connection whose handshake is in flight at the very moment
// of the close can still be reset; Linux 5.14+ moves those to the new
// listener when net.ipv4.tcp_migrate_req = 1.
//
// The Unix socket cannot be shared: the new process replaces the socket file
// (the old one keeps its unlinked listener), and the old process removes the
// path at exit only if it is still the file it created.

// listenTCP opens addr, with SO_REUSEPORT when reuse is set.
func listenTCP(addr string, reuse bool) (net.Listener, error) {
	// Keepalive is set on each accepted socket by tuneTCP, from the
	// configuration in force (a reload applies): accept sets none first.
	lc := net.ListenConfig{KeepAlive: -1}
	if reuse {
		lc.Control = func(network, address string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	return lc.Listen(context.Background(), "tcp", addr)
}

// listenUnix opens the Unix socket at path, replacing a stale (or, during
// an online restart, the old process's) socket file. It remembers which
// file it created, so that only that file is removed at exit.
func (s *Server) listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// Go unlinks the path on Close; during an online restart the path is
	// the new process's socket by then. removeUnixSocket decides instead.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	// unix_socket_mode: who may connect is decided by the file's permissions.
	if err := os.Chmod(path, mode); err != nil {
		_ = ln.Close()
		_ = os.Remove(path)
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil {
		s.unixPath, s.unixFile = path, fi
	}
	return ln, nil
}

// removeUnixSocket removes the socket file this process created, unless
// another process (a new pgtide) has replaced it since.
func (s *Server) removeUnixSocket() {
	if s.unixFile == nil {
		return
	}
	if fi, err := os.Stat(s.unixPath); err == nil && os.SameFile(fi, s.unixFile) {
		_ = os.Remove(s.unixPath)
	}
}

// stopListening closes every listener; it leaves the reuseport group only
// after accepting what the kernel had already queued for it (handled like
// any other accepted connection). A connection tcp_defer_accept holds back
// (its first bytes not there yet) is not in that queue, and closing the
// listener would reset it: so TCP_DEFER_ACCEPT is turned off first, and
// the queue is drained for deferAcceptGrace, long enough for a client
// that just connected to send its startup packet.
func (s *Server) stopListening() {
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	if s.listenersClosed {
		return
	}
	s.listenersClosed = true
	var tcp []*net.TCPListener
	for _, ln := range s.listeners {
		if tl, ok := ln.(*net.TCPListener); ok && s.reuseport {
			tcp = append(tcp, tl)
			if rc, err := tl.SyscallConn(); err == nil {
				_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 0) })
			}
		}
	}
	if len(tcp) > 0 {
		grace := time.Time{}
		if s.Config().TCPDeferAccept {
			grace = time.Now().Add(deferAcceptGrace)
		}
		for {
			for _, tl := range tcp {
				s.drainAcceptQueue(tl)
			}
			if !time.Now().Before(grace) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
}

// deferAcceptGrace is how long stopListening keeps draining a reuseport
// listener whose connections tcp_defer_accept may hold back.
const deferAcceptGrace = 50 * time.Millisecond

// drainAcceptQueue accepts, without blocking, every connection waiting in
// ln's accept queue and hands each to handleConn.
func (s *Server) drainAcceptQueue(ln *net.TCPListener) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return
	}
	var fds []int
	_ = rc.Control(func(fd uintptr) {
		for len(fds) < 4096 {
			nfd, _, err := unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
				continue
			}
			if err != nil {
				return // EAGAIN: the queue is empty
			}
			fds = append(fds, nfd)
		}
	})
	for _, fd := range fds {
		f := os.NewFile(uintptr(fd), "client")
		nc, err := net.FileConn(f)
		_ = f.Close()
		if err != nil {
			continue
		}
		s.serveConn(nc)
	}
	if len(fds) > 0 {
		s.logger().Info().Int("connections", len(fds)).Msg("accepted the connections queued before the listener closed")
	}
}

// serveConn starts a session goroutine for an accepted connection.
func (s *Server) serveConn(nc net.Conn) {
	s.tuneAccepted(nc, s.Config())   // tcp.go
	nc = newSuspendConn(nc, &s.susp) // SUSPEND can stop its reads once it is a session's (suspend.go)
	s.clients.Add(1)
	s.sessWG.Add(1)
	s.work.run(func() { s.handleConn(nc) }) // workers.go
}

// loginsOpen reports whether a client may still log in. After SIGTERM (or
// SHUTDOWN WAIT_FOR_CLIENTS) the listeners are closed, so whoever is still
// logging in was accepted before: let them finish, as an online restart
// needs (a client the kernel queued for the old process must not fail).
// SIGINT refuses them (57P03).
func (s *Server) loginsOpen() bool {
	st := s.state.Load()
	return st == stateRunning || st == stateWaitStop
}
