package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/pgtide/pgtide/integration/pgtest"
	"github.com/pgtide/pgtide/proxy/wire"
)

// Tests in this package run in parallel, so leaks are checked once for the
// whole package rather than per test.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeNet is a net.Conn that accepts and drops writes, blocks reads until
// closed, and reports its Close to the fakeDialer that made it.
type fakeNet struct {
	d      *fakeDialer
	once   sync.Once
	closed chan struct{}
}

func (f *fakeNet) Read([]byte) (int, error) { <-f.closed; return 0, io.EOF }
func (f *fakeNet) Write(b []byte) (int, error) {
	select {
	case <-f.closed:
		return 0, net.ErrClosed
	default:
		return len(b), nil
	}
}
func (f *fakeNet) Close() error {
	f.once.Do(func() {
		close(f.closed)
		f.d.live.Add(-1)
		f.d.closedN.Add(1)
	})
	return nil
}
func (f *fakeNet) isClosed() bool {
	select {
	case <-f.closed:
		return true
	default:
		return false
	}
}
func (f *fakeNet) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (f *fakeNet) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (f *fakeNet) SetDeadline(time.Time) error      { return nil }
func (f *fakeNet) SetReadDeadline(time.Time) error  { return nil }
func (f *fakeNet) SetWriteDeadline(time.Time) error { return nil }

// fakeDialer counts live connections (dialing included) and the most that
// were ever live at once. fail, when set, decides per dial whether it fails;
// gate, when set, is received from before each dial completes.
type fakeDialer struct {
	live, maxLive, dials, closedN atomic.Int64
	mu                            sync.Mutex
	fail                          func(n int64) error
	gate                          chan struct{}
}

func (d *fakeDialer) dial(ctx context.Context) (*Conn, error) {
	n := d.dials.Add(1)
	cur := d.live.Add(1)
	for {
		m := d.maxLive.Load()
		if cur <= m || d.maxLive.CompareAndSwap(m, cur) {
			break
		}
	}
	d.mu.Lock()
	fail, gate := d.fail, d.gate
	d.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			d.live.Add(-1)
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		if err := fail(n); err != nil {
			d.live.Add(-1)
			return nil, err
		}
	}
	fn := &fakeNet{d: d, closed: make(chan struct{})}
	now := time.Now()
	return &Conn{Net: fn, Reader: wire.NewReader(fn, 512), TxStatus: 'I',
		Params: map[string]string{}, Applied: map[string]AppliedParam{}, created: now, lastUsed: now}, nil
}

func newTestPool(t *testing.T, opts Options, d *fakeDialer) *Pool {
	t.Helper()
	p := New(opts, d.dial, zerolog.Nop())
	t.Cleanup(p.Close)
	return p
}

func acquire(t *testing.T, p *Pool) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return c
}

type result struct {
	c   *Conn
	err error
}

// startWaiter runs Acquire in a goroutine and waits until the pool counts
// it as a waiter (so arrival order is deterministic).
func startWaiter(t *testing.T, ctx context.Context, p *Pool) <-chan result {
	t.Helper()
	before := p.Stats().Waiting
	ch := make(chan result, 1)
	go func() {
		c, err := p.Acquire(ctx)
		ch <- result{c, err}
	}()
	pgtest.WaitUntil(t, 2*time.Second, "waiter to queue", func() bool { return p.Stats().Waiting == before+1 })
	return ch
}

func recv(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("waiter got nothing within 5s")
		return result{}
	}
}

