// Package wire frames PostgreSQL v3 protocol messages over a byte stream
// without decoding them. The data path forwards frames as raw bytes from the
// Reader's own buffer and decodes only the few message types it must inspect.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"
)

// HeaderLen is the size of a message header: one type byte and a 4-byte
// big-endian length that counts itself but not the type byte.
const HeaderLen = 5

// ErrBadLength reports a length field below 4 (impossible) or above the
// configured maximum. It is a protocol violation by the peer.
var ErrBadLength = errors.New("invalid message length")

// Reader buffers a connection and exposes whole messages in place.
//
// Ownership: a Reader belongs to exactly one goroutine at a time (the one
// reading that connection). Slices returned by Buffered, Message and
// ReadMessage point into the Reader's buffer and are valid only until the next
// call to Fill, Ensure, ReadMessage or Discard.
type Reader struct {
	rd   io.Reader
	raw  syscall.RawConn // raw reads: idle-buffer mode (NewIdleReader), or keep (NewRawReader)
	keep bool            // raw reads into a buffer of its own: not idle-buffer mode
	buf  []byte
	r, w int // buf[r:w] holds unread bytes
	base int // the size the buffer returns to when shrunk

	// OnGrow, when set, is called before the buffer grows to size bytes;
	// an error stops the read that needed the room (and is returned by
	// it). The owner uses it to budget memory (max_message_buffer).
	OnGrow func(size int) error

	// Raw reads (idle.go), in idle-buffer mode and for NewRawReader: the
	// read function is made once; rp is where it reads (nil: the idle
	// buffer), idleN and idleErr its results.
	readFn  func(fd uintptr) bool
	rp      []byte
	idleN   int
	idleErr syscall.Errno
}

// NewReader returns a Reader over rd with an initial buffer of size bytes.
func NewReader(rd io.Reader, size int) *Reader {
	if size < 512 {
		size = 512
	}
	return &Reader{rd: rd, buf: make([]byte, size), base: size}
}

// Buffered returns the unread bytes currently in the buffer.
func (r *Reader) Buffered() []byte { return r.buf[r.r:r.w] }

// Len is the number of unread bytes in the buffer.
func (r *Reader) Len() int { return r.w - r.r }

// Cap is the buffer's capacity.
func (r *Reader) Cap() int { return len(r.buf) }

// Discard drops n unread bytes (n must not exceed Len).
func (r *Reader) Discard(n int) {
	r.r += n
	if r.r == r.w {
		r.r, r.w = 0, 0
	}
}

// Fill reads at least one more byte from the underlying reader, compacting
// the buffer first so there is room. It blocks until data arrives.
func (r *Reader) Fill() error {
	if r.raw != nil && !r.keep && r.r == r.w {
		return r.fillIdle()
	}
	if r.buf == nil {
		r.buf = make([]byte, r.base)
	}
	if r.r > 0 && (r.w == len(r.buf) || r.r == r.w) {
		n := copy(r.buf, r.buf[r.r:r.w])
		r.r, r.w = 0, n
	}
	if r.w == len(r.buf) {
		if err := r.growTo(len(r.buf) * 2); err != nil {
			return err
		}
	}
	for {
		n, err := r.read(r.buf[r.w:])
		r.w += n
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Ensure blocks until at least n unread bytes are buffered, growing the
// buffer if n exceeds its capacity. The buffer grows as bytes arrive (at
// most doubling what it holds), never to what a peer merely declares
// (DESIGN.md invariant 11): a header claiming 1 GiB with no body behind it
// costs nothing.
func (r *Reader) Ensure(n int) error {
	if r.raw != nil && !r.keep && r.r == r.w && n > 0 {
		if err := r.fillIdle(); err != nil {
			return err
		}
	}
	if r.buf == nil {
		r.buf = make([]byte, r.base)
	}
	if r.r+n > len(r.buf) && r.r > 0 {
		c := copy(r.buf, r.buf[r.r:r.w])
		r.r, r.w = 0, c
	}
	for r.w-r.r < n {
		if r.w == len(r.buf) {
			if err := r.growTo(min(n, 2*len(r.buf))); err != nil {
				return err
			}
		}
		m, err := r.read(r.buf[r.w:])
		r.w += m
		if err != nil {
			if r.w-r.r >= n {
				return nil
			}
			if err == io.EOF && r.w > r.r {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// growTo asks OnGrow, then grows the buffer to n bytes.
func (r *Reader) growTo(n int) error {
	if r.OnGrow != nil {
		if err := r.OnGrow(n); err != nil {
			return err
		}
	}
	r.grow(n)
	return nil
}

func (r *Reader) grow(n int) {
	nb := make([]byte, n)
	c := copy(nb, r.buf[r.r:r.w])
	r.buf, r.r, r.w = nb, 0, c
}

// Shrink returns an oversized, empty buffer to its initial size so an idle
// connection does not pin memory from its largest message.
func (r *Reader) Shrink() {
	if r.raw != nil && !r.keep {
		if r.r == r.w && len(r.buf) != idleBufSize {
			r.buf, r.r, r.w = nil, 0, 0 // an oversized buffer: let it go
		}
		r.release()
		return
	}
	if r.r == r.w && len(r.buf) > r.base {
		r.buf, r.r, r.w = make([]byte, r.base), 0, 0
	}
}

// Drop discards whatever is buffered and lets the buffer go (to the shared
// pool in idle-buffer mode): the connection will not be read through r
// again, and its memory should not wait for it to close.
func (r *Reader) Drop() {
	r.r, r.w = 0, 0
	if r.raw != nil && !r.keep && len(r.buf) == idleBufSize {
		r.release()
		return
	}
	r.buf = nil
}

// Header parses the header at the start of b (which must hold HeaderLen
// bytes) and returns the type and the whole frame length, header included.
func Header(b []byte) (typ byte, frameLen int) {
	return b[0], int(int32(binary.BigEndian.Uint32(b[1:5]))) + 1
}

// CheckLen validates a frame length from Header against a maximum body size.
func CheckLen(frameLen, maxBody int) error {
	if frameLen < HeaderLen || frameLen-HeaderLen > maxBody {
		return fmt.Errorf("%w: %d", ErrBadLength, frameLen-1)
	}
	return nil
}

// ReadMessage reads one whole message and returns its type and body. The
// body is valid until the next call on r; the message stays buffered until
// Discard(HeaderLen+len(body)) or the next ReadMessage.
func (r *Reader) ReadMessage(maxBody int) (typ byte, body []byte, err error) {
	if err = r.Ensure(HeaderLen); err != nil {
		return 0, nil, err
	}
	typ, n := Header(r.buf[r.r:])
	if err = CheckLen(n, maxBody); err != nil {
		return typ, nil, err
	}
	if err = r.Ensure(n); err != nil {
		return typ, nil, err
	}
	body = r.buf[r.r+HeaderLen : r.r+n]
	r.Discard(n)
	return typ, body, nil
}

// Grow makes the buffer hold at least n bytes.
func (r *Reader) Grow(n int) {
	if n > len(r.buf) {
		r.grow(n)
	}
}
