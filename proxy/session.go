package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// session is one logged-in client.
//
// Ownership: the client goroutine (run) alone reads conn and rd, and alone
// writes to the attached server's socket. The pump goroutine alone reads the
// attached server. Writes to conn take wmu (invariant 3). Fields under mu
// are shared by the client goroutine, the pump and cancel requests.
type session struct {
	srv  *Server
	conn net.Conn
	rd   *wire.Reader
	wmu  sync.Mutex
	pe   *poolEntry // changed only by the client goroutine, under mu
	// counters is the pool's at login; the pump counts into it.
	counters *PoolCounters
	mode     config.PoolMode
	maxBody  int

	dbName, userName string   // as the client asked for them
	id               uint64   // as in the session's log lines; SHOW CLIENTS id, KILL_CLIENT
	connected        int64    // unix ns, fixed at login
	gate             gatePass // PAUSE gate (gate.go)

	keyPID    uint32 // the BackendKeyData pgtide minted for this client
	keySecret uint32

	// want is what the client asked for, by lower-case parameter name:
	// startup parameters, then values the server reported to it after a SET.
	// view is the reported parameters as the client knows them.
	want map[string]string
	view map[string]string

	cancelMu sync.RWMutex // read-held by cancel requests in flight to sc
	swmu     sync.Mutex   // one writer on the attached server's socket

	mu          sync.Mutex
	sc          *pool.Conn
	q           reqQueue
	unsynced    bool // extended-protocol messages sent since the last Sync
	copyIn      bool // the server is in COPY IN for this client
	txStatus    byte
	closing     bool // shutdown: end the session at the next boundary
	gone        bool // client gone: the pump discards instead of writing
	serverFatal bool // the server's own FATAL reached the client
	// loggingIn: the login goroutine still owns the socket (until the
	// startup reply is written); a kill meanwhile only ends the session,
	// with its FATAL in over for the login to write (loginOver).
	loggingIn bool
	closeMsg  string // why, when not shutdown (reload.go)
	// over is why the session ended (its server was lost, it was killed):
	// once set, nothing the client sent reaches any server and no server
	// is borrowed for it (invariant 9). Set once; see endLocked.
	over error
	// ended is cancelled when the session is over, so a borrow waiting
	// for a server (PAUSE, a full pool, a restarting PostgreSQL) stops.
	// It is the session itself as a sessionEnd (waitctx.go), whose
	// context is made only when someone waits on it (endCtx).
	ended    context.Context
	endCtx   atomic.Pointer[endCancel]
	pumpDone chan struct{}
	pumpErr  error // why the pump stopped; set before pumpDone closes
	// pumpPending: a server is attached in transaction or statement mode
	// and no pump runs for it: from its borrow to drivePump, and inside a
	// transaction between statements whose replies were pumped inline
	// (nothing is owed then). pumpInline: the client goroutine is running
	// the pump itself (written under mu: a pump goroutine giving back the
	// last server reads it). inlineIdle: the inline pump stopped with
	// nothing owed and the server still attached (yieldInline). All
	// pump.go; client goroutine only.
	pumpPending, pumpInline, inlineIdle bool
	// heldIdle: pumpPending inside a transaction, for the sweeper (park.go).
	heldIdle atomic.Bool
	wake     bool // the client goroutine queued fake replies for the pump
	// backlog: the last batch left more than queueHigh requests queued
	// (holdBack); client goroutine only. passDrop is the stream's (below),
	// here in wake's padding to keep the record in its size class.
	backlog  bool
	passDrop bool // the rest of the streamed message is dropped, not forwarded
	// bindDrops: the client's last Bind was of a statement that may drop
	// its statement names (DEALLOCATE, DISCARD), so its Executes are
	// marked (entry.drops) until the next Bind; under mu.
	bindDrops bool
	// unnamedGen numbers the client's unnamed statements (under mu, in the
	// padding above): it changes whenever unnamedParse does, and a server
	// holds the client's current unnamed statement only when it recorded
	// this number with it (serverState.holdsUnnamed). A server that got an
	// older one of the client's keeps the client's pointer after the client
	// parsed another elsewhere. 32 bits: a claim must go unused for 2^32 of
	// the client's unnamed Parses to match again by wrapping around.
	unnamedGen uint32

	queryTimer, idleTimer *time.Timer // query_timeout, idle_transaction_timeout
	queryStart, xactStart time.Time   // for the pool's counters

	// Prepared statements (transaction and statement mode), under mu.
	stmts        map[string]*stmt // the client's statement names
	sqlPending   *sqlFx           // SQL PREPAREs in unnamed Parses, for the next Sync
	unnamedParse []byte           // the client's last unnamed Parse frame
	clientSkip   bool             // pgtide raised an error: drop until Sync
	// Two fields of other groups, here in clientSkip's padding: the record
	// fits the 640-byte size class (with Go's 8-byte malloc header; see
	// TestSessionRecordSize). epollAdded: the socket is in the parker's set
	// (park.go; whoever runs the session). endFlag: the session is over
	// (sessionEnd, waitctx.go).
	epollAdded bool
	endFlag    atomic.Bool

	// welcomeKey is set when the login was answered from the pool's
	// welcome cache (welcome.go), until the first server is checked
	// against it. login is the parameters the client was told it starts
	// with (that cache's, or the login server's): the values it keeps
	// unless it changes them (syncParams, toldDiff), and its startup
	// settings, which RESET returns to (captureRestore). Shared with the
	// cache: never modified. Client goroutine only, but for login under mu.
	welcomeKey string
	login      *welcome

	// A large message being forwarded in pieces (stream.go), with
	// passDrop above; client goroutine only.
	passTo     *pool.Conn
	passRemain int
	// msgReserved is this session's share of max_message_buffer: its read
	// buffer's size once grown past the initial one (buffer.go).
	msgReserved int64

	st sessState // settings and pins on the server side (sessionstate.go), under mu

	accepted int64 // when the connection was accepted (unix ns)
	// Parking (park.go). parked is true while no goroutine runs the
	// session (changed under the parker's lock). activity counts client
	// reads; sweepSeen is the sweeper's last look at it (sweeper only).
	// epollAdded is above.
	parked    atomic.Bool
	activity  atomic.Uint32
	sweepSeen uint32

	lingering atomic.Bool // kill ended the write side: finish reads out the rest first (lingerClose)
}