func TestLIFOReuse(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 3}, d)
	a, b, c := acquire(t, p), acquire(t, p), acquire(t, p)
	if a == b || b == c || a == c {
		t.Fatal("distinct acquires returned the same conn")
	}
	p.Release(a)
	p.Release(b)
	p.Release(c)
	for i, want := range []*Conn{c, b, a} {
		if got := acquire(t, p); got != want {
			t.Fatalf("acquire %d: got conn %d, want %d (most recently released first)", i, got.ID, want.ID)
		}
	}
	if n := d.dials.Load(); n != 3 {
		t.Fatalf("dialed %d conns, want 3 (idle ones must be reused)", n)
	}
	if s := p.Stats(); s.Open != 3 || s.Idle != 0 || s.Lent != 3 || s.Dialed != 3 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestFIFOWaiters(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 1}, d)
	c := acquire(t, p)
	var chs []<-chan result
	for range 3 {
		chs = append(chs, startWaiter(t, context.Background(), p))
	}
	if s := p.Stats(); s.Waiting != 3 || s.MaxWait <= 0 {
		t.Fatalf("stats = %+v, want 3 waiting", s)
	}
	// Each release must go to the oldest waiter, and nobody else may wake.
	p.Release(c)
	for i, ch := range chs {
		r := recv(t, ch)
		if r.err != nil || r.c != c {
			t.Fatalf("waiter %d: got %v, %v; want the released conn", i, r.c, r.err)
		}
		for j := i + 1; j < len(chs); j++ {
			select {
			case r := <-chs[j]:
				t.Fatalf("waiter %d served before waiter %d (%v)", j, i+1, r.err)
			default:
			}
		}
		p.Release(r.c)
	}
	if n := d.dials.Load(); n != 1 {
		t.Fatalf("dialed %d, want 1", n)
	}
	if s := p.Stats(); s.Waiting != 0 || s.Open != 1 || s.Idle != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestAcquireWaitTimeout(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 1}, d)
	c := acquire(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Acquire(ctx)
	if !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("err = %v, want ErrWaitTimeout", err)
	}
	if el := time.Since(start); el < 45*time.Millisecond {
		t.Fatalf("returned after %v, before the deadline", el)
	}
	if s := p.Stats(); s.Waiting != 0 || s.WaitTimeouts != 1 || s.Open != 1 {
		t.Fatalf("stats = %+v", s)
	}
	p.Release(c)
	if got := acquire(t, p); got != c {
		t.Fatal("conn not reusable after a timed-out waiter")
	}
}

func TestCancelledWaiterFreesItsPlace(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 1}, d)
	c := acquire(t, p)
	ctxA, cancelA := context.WithCancel(context.Background())
	a := startWaiter(t, ctxA, p)
	b := startWaiter(t, context.Background(), p)
	cancelA()
	if r := recv(t, a); !errors.Is(r.err, context.Canceled) || r.c != nil {
		t.Fatalf("cancelled waiter: %v, %v; want context.Canceled", r.c, r.err)
	}
	if s := p.Stats(); s.Waiting != 1 || s.WaitTimeouts != 0 {
		t.Fatalf("stats after cancel = %+v", s)
	}
	p.Release(c)
	if r := recv(t, b); r.err != nil || r.c != c {
		t.Fatalf("next waiter: %v, %v", r.c, r.err)
	}
	if s := p.Stats(); s.Open != 1 || s.Waiting != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

// intrCtx is a context whose wait a closed channel interrupts.
type intrCtx struct {
	context.Context
	ch chan struct{}
}

func (c intrCtx) Interrupt() <-chan struct{} { return c.ch }

// An interrupted waiter (its client cancelled the query that waited) gets
// ErrWaitInterrupted, leaves the queue, and the next waiter is served.
func TestInterruptedWaiterFreesItsPlace(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 1}, d)
	c := acquire(t, p)
	ia := intrCtx{context.Background(), make(chan struct{})}
	a := startWaiter(t, ia, p)
	b := startWaiter(t, context.Background(), p)
	close(ia.ch)
	if r := recv(t, a); !errors.Is(r.err, ErrWaitInterrupted) || r.c != nil {
		t.Fatalf("interrupted waiter: %v, %v; want ErrWaitInterrupted", r.c, r.err)
	}
	if s := p.Stats(); s.Waiting != 1 || s.WaitTimeouts != 0 {
		t.Fatalf("stats after the interrupt = %+v", s)
	}
	p.Release(c)
	if r := recv(t, b); r.err != nil || r.c != c {
		t.Fatalf("next waiter: %v, %v", r.c, r.err)
	}
	if s := p.Stats(); s.Open != 1 || s.Waiting != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

