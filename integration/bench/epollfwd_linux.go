package main

// The -forwarder-epoll mode: a plain TCP forwarder built the way issue 15's
// event-loop core would be, as a floor to compare pgtide with
// (docs/performance.md, "An event-loop core, measured"). One goroutine
// copies bytes between each client and its own PostgreSQL connection over a
// level-triggered epoll set of non-blocking sockets it made itself: no
// parsing, no pooling, no goroutine per connection, no Go net package on
// the data path. Back-pressure by read interest: when a write would block,
// the rest waits in a buffer and the other side is not read until it
// drains. -epoll-wait picks how it waits (setEpollWait).

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// efSide is one socket of a forwarded pair.
type efSide struct {
	fd      int
	peer    *efSide
	pending []byte // bytes read from peer that this socket has not taken yet
	reading bool   // EPOLLIN is armed
}

// runEpollForwarder serves LISTEN->TARGET until its listener fails.
func runEpollForwarder(spec string) error {
	from, to, ok := strings.Cut(spec, "->")
	if !ok {
		return fmt.Errorf("-forwarder-epoll wants LISTEN->TARGET, got %q", spec)
	}
	lsa, err := inet4(from)
	if err != nil {
		return err
	}
	tsa, err := inet4(to)
	if err != nil {
		return err
	}
	ln, err := epollListen(lsa)
	if err != nil {
		return err
	}
	return epollServe(ln, tsa, efWrite)
}

// epollListen returns a listening non-blocking socket on sa.
func epollListen(sa *unix.SockaddrInet4) (int, error) {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	_ = unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	err = unix.Bind(ln, sa)
	if err == nil {
		err = unix.Listen(ln, 1024)
	}
	if err != nil {
		_ = unix.Close(ln)
		return -1, err
	}
	return ln, nil
}

// epollServe forwards every connection accepted on ln to tsa until the
// loop fails. write is efWrite, or a test's stand-in (one that makes
// sockets look full).
func epollServe(ln int, tsa *unix.SockaddrInet4, write func(fd int, b []byte) (int, error)) error {
	runtime.LockOSThread()
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	sides := map[int]*efSide{}
	arm := func(s *efSide, op int) {
		ev := unix.EpollEvent{Fd: int32(s.fd)}
		if s.reading {
			ev.Events |= unix.EPOLLIN
		}
		if len(s.pending) > 0 {
			ev.Events |= unix.EPOLLOUT
		}
		_ = unix.EpollCtl(ep, op, s.fd, &ev)
	}
	closePair := func(s *efSide) {
		for _, x := range []*efSide{s, s.peer} {
			if sides[x.fd] == x {
				delete(sides, x.fd)
				_ = unix.Close(x.fd) // leaves the epoll set with it
			}
		}
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, ln, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(ln)}); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	events := make([]unix.EpollEvent, 256)
	var pollerWait func() (int, error)
	if goPoller {
		// The set's descriptor waits in the runtime's poller (readable
		// when a member is ready); epoll_wait itself never blocks.
		runtime.UnlockOSThread()
		if err := unix.SetNonblock(ep, true); err != nil {
			return err
		}
		rc, err := os.NewFile(uintptr(ep), "epoll").SyscallConn()
		if err != nil {
			return err
		}
		pollerWait = func() (int, error) {
			var n int
			var werr error
			err := rc.Read(func(fd uintptr) bool {
				r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
				n, werr = int(r), nil
				if e != 0 {
					n, werr = 0, e
				}
				return n > 0 || (werr != nil && werr != unix.EINTR)
			})
			if err == nil {
				err = werr
			}
			return n, err
		}
	}
	for {
		var n int
		var err error
		switch {
		case pollerWait != nil:
			n, err = pollerWait()
		case rawWait:
			n, err = epollWaitRaw(ep, events)
		default:
			n, err = unix.EpollWait(ep, events, -1)
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == ln {
				for {
					c, _, err := unix.Accept4(ln, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
					if err != nil {
						break
					}
					_ = unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
					s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
					if err != nil {
						_ = unix.Close(c)
						continue
					}
					_ = unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
					if err := unix.Connect(s, tsa); err != nil && err != unix.EINPROGRESS {
						_ = unix.Close(c)
						_ = unix.Close(s)
						continue
					}
					cs, ss := &efSide{fd: c, reading: true}, &efSide{fd: s, reading: true}
					cs.peer, ss.peer = ss, cs
					sides[c], sides[s] = cs, ss
					arm(cs, unix.EPOLL_CTL_ADD)
					arm(ss, unix.EPOLL_CTL_ADD)
				}
				continue
			}
			s := sides[fd]
			if s == nil {
				continue
			}
			if ev.Events&unix.EPOLLOUT != 0 && len(s.pending) > 0 {
				w, err := write(s.fd, s.pending)
				if err != nil && err != unix.EAGAIN {
					closePair(s)
					continue
				}
				s.pending = s.pending[max(w, 0):]
				if len(s.pending) == 0 {
					s.pending = nil
					s.peer.reading = true // drained: read the other side again
					arm(s, unix.EPOLL_CTL_MOD)
					arm(s.peer, unix.EPOLL_CTL_MOD)
				}
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) == 0 || !s.reading {
				continue
			}
			r, err := efRead(s.fd, buf)
			if err == unix.EAGAIN {
				continue
			}
			if err != nil || r == 0 {
				closePair(s)
				continue
			}
			w, err := write(s.peer.fd, buf[:r])
			if err != nil && err != unix.EAGAIN {
				closePair(s)
				continue
			}
			if w = max(w, 0); w < r {
				// The peer is full (or still connecting): keep the rest
				// and stop reading this side until it drains.
				s.peer.pending = append([]byte(nil), buf[w:r]...)
				s.reading = false
				arm(s, unix.EPOLL_CTL_MOD)
				arm(s.peer, unix.EPOLL_CTL_MOD)
			}
		}
	}
}

