package proxy

import "sync"

// workers runs logins and resumed sessions on goroutines kept between
// jobs. A login or a session's first transaction grows its goroutine's
// stack to 16-32 KB; a new goroutine starts small and copies its whole
// stack at each doubling, which was about a tenth of a `pgbench -C`
// login's user time. A kept goroutine starts its next job on the stack it
// already grew.
//
// Idle workers are bounded (maxIdleWorkers) and end once idle through a
// whole sweep of the parker (trim, every parkAfter), when a wave of parked
// logins settles (dropIdle, with the heap trim), or at close: a wave of
// logins leaves no goroutines behind. The garbage collector still
// shrinks an idle worker's stack as it would any goroutine's.
//
// Owned by its Server; every method is safe for concurrent use.
type workers struct {
	mu     sync.Mutex
	idle   []*worker // LIFO: the top has the warmest stack; gen rises bottom to top
	gen    uint64    // trims so far
	closed bool
}

// worker is one kept goroutine, waiting on job while idle. A nil job ends it.
type worker struct {
	job chan func()
	gen uint64 // workers.gen when it went idle
}

// maxIdleWorkers bounds the goroutines kept idle: a few KB of stack each,
// enough for the logins and sessions a busy pool runs at once.
const maxIdleWorkers = 64

// run runs f on an idle worker, or on a new goroutine that becomes one.
func (w *workers) run(f func()) {
	w.mu.Lock()
	if n := len(w.idle); n > 0 {
		wk := w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		wk.job <- f // buffered: never blocks
		return
	}
	w.mu.Unlock()
	go w.work(f)
}

// work runs f, then further jobs while the worker is wanted.
func (w *workers) work(f func()) {
	var wk *worker
	for f != nil {
		f()
		if wk == nil {
			wk = &worker{job: make(chan func(), 1)}
		}
		w.mu.Lock()
		if w.closed || len(w.idle) >= maxIdleWorkers {
			w.mu.Unlock()
			return
		}
		wk.gen = w.gen
		w.idle = append(w.idle, wk)
		w.mu.Unlock()
		f = <-wk.job
	}
}

// trim ends the workers that have been idle since the previous trim.
func (w *workers) trim() {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for n < len(w.idle) && w.idle[n].gen < w.gen {
		w.idle[n].job <- nil
		n++
	}
	if n > 0 {
		k := copy(w.idle, w.idle[n:])
		clear(w.idle[k:])
		w.idle = w.idle[:k]
	}
	w.gen++
}

// dropIdle ends every idle worker now: a settled wave of logins gives its
// memory back (trimNow).
func (w *workers) dropIdle() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dropIdleLocked()
}

func (w *workers) dropIdleLocked() {
	for i, wk := range w.idle {
		wk.job <- nil
		w.idle[i] = nil
	}
	w.idle = w.idle[:0]
}

// close ends the idle workers, and every busy one when its job returns.
func (w *workers) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	w.dropIdleLocked()
}

// idleCount is the number of idle workers (tests count goroutines).
func (w *workers) idleCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.idle)
}