// A waiter cancelled at the same moment it is granted a conn (or a dial)
// must hand the grant back: no slot may leak.
func TestCancelRacingGrantLeaksNothing(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 1}, d)
	for i := range 200 {
		c := acquire(t, p)
		ctx, cancel := context.WithCancel(context.Background())
		w := startWaiter(t, ctx, p)
		go cancel()
		if i%2 == 0 {
			p.Release(c)
		} else {
			p.Discard(c) // the waiter is granted a dial instead
		}
		r := recv(t, w)
		if r.err == nil {
			p.Release(r.c)
		} else if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("iteration %d: %v", i, r.err)
		}
		s := p.Stats()
		if s.Open > 1 || s.Waiting != 0 || s.Lent != 0 {
			t.Fatalf("iteration %d: stats = %+v", i, s)
		}
	}
	// The one slot is still usable.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := p.Acquire(ctx)
	if err != nil {
		t.Fatalf("slot leaked: %v (stats %+v)", err, p.Stats())
	}
	p.Release(c)
}

func TestSizeBoundUnderConcurrency(t *testing.T) {
	t.Parallel()
	const size = 5
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: size}, d)
	var wg sync.WaitGroup
	var maxLent atomic.Int64
	var lent atomic.Int64
	errs := make(chan error, 50)
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err := p.Acquire(ctx)
				cancel()
				if err != nil {
					errs <- err
					return
				}
				n := lent.Add(1)
				for {
					m := maxLent.Load()
					if n <= m || maxLent.CompareAndSwap(m, n) {
						break
					}
				}
				if s := p.Stats(); s.Open > size {
					errs <- fmt.Errorf("Stats.Open = %d > Size", s.Open)
				}
				if i%3 == 0 {
					time.Sleep(50 * time.Microsecond) // hold some a little, so borrowers overlap
				}
				lent.Add(-1)
				if (g+i)%7 == 0 {
					p.Discard(c) // forces redials
				} else {
					p.Release(c)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if m := d.maxLive.Load(); m > size {
		t.Fatalf("%d conns open at once, Size is %d", m, size)
	}
	if m := maxLent.Load(); m > size {
		t.Fatalf("%d conns lent at once, Size is %d", m, size)
	}
	s := p.Stats()
	if s.Open != int(d.live.Load()) || s.Open > size || s.Lent != 0 || s.Waiting != 0 {
		t.Fatalf("stats = %+v, live = %d", s, d.live.Load())
	}
}

func TestDialErrorFreesSlotForWaiter(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{gate: make(chan struct{}, 2)}
	boom := errors.New("boom")
	d.fail = func(n int64) error {
		if n == 1 {
			return boom
		}
		return nil
	}
	p := newTestPool(t, Options{Size: 1}, d)
	first := make(chan result, 1)
	go func() {
		c, err := p.Acquire(context.Background())
		first <- result{c, err}
	}()
	pgtest.WaitUntil(t, 2*time.Second, "first dial to start", func() bool { return d.dials.Load() == 1 })
	w := startWaiter(t, context.Background(), p)
	d.gate <- struct{}{} // first dial fails
	if r := recv(t, first); !errors.Is(r.err, boom) {
		t.Fatalf("first acquire: %v, want the dial error", r.err)
	}
	d.gate <- struct{}{} // the waiter's dial succeeds
	r := recv(t, w)
	if r.err != nil {
		t.Fatalf("waiter after dial error: %v", r.err)
	}
	if s := p.Stats(); s.Open != 1 || s.DialErrors != 1 || s.Dialed != 1 || s.Waiting != 0 {
		t.Fatalf("stats = %+v", s)
	}
	p.Release(r.c)
}

func TestDiscardFreesSlotForWaiter(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 1}, d)
	c := acquire(t, p)
	w := startWaiter(t, context.Background(), p)
	p.Discard(c)
	if !c.Net.(*fakeNet).isClosed() {
		t.Fatal("discarded conn not closed")
	}
	r := recv(t, w)
	if r.err != nil || r.c == c {
		t.Fatalf("waiter: %v, %v; want a fresh conn", r.c, r.err)
	}
	if s := p.Stats(); s.Open != 1 || s.Dialed != 2 {
		t.Fatalf("stats = %+v", s)
	}
	p.Release(r.c)
}

