package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/proxy/wire"
)

// Errors returned by Acquire. Both are safe to retry later: nothing was sent
// to any server on the caller's behalf.
var (
	ErrClosed      = errors.New("pool is closed")
	ErrWaitTimeout = errors.New("timed out waiting for a server connection")
	// ErrWaitInterrupted: the waiter's Interrupt channel closed (a client's
	// cancel request for the query that waited).
	ErrWaitInterrupted = errors.New("wait for a server connection interrupted")
)

// Options size and time a pool. They may be changed live with SetOptions.
type Options struct {
	Size        int // most connections open at once (idle + lent + dialing)
	MinSize     int // connections kept open even when idle
	IdleTimeout time.Duration
	Lifetime    time.Duration
	// ReserveSize more may be opened for a borrower that has waited
	// ReserveTimeout (reserve_pool_size, reserve_pool_timeout): a burst
	// gets extra servers instead of queueing behind a full pool. They are
	// closed as any other, when idle for IdleTimeout.
	ReserveSize    int
	ReserveTimeout time.Duration
	// CheckQuery, when set, is run on an idle connection that has been idle
	// longer than CheckDelay before it is lent (server_check_query,
	// server_check_delay); a connection it fails on is closed. CheckTimeout
	// bounds it (0: 15s).
	CheckQuery   string
	CheckDelay   time.Duration
	CheckTimeout time.Duration
	// ConnectQuery, when set, is run once on each new connection right
	// after login (connect_query); if it fails, or leaves a transaction
	// open, the connection is closed and the dial counts as failed.
	// CheckTimeout bounds it too.
	ConnectQuery string
	// LoginRetry, when set, is how long after a failed dial the pool gives
	// every new dial the same error at once instead of trying the server
	// again (server_login_retry): a server that refuses logins, or is down,
	// is not hammered by every client that arrives.
	LoginRetry time.Duration
	// Limit, when set, is shared by every pool of one database (or user) and
	// bounds their connections together (max_db_connections).
	Limits []*Limiter
}

// Limiter counts connections across pools (max_db_connections,
// max_user_connections). A zero max means unlimited. When a pool waits only
// because of a limiter, the limiter asks the other pools sharing it to close
// an idle connection, and wakes the waiting pool when a slot frees.
type Limiter struct {
	max atomic.Int64
	cur atomic.Int64

	mu      sync.Mutex
	members map[*Pool]bool // pools sharing this limiter
	blocked map[*Pool]bool // pools with a waiter refused by this limiter
}

// NewLimiter returns a limiter allowing max connections (0 = unlimited).
func NewLimiter(max int) *Limiter {
	l := &Limiter{members: map[*Pool]bool{}, blocked: map[*Pool]bool{}}
	l.max.Store(int64(max))
	return l
}

// SetMax changes the limit; connections above it are not closed, only no
// new ones are opened.
func (l *Limiter) SetMax(max int) {
	l.max.Store(int64(max))
	l.wakeBlocked()
}

