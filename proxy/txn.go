package proxy

import "github.com/pgtide/pgtide/proxy/wire"

// Actions for a queued request: what happens to the server's reply.
const (
	actFwd  byte = iota // the reply goes to the client
	actSkip             // pgtide's own message: the reply is swallowed
	actFake             // never sent to the server: pgtide answers with fake
	actErr              // pgtide's failing stand-in: the server's error is replaced by fake (refuseLocked)
)

// Request kinds besides the frontend message types P, B, D, E, C, S, Q, F.
const (
	reqCopyEnd = wire.FeCopyDone // a CopyDone or CopyFail the client sent
)

// entry is one request the server (or pgtide) still owes a reply to.
type entry struct {
	kind  byte // frontend message type
	act   byte
	descS bool   // a Describe of a statement: ParameterDescription first
	fake  []byte // actFake, actErr: the reply pgtide sends in the server's place
	st    *stmt  // a Parse: the statement being prepared on the server
	name  string // a named Parse or a Close answered by pgtide: the client's name (undoSkippedLocked)
	sql   *sqlFx // a Query or Sync: what its SQL PREPAREs do (sqlsession.go)
	// drops: a Query or Execute that may drop the client's statement
	// names (DEALLOCATE, DISCARD ALL): a name the client uses after it is
	// looked up only once it was answered (dropsBarrier).
	drops bool
}

// reqQueue tracks, in client order, every request whose reply has not
// reached the client. In session mode only Query, FunctionCall, Sync and
// copy ends are queued; in transaction and statement mode every
// extended-protocol message is, so replies can be matched to requests and
// pgtide's own replies spliced in at the right place. The release rule
// (DESIGN.md invariant 1) needs the queue empty.
//
// Ownership: guarded by session.mu; the client goroutine pushes, the pump
// pops.
type reqQueue struct {
	e     []entry
	nreqs int     // entries other than copy markers
	buf   []entry // the largest backing array so far, reused once e is empty
	// wait is closed (wake) once at most queueLow entries are left, or the
	// session can no longer drain them: the client goroutine waits on it
	// while it does not read its client (session.holdBack).
	wait chan struct{}
}

// Backpressure on the queue: a client that pipelines requests without
// reading their replies is not read while more than queueHigh of them are
// unanswered, until the pump has brought them down to queueLow, as
// PostgreSQL stops reading a client whose replies back up. Without it,
// requests pgtide answers itself (a Close of a named statement inside a
// transaction) were queued without end (32 MiB of them: +740 MiB RSS),
// and 5-byte Syncs cost an 80-byte entry each for as many as the sockets
// held (16 MiB of them: +450 MiB).
const (
	queueHigh = 4096
	queueLow  = 2048
)

// wake releases a client goroutine waiting in holdBack.
func (q *reqQueue) wake() {
	if q.wait != nil {
		close(q.wait)
		q.wait = nil
	}
}

func (q *reqQueue) push(e entry) {
	if len(q.e) == 0 && cap(q.buf) > cap(q.e) {
		q.e = q.buf[:0] // popping moved e past the array's start: rewind
	}
	q.e = append(q.e, e)
	if cap(q.e) > cap(q.buf) {
		q.buf = q.e[:0:cap(q.e)]
	}
	if e.kind != reqCopyEnd {
		q.nreqs++
	}
}

// empty reports whether nothing is owed. Copy markers alone owe nothing (a
// CopyDone sent after the server already ended the COPY gets no reply).
func (q *reqQueue) empty() bool { return q.nreqs == 0 }

func (q *reqQueue) pop() entry {
	e := q.e[0]
	q.e[0] = entry{}
	q.e = q.e[1:]
	if e.kind != reqCopyEnd {
		q.nreqs--
	}
	if q.nreqs == 0 {
		// Only stale copy markers can remain: drop them.
		clear(q.e)
		q.e = q.e[:0:0]
	}
	if q.wait != nil && (len(q.e) <= queueLow || e.drops) {
		q.wake() // holdBack, or awaitDrops
	}
	return e
}

