package proxy

import (
	"errors"
	"fmt"
)

// max_message_buffer: a large client message that cannot be streamed (in
// transaction and statement mode a Query or Parse, whose SQL pgtide reads)
// is buffered as its bytes arrive. Whenever a session's read buffer grows
// past its initial size, the growth is reserved from one budget for the
// whole process, so that many clients sending huge statements at once get
// an error instead of driving pgtide out of memory, and every other client
// with it. Reservations follow the bytes that arrived, not what a header
// claims, so a client that declares a huge message and trickles it holds
// only what it sent. With the defaults one message of max_packet_size fits.

// errBufferFull is returned by a read whose buffer may not grow.
var errBufferFull = errors.New("max_message_buffer is full")

// reserveBuf is the client Reader's OnGrow: it reserves the buffer's new
// size, or refuses. Client goroutine only.
func (ss *session) reserveBuf(size int) error {
	add := int64(size) - ss.msgReserved
	if add <= 0 {
		return nil
	}
	limit := int64(ss.srv.Config().MaxMessageBuffer)
	if total := ss.srv.msgBuf.Add(add); limit > 0 && total > limit {
		ss.srv.msgBuf.Add(-add)
		return errBufferFull
	}
	ss.msgReserved = int64(size)
	return nil
}

// bufferFull ends the session whose read was refused room (reserveBuf)
// with 53200, and returns the error its loop ends with.
func (ss *session) bufferFull() error {
	msg := fmt.Sprintf("out of memory: large messages being received already hold max_message_buffer (%d bytes)", ss.srv.Config().MaxMessageBuffer)
	ss.kill(codeOutOfMemory, msg)
	return fmt.Errorf("%w: %s", errClientGone, msg)
}

// releaseLarge gives the reservation back once the buffer has shrunk (or
// the session ends). Client goroutine only.
func (ss *session) releaseLarge() {
	if ss.msgReserved != 0 {
		ss.srv.msgBuf.Add(-ss.msgReserved)
		ss.msgReserved = 0
	}
}