func newSession(s *Server, nc net.Conn, rd *wire.Reader, pe *poolEntry, cfg *config.Config, params map[string]string) *session {
	ss := &session{
		srv: s, conn: nc, rd: rd, pe: pe, dbName: params["database"], userName: params["user"], mode: pe.poolMode(), maxBody: cfg.MaxPacketSize, counters: pe.counters,
		keySecret: uint32(randUint64()),
		view:      map[string]string{}, // only until the startup reply (startup.go)
		txStatus:  wire.TxIdle,
		// want and stmts are made at their first entry (setWant, addStmtLocked):
		// most idle clients never need them.
	}
	rd.OnGrow = ss.reserveBuf // max_message_buffer (buffer.go)
	if ss.maxBody <= 0 {
		ss.maxBody = 1 << 30
	}
	ss.ended = (*sessionEnd)(ss) // waitctx.go
	ss.loggingIn = true
	ss.id, ss.connected = s.nextSessionID.Add(1), time.Now().UnixNano()
	return ss
}

// logger returns the session's logger (client, user, database, session).
// It is built per log line: a zerolog context holds 500 bytes, which every
// idle client would keep, and sessions log rarely.
func (ss *session) logger() *zerolog.Logger {
	client := ""
	if ss.conn != nil {
		client = ss.conn.RemoteAddr().String()
	}
	l := ss.srv.logger().With().Str("client", client).
		Str("user", ss.userName).Str("database", ss.dbName).Uint64("session", ss.id).Logger()
	return &l
}

func (ss *session) waitTimeout() time.Duration {
	if d := ss.srv.Config().TimeoutsFor(ss.userName).Wait; d > 0 {
		return d
	}
	return 365 * 24 * time.Hour
}

// boundaryLocked reports whether the session is between transactions with
// nothing outstanding: the release rule of DESIGN.md invariant 1.
func (ss *session) boundaryLocked() bool {
	return ss.q.empty() && !ss.unsynced && !ss.copyIn && ss.txStatus == wire.TxIdle
}

// drainedLocked reports whether the server owes nothing: the release rule
// less the transaction status, which a rollback can fix.
func (ss *session) drainedLocked() bool {
	return ss.q.empty() && !ss.unsynced && !ss.copyIn
}

// run is the client goroutine: it frames what the client sends, keeps the
// request queue, borrows a server when needed and forwards raw bytes.
func (ss *session) run() (err error) {
	defer func() {
		if err != errParked {
			if errors.Is(err, errServerGone) {
				ss.awaitPump()
			}
			ss.finish(err == nil) // nil: the client sent Terminate
		}
	}()
	for {
		if err := ss.rd.Fill(); err != nil {
			if errors.Is(err, errBufferFull) {
				return ss.bufferFull() // buffer.go
			}
			if ss.parkWake(err) { // park.go
				ss.mu.Lock()
				park := ss.parkableLocked()
				ss.mu.Unlock()
				if park {
					ss.rd.Shrink()
					return errParked
				}
				ss.startPump() // a server held idle in a transaction: watch it (pump.go)
				continue
			}
			ss.mu.Lock()
			closing := ss.closing
			ss.mu.Unlock()
			if closing {
				return errors.New("closed by shutdown")
			}
			return fmt.Errorf("%w: %w", errClientGone, err)
		}
		ss.activity.Add(1)
		for {
			var n int
			var term bool
			var err error
			if ss.backlog && ss.passRemain == 0 {
				if err := ss.holdBack(); err != nil {
					return err
				}
			}
			if ss.passRemain > 0 {
				if n, _, err = ss.passOn(); err != nil {
					return err
				}
				if n == 0 {
					break
				}
				continue
			}
			if ss.mode == config.PoolSession {
				n, term, err = ss.scanSession()
			} else {
				n, term, err = ss.scanPooled()
			}
			if err != nil {
				return err
			}
			if term {
				return nil
			}
			if n == 0 {
				break
			}
		}
		if ss.rd.Len() == 0 {
			ss.rd.Shrink()
			ss.releaseLarge()
		}
	}
}

// holdBack waits, before the client is read again, while more than
// queueLow of its requests are unanswered (reqQueue.wait): backpressure on
// a client that does not read its replies, which never holds one that
// does, or one whose replies wait for what it has not sent (COPY IN). A
// server holds back replies to an extended batch until Sync or Flush: a
// Flush is sent for them, between two messages, as no stream is open.
func (ss *session) holdBack() error {
	ss.backlog = false
	return ss.waitReplies(func() bool { return len(ss.q.e) > queueLow })
}

