package wire

import (
	"io"
	"sync"
	"syscall"
	"unsafe"
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

// RawConn is the socket's raw handle when reads are raw (nil otherwise):
// the session writes to the client through it (proxy/rawio.go).
func (r *Reader) RawConn() syscall.RawConn { return r.raw }

// release gives an empty pooled buffer back.
func (r *Reader) release() {
	if r.raw == nil || r.keep || r.buf == nil || r.r != r.w || len(r.buf) != idleBufSize {
		return
	}
	bufPool.Put((*[idleBufSize]byte)(r.buf[:idleBufSize]))
	r.buf, r.r, r.w = nil, 0, 0
}

// fillIdle waits for data with no buffer held, then reads it into a pooled
// buffer. Only called with the Reader empty.
func (r *Reader) fillIdle() error {
	r.release()
	r.rp, r.idleN, r.idleErr = nil, 0, 0
	if err := r.raw.Read(r.readFn); err != nil {
		return err
	}
	if r.idleErr != 0 {
		return r.idleErr
	}
	if r.idleN <= 0 {
		return io.EOF
	}
	r.r, r.w = 0, r.idleN
	return nil
}

// NewRawReader is NewReader(c, size) whose reads on a plain socket (c a
// syscall.Conn: *net.TCPConn, *net.UnixConn) are raw system calls through
// its RawConn, as in idle-buffer mode, but with a buffer of its own. For
// anything else (TLS) it is NewReader.
func NewRawReader(c io.Reader, size int) *Reader {
	r := NewReader(c, size)
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			r.raw, r.keep = raw, true
			r.readFn = r.readIdle
		}
	}
	return r
}

// read reads into p: through the RawConn when there is one, else rd.
func (r *Reader) read(p []byte) (int, error) {
	if r.raw == nil {
		return r.rd.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	r.rp, r.idleN, r.idleErr = p, 0, 0
	err := r.raw.Read(r.readFn)
	r.rp = nil
	switch {
	case err != nil:
		return 0, err
	case r.idleErr != 0:
		return 0, r.idleErr
	case r.idleN <= 0:
		return 0, io.EOF
	}
	return r.idleN, nil
}

// readIdle is the raw read, called by the runtime's poller: false means
// nothing to read yet (wait for readiness and call again). It reads into
// rp, or else into a pooled buffer (fillIdle).
//
// The read is a raw system call: it never blocks (the socket is
// non-blocking), and as a runtime system call it would wake the runtime's
// monitor thread whenever that sleeps, a futex wake and its context
// switches per round trip on a machine that idles between them.
func (r *Reader) readIdle(fd uintptr) bool {
	p := r.rp
	if p == nil {
		if r.buf == nil {
			r.buf = bufPool.Get().(*[idleBufSize]byte)[:]
		}
		p = r.buf
	}
	var n uintptr
	var e syscall.Errno
	for {
		n, _, e = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != syscall.EINTR {
			break
		}
	}
	if e == syscall.EAGAIN {
		if r.rp == nil {
			r.release()
		}
		return false
	}
	r.idleN, r.idleErr = int(n), e
	return true
}