func TestSetOptionsGrowLetsWaitersDial(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 1}, d)
	c := acquire(t, p)
	w1 := startWaiter(t, context.Background(), p)
	w2 := startWaiter(t, context.Background(), p)
	p.SetOptions(Options{Size: 3})
	r1, r2 := recv(t, w1), recv(t, w2)
	if r1.err != nil || r2.err != nil {
		t.Fatalf("waiters: %v, %v", r1.err, r2.err)
	}
	if s := p.Stats(); s.Open != 3 || s.Waiting != 0 {
		t.Fatalf("stats = %+v", s)
	}
	p.Release(c)
	p.Release(r1.c)
	p.Release(r2.c)
}

func TestSetOptionsShrinkClosesExtraIdle(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 4}, d)
	cs := []*Conn{acquire(t, p), acquire(t, p), acquire(t, p), acquire(t, p)}
	for _, c := range cs[:3] {
		p.Release(c)
	}
	p.SetOptions(Options{Size: 1})
	// One lent conn plus three idle ones against a size of one: the idle
	// ones go by the maintenance loop, the lent one when it comes back.
	// The sweep takes them off the idle list under the pool's lock and
	// closes them after it: wait for both.
	pgtest.WaitUntil(t, 5*time.Second, "extra idle conns to close", func() bool {
		s := p.Stats()
		return s.Idle == 0 && s.Open == 1 && d.live.Load() == 1
	})
	p.Release(cs[3])
	if s := p.Stats(); s.Open != 1 || s.Idle != 1 {
		// Open == Size: the returning conn may stay.
		t.Fatalf("after release: stats = %+v", s)
	}
	if live := d.live.Load(); live != 1 {
		t.Fatalf("%d conns still open, want 1", live)
	}
}

func TestMinSizeMaintained(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 5, MinSize: 2}, d)
	pgtest.WaitUntil(t, 3*time.Second, "min_pool_size conns", func() bool {
		s := p.Stats()
		return s.Open == 2 && s.Idle == 2
	})
	c := acquire(t, p)
	p.Discard(c)
	pgtest.WaitUntil(t, 3*time.Second, "min_pool_size refill", func() bool {
		s := p.Stats()
		return s.Open == 2 && s.Idle == 2
	})
	if n := d.dials.Load(); n != 3 {
		t.Fatalf("dialed %d, want 3", n)
	}
}

// MinSize above Size must not make the pool count more than Size open, nor
// dial conns it then throws away (Size is "most connections open at once").
func TestMinSizeNeverExceedsSize(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 2, MinSize: 4}, d)
	var maxOpen atomic.Int64
	d.mu.Lock()
	d.fail = func(int64) error { // runs inside each dial: sample the pool's count
		maxOpen.Store(max(maxOpen.Load(), int64(p.Stats().Open)))
		return nil
	}
	d.mu.Unlock()
	p.sweep() // one maintenance pass, now (the ticker's first is 1s away)
	s := p.Stats()
	if s.Open != 2 || s.Idle != 2 {
		t.Fatalf("after a sweep: stats = %+v, want 2 open and idle", s)
	}
	if n, m := d.dials.Load(), maxOpen.Load(); n != 2 || m > 2 {
		t.Fatalf("sweep dialed %d conns and counted up to %d open, Size is 2 "+
			"(sweep's need loop checks canOpenLocked against p.open, not p.open+need)", n, m)
	}
}

func TestIdleTimeoutKeepsMinSize(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 5, MinSize: 1, IdleTimeout: 20 * time.Millisecond}, d)
	cs := []*Conn{acquire(t, p), acquire(t, p), acquire(t, p)}
	for _, c := range cs {
		p.Release(c)
	}
	pgtest.WaitUntil(t, 3*time.Second, "idle conns above min to close", func() bool { return p.Stats().Open == 1 })
	s := p.Stats()
	if s.Idle != 1 || d.live.Load() != 1 {
		t.Fatalf("stats = %+v, live = %d", s, d.live.Load())
	}
	// The least recently used go first: the survivor is the last released.
	if got := acquire(t, p); got != cs[2] {
		t.Fatalf("kept conn %d, want the most recently used %d", got.ID, cs[2].ID)
	}
}