// awaitDrops waits, before the rest of the client's batch is read, until
// no request that may drop the client's statement names is unanswered
// (dropsBarrierLocked). It stops waiting when the session can no longer
// get the answer, or in COPY IN, which waits for the client's data: the
// rest is then read as before the barrier.
func (ss *session) awaitDrops() error { return ss.waitReplies(ss.q.dropsAhead) }

// waitReplies waits while pending (called under mu) holds and the server
// can answer without the client: not in COPY IN, and not once the session
// is over. It sends the server a Flush first when an extended batch is
// open, since PostgreSQL holds those replies until Sync or Flush. The
// replies are read by a pump goroutine meanwhile.
func (ss *session) waitReplies(pending func() bool) error {
	ss.startPump()
	flushed := false
	ss.mu.Lock()
	for pending() && !ss.copyIn && ss.over == nil && !ss.gone {
		w := make(chan struct{})
		ss.q.wait = w
		sc := ss.sc
		flush := !flushed && ss.unsynced && sc != nil
		ss.mu.Unlock()
		if flush {
			flushed = true
			if err := ss.toAttached(sc, flushMsg); err != nil {
				return err
			}
		}
		<-w
		ss.mu.Lock()
	}
	ss.mu.Unlock()
	return nil
}

// flushMsg is the Flush holdBack sends: it gets no reply.
var flushMsg = []byte{wire.FeFlush, 0, 0, 0, 4}

// nextFrame returns the type and length of the complete message at b[off:],
// growing the read buffer for a message larger than it. n == 0 means the
// message is not complete yet.
func (ss *session) nextFrame(b *[]byte, off int) (typ byte, n int, err error) {
	for {
		bb := *b
		if off+wire.HeaderLen > len(bb) {
			return 0, 0, nil
		}
		typ, n = wire.Header(bb[off:])
		if !frontendType(typ) {
			// Refused at its header, before anything of the batch is
			// queued or sent, and without waiting for a body that a
			// confused client may never send.
			return 0, 0, ss.badMessage(typ)
		}
		if err := wire.CheckLen(n, ss.maxBody); err != nil {
			ss.kill(codeProtocolViolation, fmt.Sprintf("invalid message length %d (max_packet_size %d)", n-1, ss.maxBody))
			return 0, 0, fmt.Errorf("%w: %w", errProtocol, err)
		}
		if off+n <= len(bb) {
			return typ, n, nil
		}
		if off > 0 {
			return 0, 0, nil
		}
		if n >= streamMin && ss.streamable(typ) {
			return typ, n, errStream
		}
		if err := ss.rd.Ensure(n); err != nil {
			if errors.Is(err, errBufferFull) {
				return 0, 0, ss.bufferFull() // buffer.go
			}
			if ss.parkWake(err) {
				continue // the sweeper's wake-up came mid-message: read on
			}
			return 0, 0, fmt.Errorf("%w: %w", errClientGone, err)
		}
		*b = ss.rd.Buffered()
	}
}

// frontendType reports whether typ is a message a logged-in client may send.
func frontendType(typ byte) bool {
	switch typ {
	case wire.FeQuery, wire.FeParse, wire.FeBind, wire.FeDescribe, wire.FeExecute, wire.FeClose, wire.FeSync,
		wire.FeFlush, wire.FeFunctionCall, wire.FeCopyData, wire.FeCopyDone, wire.FeCopyFail, wire.FeTerminate:
		return true
	}
	return false
}

// scanSession forwards every complete message in the read buffer as one
// write (session mode: nothing is rewritten) and reports how many bytes it
// consumed and whether the client sent Terminate.
func (ss *session) scanSession() (int, bool, error) {
	b := ss.rd.Buffered()
	off := 0
	var kinds [32]byte
	k := kinds[:0]
	unsynced := ss.unsynced // only this goroutine writes unsynced
	term, firstReq, def := false, false, false
scan:
	for {
		typ, n, err := ss.nextFrame(&b, off)
		if errors.Is(err, errStream) {
			return ss.startStream(typ, n)
		}
		if err != nil {
			return 0, false, err
		}
		if n == 0 {
			break
		}
		if off == 0 {
			firstReq = typ == wire.FeQuery || typ == wire.FeFunctionCall
		}
		switch typ {
		case wire.FeQuery:
			k = append(k, typ)
			def = ss.noteSessionMsg(typ, b[off+wire.HeaderLen:off+n], true) || def // sessionstate.go
		case wire.FeFunctionCall, wire.FeCopyDone, wire.FeCopyFail:
			k = append(k, typ)
		case wire.FeSync:
			k = append(k, typ)
			unsynced = false
		case wire.FeParse, wire.FeBind, wire.FeClose:
			unsynced = true
			def = ss.noteSessionMsg(typ, b[off+wire.HeaderLen:off+n], true) || def
		case wire.FeDescribe, wire.FeExecute, wire.FeFlush:
			unsynced = true
		case wire.FeCopyData:
		case wire.FeTerminate:
			term = true
			break scan
		default:
			return 0, false, ss.badMessage(typ)
		}
		off += n
	}
	if off == 0 {
		return 0, term, nil
	}
	sc, err := ss.book(k, unsynced, firstReq || slices.Contains(k, wire.FeSync), def)
	if errors.Is(err, errWaitCancelled) {
		return ss.answerCancelled(b[:off])
	}
	if err != nil {
		return 0, false, err
	}
	if err := ss.toServer(sc, b[:off]); err != nil {
		return 0, false, err
	}
	ss.rd.Discard(off)
	return off, term, nil
}

