package proxy

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// A panic in a login that holds its server (the red team found one in the
// metrics library, since fixed) closes that server instead of keeping it
// lent for good: every such login lost a PostgreSQL connection.
func TestLoginPanicGivesServerBack(t *testing.T) {
	e := startFwdEnv(t, nil)
	defer e.Close()
	var panics atomic.Int32
	e.srv.testHookJoined = func() {
		if panics.Add(1) == 1 {
			panic("test: a login panics holding its server")
		}
	}
	addr := e.srv.Addrs()[0].(*net.TCPAddr)
	url := fmt.Sprintf("host=127.0.0.1 port=%d user=bench dbname=db_transaction sslmode=disable", addr.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := pgconn.Connect(ctx, url); err == nil {
		c.Close(ctx)
		t.Fatal("the login whose hook panicked got in")
	}
	lent := func() (open, lent int) {
		for _, p := range e.srv.PoolRows() {
			if p.Database == "db_transaction" {
				open, lent = open+p.Open, lent+p.Lent
			}
		}
		return
	}
	pgtest.WaitUntil(t, 5*time.Second, "no server lent after the panic", func() bool {
		_, l := lent()
		return l == 0
	})
	if open, _ := lent(); open > 1 {
		t.Errorf("%d servers open", open)
	}
	c, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatalf("the next login: %v", err)
	}
	c.Close(ctx)
}
