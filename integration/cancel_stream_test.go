package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestCancelWhileWaitingStreamedBind: in transaction mode a Bind large
// enough to be streamed (bindStream) waits for the pool's one server, held
// in another client's transaction, and the client cancels it. As for a
// buffered request, the client gets 57014 and the rest up to its Sync is
// skipped; before, the cancelled wait ended the session: the client's
// connection was closed with no error.
func TestCancelWhileWaitingStreamedBind(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		db.PoolSize = 1
	})
	setup := connect(t, e.URL())
	if _, err := setup.Exec(ctxT(t, 10*time.Second), "CREATE TABLE cwb (v text)"); err != nil {
		t.Fatal(err)
	}
	setup.Close(context.Background())

	tb, fb, pid, key := rawLoginKey(t, e.URL())
	send(t, tb, &pgproto3.Parse{Name: "s1", Query: "INSERT INTO cwb VALUES ($1)"}, &pgproto3.Sync{})
	if got, err := readToZ(tb, fb, 20*time.Second); err != nil || fmt.Sprint(got) != "[*pgproto3.ParseComplete Z(I)]" {
		t.Fatalf("prepare: %v %v", got, err)
	}

	holder := connect(t, e.URL())
	tx, err := holder.Begin(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctxT(t, 10*time.Second), "SELECT 1"); err != nil {
		t.Fatal(err)
	}

	bind, err := (&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte(strings.Repeat("x", 200<<10))}}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Its start only: pgtide streams the Bind and waits for a server.
	if _, err := tb.Write(bind[:16<<10]); err != nil {
		t.Fatal(err)
	}
	replies := readOneError(tb, fb)
	if got := fmt.Sprint(cancelUntilAnswered(t, e.tide.Addr, pid, key, replies)); got != "[E(ERROR 57014 canceling statement due to user request)]" {
		t.Fatalf("streamed Bind cancelled while waiting: %s", got)
	}
	if _, err := tb.Write(bind[16<<10:]); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	send(t, tb, &pgproto3.Execute{}, &pgproto3.Sync{})
	if got, err := readToZ(tb, fb, 20*time.Second); err != nil || fmt.Sprint(got) != "[Z(I)]" {
		t.Fatalf("Sync after the cancelled Bind: %v %v; want [Z(I)]", got, err)
	}
	send(t, tb, &pgproto3.Query{String: "SELECT count(*) FROM cwb"})
	if got, err := readToZ(tb, fb, 20*time.Second); err != nil || fmt.Sprint(got) != "[T D(0) C(SELECT 1) Z(I)]" {
		t.Fatalf("after the cancel: %v %v; want the session alive and nothing inserted", got, err)
	}
}

// TestCancelWhileWaitingStreamedQuerySessionMode: in session mode a Query
// large enough to be streamed waits for the client's first server; a cancel
// request answers it 57014 and the session goes on, as for a small one.
// Before, the cancelled wait closed the client's connection.
func TestCancelWhileWaitingStreamedQuerySessionMode(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "session"
		db.PoolSize = 1
	})
	holder := connect(t, e.URL())
	if _, err := holder.Exec(ctxT(t, 10*time.Second), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	tb, fb, pid, key := rawLoginKey(t, e.URL())
	q, err := (&pgproto3.Query{String: "SELECT 'ran' /* " + strings.Repeat("x", 200<<10) + " */"}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Write(q[:16<<10]); err != nil {
		t.Fatal(err)
	}
	replies := readToZAsync(tb, fb)
	want := "[E(ERROR 57014 canceling statement due to user request) Z(I)]"
	if got := fmt.Sprint(cancelUntilAnswered(t, e.tide.Addr, pid, key, replies)); got != want {
		t.Fatalf("streamed query cancelled while waiting for the first server: %s; want %s", got, want)
	}
	if _, err := tb.Write(q[16<<10:]); err != nil {
		t.Fatal(err)
	}
	holder.Close(context.Background())
	send(t, tb, &pgproto3.Query{String: "SELECT 'after'"})
	if got, err := readToZ(tb, fb, 20*time.Second); err != nil || fmt.Sprint(got) != "[T D(after) C(SELECT 1) Z(I)]" {
		t.Fatalf("after the cancel: %v %v", got, err)
	}
}