// book gets the server for a batch in session mode (or a streamed
// message) and queues the requests whose replies it owes: kinds are the
// batch's Query, FunctionCall, Sync and copy-end messages, unsynced whether
// an extended batch is open after it. intr: a cancel request may end a
// wait for a server (errWaitCancelled; the caller answers, answerCancelled):
// in session mode only when the request it ends also ends within what the
// caller has read (a first Query or FunctionCall, or a Sync), since session
// mode has no skipping to a later Sync. def: the batch may run a SET ...
// TO DEFAULT (session mode: noteSessionMsg).
func (ss *session) book(kinds []byte, unsynced, intr, def bool) (*pool.Conn, error) {
	now := time.Now()
	// Transaction and statement mode book only a streamed CopyData here
	// (no kinds), for the COPY of the server attached: none is borrowed
	// for it, and nil means that COPY ended and its server went back.
	attachedOnly := len(kinds) == 0 && ss.mode != config.PoolSession
	var sc *pool.Conn
	if attachedOnly {
		ss.mu.Lock()
		sc = ss.sc
		ss.mu.Unlock()
		if sc == nil {
			return nil, nil
		}
	} else {
		var err error
		if sc, err = ss.server(&now, intr); err != nil {
			return nil, err
		}
	}
	ss.startPump() // a streamed message: the pump must read while it is written
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if attachedOnly && ss.sc != sc {
		return nil, nil
	}
	if err := ss.forwardLocked(sc); err != nil {
		return nil, err
	}
	wasEmpty := ss.q.empty()
	for _, t := range kinds {
		switch t {
		case wire.FeSync:
			if ss.copyIn {
				continue // ignored by a server in COPY IN
			}
		case wire.FeCopyDone, wire.FeCopyFail:
			ss.copyIn = false
			t = reqCopyEnd
		}
		ss.q.push(entry{kind: t})
	}
	ss.unsynced = unsynced
	if def {
		ss.st.setDefault = true // before the server has it: noteTagLocked
	}
	ss.backlog = len(ss.q.e) > queueHigh   // holdBack
	ss.requestsQueuedLocked(wasEmpty, now) // xactStart, which armTimersLocked reads
	ss.armTimersLocked(wasEmpty)
	return sc, nil
}

func (ss *session) badMessage(typ byte) error {
	ss.kill(codeProtocolViolation, fmt.Sprintf("invalid frontend message type %d", typ))
	return fmt.Errorf("%w: message type %q", errProtocol, typ)
}

// endLocked marks the session over, keeping the first reason.
func (ss *session) endLocked(why error) {
	if ss.over == nil {
		ss.over = why
		(*sessionEnd)(ss).end() // waitctx.go
		ss.q.wake()             // a holdBack sees it is over
	}
}

// forwardLocked is the one place that decides whether what the client sent
// may go to a server, or a server be borrowed for it: never once the
// session is over. sc is the server the caller is about to use (nil when
// it answers locally or borrows); it must still be the attached one, or
// the session lost it in between.
func (ss *session) forwardLocked(sc *pool.Conn) error {
	if ss.over != nil {
		return ss.over
	}
	if sc != nil && ss.sc != sc {
		return fmt.Errorf("%w: the server was lost", errServerGone)
	}
	return nil
}

// server returns the attached server, borrowing one if there is none.
// *now is the caller's clock, intr whether the client's cancel request may
// end a wait (see borrow).
func (ss *session) server(now *time.Time, intr bool) (*pool.Conn, error) {
	ss.mu.Lock()
	if err := ss.forwardLocked(nil); err != nil {
		ss.mu.Unlock()
		return nil, err
	}
	if ss.closing && ss.boundaryLocked() {
		msg := ss.closeWhyLocked()
		ss.mu.Unlock()
		ss.kill(codeAdminShutdown, msg)
		return nil, errors.New("closed by shutdown")
	}
	sc := ss.sc
	ss.mu.Unlock()
	if sc != nil {
		return sc, nil
	}
	sc, err := ss.borrow(now, intr)
	if err != nil {
		ss.mu.Lock()
		over := ss.over
		ss.mu.Unlock()
		if over != nil {
			return nil, over // already told why
		}
		var ce *clientError
		if errors.As(err, &ce) {
			ss.killWith(fatalFrame(err, ce), ce.Code, ce.Msg)
		}
		return nil, err
	}
	ss.mu.Lock()
	if err := ss.forwardLocked(nil); err != nil {
		// Killed while it waited: the server never carried its requests,
		// but it may carry its settings, so it is not lent again.
		ss.mu.Unlock()
		sc.Pool().Discard(sc)
		return nil, err
	}
	ss.attachLocked(sc)
	ss.mu.Unlock()
	return sc, nil
}

// toServer writes client bytes to the server (one writer at a time: the
// pump writes too, in statement mode).
func (ss *session) toServer(sc *pool.Conn, b []byte) error {
	ss.swmu.Lock()
	defer ss.swmu.Unlock()
	return ss.writeServerLocked(sc, b)
}

