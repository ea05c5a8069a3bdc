package proxy

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// parker holds parked sessions' sockets in an epoll set (park.go). One
// goroutine waits on it; it also runs the idle sweep.
//
// The goroutine waits in the runtime's poller, not in a blocking
// epoll_wait: the set's descriptor is itself pollable (readable while a
// member is ready), so it is registered like a socket, and epoll_wait is
// only called with timeout 0 (rawio_linux.go). A thread blocked in
// epoll_wait held a P that the runtime took back (a thread handoff) and
// woke the runtime's monitor thread when it returned: context switches on
// every login (docs/performance.md, "Per-login CPU").
//
// Ownership: byID and each parked session's membership are guarded by mu;
// a session's parked flag changes only under mu, so exactly one of the
// parker's wake-up and take (kill) resumes it.
type parker struct {
	s    *Server
	epfd int
	ep   *os.File        // epfd in the runtime's poller
	raw  syscall.RawConn // ep's
	stop int             // eventfd that ends the loop (token 0)

	mu   sync.Mutex
	byID map[uint64]*session
	n    atomic.Int64 // len(byID), for the metrics
	dead bool         // the loop has ended: nothing parks any more (under mu)

	parks atomic.Uint64 // sessions parked so far: the trim's sign of activity
	trim  trimState     // loop only (park.go)
}

// newParker returns a running parker, or nil where epoll is refused (the
// sessions then keep their goroutines).
func newParker(s *Server) *parker {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		s.logger().Warn().Err(err).Msg("epoll unavailable: idle clients keep a goroutine each")
		return nil
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		s.logger().Warn().Err(err).Msg("eventfd unavailable: idle clients keep a goroutine each")
		return nil
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // token 0
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, stop, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(stop)
		return nil
	}
	// Non-blocking, so that os.NewFile puts it in the runtime's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(stop)
		return nil
	}
	ep := os.NewFile(uintptr(epfd), "parker-epoll")
	raw, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		_ = unix.Close(stop)
		return nil
	}
	p := &parker{s: s, epfd: epfd, ep: ep, raw: raw, stop: stop, byID: map[uint64]*session{}}
	go p.loop()
	return p
}

// close ends the loop; the loop closes the descriptors. Sessions still
// parked stay so: Server.Close has killed (and so resumed) them all.
func (p *parker) close() {
	var one [8]byte
	one[7] = 1
	_, _ = unix.Write(p.stop, one[:])
}

func (p *parker) loop() {
	defer func() {
		_ = p.ep.Close()
		_ = unix.Close(p.stop)
	}()
	events := make([]unix.EpollEvent, 128)
	lastSweep := time.Now()
	var n int
	var werr error
	wait := func(fd uintptr) bool {
		// Timeout 0: never blocks; false waits in the poller, which
		// reports the set readable when a member becomes ready.
		n, werr = epollWaitNow(int(fd), events)
		return n > 0 || werr != nil
	}
	var deadline time.Time // ep's read deadline: the next sweep, or sooner for a trim
	for {
		next := lastSweep.Add(parkAfter)
		if p.trim.pending {
			if t := time.Now().Add(trimSettle); t.Before(next) {
				next = t // look again soon: the wave may have settled
			}
		}
		if !next.Equal(deadline) {
			deadline = next
			_ = p.ep.SetReadDeadline(deadline)
		}
		n, werr = 0, nil
		err := p.raw.Read(wait)
		if err == nil {
			err = werr
		}
		timedOut := errors.Is(err, os.ErrDeadlineExceeded)
		if err != nil && !timedOut {
			p.s.logger().Error().Err(err).Msg("epoll_wait failed: parked clients are resumed")
			p.resumeAll()
			return
		}
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				p.resumeAll()
				return
			}
			p.mu.Lock()
			ss := p.byID[id]
			if ss != nil {
				delete(p.byID, id)
				p.n.Add(-1)
				ss.parked.Store(false)
			}
			p.mu.Unlock()
			if ss != nil {
				p.s.work.run(func() { p.s.runSession(ss) })
			}
		}
		if time.Since(lastSweep) >= parkAfter || timedOut && deadline.Equal(lastSweep.Add(parkAfter)) {
			lastSweep = time.Now()
			p.s.sweepIdle()
			p.s.work.trim() // workers idle through a whole sweep end
		}
		if parked := p.n.Load(); p.trim.check(parked, p.parks.Load(), time.Now()) {
			go p.s.trimNow(&p.trim, parked) // park.go
		}
	}
}

// resumeAll gives every parked session its goroutine back (the loop ends).
func (p *parker) resumeAll() {
	p.mu.Lock()
	p.dead = true
	list := make([]*session, 0, len(p.byID))
	for id, ss := range p.byID {
		delete(p.byID, id)
		p.n.Add(-1)
		ss.parked.Store(false)
		list = append(list, ss)
	}
	p.mu.Unlock()
	for _, ss := range list {
		p.s.work.run(func() { p.s.runSession(ss) })
	}
}

// park adds the session's socket to the epoll set, armed for one wake-up.
// False: it could not (the socket is closed); the caller keeps the session.
func (p *parker) park(ss *session) bool {
	raw, err := parkSocket(ss.conn).SyscallConn()
	if err != nil {
		return false
	}
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		return false
	}
	p.byID[ss.id] = ss
	p.n.Add(1)
	p.parks.Add(1)
	ss.parked.Store(true)
	p.mu.Unlock()
	// Level-triggered and one-shot: bytes that arrived before the socket
	// was armed wake it at once, and one wake-up resumes it once.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
		Fd: int32(uint32(ss.id)), Pad: int32(uint32(ss.id >> 32))}
	var cerr error
	err = raw.Control(func(fd uintptr) {
		// Control holds the descriptor open, so its number cannot be
		// reused by another connection while it is added.
		if ss.epollAdded {
			cerr = epollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
			if !errors.Is(cerr, unix.ENOENT) {
				return
			}
		}
		cerr = epollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		ss.epollAdded = cerr == nil
	})
	if err == nil {
		err = cerr
	}
	if err == nil {
		return true
	}
	// Not parked after all, unless a wake-up took it in between (then the
	// session runs elsewhere and is no longer ours).
	return !p.take(ss)
}

// take removes a parked session and reports whether the caller now owns it
// (it was parked).
func (p *parker) take(ss *session) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !ss.parked.Load() {
		return false
	}
	delete(p.byID, ss.id)
	p.n.Add(-1)
	ss.parked.Store(false)
	return true
}
