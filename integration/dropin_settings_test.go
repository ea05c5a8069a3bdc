package integration

import (
	"testing"
	"time"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestDatabaseServerLifetime: a [databases.NAME] server_lifetime retires
// that database's server connections at its own lifetime, while another
// database (the same PostgreSQL database under a second name) keeps the
// global server_lifetime and its server.
func TestDatabaseServerLifetime(t *testing.T) {
	var global string
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.Extra = "server_lifetime = \"1h\"\n"
		db.PoolSize = 1
		db.Extra = "server_lifetime = \"300ms\"\n"
		global = db.Name + "_global"
		c.Databases = append(c.Databases, dbConf{Name: global, DBName: db.Name, PoolSize: 1, Extra: "server_lifetime = \"\"\n"})
	})
	short := connect(t, e.URL())
	long := connect(t, e.tide.ConnString(global, e.User, e.Pass))
	mon := super(t, e.pg, e.DB)

	pidShort := queryInt(t, short, "SELECT pg_backend_pid()")
	pidLong := queryInt(t, long, "SELECT pg_backend_pid()")
	if pidShort == pidLong {
		t.Fatalf("both databases got backend %d: one pool?", pidShort)
	}
	// The short-lived database's server is retired and replaced.
	pgtest.WaitUntil(t, 20*time.Second, "a new server for the database with server_lifetime 300ms", func() bool {
		return queryInt(t, short, "SELECT pg_backend_pid()") != pidShort
	})
	pgtest.WaitUntil(t, 10*time.Second, "the retired backend to close", func() bool {
		return queryInt(t, mon, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pidShort) == 0
	})
	// The other database, on the global 1h, keeps its server.
	if got := queryInt(t, long, "SELECT pg_backend_pid()"); got != pidLong {
		t.Fatalf("database with the global server_lifetime moved from backend %d to %d", pidLong, got)
	}
	if n := queryInt(t, mon, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pidLong); n != 1 {
		t.Fatalf("backend %d of the global-lifetime database is gone", pidLong)
	}
}
