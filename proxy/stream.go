package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// Large client messages are forwarded in pieces as they arrive instead of
// being buffered whole (DESIGN.md invariant 11): pgtide's memory per client
// stays at its read buffer whatever a message's size. Only messages whose
// body pgtide never needs to see whole are streamed: CopyData in every mode
// (in transaction and statement mode only while the server is in COPY IN),
// Bind in every mode (in transaction and statement mode its head, the
// portal and statement names, is rewritten first: bindStream), and in
// session mode, where nothing is rewritten, Query, FunctionCall and Parse
// too. Other large messages (in transaction mode Query and Parse, whose SQL
// pgtide reads) are buffered as their bytes arrive (wire.Reader.Ensure),
// never to what their header claims.

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
	case wire.FeBind:
		return true // transaction and statement mode: bindStream
	case wire.FeQuery, wire.FeFunctionCall, wire.FeParse:
		return ss.mode == config.PoolSession
	}
	return false
}

// startStream begins forwarding a message of n bytes (header included)
// whose start is in the read buffer: it books the message as the scans
// would and forwards what has arrived; passOn forwards the rest.
func (ss *session) startStream(typ byte, n int) (int, bool, error) {
	if typ == wire.FeBind && ss.mode != config.PoolSession {
		return ss.bindStream(n)
	}
	var kinds []byte
	unsynced := ss.unsynced // written only by this goroutine
	switch typ {
	case wire.FeQuery, wire.FeFunctionCall:
		kinds = []byte{typ}
	case wire.FeParse, wire.FeBind:
		unsynced = true
	}
	def := false
	if ss.mode == config.PoolSession {
		// Only the start of it is here: noteSessionMsg assumes the worst.
		def = ss.noteSessionMsg(typ, ss.rd.Buffered()[wire.HeaderLen:], false) // sessionstate.go
	}
	// A streamed message starts its batch; only a Query or FunctionCall
	// may have its wait for a server cancelled.
	sc, err := ss.book(kinds, unsynced, len(kinds) > 0, def)
	if errors.Is(err, errWaitCancelled) {
		return ss.cancelStreamed(n, true)
	}
	if err != nil {
		return 0, false, err
	}
	ss.passTo, ss.passRemain, ss.passDrop = sc, n, sc == nil // nil: the COPY ended (book)
	return ss.passOn()
}

// cancelStreamed is answerCancelled for a message of n bytes being
// streamed, of which only the start has arrived, whose wait for a server
// the client's cancel request ended: the client gets 57014 (unless it was
// already skipping to a Sync), with a ReadyForQuery when the message is a
// request of its own (ends: a Query or FunctionCall), else what follows up
// to the Sync is skipped; the whole message is dropped as it arrives.
func (ss *session) cancelStreamed(n int, ends bool) (int, bool, error) {
	ss.mu.Lock()
	skipping := ss.clientSkip
	ss.clientSkip = !ends
	ss.mu.Unlock()
	var reply []byte
	if !skipping {
		reply = append(reply, cancelledError...)
	}
	if ends {
		reply = append(reply, readyIdle...)
	}
	if err := ss.writeClient(reply); err != nil {
		return 0, false, err
	}
	ss.passTo, ss.passRemain, ss.passDrop = nil, n, true
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
	write := err == nil && ss.sc == ss.passTo && !ss.passDrop
	if write {
		// A piece queues nothing: without swmu held from this check to
		// the write's end, the pump could give the server back in between
		// (toAttached).
		ss.swmu.Lock()
	}
	ss.mu.Unlock()
	if err != nil {
		return 0, false, err
	}
	if write {
		// While the message is cut on the server, it takes whatever it
		// gets next as the rest: it cannot be cleaned or lent (pool.Conn
		// Partial; giveBack, finish). The mark is set before a piece that
		// leaves it cut and cleared after the last, both under swmu, for
		// which the pump waits before it gives a server back.
		last := k == ss.passRemain
		if !last {
			ss.passTo.SetPartial(true)
		}
		err := ss.writeServerLocked(ss.passTo, b[:k])
		if last && err == nil {
			ss.passTo.SetPartial(false)
		}
		ss.swmu.Unlock()
		if err != nil {
			return 0, false, err
		}
	}
	ss.rd.Discard(k)
	ss.passRemain -= k
	if ss.passRemain == 0 {
		ss.passTo, ss.passDrop = nil, false
	}
	return k, false, nil
}

