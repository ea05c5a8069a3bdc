package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestHandoverOnlineRestart: with so_reuseport, a second pgtide starts on
// the port of a running one, the first gets SIGTERM, and clients that keep
// connecting (a new connection per query) and long-lived clients in
// transaction mode see no failure; the old process exits once its
// long-lived clients leave.
func TestHandoverOnlineRestart(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.DefaultPoolSize = 10
		c.MaxClientConn = 500
		c.ShutdownTimeout = "30s"
		c.Extra = "so_reuseport = true\n"
	})
	conf := e.conf.TOML(e.pg.Port)
	old := e.tide
	ctx := ctxT(t, 60*time.Second)

	var ok, failed atomic.Int64
	var errMu sync.Mutex
	var errs []string
	fail := func(what string, err error) {
		failed.Add(1)
		errMu.Lock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), what, err))
		}
		errMu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Short-lived clients: connect, query, disconnect, again.
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				c, err := pgx.Connect(ctx, e.URL())
				if err != nil {
					fail("connect", err)
					continue
				}
				var v int
				if err := c.QueryRow(ctx, "SELECT $1::int", i*1000000+n).Scan(&v); err != nil || v != i*1000000+n {
					fail("query", fmt.Errorf("%d: %w", v, err))
				} else {
					ok.Add(1)
				}
				c.Close(ctx)
			}
		}()
	}
	// Long-lived clients, connected to the old process, with transactions.
	longStop := make(chan struct{})
	var longWG sync.WaitGroup
	var longOK atomic.Int64
	for range 3 {
		c := connect(t, e.URL())
		longWG.Add(1)
		go func() {
			defer longWG.Done()
			defer c.Close(context.Background())
			for {
				select {
				case <-longStop:
					return
				default:
				}
				tx, err := c.Begin(ctx)
				if err != nil {
					fail("long-lived BEGIN", err)
					return
				}
				var v int
				if err := tx.QueryRow(ctx, "SELECT 7").Scan(&v); err != nil {
					fail("long-lived query", err)
					return
				}
				if err := tx.Commit(ctx); err != nil {
					fail("long-lived COMMIT", err)
					return
				}
				longOK.Add(1)
				time.Sleep(5 * time.Millisecond) // a client's pace
			}
		}()
	}

	pgtest.WaitUntil(t, 10*time.Second, "traffic through the old process", func() bool { return ok.Load() > 0 && longOK.Load() > 0 })
	beforeNew := ok.Load()
	fresh := pgtest.StartPgtideAt(t, conf, old.Port)
	pgtest.WaitUntil(t, 10*time.Second, "the new process to serve a client", func() bool {
		return ok.Load() > beforeNew && strings.Contains(fresh.Logs(), "client connected")
	})
	if err := old.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The old process stops accepting; new connections reach the new one.
	if !pgtest.Eventually(10*time.Second, func() bool { return strings.Contains(old.Logs(), "shutdown: waiting for clients") }) {
		t.Fatalf("old pgtide did not start its shutdown after SIGTERM")
	}
	atSIGTERM, longAtSIGTERM := ok.Load(), longOK.Load()
	// Both kinds of traffic go on: new clients on the new process, the
	// long-lived ones on the old.
	pgtest.WaitUntil(t, 10*time.Second, "traffic after SIGTERM", func() bool {
		return ok.Load() > atSIGTERM && longOK.Load() > longAtSIGTERM+10
	})
	if old.Exited() {
		t.Fatalf("old pgtide exited while its long-lived clients were still connected")
	}
	longDone := longOK.Load()
	close(longStop)
	longWG.Wait()
	if _, err := old.Wait(10 * time.Second); err != nil {
		t.Fatalf("old pgtide still running 10 s after its last client left")
	}
	afterOld := ok.Load()
	pgtest.WaitUntil(t, 10*time.Second, "traffic on the new process alone", func() bool { return ok.Load() > afterOld })
	close(stop)
	wg.Wait()

	t.Logf("short-lived queries: %d before the new process, %d by SIGTERM, %d in all; long-lived transactions: %d; failures: %d",
		beforeNew, atSIGTERM, ok.Load(), longDone, failed.Load())
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d failed connections or queries over the handover:\n%s", n, strings.Join(errs, "\n"))
	}
	if ok.Load() <= atSIGTERM || atSIGTERM <= beforeNew || longDone == 0 {
		t.Fatalf("too little traffic over the handover: %d/%d/%d queries, %d transactions", beforeNew, atSIGTERM, ok.Load(), longDone)
	}
	if !strings.Contains(fresh.Logs(), "client connected") {
		t.Fatalf("the new pgtide served no client")
	}
	// Only the new process is left, and it serves.
	c := connect(t, e.URL())
	if n := queryInt(t, c, "SELECT 1"); n != 1 {
		t.Fatal(n)
	}
}
