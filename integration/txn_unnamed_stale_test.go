package integration

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestTxnUnnamedStatementStaleServer: in transaction mode a client's unnamed
// statement may be parsed on one server and bound on another. A server that
// held an older unnamed statement of the same client must not count as
// holding the client's current one. pgx's QueryExecModeDescribeExec does
// exactly this (Parse "" + Describe + Sync, then Bind "" + Execute + Sync in
// a second round trip); through a pool of 2 shared with other clients, pgx's
// own TestInetCIDRArrayTranscodeIPNet/describe_exec had its Bind run the
// statement it had prepared for an earlier query ("number of array
// dimensions (10) exceeds the maximum allowed (6)"), and the same with
// scalar types would run the wrong query and return a wrong result.
//
// The steps are run straight against PostgreSQL and through pgtide (pool of
// 2, transaction mode) and the client's replies compared. Client B moves
// client A between the two servers: the pool lends its most recently used
// idle server first, so a B holding a transaction open decides which one A
// gets.
func TestTxnUnnamedStatementStaleServer(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		db.PoolSize = 2
	})
	q1 := "SELECT $1::int4 + 1"
	q2 := "SELECT $1::text || '!'"
	parse := func(q string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: q},
			&pgproto3.Describe{ObjectType: 'S'}, &pgproto3.Sync{}}
	}
	bind := []pgproto3.FrontendMessage{&pgproto3.Bind{Parameters: [][]byte{[]byte("41")}},
		&pgproto3.Execute{}, &pgproto3.Sync{}}
	begin := []pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}}
	commit := []pgproto3.FrontendMessage{&pgproto3.Query{String: "COMMIT"}}
	type step struct {
		b    bool // client B, else A
		msgs []pgproto3.FrontendMessage
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{
			// A parses q1 on server 2, q2 on server 1, and binds on server
			// 2, whose unnamed statement is A's older q1.
			name: "parse_elsewhere",
			steps: []step{
				{true, begin}, {false, parse(q1)}, {true, commit},
				{false, parse(q2)},
				{true, begin}, {false, bind}, {true, commit},
			},
		},
		{
			// A simple query on server 1 destroys A's unnamed statement;
			// server 2 still holds q1, which A's Bind must not reach
			// (PostgreSQL: 26000).
			name: "query_elsewhere",
			steps: []step{
				{true, begin}, {false, parse(q1)}, {true, commit},
				{false, []pgproto3.FrontendMessage{&pgproto3.Query{String: "SELECT 1"}}},
				{true, begin}, {false, bind}, {true, commit},
			},
		},
		{
			// A Close of the unnamed statement on server 1 (which A's
			// re-Parse made A's); server 2 still holds q1.
			name: "close_elsewhere",
			steps: []step{
				{true, begin}, {false, parse(q1)}, {true, commit},
				{false, []pgproto3.FrontendMessage{&pgproto3.Bind{Parameters: [][]byte{[]byte("1")}},
					&pgproto3.Execute{}, &pgproto3.Close{ObjectType: 'S'}, &pgproto3.Sync{}}},
				{true, begin}, {false, bind}, {true, commit},
			},
		},
	}
	run := func(t *testing.T, url string, steps []step) []string {
		ta, fa := rawLogin(t, url)
		tb, fb := rawLogin(t, url)
		var out []string
		for i, s := range steps {
			c, fe, who := net.Conn(ta), fa, "A"
			if s.b {
				c, fe, who = tb, fb, "B"
			}
			send(t, c, s.msgs...)
			got, err := readToZ(c, fe, 20*time.Second)
			if err != nil {
				t.Fatalf("step %d (%s): %v after %v", i, who, err, got)
			}
			out = append(out, fmt.Sprintf("%d %s %v", i, who, got))
		}
		send(t, ta, &pgproto3.Terminate{})
		send(t, tb, &pgproto3.Terminate{})
		return out
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := run(t, e.DirectURL(), tc.steps)
			got := run(t, e.URL(), tc.steps)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("through pgtide:\n%s\nstraight to PostgreSQL:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}
