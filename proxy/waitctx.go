package proxy

import (
	"context"
	"sync"
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

// stop releases the timer, if one was started.
func (w *waitCtx) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancel != nil {
		w.cancel()
	}
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
