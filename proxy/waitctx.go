package proxy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgtide/pgtide/pool"
)

// waitCtx is a borrow's context: the session's end, or query_wait_timeout.
// Its timer starts only when someone waits on Done, so a borrow that finds
// an idle server at once (the common case) starts no timer and allocates
// no context tree; nor does one that waits in a pool, which keeps the
// deadline itself (pool.CancelOnly). Safe for concurrent use (a dial may
// watch it).
type waitCtx struct {
	parent   context.Context
	deadline time.Time
	// ss, when set, lets the client's cancel request end the wait
	// (Interrupt, session.cancel): the query that waited is answered
	// 57014 and the session goes on. cancelled says that happened.
	ss        *session
	cancelled atomic.Bool

	mu     sync.Mutex
	ctx    context.Context // made by the first Done
	cancel context.CancelFunc
}

var _ pool.CancelOnly = (*waitCtx)(nil)

func (w *waitCtx) real() context.Context {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil {
		w.ctx, w.cancel = context.WithDeadline(w.parent, w.deadline)
	}
	return w.ctx
}

// stop releases the timer, if one was started, and the wait's place for
// a cancel request.
func (w *waitCtx) stop() {
	w.mu.Lock()
	if w.cancel != nil {
		w.cancel()
	}
	w.mu.Unlock()
	if w.ss != nil {
		if ec := w.ss.endCtx.Load(); ec != nil {
			ec.mu.Lock()
			if ec.waiting == w {
				ec.waiting = nil
			}
			ec.mu.Unlock()
		}
	}
}

var _ pool.Interruptible = (*waitCtx)(nil)

// Interrupt is the channel a cancel request for the waiting query closes
// (pool.Interruptible); nil (never) without ss. The channel is the
// session's, made once and kept across its waits until a cancel closes it:
// a wait allocates nothing for it.
func (w *waitCtx) Interrupt() <-chan struct{} {
	if w.ss == nil {
		return nil
	}
	if w.cancelled.Load() {
		// The cancel came between two waits of this borrow (the gate's,
		// then the pool's; retries): it ends the next one too.
		return closedIntr
	}
	(*sessionEnd)(w.ss).real() // makes endCtx, where the wait is found
	ec := w.ss.endCtx.Load()
	ec.mu.Lock()
	defer ec.mu.Unlock()
	if ec.intr == nil {
		ec.intr = make(chan struct{})
	}
	ec.waiting = w
	return ec.intr
}

// closedIntr is the Interrupt of a borrow already cancelled.
var closedIntr = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// interrupt ends the session's waiting borrow, if one waits: its client's
// cancel request arrived (session.cancel). It reports whether one did.
func (ec *endCancel) interrupt() bool {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	w := ec.waiting
	if w == nil {
		return false
	}
	w.cancelled.Store(true)
	close(ec.intr)
	ec.intr, ec.waiting = nil, nil
	return true
}

func (w *waitCtx) Deadline() (time.Time, bool) { return w.deadline, true }

// CancelDone is the session's end without the deadline: a pool keeps the
// deadline itself (pool.CancelOnly), so a wait makes no timer.
func (w *waitCtx) CancelDone() <-chan struct{} { return w.parent.Done() }
func (w *waitCtx) Done() <-chan struct{}       { return w.real().Done() }
func (w *waitCtx) Value(key any) any           { return w.parent.Value(key) }

func (w *waitCtx) Err() error {
	w.mu.Lock()
	c := w.ctx
	w.mu.Unlock()
	if c != nil {
		return c.Err()
	}
	if err := w.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(w.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// sessionEnd is the session's end as a context (session.ended): done once
// the session is over (endLocked). The context.WithCancel behind it is made
// only when someone waits on Done (a borrow that has to wait, a login that
// borrows, SUSPEND's hold): idle clients are many, and each would keep one.
// It is the session itself, seen through another type: no allocation.
type sessionEnd session

// endCancel is the context behind a sessionEnd, once made.
type endCancel struct {
	ctx    context.Context
	cancel context.CancelFunc

	// The borrow waiting for a server now, and the channel that ends its
	// wait (waitCtx.Interrupt); under mu.
	mu      sync.Mutex
	waiting *waitCtx
	intr    chan struct{}
}

var _ context.Context = (*sessionEnd)(nil)

func (e *sessionEnd) real() context.Context {
	if c := e.endCtx.Load(); c != nil {
		return c.ctx
	}
	ctx, cancel := context.WithCancel(context.Background())
	if !e.endCtx.CompareAndSwap(nil, &endCancel{ctx: ctx, cancel: cancel}) {
		cancel()
		return e.endCtx.Load().ctx
	}
	// endLocked sets endFlag before it looks for a context to cancel: one
	// of the two sees the other.
	if e.endFlag.Load() {
		cancel()
	}
	return ctx
}

// end marks the session over and cancels the context, if one was made.
func (e *sessionEnd) end() {
	e.endFlag.Store(true)
	if c := e.endCtx.Load(); c != nil {
		c.cancel()
	}
}

func (e *sessionEnd) Deadline() (time.Time, bool) { return time.Time{}, false }
func (e *sessionEnd) Done() <-chan struct{}       { return e.real().Done() }

func (e *sessionEnd) Err() error {
	if c := e.endCtx.Load(); c != nil {
		return c.ctx.Err()
	}
	if e.endFlag.Load() {
		return context.Canceled
	}
	return nil
}

// Value answers from the context behind, once made: context.WithDeadline
// finds its cancelCtx there (after calling Done) and links to it directly
// instead of starting a goroutine to watch Done.
func (e *sessionEnd) Value(key any) any {
	if c := e.endCtx.Load(); c != nil {
		return c.ctx.Value(key)
	}
	return nil
}