func (l *Limiter) take() bool {
	for {
		cur, max := l.cur.Load(), l.max.Load()
		if max > 0 && cur >= max {
			return false
		}
		if l.cur.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

func (l *Limiter) give() {
	l.cur.Add(-1)
	l.wakeBlocked()
}

// wakeBlocked lets pools refused by this limiter try again. It runs them
// in their own goroutines: the caller may hold another pool's lock.
func (l *Limiter) wakeBlocked() {
	l.mu.Lock()
	if len(l.blocked) == 0 {
		l.mu.Unlock()
		return
	}
	pools := make([]*Pool, 0, len(l.blocked))
	for p := range l.blocked {
		pools = append(pools, p)
	}
	clear(l.blocked)
	l.mu.Unlock()
	for _, p := range pools {
		go p.poke()
	}
}

func (l *Limiter) join(p *Pool) {
	l.mu.Lock()
	l.members[p] = true
	l.mu.Unlock()
}

func (l *Limiter) leave(p *Pool) {
	l.mu.Lock()
	delete(l.members, p)
	delete(l.blocked, p)
	l.mu.Unlock()
}

func (l *Limiter) block(p *Pool) {
	l.mu.Lock()
	l.blocked[p] = true
	l.mu.Unlock()
}

// reclaim closes one idle connection of another pool sharing l, if any.
func (l *Limiter) reclaim(except *Pool) {
	l.mu.Lock()
	pools := make([]*Pool, 0, len(l.members))
	for p := range l.members {
		if p != except {
			pools = append(pools, p)
		}
	}
	l.mu.Unlock()
	for _, p := range pools {
		if p.closeOneIdle() {
			return
		}
	}
}

// Stats is a snapshot of a pool's counters.
type Stats struct {
	Open, Idle, Lent, Waiting int
	Dialed, DialErrors        uint64
	WaitTimeouts              uint64
	ReserveDials              uint64        // connections opened into the reserve
	MaxWait                   time.Duration // longest current wait
}

// Pool lends server connections for one (database, user) pair. It knows
// nothing of clients or the protocol beyond dialing and health checks.
//
// Ownership: every field below mu is guarded by mu. Conns in idle are owned
// by the pool; lent conns by their borrower.
type Pool struct {
	dial func(ctx context.Context) (*Conn, error)
	log  zerolog.Logger

	mu      sync.Mutex
	opts    Options
	idle    []*Conn // LIFO: the most recently used is reused first
	waiters []*waiter
	open    int // idle + lent + dialing
	closed  bool
	// limitBlocked is the limiter that last refused a new connection.
	limitBlocked []*Limiter
	lastUsed     time.Time
	// The last failed dial and when it failed (server_login_retry).
	dialErr   error
	dialErrAt time.Time
	// closeBefore (unix ns): connections created up to then are closed
	// when released (RECONNECT, inspect.go).
	closeBefore atomic.Int64
	// conns are the open connections this pool dialed (MarkedOpen).
	conns map[*Conn]struct{}
	// byPID is conns by backend PID (HolderOf).
	byPID map[uint32]*Conn
	// changed is closed and dropped when a connection comes back or
	// closes (Changed); nil while nobody waits.
	changed chan struct{}
	// The deadlines of waiters whose context has a cheap cancel channel
	// (CancelOnly) are kept here, with one timer for the pool set to the
	// earliest (expireWaiters): a wait then makes no timer of its own.
	dlTimer *time.Timer
	dlNext  time.Time

	dialed, dialErrors, waitTimeouts atomic.Uint64
	reserveDials                     atomic.Uint64 // dials into the reserve (reserve_pool_size)

	stop chan struct{}
	done chan struct{}
}

type waiter struct {
	ch       chan grant // capacity 1; written once, under mu
	since    time.Time
	deadline time.Time // zero: the context alone ends the wait
}

// CancelOnly is a context that can say when it is cancelled without its
// deadline: CancelDone's channel closes on cancellation only. Acquire then
// keeps the deadline itself (one timer per pool, not one per wait) and
// never calls Done while waiting.
type CancelOnly interface {
	context.Context
	CancelDone() <-chan struct{}
}

// Interruptible is a context whose wait for a connection can also end by
// its Interrupt channel closing, without the context itself ending (the
// client's cancel request ends its query's wait, not its session). Acquire
// then returns ErrWaitInterrupted. Interrupt is called once, when a wait
// begins.
type Interruptible interface {
	Interrupt() <-chan struct{}
}

// grant is what a waiter receives: a connection, or permission to dial one.
type grant struct {
	conn *Conn
	dial bool
	err  error
}

// New starts a pool and its maintenance loop (min size, idle timeout,
// lifetime). dial opens one authenticated connection.
func New(opts Options, dial func(ctx context.Context) (*Conn, error), log zerolog.Logger) *Pool {
	p := &Pool{dial: dial, log: log, opts: opts, stop: make(chan struct{}), done: make(chan struct{}), lastUsed: time.Now()}
	for _, l := range opts.Limits {
		l.join(p)
	}
	go p.maintain()
	return p
}

// SetOptions applies new sizes and timeouts. Extra idle connections are
// closed by the maintenance loop; lent ones when they come back.
func (p *Pool) SetOptions(opts Options) {
	for _, l := range opts.Limits {
		l.join(p)
	}
	p.mu.Lock()
	grow := opts.Size+opts.ReserveSize > p.opts.Size+p.opts.ReserveSize || opts.ReserveTimeout < p.opts.ReserveTimeout
	p.opts = opts
	var grants []*waiter
	if grow {
		for len(p.waiters) > 0 && p.canOpenLocked(p.reserveDue(p.waiters[0])) {
			w := p.waiters[0]
			p.waiters = p.waiters[1:]
			p.openLocked()
			grants = append(grants, w)
		}
	}
	p.mu.Unlock()
	for _, w := range grants {
		w.ch <- grant{dial: true}
	}
}

// canOpenLocked takes a slot from every limiter when the pool may open one
// more connection (one of the reserve too, when reserve is set). A limiter
// that refuses remembers the pool, to wake it.
func (p *Pool) canOpenLocked(reserve bool) bool {
	p.limitBlocked = p.limitBlocked[:0]
	if size := p.opts.Size; size > 0 {
		if reserve {
			size += p.opts.ReserveSize
		}
		if p.open >= size {
			return false
		}
	}
	for i, l := range p.opts.Limits {
		if !l.take() {
			for _, l2 := range p.opts.Limits[:i] {
				l2.give()
			}
			l.block(p)
			p.limitBlocked = append(p.limitBlocked[:0], l)
			return false
		}
	}
	return true
}

// poke retries granting a waiter a new connection (a limiter freed up).
func (p *Pool) poke() {
	p.mu.Lock()
	w := p.dialWaiterLocked()
	p.mu.Unlock()
	if w != nil {
		w.ch <- grant{dial: true}
	}
}

// dialWaiterLocked takes the first waiter and a slot for it to dial into,
// if there is a waiter and room.
func (p *Pool) dialWaiterLocked() *waiter {
	if len(p.waiters) == 0 || p.closed || !p.canOpenLocked(p.reserveDue(p.waiters[0])) {
		return nil
	}
	w := p.waiters[0]
	p.waiters = p.waiters[1:]
	p.openLocked()
	return w
}

// openLocked counts a slot taken, and whether it is one of the reserve.
func (p *Pool) openLocked() {
	p.open++
	if p.opts.Size > 0 && p.open > p.opts.Size {
		p.reserveDials.Add(1)
	}
}

// reserveDue reports whether w has waited long enough for the reserve.
func (p *Pool) reserveDue(w *waiter) bool {
	return p.opts.ReserveSize > 0 && time.Since(w.since) >= p.opts.ReserveTimeout
}

// capLocked is how many connections may stay open: the size and the reserve.
func (p *Pool) capLocked() int {
	if p.opts.Size <= 0 {
		return 0
	}
	return p.opts.Size + p.opts.ReserveSize
}

// closeOneIdle closes the least recently used idle connection, if any.
func (p *Pool) closeOneIdle() bool {
	p.mu.Lock()
	if len(p.idle) == 0 {
		p.mu.Unlock()
		return false
	}
	c := p.idle[0]
	p.idle = append(p.idle[:0], p.idle[1:]...)
	p.mu.Unlock()
	p.Discard(c)
	return true
}

func (p *Pool) giveLimitsLocked() {
	for _, l := range p.opts.Limits {
		l.give()
	}
}

// Acquire lends a connection: an idle one that passes a liveness check, a
// newly dialed one if the pool has room, or, after waiting in FIFO order,
// one released by another borrower. ctx bounds the wait and the dial.
func (p *Pool) Acquire(ctx context.Context) (*Conn, error) {
	c, _, err := p.AcquireAt(ctx, time.Now())
	return c, err
}

// AcquireAt is Acquire for a caller that has just read the clock: now
// stands for the time of the call (the idle pool's bookkeeping and the
// lifetime check need no finer one), which saves the clock reads of a
// borrow that finds an idle connection. waited reports that the borrow
// did not end at once: it waited for a connection or dialed one.
func (p *Pool) AcquireAt(ctx context.Context, now time.Time) (c *Conn, waited bool, err error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, waited, ErrClosed
		}
		if waited {
			now = time.Now()
		}
		p.lastUsed = now
		if n := len(p.idle); n > 0 {
			c := p.idle[n-1]
			p.idle[n-1] = nil
			p.idle = p.idle[:n-1]
			opts := p.opts
			p.mu.Unlock()
			_ = c.Net.SetDeadline(time.Time{}) // none may outlive a borrower
			if p.expired(c, now) || !c.Alive() || !p.check(ctx, c, opts, now) {
				p.Discard(c)
				waited = true // the next look is later than now
				continue
			}
			return c, waited, nil
		}
		if p.canOpenLocked(p.opts.ReserveSize > 0 && p.opts.ReserveTimeout <= 0) {
			p.openLocked()
			p.mu.Unlock()
			c, err := p.dialOne(ctx)
			return c, true, err
		}
		w := &waiter{ch: make(chan grant, 1), since: time.Now()}
		if _, ok := ctx.(CancelOnly); ok {
			if dl, ok := ctx.Deadline(); ok {
				w.deadline = dl
				p.armDeadlineLocked(dl)
			}
		}
		var reserve *time.Timer // reserve_pool_timeout
		if p.opts.ReserveSize > 0 && p.opts.Size > 0 {
			reserve = time.NewTimer(p.opts.ReserveTimeout)
		}
		p.waiters = append(p.waiters, w)
		var reclaim []*Limiter
		if len(p.limitBlocked) > 0 {
			reclaim = append(reclaim, p.limitBlocked...)
			p.limitBlocked = p.limitBlocked[:0]
		}
		p.mu.Unlock()
		for _, l := range reclaim {
			// Full only because other pools hold the shared slots: ask
			// them for an idle one, as PgBouncer does.
			l.reclaim(p)
		}
		c, again, err := p.wait(ctx, w, reserve)
		if reserve != nil {
			reserve.Stop()
		}
		waited = true
		if again {
			continue
		}
		return c, waited, err
	}
}