// dropsAhead reports whether a request that may drop the client's
// statement names is still unanswered.
func (q *reqQueue) dropsAhead() bool {
	for i := range q.e {
		if q.e[i].drops {
			return true
		}
	}
	return false
}

// closeQueued returns the index of an unanswered Close (pgtide's answer
// to it, queued: closeLocked) of the client's statement name behind another
// request that may fail, which would make the server skip it; -1 if none.
func (q *reqQueue) closeQueued(name string) int {
	for i := range q.e {
		e := &q.e[i]
		if e.kind == wire.FeClose && e.act == actFake && e.name == name && i > 0 {
			return i
		}
	}
	return -1
}

// markDrops flags the last queued request of kind as one that may drop
// the client's statement names.
func (q *reqQueue) markDrops(kind byte) {
	for i := len(q.e) - 1; i >= 0; i-- {
		if q.e[i].kind == kind {
			q.e[i].drops = true
			return
		}
	}
}

// head returns the first entry that is not a copy marker, or nil.
func (q *reqQueue) head() *entry {
	for i := range q.e {
		if q.e[i].kind != reqCopyEnd {
			return &q.e[i]
		}
	}
	return nil
}

// popHead removes the entry head() returned, with the markers before it.
func (q *reqQueue) popHead() entry {
	for len(q.e) > 0 {
		e := q.pop()
		if e.kind != reqCopyEnd {
			return e
		}
	}
	return entry{}
}

// popReady consumes the request a ReadyForQuery answers (a Sync, Query or
// FunctionCall) and anything left before it, and the copy markers right
// after a Query or FunctionCall (the CopyDone of its simple-protocol COPY).
// It reports whether that request's reply is to be swallowed.
func (q *reqQueue) popReady() (skip bool, ok bool) {
	for len(q.e) > 0 {
		e := q.pop()
		switch e.kind {
		case wire.FeSync, wire.FeQuery, wire.FeFunctionCall:
			if e.kind != wire.FeSync {
				for len(q.e) > 0 && q.e[0].kind == reqCopyEnd {
					q.pop()
				}
			}
			return e.act == actSkip, true
		}
	}
	return false, false
}

// readyKind is the kind of the request the next ReadyForQuery answers
// (the one popReady consumes), or 0.
func (q *reqQueue) readyKind() byte {
	for i := range q.e {
		switch k := q.e[i].kind; k {
		case wire.FeSync, wire.FeQuery, wire.FeFunctionCall:
			return k
		}
	}
	return 0
}

// dropUntilSync removes what the server skips after an error in the
// extended protocol: everything before the next Sync, a Query or
// FunctionCall sent before it included (PostgreSQL discards every message
// until Sync). Fake replies among them are dropped too, as PostgreSQL
// would not have answered them.
func (q *reqQueue) dropUntilSync() (dropped []entry) {
	for len(q.e) > 0 && q.e[0].kind != wire.FeSync {
		dropped = append(dropped, q.pop())
	}
	return dropped
}

// copyStarted is called when the server enters COPY IN. PostgreSQL ignores
// Sync received in copy-in mode, so Syncs the client sent after the request
// that started the COPY and before its CopyDone/CopyFail get no
// ReadyForQuery: drop them.
func (q *reqQueue) copyStarted() {
	i := 0
	if h := q.head(); h != nil && (h.kind == wire.FeQuery || h.kind == wire.FeExecute) {
		for q.e[i].kind == reqCopyEnd {
			i++
		}
		i++
	}
	out := q.e[:i]
	j := i
	for ; j < len(q.e) && q.e[j].kind != reqCopyEnd; j++ {
		if q.e[j].kind == wire.FeSync {
			q.nreqs--
			continue
		}
		out = append(out, q.e[j])
	}
	out = append(out, q.e[j:]...)
	for k := len(out); k < len(q.e); k++ {
		q.e[k] = entry{}
	}
	q.e = out
}

// copyEndQueued reports whether a CopyDone or CopyFail of the client's is
// still queued: the client has ended the COPY the server may still be in.
func (q *reqQueue) copyEndQueued() bool {
	for i := range q.e {
		if q.e[i].kind == reqCopyEnd {
			return true
		}
	}
	return false
}
