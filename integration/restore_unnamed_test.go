package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestSessionRestoreKeepsUnnamedStatement: in session mode the client's
// unnamed statement is its own (nothing of it is rewritten), and it
// outlives a Sync. The startup-settings restore pgtide runs after a RESET
// must leave it alone: before, restoreSQL was parsed as the unnamed
// statement, and the client's next Bind of its own unnamed statement ran
// pgtide's query (here: 08P01, 2 parameters wanted).
func TestSessionRestoreKeepsUnnamedStatement(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "session"
	})
	tb, fb, _, _ := rawLoginKey(t, e.URL()+"&application_name=startup_app")
	send(t, tb,
		&pgproto3.Parse{Query: "RESET application_name"},
		&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	got, err := readToZ(tb, fb, 20*time.Second)
	if err != nil || !strings.Contains(fmt.Sprint(got), "C(RESET)") || strings.Contains(fmt.Sprint(got), "E(") {
		t.Fatalf("RESET: %v %v", got, err)
	}
	// The same unnamed statement, again (libpq PQexecPrepared(conn, "", ...)).
	send(t, tb, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	got, err = readToZ(tb, fb, 20*time.Second)
	if err != nil || fmt.Sprint(got) != "[*pgproto3.BindComplete C(RESET) Z(I)]" {
		t.Fatalf("the unnamed statement bound again after the restore: %v %v; want [*pgproto3.BindComplete C(RESET) Z(I)]", got, err)
	}
	send(t, tb, &pgproto3.Query{String: "SHOW application_name"})
	if got, err := readToZ(tb, fb, 20*time.Second); err != nil || fmt.Sprint(got) != "[T D(startup_app) C(SHOW) Z(I)]" {
		t.Fatalf("application_name after RESET: %v %v; want the startup value", got, err)
	}
}