// wait waits for w's grant, ctx, or the reserve timer (nil = none). again
// says the grant was a dead connection: the caller starts over.
func (p *Pool) wait(ctx context.Context, w *waiter, reserve *time.Timer) (c *Conn, again bool, err error) {
	var reserveC <-chan time.Time
	if reserve != nil {
		reserveC = reserve.C
	}
	var done <-chan struct{}
	if co, ok := ctx.(CancelOnly); ok && !w.deadline.IsZero() {
		done = co.CancelDone() // the deadline is the pool's (expireWaiters)
	} else {
		done = ctx.Done()
	}
	var intr <-chan struct{} // nil: never
	if ic, ok := ctx.(Interruptible); ok {
		intr = ic.Interrupt()
	}
	for {
		select {
		case <-reserveC:
			// Waited reserve_pool_timeout: a reserve slot, if one is free
			// (else the wait goes on, and releaseSlot may grant one).
			reserveC = nil
			p.mu.Lock()
			for i, x := range p.waiters {
				if x == w {
					if !p.closed && p.canOpenLocked(true) {
						p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
						p.openLocked()
						p.mu.Unlock()
						c, err := p.dialOne(ctx)
						return c, false, err
					}
					break
				}
			}
			p.mu.Unlock()
		case g := <-w.ch:
			if g.err != nil {
				if errors.Is(g.err, ErrWaitTimeout) {
					p.waitTimeouts.Add(1)
				}
				return nil, false, g.err
			}
			if g.dial {
				c, err := p.dialOne(ctx)
				return c, false, err
			}
			if !g.conn.Alive() {
				p.Discard(g.conn)
				return nil, true, nil
			}
			return g.conn, false, nil
		case <-intr:
			if p.withdraw(w) {
				return nil, false, ErrWaitInterrupted
			}
			// Granted (or timed out) concurrently: the grant wins.
			intr = nil
		case <-done:
			if !p.withdraw(w) { // granted (or timed out) concurrently: give it back
				g := <-w.ch
				switch {
				case g.conn != nil:
					p.Release(g.conn)
				case g.dial:
					p.releaseSlot(nil)
				}
			}
			err := ctx.Err()
			if errors.Is(err, context.DeadlineExceeded) {
				p.waitTimeouts.Add(1)
				return nil, false, ErrWaitTimeout
			}
			if err == nil {
				err = context.Canceled // CancelDone closed before Err says so
			}
			return nil, false, err
		}
	}
}