// How the loop waits (-epoll-wait):
//   - "syscall": epoll_wait through the Go runtime's system call entry, as
//     issue 15's floor experiment did: the runtime hands the thread's P
//     off while it blocks and wakes its monitor thread.
//   - "raw": epoll_wait, read and write as raw system calls the runtime
//     does not see: no hand-off, no wake-ups (the preemption signal still
//     interrupts the wait, so a GC can stop the goroutine).
//   - "poller": raw reads and writes, and the set's own descriptor waits in
//     the runtime's poller (readable when a member is ready), as pgtide's
//     parker does; epoll_wait never blocks.
var rawWait, goPoller bool

func setEpollWait(mode string) error {
	switch mode {
	case "syscall":
	case "raw":
		rawWait = true
	case "poller":
		rawWait, goPoller = true, true
	default:
		return fmt.Errorf("-epoll-wait: want syscall, raw or poller, got %q", mode)
	}
	return nil
}

func epollWaitRaw(ep int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), ^uintptr(0), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func efRead(fd int, b []byte) (int, error)  { return efIO(unix.SYS_READ, fd, b) }
func efWrite(fd int, b []byte) (int, error) { return efIO(unix.SYS_WRITE, fd, b) }

// efIO is one read or write (sysno), retried on EINTR: through the
// runtime's system-call entry, or raw when rawWait.
func efIO(sysno uintptr, fd int, b []byte) (int, error) {
	call := unix.Syscall
	if rawWait {
		call = unix.RawSyscall
	}
	for {
		r, _, e := call(sysno, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return -1, e
	}
}

// inet4 parses an IPv4 host:port.
func inet4(hp string) (*unix.SockaddrInet4, error) {
	a, err := net.ResolveTCPAddr("tcp4", hp)
	if err != nil {
		return nil, err
	}
	sa := &unix.SockaddrInet4{Port: a.Port}
	copy(sa.Addr[:], a.IP.To4())
	return sa, nil
}
