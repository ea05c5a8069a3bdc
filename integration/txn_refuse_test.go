package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestTxnRefusalAbortsTransaction: an error pgtide raises itself in
// transaction mode (a Bind or Describe of a statement the client never
// prepared, a duplicate named Parse) must abort the server's transaction as
// PostgreSQL's own error would: inside BEGIN the client sees status 'E' and
// COMMIT rolls back; in an implicit transaction (no BEGIN) what ran before
// the error up to the Sync is rolled back. Each case runs against
// PostgreSQL directly and through pgtide, and the outcomes must match.
// Before the fix pgtide answered with a fake error the server never saw:
// status 'T', and COMMIT (or the Sync) committed the row.
func TestTxnRefusalAbortsTransaction(t *testing.T) {
	r := newRelEnv(t, nil)
	setup := connect(t, r.DirectURL())
	if _, err := setup.Exec(ctxT(t, 10*time.Second), "CREATE TABLE refuse_t (v text)"); err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		status byte   // ReadyForQuery status after the refused batch
		commit string // COMMIT's tag ("" when the case sends none)
		rows   int64  // rows the case's INSERT left
	}
	cases := []struct {
		name   string
		begin  bool                                        // BEGIN; INSERT first, COMMIT after
		refuse func(tag string) []pgproto3.FrontendMessage // the batch pgtide refuses, Sync included
		code   string
	}{
		{"bind unknown statement in BEGIN", true, func(string) []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{&pgproto3.Bind{PreparedStatement: "nosuch"}, &pgproto3.Execute{}, &pgproto3.Sync{}}
		}, "26000"},
		{"describe unknown statement in BEGIN", true, func(string) []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{&pgproto3.Describe{ObjectType: 'S', Name: "nosuch"}, &pgproto3.Sync{}}
		}, "26000"},
		{"duplicate named Parse in BEGIN", true, func(string) []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{
				&pgproto3.Parse{Name: "dup", Query: "SELECT 1"},
				&pgproto3.Parse{Name: "dup", Query: "SELECT 2"},
				&pgproto3.Sync{},
			}
		}, "42P05"},
		{"implicit transaction: insert then unknown statement", false, func(tag string) []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{
				&pgproto3.Parse{Query: "INSERT INTO refuse_t VALUES ($1)"},
				&pgproto3.Bind{Parameters: [][]byte{[]byte(tag)}},
				&pgproto3.Execute{},
				&pgproto3.Bind{PreparedStatement: "nosuch"},
				&pgproto3.Execute{},
				&pgproto3.Sync{},
			}
		}, "26000"},
	}
	run := func(t *testing.T, url, tag string, c0 int) outcome {
		tc := cases[c0]
		c, fe := rawLogin(t, url)
		defer c.Close()
		if tc.begin {
			send(t, c, &pgproto3.Query{String: fmt.Sprintf("BEGIN; INSERT INTO refuse_t VALUES ('%s')", tag)})
			if _, err := readUntil(t, c, fe, 5*time.Second, 'Z'); err != nil {
				t.Fatal(err)
			}
		}
		send(t, c, tc.refuse(tag)...)
		expectError(t, c, fe, 5*time.Second, tc.code)
		m, err := readUntil(t, c, fe, 5*time.Second, 'Z')
		if err != nil {
			t.Fatal(err)
		}
		o := outcome{status: m.(*pgproto3.ReadyForQuery).TxStatus}
		if tc.begin {
			send(t, c, &pgproto3.Query{String: "COMMIT"})
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				m, err := fe.Receive()
				if err != nil {
					t.Fatal(err)
				}
				if cc, ok := m.(*pgproto3.CommandComplete); ok {
					o.commit = string(cc.CommandTag)
				}
				if _, ok := m.(*pgproto3.ReadyForQuery); ok {
					break
				}
			}
		}
		o.rows = queryInt(t, setup, "SELECT count(*) FROM refuse_t WHERE v = $1", tag)
		return o
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			direct := run(t, r.DirectURL(), fmt.Sprintf("direct-%d", i), i)
			tide := run(t, r.URL(), fmt.Sprintf("pgtide-%d", i), i)
			if direct != tide {
				t.Errorf("PostgreSQL: status %q, COMMIT %q, %d rows; pgtide: status %q, COMMIT %q, %d rows",
					direct.status, direct.commit, direct.rows, tide.status, tide.commit, tide.rows)
			}
			if tide.rows != 0 {
				t.Errorf("a transaction with an error left %d rows through pgtide", tide.rows)
			}
		})
	}
}