// withdraw takes w off the wait queue; false if it was no longer there
// (its grant is in w.ch, or on its way under mu).
func (p *Pool) withdraw(w *waiter) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// armDeadlineLocked makes sure the pool's timer fires by dl.
func (p *Pool) armDeadlineLocked(dl time.Time) {
	if !p.dlNext.IsZero() && !dl.Before(p.dlNext) {
		return // FIFO waiters with one query_wait_timeout: the usual case
	}
	p.dlNext = dl
	if p.dlTimer == nil {
		p.dlTimer = time.AfterFunc(time.Until(dl), p.expireWaiters)
		return
	}
	p.dlTimer.Reset(time.Until(dl))
}

// expireWaiters fails the waiters whose deadline has passed with
// ErrWaitTimeout and sets the timer for the next deadline.
func (p *Pool) expireWaiters() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	kept := p.waiters[:0]
	var next time.Time
	for _, w := range p.waiters {
		if !w.deadline.IsZero() && !now.Before(w.deadline) {
			w.ch <- grant{err: ErrWaitTimeout}
			continue
		}
		if !w.deadline.IsZero() && (next.IsZero() || w.deadline.Before(next)) {
			next = w.deadline
		}
		kept = append(kept, w)
	}
	clear(p.waiters[len(kept):])
	p.waiters = kept
	p.dlNext = next
	if !next.IsZero() && !p.closed {
		p.dlTimer.Reset(time.Until(next))
	}
}

