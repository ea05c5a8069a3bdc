package integration

// Borrowing a server for a client: what the client sees when the servers
// it is given fail while pgtide brings them to its settings.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestBorrowServersDieDuringParamSync: both idle servers die just as they
// are lent (after the pool's liveness check, while pgtide sets the
// client's application_name on them). pgtide tries a second one, and when
// that fails too the client gets FATAL 08006, not a bare close, and
// neither dead server goes back to the pool. Before the fix the second
// failure returned the dead server to the pool (it looked idle) and closed
// the client's connection without a word.
func TestBorrowServersDieDuringParamSync(t *testing.T) {
	pg := pgtest.Shared(t)
	relay := startFaultRelay(t, pg.Addr())
	mport, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &relEnv{}
	r.env = newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.PGPort = relay.port()
		c.Extra = fmt.Sprintf("metrics_listen = \"127.0.0.1:%d\"\n", mport)
		db.PoolSize = 2
	})
	r.metrics = fmt.Sprintf("http://127.0.0.1:%d", mport)
	ctx := ctxT(t, 30*time.Second)

	victim := connect(t, r.URL()+"&application_name=victim")
	// Two other clients hold both servers at once, so that each is left
	// with their application_name: the victim's next borrow must set its
	// own on whichever it gets.
	var txs []pgx.Tx
	for range 2 {
		c := connect(t, r.URL()+"&application_name=other")
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		queryIntTx(t, tx, "SELECT 1")
		txs = append(txs, tx)
	}
	for _, tx := range txs {
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pgtest.WaitUntil(t, 5*time.Second, "both servers idle", func() bool {
		total, active, _ := r.poolServers(t)
		return total == 2 && active == 0
	})

	relay.cut.Store(true)
	_, err = victim.Exec(ctx, "SELECT 1")
	relay.cut.Store(false)
	if st := sqlState(err); st != "08006" {
		t.Fatalf("the client's query on two servers that died under pgtide's SET: %v (SQLSTATE %q); want 08006", err, st)
	}
	if total, _, _ := r.poolServers(t); total != 0 {
		t.Errorf("%v server(s) left in the pool after both died: a dead one went back", total)
	}
	// The pool recovers: a new client gets a new server.
	c := connect(t, r.URL())
	if n := queryInt(t, c, "SELECT 1"); n != 1 {
		t.Fatalf("SELECT 1 after the failure: %d", n)
	}
	_ = c.Close(context.Background())
}
