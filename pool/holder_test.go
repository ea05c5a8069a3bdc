package pool

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
)

// TestHolderOf: the holder a borrower set stays with the connection while
// it is lent and after it comes back, until set again; HolderOf finds it by
// backend PID, and forgets it when the connection closes.
func TestHolderOf(t *testing.T) {
	d := &fakeDialer{}
	var pids atomic.Uint32
	p := New(Options{Size: 2}, func(ctx context.Context) (*Conn, error) {
		c, err := d.dial(ctx)
		if err == nil {
			c.PID = 100 + pids.Add(1)
		}
		return c, err
	}, zerolog.Nop())
	t.Cleanup(p.Close)
	a, b := acquire(t, p), acquire(t, p)
	a.SetHolder(7)
	if h := p.HolderOf(a.PID); h != 7 {
		t.Fatalf("HolderOf(lent a) = %d, want 7", h)
	}
	if h := p.HolderOf(b.PID); h != 0 {
		t.Fatalf("HolderOf(b, no holder set) = %d, want 0", h)
	}
	if h := p.HolderOf(999); h != 0 {
		t.Fatalf("HolderOf(unknown pid) = %d", h)
	}
	p.Release(a)
	if h := p.HolderOf(a.PID); h != 7 {
		t.Fatalf("HolderOf(idle a) = %d, want 7 (kept until lent again)", h)
	}
	if c := acquire(t, p); c != a {
		t.Fatalf("got another connection than the idle one")
	}
	a.SetHolder(8)
	if h := p.HolderOf(a.PID); h != 8 {
		t.Fatalf("HolderOf(a lent again) = %d, want 8", h)
	}
	pid := a.PID
	p.Discard(a)
	if h := p.HolderOf(pid); h != 0 {
		t.Fatalf("HolderOf(closed a) = %d, want 0", h)
	}
	p.Release(b)
}
