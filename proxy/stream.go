package proxy

import (
	"errors"

	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// Large client messages are forwarded in pieces as they arrive instead of
// being buffered whole (DESIGN.md invariant 11): pgtide's memory per client
// stays at its read buffer whatever a message's size. Only messages whose
// body pgtide never needs to see are streamed: CopyData in every mode (in
// transaction and statement mode only while the server is in COPY IN), and
// in session mode, where nothing is rewritten, Query, FunctionCall, Parse
// and Bind too. Other large messages are buffered as their bytes arrive
// (wire.Reader.Ensure), never to what their header claims.

// streamMin is the size from which a message is streamed.
const streamMin = 64 << 10

// errStream is nextFrame's signal that the incomplete message at the start
// of the buffer is to be streamed (startStream).
var errStream = errors.New("stream the message")

// streamable reports whether a message of this type may be forwarded in
// pieces. Called by the client goroutine.
func (ss *session) streamable(typ byte) bool {
	switch typ {
	case wire.FeCopyData:
		if ss.mode == config.PoolSession {
			return true
		}
		ss.mu.Lock()
		in := ss.copyIn && ss.sc != nil
		ss.mu.Unlock()
		return in
	case wire.FeQuery, wire.FeFunctionCall, wire.FeParse, wire.FeBind:
		return ss.mode == config.PoolSession
	}
	return false
}

// startStream begins forwarding a message of n bytes (header included)
// whose start is in the read buffer: it books the message as the scans
// would and forwards what has arrived; passOn forwards the rest.
func (ss *session) startStream(typ byte, n int) (int, bool, error) {
	var kinds []byte
	unsynced := ss.unsynced // written only by this goroutine
	switch typ {
	case wire.FeQuery, wire.FeFunctionCall:
		kinds = []byte{typ}
	case wire.FeParse, wire.FeBind:
		unsynced = true
	}
	sc, err := ss.book(kinds, unsynced)
	if err != nil {
		return 0, false, err
	}
	ss.passTo, ss.passRemain = sc, n
	return ss.passOn()
}

// passOn forwards the buffered part of a message being streamed. If the
// server left the session in between (in transaction mode a COPY the
// server ended on an error, after which PostgreSQL drops CopyData anyway),
// the rest of the message is dropped; if the session is over, nothing more
// is forwarded.
func (ss *session) passOn() (int, bool, error) {
	b := ss.rd.Buffered()
	k := min(len(b), ss.passRemain)
	if k == 0 {
		return 0, false, nil
	}
	ss.mu.Lock()
	err := ss.forwardLocked(nil)
	attached := ss.sc == ss.passTo
	ss.mu.Unlock()
	if err != nil {
		return 0, false, err
	}
	if attached {
		if err := ss.toServer(ss.passTo, b[:k]); err != nil {
			return 0, false, err
		}
	}
	ss.rd.Discard(k)
	ss.passRemain -= k
	if ss.passRemain == 0 {
		ss.passTo = nil
	}
	return k, false, nil
}
