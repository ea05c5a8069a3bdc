package proxy

import (
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestWorkersReuseTrimClose: a finished job leaves its goroutine idle, the
// next job runs on it, a trim ends only workers idle since the previous
// trim, and close ends the idle ones and every busy one when its job ends.
func TestWorkersReuseTrimClose(t *testing.T) {
	var w workers
	idleIs := func(n int) {
		t.Helper()
		if !pgtest.Eventually(2*time.Second, func() bool { return w.idleCount() == n }) {
			t.Fatalf("%d idle workers, want %d", w.idleCount(), n)
		}
	}
	var wg sync.WaitGroup
	var first, second string
	wg.Add(1)
	w.run(func() { first = goroutineID(); wg.Done() })
	wg.Wait()
	idleIs(1)

	// The idle worker takes the next job: the same goroutine.
	release := make(chan struct{})
	wg.Add(1)
	w.run(func() { <-release; second = goroutineID(); wg.Done() })
	idleIs(0)
	close(release)
	wg.Wait()
	idleIs(1)
	if first != second {
		t.Fatalf("second job ran on goroutine %s, the first on %s: not reused", second, first)
	}

	w.trim() // idle since before this trim: kept until the next
	idleIs(1)
	wg.Add(1)
	w.run(wg.Done) // busy again, so idle since after the trim
	wg.Wait()
	idleIs(1)
	w.trim()
	idleIs(1)
	w.trim()
	idleIs(0)

	// Close: the idle one ends now, the busy one after its job.
	wg.Add(2)
	release = make(chan struct{})
	w.run(func() { <-release; wg.Done() })
	w.run(wg.Done)
	pgtest.Eventually(2*time.Second, func() bool { return w.idleCount() == 1 })
	w.close()
	idleIs(0)
	close(release)
	wg.Wait()
	idleIs(0) // the busy one ended instead of going idle
}

// goroutineID is the running goroutine's number, from its stack header.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := strings.Fields(string(buf))
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// TestWorkersBounded: a wave of concurrent jobs leaves at most
// maxIdleWorkers idle goroutines behind.
func TestWorkersBounded(t *testing.T) {
	var w workers
	defer w.close()
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range maxIdleWorkers * 2 {
		wg.Add(1)
		w.run(func() { <-release; wg.Done() })
	}
	close(release)
	wg.Wait()
	if !pgtest.Eventually(2*time.Second, func() bool { return w.idleCount() == maxIdleWorkers }) {
		t.Fatalf("%d idle workers after a wave of %d, want %d", w.idleCount(), maxIdleWorkers*2, maxIdleWorkers)
	}
	w.dropIdle()
	if n := w.idleCount(); n != 0 {
		t.Fatalf("%d idle workers after dropIdle", n)
	}
	var wg2 sync.WaitGroup
	wg2.Add(1)
	w.run(wg2.Done) // still runs jobs
	wg2.Wait()
}
