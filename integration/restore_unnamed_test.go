package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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

// TestSessionRestoreFailureLeavesNoStatement: the startup-settings restore
// (session mode, after RESET) is prepared under a name of pgtide's own and
// closed in the same round trip. When the restore fails (here a startup
// setting that names a text search configuration dropped since), PostgreSQL
// skips every message up to the Sync, a Close before it too: the statement
// must still not stay behind on the client's server, where the client sees
// it in pg_prepared_statements and each further RESET adds one.
func TestSessionRestoreFailureLeavesNoStatement(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "session"
	})
	mon := super(t, e.pg, e.DB)
	ctx := ctxT(t, 60*time.Second)
	if _, err := mon.Exec(ctx, "CREATE TEXT SEARCH CONFIGURATION public.restore_fail_ts (COPY = pg_catalog.english)"); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(e.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["default_text_search_config"] = "public.restore_fail_ts"
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := mon.Exec(ctx, "DROP TEXT SEARCH CONFIGURATION public.restore_fail_ts"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := c.Exec(ctx, "RESET ALL", pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("RESET ALL: %v", err)
		}
	}
	var names []string
	rows, err := c.Query(ctx, "SELECT name FROM pg_prepared_statements ORDER BY name", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) != 0 {
		t.Fatalf("statements left on the client's server after failed restores: %v; want none", names)
	}
}