// toAttached is toServer for bytes that queued no request (CopyData,
// CopyDone, CopyFail, Flush): nothing owed stops the pump from giving sc
// back while they are on their way. It writes only while sc is still the
// session's server, holding swmu from that check to the write's end; the
// pump takes swmu before it gives a server back (atBoundary), so a write
// that began ends first and one that had not goes nowhere. A server that
// ended the COPY those bytes were for would ignore them anyway; another
// client's server must never see them (DESIGN.md invariants 1 and 3).
func (ss *session) toAttached(sc *pool.Conn, b []byte) error {
	ss.mu.Lock()
	if ss.sc != sc {
		ss.mu.Unlock()
		return nil
	}
	ss.swmu.Lock() // mu before swmu, as sendCaptureLocked
	ss.mu.Unlock()
	defer ss.swmu.Unlock()
	return ss.writeServerLocked(sc, b)
}

// writeServerLocked writes b to sc; the caller holds swmu.
func (ss *session) writeServerLocked(sc *pool.Conn, b []byte) error {
	var err error
	if rc := sc.Reader.RawConn(); rc != nil {
		_, err = writeRaw(rc, b) // rawio.go
	} else {
		_, err = sc.Net.Write(b)
	}
	ss.pe.counters.BytesIn.Add(uint64(len(b)))
	if err != nil {
		// The pump sees the same failure on its read and ends the session.
		return fmt.Errorf("%w: %w", errServerGone, err)
	}
	return nil
}

// borrow gets a server for this client and brings its parameters in line.
// *now is the caller's clock, read just before: the borrow starts then. A
// borrow that finds an idle server reads the clock no more (its wait
// counts as none); one that waits, dials or sets parameters moves *now on
// to its end, so that the query's time starts after the wait. intr: the
// client's cancel request may end a wait (errWaitCancelled; the caller
// answers the request, answerCancelled).
func (ss *session) borrow(now *time.Time, intr bool) (*pool.Conn, error) {
	start := *now
	ctx := &waitCtx{parent: ss.ended, deadline: start.Add(ss.waitTimeout())}
	if intr {
		ctx.ss = ss
	}
	defer ctx.stop()
	waited := false
	defer func() {
		var d time.Duration
		if waited {
			end := time.Now()
			d = end.Sub(start)
			*now = end
		}
		ss.pe.counters.Waits.Add(1)
		ss.pe.counters.WaitNanos.Add(int64(d))
		if o := ss.srv.obs(); o != nil {
			o.Waited(ss.dbName, ss.userName, d)
		}
	}()
	gate, blocked, err := ss.srv.enterBorrow(ctx, ss, start) // admin PAUSE
	// A wait at PAUSE is a wait for a server (total_wait_time), as PgBouncer
	// counts it, and not part of the query's time.
	waited = blocked
	if err != nil {
		if ctx.cancelled.Load() {
			return nil, errWaitCancelled
		}
		return nil, err
	}
	defer gate.leave(ss)
	for attempt := 0; ; attempt++ {
		sc, w, err := acquire(ctx, ss.pe.pool, start)
		waited = waited || w || attempt > 0
		if errors.Is(err, pool.ErrClosed) && attempt < 3 {
			// A reload replaced the pool (database repointed): move over.
			pe := ss.srv.currentPool(ss.dbName, ss.userName)
			if pe == nil {
				return nil, ss.srv.removedError(ss.dbName, ss.userName) // reload.go
			}
			if pe != ss.pe {
				ss.mu.Lock()
				ss.pe = pe
				ss.moveStmtsLocked(pe) // reload.go
				ss.mu.Unlock()
				continue
			}
		}
		if err != nil {
			if ctx.cancelled.Load() {
				return nil, errWaitCancelled
			}
			return nil, acquireError(err)
		}
		synced, err := ss.syncParams(sc)
		waited = waited || synced
		if err != nil {
			var ce *clientError
			if errors.As(err, &ce) {
				ss.releaseOrDiscard(sc) // the server refused a setting: it answered, it is idle
				return nil, err
			}
			// The server failed under pgtide's own queries (it died in the
			// pool, or as it was lent): whatever it looks like, it is not
			// lent again. Nothing was sent for the client yet: try another
			// once, then tell the client (a bare close would say nothing).
			sc.Pool().Discard(sc)
			if attempt == 0 {
				continue
			}
			ss.logger().Warn().Err(err).Uint32("server_pid", sc.PID).Msg("server connection lost while applying the client's settings")
			return nil, &clientError{codeConnectionFailure, "server connection lost"}
		}
		if ss.welcomeKey != "" {
			ss.checkWelcome(sc) // welcome.go
		}
		return sc, nil
	}
}

// attach makes sc this session's server and starts its pump.
func (ss *session) attach(sc *pool.Conn) {
	ss.mu.Lock()
	ss.attachLocked(sc)
	ss.mu.Unlock()
}

func (ss *session) attachLocked(sc *pool.Conn) {
	ss.sc = sc
	ss.txStatus = sc.TxStatus
	ss.pumpErr = nil
	if ss.mode == config.PoolSession {
		// A NOTIFY sent through sc is this client's until sc is lent to
		// someone else or closed (notifyPID, pump.go).
		sc.SetHolder(ss.keyPID)
		ss.pumpDone = make(chan struct{})
		go ss.pump(sc, ss.pumpDone)
		return
	}
	if sc.Holder() != 0 {
		sc.SetHolder(0) // lent in session mode before a reload changed the mode
	}
	ss.pumpDone = nil     // made by goPump; none for a round trip pumped inline
	ss.pumpPending = true // drivePump or startPump (pump.go)
}

