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