func TestLifetimeRetiresConns(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 3, Lifetime: 60 * time.Millisecond}, d)
	c := acquire(t, p)
	if c.lifetime <= 0 || c.lifetime > 60*time.Millisecond || c.lifetime < 54*time.Millisecond {
		t.Fatalf("jittered lifetime %v outside [54ms, 60ms]", c.lifetime)
	}
	p.Release(c)
	// Idle past its lifetime: the maintenance loop closes it.
	pgtest.WaitUntil(t, 3*time.Second, "expired idle conn to close", func() bool { return p.Stats().Open == 0 })
	if !c.Net.(*fakeNet).isClosed() {
		t.Fatal("expired conn not closed")
	}
	// Lent past its lifetime: closed on release, not pooled.
	c2 := acquire(t, p)
	pgtest.WaitUntil(t, time.Second, "lifetime to pass", func() bool { return time.Since(c2.created) > c2.lifetime })
	p.Release(c2)
	if s := p.Stats(); s.Open != 0 || s.Idle != 0 || !c2.Net.(*fakeNet).isClosed() {
		t.Fatalf("expired conn pooled on release: stats %+v", s)
	}
	// Idle past its lifetime, acquired before the sweep: not lent.
	c3 := acquire(t, p)
	p.Release(c3)
	pgtest.WaitUntil(t, time.Second, "lifetime to pass", func() bool { return time.Since(c3.created) > c3.lifetime })
	if c4 := acquire(t, p); c4 == c3 {
		t.Fatal("expired idle conn was lent")
	} else {
		p.Release(c4)
	}
}

func TestLifetimeJitter(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	const lt = time.Hour
	p := newTestPool(t, Options{Size: 10, Lifetime: lt}, d)
	seen := map[time.Duration]bool{}
	var cs []*Conn
	for range 10 {
		c := acquire(t, p)
		cs = append(cs, c)
		if c.lifetime > lt || c.lifetime < lt-lt/10 {
			t.Fatalf("lifetime %v outside [%v, %v]", c.lifetime, lt-lt/10, lt)
		}
		seen[c.lifetime] = true
	}
	if len(seen) < 2 {
		t.Fatalf("10 conns share one lifetime %v: no jitter", cs[0].lifetime)
	}
	for _, c := range cs {
		p.Release(c)
	}
}

func TestLimiterSharedByTwoPools(t *testing.T) {
	t.Parallel()
	lim := NewLimiter(3)
	d := &fakeDialer{}
	p1 := newTestPool(t, Options{Size: 5, Limits: []*Limiter{lim}}, d)
	p2 := newTestPool(t, Options{Size: 5, Limits: []*Limiter{lim}}, d)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []*Conn
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := p1
			if i%2 == 1 {
				p = p2
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if c, err := p.Acquire(ctx); err == nil {
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			} else if !errors.Is(err, ErrWaitTimeout) {
				t.Errorf("acquire: %v", err)
			}
		}()
	}
	wg.Wait()
	if len(held) != 3 || d.maxLive.Load() != 3 {
		t.Fatalf("got %d conns, %d open at most; limiter allows 3", len(held), d.maxLive.Load())
	}
	if n := lim.cur.Load(); n != 3 {
		t.Fatalf("limiter counts %d, want 3", n)
	}
	for _, c := range held {
		c.Pool().Discard(c)
	}
	if n := lim.cur.Load(); n != 0 {
		t.Fatalf("limiter counts %d after discarding all, want 0", n)
	}
	// SetMax lowers the bound for new conns.
	lim.SetMax(1)
	a := acquire(t, p1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := p2.Acquire(ctx); !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("p2 acquire at the limit: %v, want ErrWaitTimeout", err)
	}
	p1.Release(a)
}

