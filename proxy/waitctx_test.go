package proxy

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A borrow that never waits starts no timer, yet its context still reports
// the deadline and the session's end.
func TestWaitCtxLazy(t *testing.T) {
	parent, end := context.WithCancel(context.Background())
	w := &waitCtx{parent: parent, deadline: time.Now().Add(time.Hour)}
	if err := w.Err(); err != nil {
		t.Fatalf("Err before anything: %v", err)
	}
	if w.ctx != nil {
		t.Fatal("Err started the timer")
	}
	end()
	if err := w.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err after the session ended: %v", err)
	}
	w.stop()
}

func TestWaitCtxDeadline(t *testing.T) {
	w := &waitCtx{parent: context.Background(), deadline: time.Now().Add(20 * time.Millisecond)}
	defer w.stop()
	if d, ok := w.Deadline(); !ok || d.IsZero() {
		t.Fatal("no deadline")
	}
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done never closed after the deadline")
	}
	if err := w.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Err after the deadline: %v", err)
	}
	// A context that was never waited on still reports a passed deadline.
	v := &waitCtx{parent: context.Background(), deadline: time.Now().Add(-time.Second)}
	if err := v.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Err past the deadline, never waited on: %v", err)
	}
}

func TestWaitCtxParentEndsWait(t *testing.T) {
	parent, end := context.WithCancel(context.Background())
	w := &waitCtx{parent: parent, deadline: time.Now().Add(time.Hour)}
	defer w.stop()
	done := w.Done()
	end()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the session's end did not stop the wait")
	}
}

// A session's end context makes no context until someone waits on it, and
// is done once the session is over, whichever comes first.
func TestSessionEndLazy(t *testing.T) {
	ss := &session{}
	e := (*sessionEnd)(ss)
	if err := e.Err(); err != nil {
		t.Fatalf("Err before the end: %v", err)
	}
	if ss.endCtx.Load() != nil {
		t.Fatal("Err made a context")
	}
	w := &waitCtx{parent: e, deadline: time.Now().Add(time.Hour)}
	if err := w.Err(); err != nil {
		t.Fatalf("a borrow's Err before the end: %v", err)
	}
	w.stop()
	if ss.endCtx.Load() != nil {
		t.Fatal("a borrow that did not wait made a context")
	}
	ss.mu.Lock()
	ss.endLocked(errClientGone)
	ss.mu.Unlock()
	if err := e.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err after the end: %v", err)
	}
	select {
	case <-e.Done(): // made now, already done
	default:
		t.Fatal("Done made after the end is not closed")
	}
}

// A borrow waiting on the session's end (through its waitCtx) stops when
// the session ends.
func TestSessionEndWakesWaiter(t *testing.T) {
	ss := &session{}
	w := &waitCtx{parent: (*sessionEnd)(ss), deadline: time.Now().Add(time.Hour)}
	defer w.stop()
	done := w.Done()
	if ss.endCtx.Load() == nil {
		t.Fatal("waiting made no context")
	}
	select {
	case <-done:
		t.Fatal("done before the end")
	default:
	}
	ss.mu.Lock()
	ss.endLocked(errClientGone)
	ss.mu.Unlock()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter was not woken by the end")
	}
	if err := w.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err: %v", err)
	}
}
