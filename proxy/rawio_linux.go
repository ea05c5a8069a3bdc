package proxy

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// epoll calls that cannot block, made as raw system calls (as the data
// path's socket I/O, rawio.go): a runtime system call wakes the runtime's
// monitor thread (sysmon) whenever all Ps were idle, and a call that
// returns at once does not need the runtime's bookkeeping.

// epollWaitNow is epoll_wait with timeout 0.
func epollWaitNow(epfd int, events []unix.EpollEvent) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// epollCtl is epoll_ctl.
func epollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