// parameterStatusLocked records a parameter the server reported to this
// client: the client now wants that value wherever it runs next.
func (ss *session) parameterStatusLocked(sc *pool.Conn, body []byte) {
	k, v := wire.ParseParameterStatus(body)
	if k == "" {
		return
	}
	sc.Params[k] = v
	if ss.view != nil {
		ss.view[k] = v
	}
	lk := strings.ToLower(k)
	if unsyncable[lk] {
		return
	}
	if _, ok := ss.want[lk]; ok || ss.mode != config.PoolSession {
		ss.setWant(lk, v)
		sc.Applied[lk] = pool.AppliedParam{Want: v, Got: v}
	}
}

// setWant records a parameter the client wants, making the map at the
// first one.
func (ss *session) setWant(k, v string) {
	if ss.want == nil {
		ss.want = map[string]string{}
	}
	ss.want[k] = v
}

// addStmtLocked names a statement of the client's, making the map at the
// first one.
func (ss *session) addStmtLocked(name string, st *stmt) {
	if ss.stmts == nil {
		ss.stmts = map[string]*stmt{}
	}
	ss.stmts[name] = st
}

// unsyncable are reported parameters that cannot be SET.
var unsyncable = map[string]bool{
	"server_version": true, "server_encoding": true, "integer_datetimes": true,
	"is_superuser": true, "in_hot_standby": true, "session_authorization": true,
}

// toClient writes server bytes to the client, or drops them once the
// client is gone.
func (ss *session) toClient(b []byte) {
	ss.mu.Lock()
	gone := ss.gone
	ss.mu.Unlock()
	if gone {
		return
	}
	ss.wmu.Lock()
	var err error
	if rc := ss.rd.RawConn(); rc != nil {
		_, err = writeRaw(rc, b) // rawio.go
	} else {
		_, err = ss.conn.Write(b)
	}
	ss.wmu.Unlock()
	ss.counters.BytesOut.Add(uint64(len(b)))
	if err != nil {
		ss.mu.Lock()
		ss.gone = true
		ss.q.wake() // a holdBack sees the client gone
		ss.mu.Unlock()
		_ = ss.conn.Close() // wakes the client goroutine, which cleans up
		ss.srv.unpark(ss)   // or a parked session: a closed socket leaves the epoll set with no event
	}
}

// serverStopped handles the pump's read error: a deadline set by finish to
// stop an idle pump, or a server that is gone.
func (ss *session) serverStopped(sc *pool.Conn, err error) {
	var ne net.Error
	ss.mu.Lock()
	if ss.gone && errors.As(err, &ne) && ne.Timeout() && ss.q.empty() && !ss.unsynced && !ss.copyIn {
		ss.mu.Unlock()
		return // finish takes the server from here
	}
	ss.sc = nil
	ss.pumpErr = fmt.Errorf("%w: %w", errServerGone, err)
	// Whatever the client sent is unanswered, and the server's session
	// (its transaction, its settings) is gone: so is the client's. Its
	// queue dies here too, so no other server inherits it.
	ss.endLocked(ss.pumpErr)
	ss.q = reqQueue{}
	gone, told := ss.gone, ss.serverFatal
	ss.stopTimersLocked()
	ss.mu.Unlock()
	ss.logger().Warn().Err(err).Uint32("server_pid", sc.PID).Stringer("server", sc.Addr).Msg("server connection lost")
	sc.Pool().Discard(sc)
	switch {
	case gone:
	case told:
		// The client already has the server's own FATAL: one error only.
		// A session-mode client parked since login (its server attached)
		// must be resumed to end: closing its socket takes it out of the
		// parker's epoll set without an event (park.go).
		_ = ss.conn.Close()
		ss.srv.unpark(ss)
	default:
		ss.kill(codeConnectionFailure, "server connection lost")
	}
}

// giveBack returns a server released at a transaction boundary, once no
// cancel request for it is in flight (so none can hit its next borrower).
func (ss *session) giveBack(sc *pool.Conn) {
	ss.cancelMu.Lock()
	//lint:ignore SA2001 taking the lock waits for cancels in flight, which is the point
	ss.cancelMu.Unlock()
	if !sc.Reusable() {
		// A cancel request for it may still arrive, or a message the
		// client was streaming is cut on it (a COPY the server ended
		// mid-CopyData): the pool closes it (Release).
		ss.logger().Info().Uint32("server_pid", sc.PID).Bool("message_cut", sc.Partial()).
			Msg("server closed instead of going back to the pool")
	}
	if ss.srv.Config().ServerResetQueryAlways {
		ss.releaseClean(sc)
		return
	}
	sc.Pool().Release(sc)
}

