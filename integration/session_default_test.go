package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestSessionSetDefaultReturnsToStartupSettings: session mode, where pgtide
// applies connect-time settings with SET: `SET x TO DEFAULT`,
// `SET x = DEFAULT` and `SET SESSION x TO DEFAULT` return x to the value the
// client gave at connect time, as PostgreSQL does, with the ParameterStatus
// PostgreSQL sends (TimeZone, DateStyle, application_name); inside a
// transaction block from its COMMIT on, and not at all after a ROLLBACK;
// so do SET TIME ZONE LOCAL and DEFAULT. A RESET followed by an ordinary
// SET in one transaction block restores at its COMMIT too.
// Before, the client was left with the server's defaults (the server's
// TimeZone, search_path, jit ...) and told the server's TimeZone. Simple
// protocol, extended with the unnamed statement, and extended with named
// statements bound again without a Parse (pgx's statement cache).
func TestSessionSetDefaultReturnsToStartupSettings(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "session"
		db.PoolSize = 3
	})
	defaults := []string{
		"",
		"SET TimeZone = 'UTC'; SET TimeZone TO DEFAULT",
		"SET search_path = public; SET search_path = DEFAULT",
		"SET jit = on; SET SESSION jit TO DEFAULT",
		"SET DateStyle = 'ISO'; set datestyle to default",
		"SET application_name = 'other'; SET application_name TO DEFAULT",
		"SET myapp.tenant = 'b'; SET myapp.tenant = DEFAULT",
		"SET TimeZone = 'UTC'; SET TimeZone TO DEFAULT", // again: a cached statement bound again
		"SET TimeZone = 'UTC'; BEGIN; SET TimeZone TO DEFAULT; SELECT 1; COMMIT",
		"SET TimeZone = 'UTC'; BEGIN; SET TimeZone TO DEFAULT; ROLLBACK",
		"RESET TimeZone",
		"SET search_path = public; BEGIN; SET jit = on; SAVEPOINT s; SET search_path TO DEFAULT; RELEASE SAVEPOINT s; COMMIT",
		"SET jit = off; BEGIN; SAVEPOINT s; SET jit TO DEFAULT; ROLLBACK TO SAVEPOINT s; COMMIT",
		"SET application_name = 'other'; SELECT 1; SET application_name TO DEFAULT; SELECT 2",
		"SET TIME ZONE 'UTC'; SET TIME ZONE LOCAL",
		"SET DateStyle = 'ISO'; SET application_name = 'x'; BEGIN; SET application_name TO DEFAULT; SET DateStyle = 'SQL'; SET SESSION TIME ZONE DEFAULT; COMMIT",
	}
	// An ordinary SET after a RESET in the same block: the RESET's restore
	// is still owed at the COMMIT (before, the SET's tag cancelled it).
	resetThenSet := []string{
		"",
		"SET TimeZone = 'UTC'; BEGIN; RESET ALL; SET jit = on; COMMIT",
	}
	modes := map[string]pgx.QueryExecMode{
		"simple":   pgx.QueryExecModeSimpleProtocol,
		"extended": pgx.QueryExecModeCacheDescribe,
		"prepared": pgx.QueryExecModeCacheStatement,
	}
	for name, mode := range modes {
		for sname, steps := range map[string][]string{"default": defaults, "reset_then_set": resetThenSet} {
			t.Run(name+"/"+sname, func(t *testing.T) {
				want := resetSteps(t, e.DirectURL(), mode, steps, nil)
				got := resetSteps(t, e.URL(), mode, steps, nil)
				for i := range want {
					if got[i] != want[i] {
						t.Errorf("through pgtide: %s\n        PostgreSQL: %s", got[i], want[i])
					}
				}
			})
		}
	}
}

// TestSessionSetDefaultPortalInBlock: in session mode, a SET ... TO DEFAULT
// prepared and bound to a named portal in one Sync of a transaction block
// and run by an Execute in a later one (nothing in that Sync names the
// statement) still returns the connect-time setting at COMMIT, as against
// PostgreSQL directly; after a ROLLBACK the SET is undone and nothing is
// set again.
func TestSessionSetDefaultPortalInBlock(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "session"
	})
	run := func(url, end string) []string {
		tb, fb, _, _ := rawLoginKey(t, url+"&timezone=Asia/Tokyo&options=-c%20work_mem%3D7MB")
		var out []string
		step := func(msgs ...pgproto3.FrontendMessage) {
			send(t, tb, msgs...)
			got, err := readToZ(tb, fb, 20*time.Second)
			if err != nil {
				t.Fatalf("%v: %v", got, err)
			}
			out = append(out, fmt.Sprint(got))
		}
		step(&pgproto3.Query{String: "SET TimeZone = 'UTC'; SET work_mem = '5MB'; BEGIN"})
		step(&pgproto3.Parse{Name: "d", Query: "SET work_mem TO DEFAULT"}, &pgproto3.Parse{Name: "z", Query: "SET TIME ZONE LOCAL"},
			&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "d"}, &pgproto3.Bind{DestinationPortal: "p2", PreparedStatement: "z"},
			&pgproto3.Sync{})
		step(&pgproto3.Execute{Portal: "p1"}, &pgproto3.Execute{Portal: "p2"}, &pgproto3.Sync{})
		step(&pgproto3.Query{String: end})
		step(&pgproto3.Query{String: "SELECT current_setting('work_mem'), current_setting('TimeZone')"})
		return out
	}
	for _, end := range []string{"COMMIT", "ROLLBACK"} {
		want := run(e.DirectURL(), end)
		got := run(e.URL(), end)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: through pgtide %v\n        PostgreSQL %v", end, got, want)
		}
	}
}
