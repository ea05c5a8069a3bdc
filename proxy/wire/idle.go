package wire

import (
	"io"
	"sync"
	"syscall"
)

// Idle-buffer mode: a Reader made with NewIdleReader holds no buffer while
// its connection is idle. It waits for data through the socket's RawConn
// and takes a buffer from a shared pool only for the read that has data, so
// thousands of idle clients cost no read buffers (PgBouncer holds an idle
// client in about 1 KB). The syscalls are the same as a plain Read: one
// read that finds nothing (EAGAIN) and one that gets the data.

// The pool holds array pointers, so that a Put allocates nothing.
var bufPool = sync.Pool{New: func() any { return new([idleBufSize]byte) }}

const idleBufSize = 8 << 10

// NewIdleReader returns a Reader over c that gives its buffer back to a
// shared pool whenever it is empty. c must be a socket offering
// syscall.Conn (a *net.TCPConn or *net.UnixConn); for anything else it is
// the same as NewReader(c, idleBufSize).
func NewIdleReader(c io.Reader) *Reader {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return NewReader(c, idleBufSize)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return NewReader(c, idleBufSize)
	}
	r := &Reader{rd: c, raw: raw, base: idleBufSize}
	r.readFn = r.readIdle // made once: a closure per read would allocate
	return r
}

// release gives an empty pooled buffer back.
func (r *Reader) release() {
	if r.raw == nil || r.buf == nil || r.r != r.w || len(r.buf) != idleBufSize {
		return
	}
	bufPool.Put((*[idleBufSize]byte)(r.buf[:idleBufSize]))
	r.buf, r.r, r.w = nil, 0, 0
}

// fillIdle waits for data with no buffer held, then reads it into a pooled
// buffer. Only called with the Reader empty.
func (r *Reader) fillIdle() error {
	r.release()
	r.idleN, r.idleErr = 0, 0
	if err := r.raw.Read(r.readFn); err != nil {
		return err
	}
	if r.idleErr != 0 {
		return r.idleErr
	}
	if r.idleN <= 0 {
		return io.EOF
	}
	r.r, r.w = 0, int(r.idleN)
	return nil
}

// readIdle is fillIdle's read, called by the runtime's poller: false means
// nothing to read yet (wait for readiness and call again).
func (r *Reader) readIdle(fd uintptr) bool {
	if r.buf == nil {
		r.buf = bufPool.Get().(*[idleBufSize]byte)[:]
	}
	var n int
	var err error
	for {
		n, err = syscall.Read(int(fd), r.buf)
		if err != syscall.EINTR {
			break
		}
	}
	if err == syscall.EAGAIN {
		r.release()
		return false
	}
	r.idleN, r.idleErr = int32(n), 0
	if errno, ok := err.(syscall.Errno); ok {
		r.idleErr = errno
	} else if err != nil {
		r.idleErr = syscall.EIO
	}
	return true
}
