package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

func TestSharedSelect1(t *testing.T) {
	pg := Shared(t)
	if pg2 := Shared(t); pg2 != pg {
		t.Fatalf("Shared returned two different servers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.SuperConnString("postgres"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	// TCP connections must authenticate with SCRAM, not trust.
	var method string
	if err := conn.QueryRow(ctx,
		"SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' AND '127.0.0.1' IS NOT NULL LIMIT 1").Scan(&method); err != nil {
		t.Fatalf("pg_hba_file_rules: %v", err)
	}
	if method != "scram-sha-256" {
		t.Fatalf("host auth method = %q, want scram-sha-256", method)
	}
	bad, err := pgx.Connect(ctx, pg.ConnString("postgres", pg.SuperUser, "wrong"))
	if err == nil {
		bad.Close(ctx)
		t.Fatalf("connect with a wrong password succeeded")
	}
}

func TestRolesDatabasesAndRestart(t *testing.T) {
	pg := StartPostgres(t, WithSetting("application_name", "pgtest"))
	CreateRole(t, pg, "alice", "s3cr'et")
	CreateDatabase(t, pg, "alicedb", "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.ConnString("alicedb", "alice", "s3cr'et"))
	if err != nil {
		t.Fatalf("connect as alice: %v", err)
	}
	var user, db string
	if err := conn.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&user, &db); err != nil {
		t.Fatal(err)
	}
	if user != "alice" || db != "alicedb" {
		t.Fatalf("got %s/%s", user, db)
	}
	pg.Exec(t, "CREATE TABLE survives (x int); INSERT INTO survives VALUES (42)")
	pg.Restart(t)
	if err := conn.Ping(ctx); err == nil {
		t.Fatalf("connection survived a fast restart")
	}
	conn.Close(ctx)
	conn, err = pgx.Connect(ctx, pg.SuperConnString("postgres"))
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	defer conn.Close(ctx)
	var x int
	if err := conn.QueryRow(ctx, "SELECT x FROM survives").Scan(&x); err != nil || x != 42 {
		t.Fatalf("after restart: %d, %v", x, err)
	}
}