// A waiter in one pool, blocked only by a limiter another pool fills, must
// get a slot when the other pool closes a connection (PgBouncer's
// max_db_connections behaves so), not sit until its wait timeout.
func TestLimiterFreedByOtherPoolWakesWaiter(t *testing.T) {
	t.Parallel()
	lim := NewLimiter(1)
	d := &fakeDialer{}
	p1 := newTestPool(t, Options{Size: 5, Limits: []*Limiter{lim}}, d)
	p2 := newTestPool(t, Options{Size: 5, Limits: []*Limiter{lim}}, d)
	c := acquire(t, p1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	w := startWaiter(t, ctx, p2)
	p1.Discard(c)
	r := recv(t, w)
	if r.err != nil {
		t.Fatalf("p2 waiter after p1 freed the limiter's only slot: %v", r.err)
	}
	p2.Release(r.c)
}

func TestCloseFailsWaitersAndIsIdempotent(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := New(Options{Size: 2}, d.dial, zerolog.Nop())
	a, b := acquire(t, p), acquire(t, p)
	w1 := startWaiter(t, context.Background(), p)
	w2 := startWaiter(t, context.Background(), p)
	p.Close()
	for i, w := range []<-chan result{w1, w2} {
		if r := recv(t, w); !errors.Is(r.err, ErrClosed) || r.c != nil {
			t.Fatalf("waiter %d: %v, %v; want ErrClosed", i, r.c, r.err)
		}
	}
	p.Close() // second close: no panic, no block
	if _, err := p.Acquire(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire after Close: %v", err)
	}
	// Lent conns are closed when they come back.
	p.Release(a)
	p.Discard(b)
	if !a.Net.(*fakeNet).isClosed() || !b.Net.(*fakeNet).isClosed() {
		t.Fatal("conn returned to a closed pool left open")
	}
	if s := p.Stats(); s.Open != 0 || s.Idle != 0 || s.Waiting != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestCloseClosesIdle(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := New(Options{Size: 2}, d.dial, zerolog.Nop())
	a, b := acquire(t, p), acquire(t, p)
	p.Release(a)
	p.Release(b)
	p.Close()
	if d.live.Load() != 0 || p.Stats().Open != 0 {
		t.Fatalf("%d conns left open after Close (stats %+v)", d.live.Load(), p.Stats())
	}
}

func TestCloseIdle(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 3}, d)
	a, b := acquire(t, p), acquire(t, p)
	p.Release(a)
	p.CloseIdle()
	if s := p.Stats(); s.Open != 1 || s.Idle != 0 || !a.Net.(*fakeNet).isClosed() {
		t.Fatalf("stats = %+v", s)
	}
	p.Release(b)
}

// RECONNECT's bookkeeping, which the admin console's WAIT_CLOSE waits on:
// MarkedOpen counts the marked connections still open, idle or lent, and
// Changed fires when one comes back or closes.
func TestReconnectMarkedOpenAndChanged(t *testing.T) {
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 3}, d)
	a, b := acquire(t, p), acquire(t, p)
	p.Release(b)
	ch := p.Changed()
	p.Reconnect() // b is idle: closed now; a is lent: marked
	select {
	case <-ch:
	default:
		t.Fatal("Changed did not fire when Reconnect closed an idle connection")
	}
	if n := p.MarkedOpen(); n != 1 {
		t.Fatalf("MarkedOpen after Reconnect = %d; want 1 (the lent one)", n)
	}
	ch = p.Changed()
	c := acquire(t, p) // dialed after Reconnect: not marked
	if n := p.MarkedOpen(); n != 1 {
		t.Fatalf("MarkedOpen with a new connection lent = %d; want 1", n)
	}
	select {
	case <-ch:
		t.Fatal("Changed fired although no connection came back")
	default:
	}
	p.Release(a) // marked: closed instead of kept
	select {
	case <-ch:
	default:
		t.Fatal("Changed did not fire when a marked connection came back")
	}
	if n, st := p.MarkedOpen(), p.Stats(); n != 0 || st.Open != 1 || st.Idle != 0 {
		t.Fatalf("after the marked one came back: MarkedOpen %d, %+v; want 0 marked, 1 open (c, lent)", n, st)
	}
	p.Release(c)
	if st := p.Stats(); st.Idle != 1 {
		t.Fatalf("the new connection was not kept: %+v", st)
	}
}