// check runs server_check_query on c if it has been idle longer than
// server_check_delay, and reports whether c may be lent.
func (p *Pool) check(ctx context.Context, c *Conn, opts Options, now time.Time) bool {
	if opts.CheckQuery == "" || now.Sub(c.lastUsed) < opts.CheckDelay {
		return true
	}
	timeout := opts.CheckTimeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.Exec(cctx, opts.CheckQuery); err != nil || c.TxStatus != wire.TxIdle {
		p.log.Warn().Err(err).Msg("server_check_query failed; closing the server connection")
		return false
	}
	c.lastUsed = now
	return true
}

func (p *Pool) dialOne(ctx context.Context) (*Conn, error) {
	p.mu.Lock()
	if retry := p.opts.LoginRetry; retry > 0 && p.dialErr != nil && time.Since(p.dialErrAt) < retry {
		// Both under mu: another dial's failure rewrites them.
		err, until := p.dialErr, p.dialErrAt.Add(retry)
		p.mu.Unlock()
		p.releaseSlot(nil)
		return nil, &RetryLaterError{Err: err, Until: until}
	}
	connectQuery, timeout := p.opts.ConnectQuery, p.opts.CheckTimeout
	p.mu.Unlock()
	c, err := p.dial(ctx)
	if err == nil && connectQuery != "" {
		if err = runConnectQuery(ctx, c, connectQuery, timeout); err != nil {
			p.log.Warn().Err(err).Uint32("server_pid", c.PID).Msg("connect_query failed; closing the server connection")
			_ = c.Close()
		}
	}
	if err != nil {
		p.dialErrors.Add(1)
		if ctx.Err() == nil { // a dial cut short by its client says nothing about the server
			p.mu.Lock()
			p.dialErr, p.dialErrAt = err, time.Now()
			p.mu.Unlock()
		}
		p.releaseSlot(nil)
		return nil, err
	}
	p.dialed.Add(1)
	p.mu.Lock()
	p.dialErr = nil
	c.ID = connSeq.Add(1)
	c.pool = p
	if p.conns == nil {
		p.conns = map[*Conn]struct{}{}
	}
	p.conns[c] = struct{}{}
	if p.byPID == nil {
		p.byPID = map[uint32]*Conn{}
	}
	p.byPID[c.PID] = c
	if lt := p.opts.Lifetime; lt > 0 {
		// Up to 10% jitter so connections opened together do not all
		// expire together.
		c.lifetime = lt - time.Duration(randomUint64()%uint64(lt/10+1))
	}
	p.mu.Unlock()
	return c, nil
}

