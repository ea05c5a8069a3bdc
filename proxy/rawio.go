package proxy

import (
	"sync"
	"syscall"
	"unsafe"
)

// Writes to plain sockets on the data path use raw system calls through
// the socket's RawConn. A write to a loopback peer often wakes that peer and
// lets it run first, so the call can take longer than the runtime's 20 µs
// sysmon tick; as a normal system call the runtime then takes the thread's P
// away and hands it to another thread (a futex wake and two context
// switches per round trip on a busy machine). A raw call keeps the P: the
// socket is non-blocking, so the call never waits, and when it would the
// RawConn waits for writability in the poller as a plain Write does.

// rawWrite is one write's state; pooled, with its method value made once,
// so a write allocates nothing and an idle session holds none.
type rawWrite struct {
	fn  func(fd uintptr) bool
	b   []byte
	n   int
	err error
}

var rawWrites = sync.Pool{New: func() any {
	w := new(rawWrite)
	w.fn = w.write
	return w
}}

// writeRaw writes all of b to rc's socket (which must be non-blocking and
// not TLS), waiting in the poller while its buffer is full; the socket's
// write deadline applies.
func writeRaw(rc syscall.RawConn, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	w := rawWrites.Get().(*rawWrite)
	w.b, w.n, w.err = b, 0, nil
	err := rc.Write(w.fn)
	n := w.n
	if err == nil {
		err = w.err
	}
	w.b, w.err = nil, nil
	rawWrites.Put(w)
	return n, err
}

func (w *rawWrite) write(fd uintptr) bool {
	for w.n < len(w.b) {
		m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&w.b[w.n])), uintptr(len(w.b)-w.n))
		switch {
		case e == syscall.EINTR:
		case e == syscall.EAGAIN:
			return false // full: the poller waits for room, then calls again
		case e != 0:
			w.err = e
			return true
		default:
			w.n += int(m)
		}
	}
	return true
}