// bindNamesMax bounds how far into a streamed Bind its portal and
// statement names are looked for; a Bind whose names are longer is
// buffered whole instead.
const bindNamesMax = 8 << 10

// bindStream forwards a large Bind in transaction and statement mode,
// where its parameters (a big bytea, say) make it large: the head (portal
// and statement names) is handled as scanPooled's pooledBatch handles a
// whole Bind (the statement prepared on this server first, its name
// mapped to the pool's, the length adjusted to match), the parameters
// follow in pieces as they arrive.
func (ss *session) bindStream(n int) (int, bool, error) {
	b := ss.rd.Buffered()
	portal, rest, ok := cstring(b[wire.HeaderLen:])
	var name []byte
	if ok {
		name, _, ok = cstring(rest)
	}
	if !ok {
		if len(b) < min(n, bindNamesMax) {
			// The names have not all arrived: wait for a little more.
			if err := ss.rd.Ensure(min(n, len(b)+1024)); err != nil {
				if errors.Is(err, errBufferFull) {
					return 0, false, ss.bufferFull()
				}
				if ss.parkWake(err) {
					return 0, false, nil
				}
				return 0, false, fmt.Errorf("%w: %w", errClientGone, err)
			}
			return ss.bindStream(n)
		}
		// Names this long are no parameter payload: take it whole.
		if err := ss.rd.Ensure(n); err != nil {
			if errors.Is(err, errBufferFull) {
				return 0, false, ss.bufferFull()
			}
			return 0, false, fmt.Errorf("%w: %w", errClientGone, err)
		}
		return ss.scanPooled()
	}
	head := wire.HeaderLen + len(portal) + 1 + len(name) + 1
	now := time.Now()
	sc, err := ss.lockBatchServer(true, &now) // mu held from here
	if errors.Is(err, errWaitCancelled) {
		return ss.cancelStreamed(n, false)
	}
	if err != nil {
		return 0, false, err
	}
	op, lp := takeScratch(), takeScratch()
	p := pooledBatch{ss: ss, b: b[:head], end: head, sc: sc, out: *op, local: *lp, now: now}
	p.startLocked()
	drop := p.bindHeadLocked(n, b[wire.HeaderLen:wire.HeaderLen+len(portal)+1], name)
	if !drop {
		// The head goes out now, the rest in pieces (passOn). The Bind is
		// owed until then, so sc stays attached.
		sc.SetPartial(true)
	}
	p.queuedLocked()
	ss.mu.Unlock()
	ss.startPump() // the pump reads while the rest of the Bind is written
	err = p.send()
	giveScratch(op, p.out)
	giveScratch(lp, p.local)
	if err != nil {
		return 0, false, err
	}
	ss.rd.Discard(head)
	ss.passTo, ss.passRemain, ss.passDrop = sc, n-head, drop
	k, _, err := ss.passOn()
	return head + k, false, err
}

// bindHeadLocked is bindOrDescribeLocked for the head of a streamed Bind
// of n bytes whose names are prefix (the portal's, NUL included) and name.
// It reports whether the rest of the message is to be dropped (the Bind
// was refused, or comes while skipping to Sync).
func (p *pooledBatch) bindHeadLocked(n int, prefix, name []byte) (drop bool) {
	ss := p.ss
	if ss.clientSkip {
		p.replace(0, p.end)
		return true
	}
	ss.unsynced = true
	if len(name) == 0 {
		p.useUnnamedLocked(wire.FeBind, 0, p.end)
		return ss.clientSkip // refused: no unnamed statement
	}
	st := ss.stmts[string(name)]
	if st == nil {
		p.refuseLocked(0, p.end, wire.ErrorFrame("ERROR", "26000", fmt.Sprintf("prepared statement %q does not exist", name)))
		return true
	}
	st = ss.execStmtLocked(st)
	ss.noteBindLocked(st)
	p.out = ss.ensureLocked(p.srv, st, p.out)
	// The frame's length field changes with the statement's name.
	p.out = append(p.out, wire.FeBind)
	p.out = binary.BigEndian.AppendUint32(p.out, uint32(n-1-len(name)+len(st.name)))
	p.out = append(append(append(p.out, prefix...), st.name...), 0)
	p.seg, p.modified = p.end, true
	ss.q.push(entry{kind: wire.FeBind, st: st})
	return false
}
