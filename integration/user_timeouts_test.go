package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// Timeouts set in [users.NAME] override the global ones for that user's
// clients only, as PgBouncer's user-level settings do: query_timeout cancels
// the user's long query (57014) while another user's runs on, and
// idle_transaction_timeout = "0" keeps the user's idle transaction open
// while the global one closes another user's (25P03).
func TestUserTimeouts(t *testing.T) {
	pg := pgtest.Shared(t)
	u2 := uniqueName(t, "u2")
	pw2 := "Pw-" + u2
	pgtest.CreateRole(t, pg, u2, pw2)
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.Extra += "idle_transaction_timeout = \"400ms\"\n" +
			fmt.Sprintf("\n[users.%s]\npassword = %q\nquery_timeout = \"300ms\"\nidle_transaction_timeout = \"0\"\nreserve_pool_size = 2\n", u2, pw2)
	})
	e.secrets = append(e.secrets, pw2)
	ctx := ctxT(t, 60*time.Second)
	a := connect(t, e.URL())
	b := connect(t, e.tide.ConnString(e.DB, u2, pw2))

	if _, err := b.Exec(ctx, "SELECT pg_sleep(5)"); sqlState(err) != "57014" {
		t.Errorf("%s's pg_sleep(5) with its query_timeout 300ms: want 57014, got %v", u2, err)
	}
	if _, err := a.Exec(ctx, "SELECT pg_sleep(0.6)"); err != nil {
		t.Errorf("the other user's pg_sleep(0.6), no global query_timeout: %v", err)
	}

	// b goes idle in a transaction first, then a; a is closed by the global
	// idle_transaction_timeout, b (whose own is off) is not.
	btx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := btx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	atx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := atx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	// pgtide writes a its 25P03 when the timeout fires (no query is running).
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	msg, err := a.PgConn().ReceiveMessage(rctx)
	cancel()
	if er, ok := msg.(*pgproto3.ErrorResponse); ok {
		err = pgconn.ErrorResponseToPgError(er)
	}
	if sqlState(err) != "25P03" {
		t.Fatalf("the global idle_transaction_timeout on the other user's idle transaction: want 25P03, got %v", err)
	}
	if _, err := btx.Exec(ctx, "SELECT 2"); err != nil {
		t.Errorf("%s's idle transaction (its idle_transaction_timeout = \"0\") was closed: %v", u2, err)
	}
	if err := btx.Commit(ctx); err != nil {
		t.Errorf("commit: %v", err)
	}
}