// TestReservePool: a borrower that waited reserve_pool_timeout gets one of
// ReserveSize extra connections; with the reserve used up the next one
// waits for a release. Reserve connections stay until idle, like others.
func TestReservePool(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 1, ReserveSize: 1, ReserveTimeout: 20 * time.Millisecond}, d)
	c1 := acquire(t, p)
	a := recv(t, startWaiterOrDone(t, p))
	if a.err != nil || a.c == c1 {
		t.Fatalf("waiter past the reserve timeout: %v, %v; want a new connection", a.c, a.err)
	}
	if s := p.Stats(); s.Open != 2 || s.ReserveDials != 1 || d.dials.Load() != 2 {
		t.Fatalf("stats = %+v, dials %d", s, d.dials.Load())
	}
	b := startWaiter(t, context.Background(), p) // reserve used up: waits
	p.Release(c1)
	if r := recv(t, b); r.err != nil || r.c != c1 {
		t.Fatalf("waiter after the reserve is used up: %v, %v; want the released conn", r.c, r.err)
	}
	p.Release(c1)
	p.Release(a.c)
	if s := p.Stats(); s.Open != 2 || s.Idle != 2 || d.dials.Load() != 2 {
		t.Fatalf("after release: stats = %+v", s)
	}
}

// startWaiterOrDone is startWaiter for an Acquire that may finish before it
// is seen waiting (the reserve grants it).
func startWaiterOrDone(t *testing.T, p *Pool) <-chan result {
	t.Helper()
	ch := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := p.Acquire(ctx)
		ch <- result{c, err}
	}()
	return ch
}

// cancelOnlyCtx is a context that keeps its deadline to itself: Done would
// fail the test, as a CancelOnly context's waiter must never call it.
type cancelOnlyCtx struct {
	context.Context // for Err and Value
	t               *testing.T
	deadline        time.Time
	cancel          chan struct{}
}

func (c *cancelOnlyCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *cancelOnlyCtx) CancelDone() <-chan struct{} { return c.cancel }
func (c *cancelOnlyCtx) Done() <-chan struct{} {
	c.t.Error("Done called on a CancelOnly context")
	return nil
}

func (c *cancelOnlyCtx) Err() error {
	select {
	case <-c.cancel:
		return context.Canceled
	default:
		return nil
	}
}

func newCancelOnly(t *testing.T, d time.Duration) *cancelOnlyCtx {
	return &cancelOnlyCtx{Context: context.Background(), t: t, deadline: time.Now().Add(d), cancel: make(chan struct{})}
}

// The pool keeps CancelOnly waiters' deadlines with one timer: each fails
// with ErrWaitTimeout at its own deadline, also when a later waiter has an
// earlier one, and a cancelled one leaves at once.
func TestCancelOnlyWaitersDeadlines(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 1}, d)
	c := acquire(t, p)
	late := startWaiter(t, newCancelOnly(t, 400*time.Millisecond), p)
	start := time.Now()
	early := startWaiter(t, newCancelOnly(t, 100*time.Millisecond), p)
	gone := newCancelOnly(t, time.Hour)
	cancelled := startWaiter(t, gone, p)
	close(gone.cancel)
	if r := recv(t, cancelled); r.err == nil || r.c != nil {
		t.Fatalf("cancelled waiter: %v, %v", r.c, r.err)
	}
	r := recv(t, early)
	if !errors.Is(r.err, ErrWaitTimeout) {
		t.Fatalf("early waiter: %v, want ErrWaitTimeout", r.err)
	}
	if el := time.Since(start); el < 90*time.Millisecond {
		t.Fatalf("early waiter timed out after %v, before its deadline", el)
	}
	if s := p.Stats(); s.Waiting != 1 {
		t.Fatalf("after the early one: stats %+v; the late one waits on", s)
	}
	if r := recv(t, late); !errors.Is(r.err, ErrWaitTimeout) {
		t.Fatalf("late waiter: %v, want ErrWaitTimeout", r.err)
	}
	if s := p.Stats(); s.Waiting != 0 || s.WaitTimeouts != 2 {
		t.Fatalf("stats = %+v, want 0 waiting and 2 timeouts", s)
	}
	p.Release(c)
	// A waiter granted before its deadline gets the conn.
	c = acquire(t, p)
	w := startWaiter(t, newCancelOnly(t, 5*time.Second), p)
	p.Release(c)
	if r := recv(t, w); r.err != nil || r.c != c {
		t.Fatalf("granted waiter: %v, %v", r.c, r.err)
	}
	p.Release(c)
}

