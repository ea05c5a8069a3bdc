package integration

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestSIGINTClosesAtTransactionBoundary: after SIGINT an idle client is
// closed at once and a client inside a transaction finishes it, then gets
// 57P01 on its next statement; pgtide exits when both are gone.
func TestSIGINTClosesAtTransactionBoundary(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) { c.PoolMode = "transaction" })
	ctx := ctxT(t, 30*time.Second)
	idle := connect(t, e.URL())
	queryInt(t, idle, "SELECT 1")
	busy := connect(t, e.URL())
	tx, err := busy.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if err := e.tide.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waitRefused(t, e)
	if _, err := idle.Exec(ctx, "SELECT 1"); sqlState(err) != "57P01" {
		t.Fatalf("idle client after SIGINT: %v; want 57P01", err)
	}
	if _, err := tx.Exec(ctx, "SELECT 2"); err != nil {
		t.Fatalf("open transaction after SIGINT: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("COMMIT after SIGINT: %v", err)
	}
	if _, err := busy.Exec(ctx, "SELECT 1"); sqlState(err) != "57P01" {
		t.Fatalf("client after its transaction ended (SIGINT): %v; want 57P01", err)
	}
	if code, err := e.tide.Wait(5 * time.Second); err != nil || code != 0 {
		t.Fatalf("pgtide after SIGINT and the last transaction: code %d, %v", code, err)
	}
}

// TestAdminShutdownModes: the console's SHUTDOWN offers the signals'
// choices: WAIT_FOR_SERVERS = SIGINT, WAIT_FOR_CLIENTS = SIGTERM, and plain
// SHUTDOWN = exit now.
func TestAdminShutdownModes(t *testing.T) {
	t.Run("WAIT_FOR_SERVERS", func(t *testing.T) {
		a := newAdminEnv(t)
		ctx := ctxT(t, 30*time.Second)
		c := connect(t, a.URL())
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		adm := console(t, a.adminURL())
		mustAdmin(t, adm, "SHUTDOWN WAIT_FOR_SERVERS")
		waitRefused(t, a.env)
		if err := tx.Commit(ctx); err != nil {
			t.Fatalf("COMMIT after SHUTDOWN WAIT_FOR_SERVERS: %v", err)
		}
		if _, err := c.Exec(ctx, "SELECT 1"); sqlState(err) != "57P01" {
			t.Fatalf("after the transaction: %v; want 57P01", err)
		}
		if _, err := a.tide.Wait(5 * time.Second); err != nil {
			t.Fatalf("pgtide still running after SHUTDOWN WAIT_FOR_SERVERS and the last transaction")
		}
	})
	t.Run("WAIT_FOR_CLIENTS", func(t *testing.T) {
		a := newAdminEnv(t)
		c := connect(t, a.URL())
		queryInt(t, c, "SELECT 1")
		adm := console(t, a.adminURL())
		mustAdmin(t, adm, "SHUTDOWN WAIT_FOR_CLIENTS")
		waitRefused(t, a.env)
		for i := range 3 {
			if n := queryInt(t, c, "SELECT $1::int", i); n != int64(i) {
				t.Fatal(n)
			}
		}
		if _, err := a.tide.Wait(500 * time.Millisecond); !errors.Is(err, pgtest.ErrStillRunning) {
			t.Fatalf("pgtide exited after SHUTDOWN WAIT_FOR_CLIENTS with a client connected")
		}
		c.Close(ctxT(t, 5*time.Second))
		if _, err := a.tide.Wait(5 * time.Second); err != nil {
			t.Fatalf("pgtide still running 5 s after the last client left (SHUTDOWN WAIT_FOR_CLIENTS)")
		}
	})
	t.Run("immediate", func(t *testing.T) {
		a := newAdminEnv(t)
		ctx := ctxT(t, 30*time.Second)
		c := connect(t, a.URL())
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		adm := console(t, a.adminURL())
		start := time.Now()
		if _, err := adminRun(t, adm, "SHUTDOWN"); err != nil && !strings.Contains(err.Error(), "57P01") {
			t.Logf("SHUTDOWN: %v", err)
		}
		if _, err := a.tide.Wait(5 * time.Second); err != nil {
			t.Fatalf("pgtide still running 5 s after SHUTDOWN with a transaction open")
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("SHUTDOWN took %v; want it to exit at once", took)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err == nil {
			t.Fatalf("client's transaction still works after SHUTDOWN")
		}
	})
}
