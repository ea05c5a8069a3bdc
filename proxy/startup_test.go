package proxy

import (
	"strings"
	"testing"
)

// TestStartupNamesCut: user and database names longer than PostgreSQL's
// 63 bytes are cut to that, as PostgreSQL's ProcessStartupPacket does, in
// the returned names and in the parameters; a missing database is the
// user's name. Before, a 10 KB name was kept whole per login (an audit
// filled the auth_query cache with 98 MiB of them).
func TestStartupNamesCut(t *testing.T) {
	long := strings.Repeat("u", 10000)
	params := map[string]string{"user": long}
	user, db, err := startupNames(params)
	if err != nil {
		t.Fatal(err)
	}
	if user != long[:63] || db != long[:63] || params["user"] != user || params["database"] != db {
		t.Errorf("got user %d bytes, database %d bytes, params %d/%d bytes; want 63 each", len(user), len(db), len(params["user"]), len(params["database"]))
	}
	params = map[string]string{"user": "alice", "database": "app"}
	if user, db, _ := startupNames(params); user != "alice" || db != "app" {
		t.Errorf("short names changed: %q %q", user, db)
	}
}
