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

var bufPool = sync.Pool{New: func() any { b := make([]byte, idleBufSize); return &b }}

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
	return &Reader{rd: c, raw: raw, base: idleBufSize}
}

// release gives an empty pooled buffer back.
func (r *Reader) release() {
	if r.raw == nil || r.buf == nil || r.r != r.w || len(r.buf) != idleBufSize {
		return
	}
	b := r.buf[:idleBufSize]
	bufPool.Put(&b)
	r.buf, r.r, r.w = nil, 0, 0
}

// fillIdle waits for data with no buffer held, then reads it into a pooled
// buffer. Only called with the Reader empty.
func (r *Reader) fillIdle() error {
	r.release()
	var n int
	var rerr error
	err := r.raw.Read(func(fd uintptr) bool {
		if r.buf == nil {
			r.buf = *(bufPool.Get().(*[]byte))
		}
		for {
			n, rerr = syscall.Read(int(fd), r.buf)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			r.release()
			return false
		}
		return true
	})
	if err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	if n <= 0 {
		return io.EOF
	}
	r.r, r.w = 0, n
	return nil
}
