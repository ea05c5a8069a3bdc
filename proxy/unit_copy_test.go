package proxy

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
	"github.com/pgtide/pgtide/proxy/config"
)

var (
	reqCopySimple = mustEncode(&pgproto3.Query{String: "COPY t FROM STDIN"})
	reqCopyData   = concat(
		mustEncode(&pgproto3.CopyData{Data: []byte("1\tone\n")}),
		mustEncode(&pgproto3.CopyDone{}),
	)
	// Extended COPY: the client pipelines Sync after Execute, before it
	// knows a COPY starts.
	reqCopyExtended = concat(
		mustEncode(&pgproto3.Parse{Query: "COPY t FROM STDIN"}),
		mustEncode(&pgproto3.Bind{}),
		mustEncode(&pgproto3.Execute{}),
		mustEncode(&pgproto3.Sync{}),
	)
)

// readUntil reads messages until one of type stop, returning the types seen.
func (c *rawClient) readUntil(t *testing.T, stop byte) string {
	t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var types []byte
	for {
		typ, _, err := c.rd.ReadMessage(1 << 20)
		if err != nil {
			t.Fatalf("after %q: %v", types, err)
		}
		types = append(types, typ)
		if typ == stop {
			return string(types)
		}
	}
}

func simpleCopy(t *testing.T, c *rawClient) {
	t.Helper()
	if _, err := c.nc.Write(reqCopySimple); err != nil {
		t.Fatal(err)
	}
	if got := c.readUntil(t, 'G'); got != "G" {
		t.Fatalf("COPY start: %q", got)
	}
	if _, err := c.nc.Write(reqCopyData); err != nil {
		t.Fatal(err)
	}
	if got := c.readUntil(t, 'Z'); got != "CZ" {
		t.Fatalf("COPY end: %q", got)
	}
}

// Transaction mode: once a simple-protocol COPY has had its ReadyForQuery
// (status I), the server goes back to the pool, as after any transaction.
func TestUnitCopySimpleTransactionModeReleasesServer(t *testing.T) {
	e := startFwdEnv(t, nil)
	defer e.Close()
	c := e.connect(t, string(config.PoolTransaction))
	defer c.Close()
	simpleCopy(t, c)
	pgtest.WaitUntil(t, 2*time.Second, "the server to go back to the pool after COPY", func() bool {
		ps, ok := e.poolStats("db_transaction")
		return ok && ps.Lent == 0 && ps.Idle == 1
	})
	// And the session still works.
	var types []byte
	if _, _, err := c.roundTrip(reqSimple, &types); err != nil || string(types) != "TDCZ" {
		t.Fatalf("query after COPY: %q %v", types, err)
	}
}

// Session mode: a client that leaves after a finished COPY has nothing
// outstanding; its server is reset and pooled at once, with no cancel
// request sent to it.
func TestUnitCopySimpleSessionModeDisconnect(t *testing.T) {
	e := startFwdEnv(t, nil)
	defer e.Close()
	c := e.connect(t, string(config.PoolSession))
	simpleCopy(t, c)
	start := time.Now()
	c.Close()
	pgtest.WaitUntil(t, 3*time.Second, "the server to be reset and pooled after the client left", func() bool {
		ps, ok := e.poolStats("db_session")
		return ok && ps.Lent == 0 && ps.Idle == 1
	})
	if n := e.pg.cancels.Load(); n != 0 {
		t.Fatalf("%d cancel requests sent to an idle server", n)
	}
	t.Logf("server pooled %v after the client left", time.Since(start))
}

// Extended COPY in transaction mode: the Sync pipelined after Execute gets
// no ReadyForQuery; the Sync after CopyDone does, and then the server is
// released.
func TestUnitCopyExtendedTransactionMode(t *testing.T) {
	e := startFwdEnv(t, nil)
	defer e.Close()
	c := e.connect(t, string(config.PoolTransaction))
	defer c.Close()
	if _, err := c.nc.Write(reqCopyExtended); err != nil {
		t.Fatal(err)
	}
	if got := c.readUntil(t, 'G'); got != "12G" {
		t.Fatalf("COPY start: %q", got)
	}
	if _, err := c.nc.Write(concat(reqCopyData, mustEncode(&pgproto3.Sync{}))); err != nil {
		t.Fatal(err)
	}
	if got := c.readUntil(t, 'Z'); got != "CZ" {
		t.Fatalf("COPY end: %q", got)
	}
	pgtest.WaitUntil(t, 2*time.Second, "the server to go back to the pool after COPY", func() bool {
		ps, ok := e.poolStats("db_transaction")
		return ok && ps.Lent == 0
	})
	var types []byte
	if _, _, err := c.roundTrip(reqSimple, &types); err != nil || string(types) != "TDCZ" {
		t.Fatalf("query after COPY: %q %v", types, err)
	}
}