// runConnectQuery runs connect_query on a new connection. A server error
// keeps its code and message (wrapped), so the client that asked for the
// connection is told what PostgreSQL said.
func runConnectQuery(ctx context.Context, c *Conn, q string, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.Exec(qctx, q); err != nil {
		return fmt.Errorf("connect_query: %w", err)
	}
	if c.TxStatus != wire.TxIdle {
		return errors.New("connect_query left a transaction open")
	}
	return nil
}

// RetryLaterError is the error of the last failed dial, given again without
// dialing while server_login_retry has not passed since. Unwrap gives the
// original error, so a client sees what the server said.
type RetryLaterError struct {
	Err   error
	Until time.Time
}

func (e *RetryLaterError) Error() string {
	return e.Err.Error() + " (server_login_retry: not retried before " + e.Until.Format(time.TimeOnly) + ")"
}

func (e *RetryLaterError) Unwrap() error { return e.Err }

// releaseSlot frees the slot of a connection that was closed (c) or never
// opened (nil), handing it to the first waiter as permission to dial.
func (p *Pool) releaseSlot(c *Conn) {
	p.mu.Lock()
	if c != nil {
		delete(p.conns, c)
		if p.byPID[c.PID] == c {
			delete(p.byPID, c.PID)
		}
	}
	p.notifyLocked()
	p.open--
	p.giveLimitsLocked()
	w := p.dialWaiterLocked()
	p.mu.Unlock()
	if w != nil {
		w.ch <- grant{dial: true}
	}
}

// HolderOf returns the Holder of this pool's open connection to the
// backend with process ID pid, idle or lent; 0 when the pool has none.
// (The proxy uses it for the process ID of a NotificationResponse.)
func (p *Pool) HolderOf(pid uint32) uint32 {
	p.mu.Lock()
	c := p.byPID[pid]
	p.mu.Unlock()
	if c == nil {
		return 0
	}
	return c.Holder()
}

// Release returns a clean, idle connection (invariant 1: the caller has
// checked it). It goes straight to the first waiter if there is one. A
// connection that is not Reusable (a cancel request for it may still
// arrive, a message is written to it in part) is closed instead, as is one
// past its lifetime.
func (p *Pool) Release(c *Conn) { p.ReleaseAt(c, time.Now()) }