// TestAcquireAtReportsWaits: AcquireAt says whether a borrow ended at once
// (an idle connection) or not (a dial, a wait), which is what lets the
// proxy skip the clock read that would time a wait of nothing; ReleaseAt
// stamps the connection with the caller's time.
func TestAcquireAtReportsWaits(t *testing.T) {
	t.Parallel()
	d := &fakeDialer{}
	p := newTestPool(t, Options{Size: 1}, d)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, waited, err := p.AcquireAt(ctx, time.Now())
	if err != nil || !waited {
		t.Fatalf("first borrow (a dial): waited %v, err %v; want waited true", waited, err)
	}
	at := time.Now().Add(-time.Minute)
	p.ReleaseAt(c, at)
	if !c.lastUsed.Equal(at) {
		t.Fatalf("ReleaseAt stamped %v, want %v", c.lastUsed, at)
	}
	c2, waited, err := p.AcquireAt(ctx, time.Now())
	if err != nil || waited || c2 != c {
		t.Fatalf("idle borrow: conn %v (want %v), waited %v, err %v; want waited false", c2, c, waited, err)
	}
	type res struct {
		c      *Conn
		waited bool
		err    error
	}
	ch := make(chan res, 1)
	go func() {
		c, w, err := p.AcquireAt(ctx, time.Now())
		ch <- res{c, w, err}
	}()
	pgtest.WaitUntil(t, 2*time.Second, "waiter to queue", func() bool { return p.Stats().Waiting == 1 })
	p.Release(c)
	r := <-ch
	if r.err != nil || !r.waited || r.c != c {
		t.Fatalf("borrow after a wait: conn %v, waited %v, err %v; want the released conn, waited true", r.c, r.waited, r.err)
	}
	p.Release(r.c)
}

// TestLoginRetryConcurrentDials: with server_login_retry set and the
// server refusing, borrows that get the last failure again (RetryLaterError)
// run while other borrows' dials fail and record theirs. Before the fix
// the former read the failure's time after unlocking the pool, a data race
// with the latter's write (seen by -race in the fault mix,
// integration.TestFaultMixLedger, while PostgreSQL restarted).
func TestLoginRetryConcurrentDials(t *testing.T) {
	t.Parallel()
	refused := errors.New("connection refused")
	d := &fakeDialer{fail: func(int64) error { return refused }}
	p := newTestPool(t, Options{LoginRetry: 50 * time.Microsecond}, d)
	var wg sync.WaitGroup
	var retried, failed atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c, err := p.Acquire(ctx)
				cancel()
				var rl *RetryLaterError
				switch {
				case c != nil:
					t.Errorf("a dial that always fails lent a connection")
					return
				case errors.As(err, &rl):
					if !errors.Is(err, refused) || rl.Until.IsZero() {
						t.Errorf("RetryLaterError %v: not the last failure, or no time", err)
						return
					}
					retried.Add(1)
				case errors.Is(err, refused):
					failed.Add(1)
				default:
					t.Errorf("Acquire: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if retried.Load() == 0 || failed.Load() == 0 {
		t.Fatalf("%d dials failed and %d borrows got the failure again: want both", failed.Load(), retried.Load())
	}
	if st := p.Stats(); st.Open != 0 {
		t.Errorf("%d slots still open after every dial failed", st.Open)
	}
}