// awaitPump waits, for a second at most, for the pump to end after a
// write to the server failed: it reads the server's end and tells the
// client why (serverStopped: the server's own FATAL, or 08006), which
// finish would otherwise cut off by closing the client's connection first.
func (ss *session) awaitPump() {
	ss.mu.Lock()
	done := ss.pumpDone
	ss.mu.Unlock()
	if done == nil {
		return
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// finish runs when the client goroutine ends: it drains or cancels what the
// server still owes, then cleans the server and returns it, or closes it.
// terminated: the client ended with Terminate, after what it sent before
// it, which runs to its end as PostgreSQL runs it (no cancel).
func (ss *session) finish(terminated bool) {
	defer ss.dropPins() // sessionstate.go
	defer ss.releaseLarge()
	ss.startPump() // what the server still owes is read by the pump
	ss.srv.unregister(ss)
	// Nothing more is read through rd: its buffer, and its share of
	// max_message_buffer, go back before a killed client's linger.
	ss.rd.Drop()
	ss.releaseLarge()
	ss.drainLingering()
	_ = ss.conn.Close()
	ss.mu.Lock()
	ss.endLocked(errClientGone)
	ss.gone = true
	ss.sqlForgetLocked() // its SQL PREPAREs: sqlsession.go
	ss.stopTimersLocked()
	sc := ss.sc
	if sc == nil {
		ss.mu.Unlock()
		return
	}
	done := ss.pumpDone
	var extra []byte
	// A message the client was streaming (stream.go) is cut on the
	// server: it would take anything written now (CopyFail, Sync, a
	// rollback) as the rest of it. Nothing can clean it: it is closed.
	cut := sc.Partial()
	if cut {
		ss.logger().Info().Uint32("server_pid", sc.PID).Msg("client left in the middle of a message; closing its server")
	} else if ss.copyIn {
		extra, _ = (&pgproto3.CopyFail{Message: "client disconnected"}).Encode(extra)
		extra, _ = (&pgproto3.Sync{}).Encode(extra)
		ss.q.push(entry{kind: reqCopyEnd})
		ss.q.push(entry{kind: wire.FeSync})
		ss.copyIn = false
		ss.unsynced = false
	} else if ss.unsynced {
		// An extended batch without its Sync: PostgreSQL ends such a
		// session with the batch's implicit transaction rolled back, where
		// a Sync alone would commit what its Executes did. A Parse that
		// cannot succeed fails the batch first (or is skipped, after an
		// error), so the Sync rolls it back.
		extra = append(extra, abortParse...)
		extra, _ = (&pgproto3.Sync{}).Encode(extra)
		ss.q.push(entry{kind: wire.FeSync})
		ss.unsynced = false
	}
	busy := !ss.q.empty()
	ss.mu.Unlock()

	if len(extra) > 0 {
		if _, err := sc.Net.Write(extra); err != nil {
			_ = sc.Net.SetReadDeadline(time.Now())
		}
	}
	if busy && !terminated {
		ss.cancel()
	}
	if !busy || cut {
		// Wake the idle pump; with a message cut, stop it now: nothing
		// more will come. It closes the server if anything is owed, or
		// leaves it to be closed below.
		_ = sc.Net.SetReadDeadline(time.Now())
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = sc.Net.SetReadDeadline(time.Now())
		<-done
	}
	ss.mu.Lock()
	sc = ss.sc
	ss.sc = nil
	ss.mu.Unlock()
	if sc == nil {
		return // the pump discarded or released it
	}
	if cut {
		sc.Pool().Discard(sc)
		return
	}
	_ = sc.Net.SetReadDeadline(time.Time{})
	ss.cancelMu.Lock()
	//lint:ignore SA2001 taking the lock waits for cancels in flight, which is the point
	ss.cancelMu.Unlock()
	ss.releaseClean(sc)
}

// abortParse is finish's failing Parse: a syntax error, which leaves every
// statement as it was (a named Parse fails before it replaces anything).
var abortParse = wire.AppendFrame(nil, wire.FeParse, []byte("pgtide_abort\x00pgtide: client gone\x00"), []byte{0, 0})

// releaseClean rolls back an open transaction and runs server_reset_query
// (session mode, or always when configured), then returns the server; on
// any failure the server is closed instead (never lent dirty).
func (ss *session) releaseClean(sc *pool.Conn) {
	if !sc.Reusable() {
		// A cancel request for it may still arrive (session.cancel): it
		// could stop the reset below, and would stop the next borrower's
		// query. Release would close it anyway.
		sc.Pool().Discard(sc)
		return
	}
	var qs []string
	if sc.TxStatus != 'I' {
		qs = append(qs, "ROLLBACK")
	}
	reset := ss.srv.Config().ServerResetQuery
	if reset != "" && (ss.mode == config.PoolSession || ss.srv.Config().ServerResetQueryAlways) {
		qs = append(qs, reset)
	}
	if len(qs) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := sc.ExecMulti(ctx, qs)
		cancel()
		if err != nil || sc.TxStatus != 'I' {
			ss.logger().Info().Err(err).Uint32("server_pid", sc.PID).Msg("server reset failed; closing it")
			sc.Pool().Discard(sc)
			return
		}
	}
	if !ss.departureReset(sc, resetRan(qs)) { // sessionstate.go
		ss.logger().Info().Uint32("server_pid", sc.PID).Msg("server reset failed; closing it")
		sc.Pool().Discard(sc)
		return
	}
	sc.Pool().Release(sc)
}

// resetRan reports whether queries that ran on a server included DISCARD ALL.
func resetRan(qs []string) bool {
	for _, q := range qs {
		if strings.Contains(strings.ToUpper(q), "DISCARD ALL") {
			return true
		}
	}
	return false
}

// releaseOrDiscard returns a server the session borrowed but never
// attached (it is idle: only pgtide's own queries ran on it).
func (ss *session) releaseOrDiscard(sc *pool.Conn) {
	if sc.TxStatus == 'I' && sc.Reader.Len() == 0 {
		sc.Pool().Release(sc)
		return
	}
	sc.Pool().Discard(sc)
}

// kill tells the client why and closes its connection. Safe to call more
// than once and from any goroutine.
func (ss *session) kill(code, msg string) {
	ss.killWith(wire.ErrorFrame("FATAL", code, msg), code, msg)
}

// killWith is kill with the ErrorResponse to send, frame.
func (ss *session) killWith(frame []byte, code, msg string) {
	ss.mu.Lock()
	if ss.loggingIn { // the login writes it (loginOver)
		ss.endLocked(fmt.Errorf("%w: closed by pgtide: %w", errClientGone, &clientError{code, msg}))
		ss.mu.Unlock()
		ss.srv.logPoolerError(*ss.logger(), code, msg)
		return
	}
	ss.endLocked(fmt.Errorf("%w: closed by pgtide: %s", errClientGone, msg))
	ss.mu.Unlock()
	ss.srv.logPoolerError(*ss.logger(), code, msg)
	// The deadline comes before wmu: a pump blocked writing to a client
	// that stopped reading holds wmu until its write ends, which this
	// deadline bounds (the killed client loses the rest of its reply).
	_ = ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
	ss.wmu.Lock()
	_, werr := ss.conn.Write(frame)
	ss.wmu.Unlock()
	ss.mu.Lock()
	// A session that holds a server closes at once, so the server goes
	// back without waiting on the client (shutdown and reload excepted),
	// and so does every session when pgtide exits now (Close).
	linger := (ss.sc == nil || ss.closing) && ss.srv.state.Load() != stateClosed
	ss.mu.Unlock()
	if werr != nil || !linger || !ss.lingerClose() {
		_ = ss.conn.Close()
	}
	ss.srv.unpark(ss) // a parked session needs a goroutine to end
}

// loginOver ends the login phase: from now on kill writes to the client
// itself. It returns what a kill during the login left for it to send.
func (ss *session) loginOver() *clientError {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.loggingIn = false
	return ss.loginKilledLocked()
}

// loginKilled returns what a kill during the login left, if any.
func (ss *session) loginKilled() *clientError {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.loginKilledLocked()
}

func (ss *session) loginKilledLocked() *clientError {
	var ce *clientError
	if ss.over != nil && errors.As(ss.over, &ce) {
		return ce
	}
	return nil
}

// lingerFor bounds how long a killed client's socket is read, and what it
// sent discarded, after its FATAL (lingerClose).
const lingerFor = time.Second

// lingerClose ends the write side after the FATAL instead of closing at
// once: a close with the client's next query unread makes the kernel
// answer with a reset, and a reset can destroy the FATAL before the client
// reads it. The session's own goroutine goes on reading until EOF, the
// deadline, or what it reads (refused: the session is over), then closes.
// False when that cannot be done: close now.
func (ss *session) lingerClose() bool {
	var cw interface{ CloseWrite() error }
	switch c := ss.conn.(type) {
	case *tls.Conn:
		cw = c // close_notify; the socket stays open for reading
	default:
		cw, _ = parkSocket(ss.conn).(interface{ CloseWrite() error })
	}
	if cw == nil || cw.CloseWrite() != nil {
		return false
	}
	_ = ss.conn.SetReadDeadline(time.Now().Add(lingerFor))
	ss.lingering.Store(true)
	return true
}

// drainLingering reads out and drops what a killed client still sends,
// until it closes or the linger deadline passes, so that the close that
// follows is not a reset (lingerClose). Session goroutine only, from finish.
func (ss *session) drainLingering() {
	if !ss.lingering.Load() {
		return
	}
	var buf [4096]byte
	for {
		if _, err := ss.conn.Read(buf[:]); err != nil {
			return
		}
	}
}

// shutdownAtBoundary ends the session now if it is between transactions,
// or marks it so that it ends at the next boundary.
func (ss *session) shutdownAtBoundary() {
	ss.mu.Lock()
	ss.closing, ss.closeMsg = true, ""
	now := ss.sc == nil || ss.boundaryLocked()
	ss.mu.Unlock()
	if now {
		ss.kill(codeAdminShutdown, "terminating connection due to administrator command")
	}
}

// cancel forwards a client's cancel request to the server it holds, if a
// request is outstanding there. It returns once the server has the signal.
func (ss *session) cancel() {
	ss.mu.Lock()
	sc := ss.sc
	if sc == nil {
		ss.mu.Unlock()
		// Its query may wait for a server: end the wait, and the query
		// is answered as cancelled without ever running (answerCancelled).
		if ec := ss.endCtx.Load(); ec != nil {
			ec.interrupt()
		}
		return
	}
	if ss.q.empty() {
		ss.mu.Unlock()
		return
	}
	if ss.st.capturing {
		// pgtide's session-state capture runs on the server ahead of the
		// client's request: a cancel now would stop the capture and leave
		// the request running. settle sends it once the capture is done
		// (afterCapture).
		ss.st.cancelLater = true
		ss.mu.Unlock()
		return
	}
	ss.cancelMu.RLock()
	ss.mu.Unlock()
	defer ss.cancelMu.RUnlock()
	// cancel_wait_timeout bounds how long the server may take to accept
	// the cancel; the server is not reused before it is delivered or
	// given up (giveBack, finish wait on cancelMu).
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if d := ss.srv.Config().CancelWaitTimeout.Duration; d > 0 {
		ctx, cancel = context.WithTimeout(ctx, d)
	}
	defer cancel()
	if err := sc.Cancel(ctx); err != nil {
		msg := "cancel request to server failed"
		if !sc.Reusable() {
			// It may still arrive: the server is closed when the client
			// is done with it, never lent again (pool.Conn.Cancel).
			msg = "cancel request to server not confirmed; the server will be closed, not reused"
		}
		ss.logger().Warn().Err(err).Uint32("server_pid", sc.PID).Stringer("server", sc.Addr).Msg(msg)
	}
}