// ReleaseAt is Release for a caller that has just read the clock: now is
// when the connection was last used.
func (p *Pool) ReleaseAt(c *Conn, now time.Time) {
	c.lastUsed = now
	p.mu.Lock()
	if p.closed || p.expired(c, now) || !c.Reusable() || (p.opts.Size > 0 && p.open > p.capLocked()) {
		p.mu.Unlock()
		p.Discard(c)
		return
	}
	p.notifyLocked()
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		w.ch <- grant{conn: c}
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// Changed returns a channel closed the next time a connection comes back
// to the pool or closes: take it before looking at Stats or MarkedOpen, and
// wait on it, to wait for the pool to drain without polling (the admin
// console's PAUSE and WAIT_CLOSE).
func (p *Pool) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	return p.changed
}

func (p *Pool) notifyLocked() {
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

// Discard closes a connection that must not be reused and frees its slot.
func (p *Pool) Discard(c *Conn) {
	_ = c.Close()
	p.releaseSlot(c)
}

func (p *Pool) expired(c *Conn, now time.Time) bool {
	return (c.lifetime > 0 && now.Sub(c.created) > c.lifetime) || p.closeNeeded(c)
}

// Stats returns a snapshot of the pool's state.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{Open: p.open, Idle: len(p.idle), Waiting: len(p.waiters),
		Dialed: p.dialed.Load(), DialErrors: p.dialErrors.Load(), WaitTimeouts: p.waitTimeouts.Load(), ReserveDials: p.reserveDials.Load()}
	s.Lent = s.Open - s.Idle
	if len(p.waiters) > 0 {
		s.MaxWait = time.Since(p.waiters[0].since)
	}
	return s
}

// LastUsed is when a connection was last asked for.
func (p *Pool) LastUsed() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastUsed
}

// CloseIdle closes every idle connection now (RECONNECT, repointed database).
func (p *Pool) CloseIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		p.Discard(c)
	}
}

// Close closes idle connections, fails waiters and makes further Acquires
// fail. Lent connections are closed when released. Safe to call twice.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	idle, waiters := p.idle, p.waiters
	p.idle, p.waiters = nil, nil
	if p.dlTimer != nil {
		p.dlTimer.Stop()
	}
	p.mu.Unlock()
	for _, l := range p.opts.Limits {
		l.leave(p)
	}
	close(p.stop)
	<-p.done
	for _, w := range waiters {
		w.ch <- grant{err: ErrClosed}
	}
	for _, c := range idle {
		p.Discard(c)
	}
}

// maintain closes idle connections past server_idle_timeout or their
// lifetime and keeps min_pool_size connections open.
func (p *Pool) maintain() {
	defer close(p.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.sweep()
	}
}

func (p *Pool) sweep() {
	now := time.Now()
	p.mu.Lock()
	var drop []*Conn
	keep := p.idle[:0]
	over := 0
	if p.opts.Size > 0 && p.open > p.capLocked() {
		over = p.open - p.capLocked()
	}
	// idle[0] is the least recently used; drop from the bottom.
	for _, c := range p.idle {
		tooIdle := p.opts.IdleTimeout > 0 && now.Sub(c.lastUsed) > p.opts.IdleTimeout &&
			p.open-len(drop) > p.opts.MinSize
		if over > 0 || tooIdle || p.expired(c, now) {
			drop = append(drop, c)
			if over > 0 {
				over--
			}
			continue
		}
		keep = append(keep, c)
	}
	for i := len(keep); i < len(p.idle); i++ {
		p.idle[i] = nil
	}
	p.idle = keep
	need := 0
	for p.open-len(drop) < p.opts.MinSize && !p.closed {
		if !p.canOpenLocked(false) {
			break
		}
		p.open++ // canOpenLocked compares against open: count as we go
		need++
	}
	p.mu.Unlock()
	for _, c := range drop {
		p.Discard(c)
	}
	for range need {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		c, err := p.dialOne(ctx)
		cancel()
		if err != nil {
			p.log.Warn().Err(err).Msg("min_pool_size: server connection failed")
			continue
		}
		p.Release(c)
	}
}
