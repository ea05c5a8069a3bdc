package integration

// Transaction mode, issue 12 items 4 and 5: SQL-level PREPARE / EXECUTE /
// DEALLOCATE follow the client onto whichever server it gets (they share
// one namespace with protocol-level statements, as in PostgreSQL), and a
// statement whose types changed under DDL is prepared afresh when the client
// prepares its text again. Each scenario runs straight against PostgreSQL
// too, so a wrong expectation is told apart from a pgtide bug.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// sqlPrepEnv is a transaction-mode pgtide with two servers and a shuffler
// that moves a client to the other server on each swap.
func sqlPrepEnv(t *testing.T) (*env, *xshuffler) {
	t.Helper()
	e := drvTxnEnv(t, 2)
	sh := &xshuffler{}
	for i := range sh.h {
		sh.h[i] = newXholder(t, e.URL())
	}
	t.Cleanup(sh.close)
	if err := sh.start(); err != nil {
		t.Fatal(err)
	}
	return e, sh
}

// connectMode opens a pgx connection with the given default exec mode.
func connectMode(t testing.TB, url string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect %s: %v", redact(url), err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// wantPgErr fails unless err is a PostgreSQL error with code whose message
// contains msg.
func wantPgErr(t *testing.T, what string, err error, code, msg string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != code || !strings.Contains(pe.Message, msg) {
		t.Fatalf("%s: got %v, want SQLSTATE %s with %q", what, err, code, msg)
	}
}

// sqlPrepareScenario is the client's side: swap moves it to the other
// server (a no-op straight against PostgreSQL); it returns the backend PIDs
// its transactions ran on.
func sqlPrepareScenario(t *testing.T, url string, swap func()) map[uint32]bool {
	ctx := ctxT(t, 90*time.Second)
	a := connectMode(t, url, pgx.QueryExecModeSimpleProtocol)
	must := func(sql string) {
		t.Helper()
		if _, err := a.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	pids := map[uint32]bool{}
	must("CREATE TABLE sp_items (a int PRIMARY KEY, b text)")
	swap()
	must("PREPARE ins (int, text) AS INSERT INTO sp_items VALUES ($1, $2)")
	swap()
	must(`PREPARE "Cnt" AS SELECT count(*), coalesce(sum(a), 0) FROM sp_items WHERE a >= $1`)
	total := int64(0)
	for i := 1; i <= 20; i++ {
		swap()
		total += int64(i)
		var n, sum int64
		var pid uint32
		if i%2 == 0 {
			tx, err := a.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf("/* x */ EXECUTE ins(%d, 'v%d')", i, i)); err != nil {
				t.Fatalf("round %d: EXECUTE ins in a transaction: %v", i, err)
			}
			if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				t.Fatal(err)
			}
			if err := tx.QueryRow(ctx, `execute "Cnt" (0)`).Scan(&n, &sum); err != nil {
				t.Fatalf("round %d: EXECUTE \"Cnt\": %v", i, err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		} else {
			tag, err := a.Exec(ctx, fmt.Sprintf("EXECUTE ins(%d, 'v%d')", i, i))
			if err != nil || tag.String() != "INSERT 0 1" {
				t.Fatalf("round %d: EXECUTE ins: %v %v", i, tag, err)
			}
			if err := a.QueryRow(ctx, `EXECUTE "Cnt"(0)`).Scan(&n, &sum); err != nil {
				t.Fatalf("round %d: EXECUTE \"Cnt\": %v", i, err)
			}
			if err := a.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				t.Fatal(err)
			}
		}
		pids[pid] = true
		if n != int64(i) || sum != total {
			t.Fatalf("round %d: count %d sum %d, want %d %d", i, n, sum, i, total)
		}
	}

	// Another client never sees A's names.
	swap()
	b := connectMode(t, url, pgx.QueryExecModeSimpleProtocol)
	_, err := b.Exec(ctx, "EXECUTE ins(100, 'b')")
	wantPgErr(t, "another client's EXECUTE ins", err, "26000", `prepared statement "ins" does not exist`)

	// Errors name the client's statement, never pgtide's.
	_, err = a.Exec(ctx, `PREPARE "Cnt" AS SELECT 1`)
	wantPgErr(t, "PREPARE of a name in use", err, "42P05", `prepared statement "Cnt" already exists`)
	_, err = a.Exec(ctx, "EXECUTE ins(1)")
	wantPgErr(t, "EXECUTE with too few parameters", err, "42601", `prepared statement "ins"`)

	// A PREPARE that fails leaves the name free.
	_, err = a.Exec(ctx, "PREPARE bad AS SELECT * FROM sp_not_there")
	wantPgErr(t, "PREPARE of a missing table", err, "42P01", "sp_not_there")
	swap()
	must("PREPARE bad AS SELECT 7")
	swap()
	if n := queryInt(t, a, "EXECUTE bad"); n != 7 {
		t.Fatalf("EXECUTE bad = %d", n)
	}

	// A multi-statement query that prepares and executes.
	swap()
	res, err := a.PgConn().Exec(ctx, "PREPARE m (int) AS SELECT $1 * 2; EXECUTE m(21); SELECT 'EXECUTE m(1); PREPARE x'").ReadAll()
	if err != nil || len(res) != 3 || len(res[1].Rows) != 1 || string(res[1].Rows[0][0]) != "42" {
		t.Fatalf("PREPARE; EXECUTE in one query: %v %+v", err, res)
	}
	swap()
	if n := queryInt(t, a, "EXECUTE m(4)"); n != 8 {
		t.Fatalf("EXECUTE m(4) = %d", n)
	}
	// EXPLAIN EXECUTE and CREATE TABLE AS EXECUTE name statements too.
	swap()
	if _, err := a.Exec(ctx, "EXPLAIN (COSTS OFF) EXECUTE m(5)"); err != nil {
		t.Fatalf("EXPLAIN EXECUTE: %v", err)
	}
	swap()
	must("CREATE TEMP TABLE sp_m AS EXECUTE m(6); DROP TABLE sp_m")

	// Prepared statements outlive a rolled-back transaction; a PREPARE in
	// a failed one does not happen.
	swap()
	must("BEGIN")
	must("PREPARE rb AS SELECT 6")
	must("ROLLBACK")
	swap()
	if n := queryInt(t, a, "EXECUTE rb"); n != 6 {
		t.Fatalf("EXECUTE rb = %d", n)
	}
	must("BEGIN")
	_, err = a.Exec(ctx, "SELECT 1/0")
	wantPgErr(t, "division by zero", err, "22012", "division by zero")
	_, err = a.Exec(ctx, "PREPARE ft AS SELECT 1")
	wantPgErr(t, "PREPARE in a failed transaction", err, "25P02", "current transaction is aborted")
	must("ROLLBACK")
	swap()
	_, err = a.Exec(ctx, "EXECUTE ft")
	wantPgErr(t, "EXECUTE of a PREPARE that failed", err, "26000", `prepared statement "ft" does not exist`)
	must("PREPARE ft AS SELECT 2")
	// Nor does a DEALLOCATE there, or one after an error in its query.
	must("BEGIN")
	_, err = a.Exec(ctx, "SELECT 1/0")
	wantPgErr(t, "division by zero", err, "22012", "division by zero")
	_, err = a.Exec(ctx, "DEALLOCATE ft")
	wantPgErr(t, "DEALLOCATE in a failed transaction", err, "25P02", "current transaction is aborted")
	must("ROLLBACK")
	_, err = a.Exec(ctx, "SELECT 1/0; DEALLOCATE ft")
	wantPgErr(t, "DEALLOCATE after an error", err, "22012", "division by zero")
	swap()
	if n := queryInt(t, a, "EXECUTE ft"); n != 2 {
		t.Fatalf("EXECUTE ft after DEALLOCATEs that did not run = %d", n)
	}

	// DEALLOCATE, then the name is free again; twice is an error.
	swap()
	if tag, err := a.Exec(ctx, "DEALLOCATE ins"); err != nil || tag.String() != "DEALLOCATE" {
		t.Fatalf("DEALLOCATE ins: %v %v", tag, err)
	}
	swap()
	_, err = a.Exec(ctx, "EXECUTE ins(50, 'z')")
	wantPgErr(t, "EXECUTE after DEALLOCATE", err, "26000", `prepared statement "ins" does not exist`)
	_, err = a.Exec(ctx, "DEALLOCATE ins")
	wantPgErr(t, "DEALLOCATE twice", err, "26000", `prepared statement "ins" does not exist`)
	must("PREPARE ins AS SELECT $1::int + 100")
	swap()
	if n := queryInt(t, a, "EXECUTE ins(1)"); n != 101 {
		t.Fatalf("EXECUTE of the new ins = %d", n)
	}
	must(`DEALLOCATE PREPARE "Cnt"`)
	must("BEGIN; DEALLOCATE ft; COMMIT")
	swap()
	_, err = a.Exec(ctx, `EXECUTE "Cnt"(0)`)
	wantPgErr(t, "EXECUTE after DEALLOCATE PREPARE", err, "26000", `prepared statement "Cnt" does not exist`)
	_, err = a.Exec(ctx, "EXECUTE ft")
	wantPgErr(t, "EXECUTE after DEALLOCATE in a block", err, "26000", `prepared statement "ft" does not exist`)

	// The extended protocol: an unnamed Parse of PREPARE, EXECUTE and
	// DEALLOCATE, and named ones of EXECUTE (pgx's statement cache), run
	// again on the other server.
	c := connectMode(t, url, pgx.QueryExecModeCacheStatement)
	swap()
	if _, err := c.PgConn().ExecParams(ctx, "PREPARE px (int) AS SELECT $1 + 1", nil, nil, nil, nil).Close(); err != nil {
		t.Fatalf("unnamed Parse of PREPARE: %v", err)
	}
	swap()
	r := c.PgConn().ExecParams(ctx, "EXECUTE px(41)", nil, nil, nil, nil).Read()
	if r.Err != nil || len(r.Rows) != 1 || string(r.Rows[0][0]) != "42" {
		t.Fatalf("unnamed Parse of EXECUTE: %v %v", r.Err, r.Rows)
	}
	for i := 0; i < 3; i++ {
		swap()
		// No arguments (a utility statement takes none), but pgx's
		// statement cache still prepares the text under a name.
		if n := queryInt(t, c, fmt.Sprintf("EXECUTE px(%d)", i%2)); n != int64(i%2+1) {
			t.Fatalf("named Parse of EXECUTE px(%d) = %d", i, n)
		}
	}
	swap()
	if _, err := c.PgConn().ExecParams(ctx, "DEALLOCATE px", nil, nil, nil, nil).Close(); err != nil {
		t.Fatalf("unnamed Parse of DEALLOCATE: %v", err)
	}
	_, err = c.Exec(ctx, "EXECUTE px(1)")
	wantPgErr(t, "EXECUTE after an extended DEALLOCATE", err, "26000", `prepared statement "px" does not exist`)

	// Prepared and deallocated per request: nothing stays on the server.
	for i := 0; i < 30; i++ {
		must("PREPARE per_req AS SELECT 'per request body'")
		must("EXECUTE per_req")
		must("DEALLOCATE per_req")
	}
	if n := queryInt(t, a, "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%per request body%'"); n != 0 {
		t.Fatalf("%d statements prepared per request are still on the server", n)
	}

	// DEALLOCATE ALL.
	must("PREPARE x1 AS SELECT 1")
	swap()
	must("DEALLOCATE ALL")
	swap()
	_, err = a.Exec(ctx, "EXECUTE m(1)")
	wantPgErr(t, "EXECUTE after DEALLOCATE ALL", err, "26000", `prepared statement "m" does not exist`)
	_, err = a.Exec(ctx, "EXECUTE x1")
	wantPgErr(t, "EXECUTE after DEALLOCATE ALL", err, "26000", `prepared statement "x1" does not exist`)
	must("PREPARE x1 (int) AS SELECT $1 + 1")

	// A statement prepared in SQL runs from the extended protocol too
	// (Bind by name), on a server that never saw it.
	swap()
	r = a.PgConn().ExecPrepared(ctx, "x1", [][]byte{[]byte("9")}, nil, nil).Read()
	if r.Err != nil || len(r.Rows) != 1 || string(r.Rows[0][0]) != "10" {
		t.Fatalf("Bind of a SQL-prepared statement: %v %v", r.Err, r.Rows)
	}
	return pids
}

// TestTxnSQLPrepare: SQL PREPARE / EXECUTE / DEALLOCATE from pgx's simple
// protocol (plain Query messages, as psql sends) across 20 transactions
// that alternate between the two servers of the pool, plus errors,
// multi-statement queries, failed and rolled-back transactions, and the
// same statements through the extended protocol.
func TestTxnSQLPrepare(t *testing.T) {
	e, sh := sqlPrepEnv(t)
	directDB := e.DB + "_direct"
	e.pg.Exec(t, fmt.Sprintf("CREATE DATABASE %s OWNER %s", directDB, e.User))
	t.Run("direct", func(t *testing.T) {
		sqlPrepareScenario(t, e.pg.ConnString(directDB, e.User, e.Pass), func() {})
	})
	t.Run("pgtide", func(t *testing.T) {
		pids := sqlPrepareScenario(t, e.URL(), func() {
			if err := sh.swap(); err != nil {
				t.Fatal(err)
			}
		})
		if len(pids) != 2 {
			t.Fatalf("the client ran on backends %v, want both servers of the pool", pids)
		}
	})
}

// TestTxnPgxDeallocateClearsProtocolStatement is pgx's
// TestDeallocateMissingPreparedStatementStillClearsFromPreparedStatementMap
// in every exec mode: SQL DEALLOCATE of a statement prepared with Parse
// drops it, as in PostgreSQL, so pgx can prepare the name again.
func TestTxnPgxDeallocateClearsProtocolStatement(t *testing.T) {
	e, sh := sqlPrepEnv(t)
	modes := []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol}
	for _, url := range []string{e.DirectURL(), e.URL()} {
		for _, mode := range modes {
			conn := connectMode(t, url, mode)
			ctx := ctxT(t, 30*time.Second)
			_, err := conn.Prepare(ctx, "ps", "select $1::text")
			if err != nil {
				t.Fatalf("%v: Prepare: %v", mode, err)
			}
			if err := sh.swap(); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, "deallocate ps"); err != nil {
				t.Fatalf("%v: deallocate ps: %v", mode, err)
			}
			if err := conn.Deallocate(ctx, "ps"); err != nil {
				t.Fatalf("%v: Deallocate: %v", mode, err)
			}
			if _, err := conn.Prepare(ctx, "ps", "select $1::text, $2::text"); err != nil {
				t.Fatalf("%v: Prepare again: %v", mode, err)
			}
			if err := sh.swap(); err != nil {
				t.Fatal(err)
			}
			var s1, s2 string
			if err := conn.QueryRow(ctx, "ps", "hello", "world").Scan(&s1, &s2); err != nil || s1 != "hello" || s2 != "world" {
				t.Fatalf("%v: %q %q %v", mode, s1, s2, err)
			}
			// A protocol-level statement runs from SQL too, on a server
			// that never saw it prepared.
			if err := sh.swap(); err != nil {
				t.Fatal(err)
			}
			var x string
			if err := conn.QueryRow(ctx, "execute ps('a', 'b')", pgx.QueryExecModeSimpleProtocol).Scan(&x, new(string)); err != nil || x != "a" {
				t.Fatalf("%v: execute ps: %q %v", mode, x, err)
			}
			conn.Close(ctx)
		}
	}
}

// stmtCacheEnv prepares the table of pgx's TestStmtCacheInvalidation* and
// makes the client's statement for getSQL exist on both servers.
func stmtCacheSetup(t *testing.T, conn *pgx.Conn, swap func(), getSQL string) {
	ctx := ctxT(t, 30*time.Second)
	if _, err := conn.Exec(ctx, `
        DROP TABLE IF EXISTS drop_cols;
        CREATE TABLE drop_cols (
            id SERIAL PRIMARY KEY NOT NULL,
            f1 int NOT NULL,
            f2 int NOT NULL
        );
        INSERT INTO drop_cols (f1, f2) VALUES (1, 2)`); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		rows, err := conn.Query(ctx, getSQL, 1)
		if err != nil {
			t.Fatal(err)
		}
		rows.Close()
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		swap()
	}
}

func wantCachedPlanErr(t *testing.T, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "cached plan must not change result type") {
			t.Fatalf(`expected "cached plan must not change result type", got: %v`, err)
		}
	}
}

// stmtCacheRunner runs f straight against PostgreSQL and through pgtide
// (pool of 2, the client moved between servers by swap).
func stmtCacheRunner(t *testing.T, f func(t *testing.T, conn *pgx.Conn, ddl *pgx.Conn, swap func())) {
	e, sh := sqlPrepEnv(t)
	directDB := e.DB + "_direct"
	e.pg.Exec(t, fmt.Sprintf("CREATE DATABASE %s OWNER %s", directDB, e.User))
	t.Run("direct", func(t *testing.T) {
		url := e.pg.ConnString(directDB, e.User, e.Pass)
		f(t, drvConnect(t, url), drvConnect(t, url), func() {})
	})
	t.Run("pgtide", func(t *testing.T) {
		f(t, drvConnect(t, e.URL()), drvConnect(t, e.URL()), func() {
			if err := sh.swap(); err != nil {
				t.Fatal(err)
			}
		})
	})
}

// TestTxnPgxStmtCacheInvalidationConn is pgx's TestStmtCacheInvalidationConn
// with the statement on both servers of the pool: after ALTER TABLE the
// first query fails with 0A000, the retry (pgx prepares the text again)
// gets the new result type on either server.
func TestTxnPgxStmtCacheInvalidationConn(t *testing.T) {
	stmtCacheRunner(t, func(t *testing.T, conn, _ *pgx.Conn, swap func()) {
		ctx := ctxT(t, 30*time.Second)
		getSQL := "SELECT * FROM drop_cols WHERE id = $1"
		stmtCacheSetup(t, conn, swap, getSQL)
		if _, err := conn.Exec(ctx, "ALTER TABLE drop_cols DROP COLUMN f1"); err != nil {
			t.Fatal(err)
		}
		rows, err := conn.Query(ctx, getSQL, 1)
		if err != nil {
			t.Fatal(err)
		}
		rows.Next()
		nextErr := rows.Err()
		rows.Close()
		wantCachedPlanErr(t, nextErr, rows.Err())
		for i := 0; i < 2; i++ {
			var id, f2 int32
			if err := conn.QueryRow(ctx, getSQL, 1).Scan(&id, &f2); err != nil || id != 1 || f2 != 2 {
				t.Fatalf("retry %d: %d %d %v", i, id, f2, err)
			}
			swap()
		}
	})
}

// TestTxnPgxStmtCacheInvalidationConnWithBatch is the batch variant.
func TestTxnPgxStmtCacheInvalidationConnWithBatch(t *testing.T) {
	stmtCacheRunner(t, func(t *testing.T, conn, _ *pgx.Conn, swap func()) {
		ctx := ctxT(t, 30*time.Second)
		getSQL := "SELECT * FROM drop_cols WHERE id = $1"
		stmtCacheSetup(t, conn, swap, getSQL)
		if _, err := conn.Exec(ctx, "ALTER TABLE drop_cols DROP COLUMN f1"); err != nil {
			t.Fatal(err)
		}
		batch := &pgx.Batch{}
		batch.Queue(getSQL, 1)
		br := conn.SendBatch(ctx, batch)
		rows, err := br.Query()
		if err == nil {
			t.Fatal("batch after ALTER: no error")
		}
		rows.Next()
		nextErr := rows.Err()
		rows.Close()
		if br.Close() == nil {
			t.Fatal("batch close after ALTER: no error")
		}
		wantCachedPlanErr(t, nextErr, rows.Err())
		for i := 0; i < 2; i++ {
			batch = &pgx.Batch{}
			batch.Queue(getSQL, 1)
			br = conn.SendBatch(ctx, batch)
			var id, f2 int32
			if err := br.QueryRow().Scan(&id, &f2); err != nil || id != 1 || f2 != 2 {
				t.Fatalf("retry %d: %d %d %v", i, id, f2, err)
			}
			if err := br.Close(); err != nil {
				t.Fatal(err)
			}
			swap()
		}
	})
}

// TestTxnPgxStmtCacheInvalidationExec: a parameter's type changes under
// ALTER TABLE ... TYPE. pgx fails the first Exec (it encodes by the cached
// parameter type) and prepares the text again: the new statement must have
// the new type on every server, not the one pgtide saw first.
func TestTxnPgxStmtCacheInvalidationExec(t *testing.T) {
	stmtCacheRunner(t, func(t *testing.T, conn, _ *pgx.Conn, swap func()) {
		ctx := ctxT(t, 30*time.Second)
		if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS flags; CREATE TABLE flags (id int PRIMARY KEY, f int NOT NULL); INSERT INTO flags VALUES (1, 0)"); err != nil {
			t.Fatal(err)
		}
		upd := "UPDATE flags SET f = $1 WHERE id = 1"
		for i := 0; i < 2; i++ {
			if _, err := conn.Exec(ctx, upd, 5); err != nil {
				t.Fatal(err)
			}
			swap()
		}
		if _, err := conn.Exec(ctx, "ALTER TABLE flags ALTER COLUMN f TYPE bool USING f <> 0"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, upd, true); err == nil {
			t.Log("first Exec after ALTER worked") // pgx fails it by its cache; either is fine
		}
		for i := 0; i < 2; i++ {
			if _, err := conn.Exec(ctx, upd, i == 0); err != nil {
				t.Fatalf("Exec %d after ALTER: %v", i, err)
			}
			swap()
		}
		var f bool
		if err := conn.QueryRow(ctx, "SELECT f FROM flags WHERE id = 1").Scan(&f); err != nil || f {
			t.Fatalf("f = %v, %v", f, err)
		}
	})
}

// TestTxnPgxStmtCacheInvalidationDirectDDL: DDL that pgtide never sees (run
// straight on PostgreSQL) changes a result type; the server's 0A000 is
// what tells pgtide, and pgx's retry must get the new type on both servers.
func TestTxnPgxStmtCacheInvalidationDirectDDL(t *testing.T) {
	e, sh := sqlPrepEnv(t)
	swap := func() {
		if err := sh.swap(); err != nil {
			t.Fatal(err)
		}
	}
	conn := drvConnect(t, e.URL())
	ddl := drvConnect(t, e.DirectURL())
	ctx := ctxT(t, 30*time.Second)
	getSQL := "SELECT * FROM drop_cols WHERE id = $1"
	stmtCacheSetup(t, conn, swap, getSQL)
	if _, err := ddl.Exec(ctx, "ALTER TABLE drop_cols DROP COLUMN f1"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		// Each server still has the old statement: pgx sees 0A000 once
		// (the first time), then prepares again.
		var id, f2 int32
		err := conn.QueryRow(ctx, getSQL, 1).Scan(&id, &f2)
		if i == 0 {
			wantCachedPlanErr(t, err)
			err = conn.QueryRow(ctx, getSQL, 1).Scan(&id, &f2)
		}
		if err != nil || id != 1 || f2 != 2 {
			t.Fatalf("after direct ALTER, round %d: %d %d %v", i, id, f2, err)
		}
		swap()
	}
}

// TestTxnSQLPreparePsycopg2: psycopg2 (which has no protocol-level prepared
// statements: applications PREPARE in SQL) keeps its statements across 20
// transactions that alternate between the pool's two servers, through
// rollbacks; another client does not see them; DEALLOCATE frees the name.
func TestTxnSQLPreparePsycopg2(t *testing.T) {
	py := needPython(t, "psycopg2", "python3-psycopg2")
	txnPyAgainstBoth(t, py, "txn_sqlprepare_psycopg2.py", 2)
}

// TestStatementModeSQLPrepare: the same mapping in statement mode, where
// every statement may run on another server.
func TestStatementModeSQLPrepare(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		db.PoolMode = "statement"
		db.PoolSize = 2
	})
	sh := &xshuffler{}
	for i := range sh.h {
		sh.h[i] = newXholder(t, e.URL())
	}
	t.Cleanup(sh.close)
	if err := sh.start(); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	a := connectMode(t, e.URL(), pgx.QueryExecModeSimpleProtocol)
	pids := map[uint32]bool{}
	for _, sql := range []string{"PREPARE s (int) AS SELECT $1 * 10", "EXECUTE s(1)", "EXECUTE s(2)", "DEALLOCATE s", "EXECUTE s(3)"} {
		if err := sh.swap(); err != nil {
			t.Fatal(err)
		}
		var pid uint32
		if err := a.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		pids[pid] = true
		res, err := a.PgConn().Exec(ctx, sql).ReadAll()
		switch {
		case strings.HasPrefix(sql, "EXECUTE s(3)"):
			wantPgErr(t, sql, err, "26000", `prepared statement "s" does not exist`)
		case err != nil:
			t.Fatalf("%s: %v", sql, err)
		case strings.HasPrefix(sql, "EXECUTE"):
			if want := sql[len("EXECUTE s("):len("EXECUTE s(")+1] + "0"; len(res) != 1 || len(res[0].Rows) != 1 || string(res[0].Rows[0][0]) != want {
				t.Fatalf("%s: %+v", sql, res)
			}
		}
	}
	if len(pids) != 2 {
		t.Fatalf("statements ran on %v, want both servers", pids)
	}
}

// TestTxnSQLPrepareClientLeaves: a client's SQL-prepared statements are
// its own (not shared by text), so when it leaves, or runs DEALLOCATE ALL,
// every server that has a copy closes it before its next use.
func TestTxnSQLPrepareClientLeaves(t *testing.T) {
	e, sh := sqlPrepEnv(t)
	ctx := ctxT(t, 30*time.Second)
	swap := func() {
		t.Helper()
		if err := sh.swap(); err != nil {
			t.Fatal(err)
		}
	}
	count := func(c *pgx.Conn, body string) int64 {
		t.Helper()
		return queryInt(t, c, "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%"+body+"%' AND statement NOT LIKE '%pg_prepared_statements%'")
	}
	for _, how := range []string{"disconnect", "DEALLOCATE ALL"} {
		body := "leaves body " + strings.ReplaceAll(how, " ", "_")
		a := connectMode(t, e.URL(), pgx.QueryExecModeSimpleProtocol)
		if _, err := a.Exec(ctx, "PREPARE gone AS SELECT '"+body+"'"); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ { // now on both servers
			swap()
			if _, err := a.Exec(ctx, "EXECUTE gone"); err != nil {
				t.Fatal(err)
			}
			if n := count(a, body); n != 1 {
				t.Fatalf("%s: %d copies on this server before, want 1", how, n)
			}
		}
		if how == "disconnect" {
			a.Close(ctx)
		} else if _, err := a.Exec(ctx, how); err != nil {
			t.Fatal(err)
		}
		b := connectMode(t, e.URL(), pgx.QueryExecModeSimpleProtocol)
		for i := 0; i < 2; i++ {
			swap()
			if n := count(b, body); n != 0 {
				t.Fatalf("%s: %d copies left on a server", how, n)
			}
		}
	}
}

// TestTxnExecuteOfStateChangeCaptured: a SQL-level prepared statement
// whose text changes the session (set_config(..., false)) changes it when
// it runs, not when it is prepared: by EXECUTE in a simple Query, by a
// protocol Bind of its name, or by a Parse of "EXECUTE name" (unnamed or
// named) bound later. pgtide looked for the markers only in the text it was sent
// at that moment ("EXECUTE p"), so the change went unseen: the server went
// back to the pool with the client's search_path on it, and the next
// client of the pool got it (invariant 10), while the client itself lost it
// on its next server. pool_size 1: the second client gets the very server.
// Each case also runs straight against PostgreSQL, where the first
// client's setting is its own and a second session has the default.
func TestTxnExecuteOfStateChangeCaptured(t *testing.T) {
	prep := func(val string) string {
		return fmt.Sprintf("PREPARE p AS SELECT pg_catalog.set_config('search_path', '%s', false)", val)
	}
	cases := []struct {
		name string
		run  func(t *testing.T, c *pgconn.PgConn, val string)
	}{
		{"execute", func(t *testing.T, c *pgconn.PgConn, val string) {
			execSimple(t, c, prep(val))
			execSimple(t, c, "SELECT 1")
			execSimple(t, c, "EXECUTE p")
		}},
		{"bind_of_sql_statement", func(t *testing.T, c *pgconn.PgConn, val string) {
			execSimple(t, c, prep(val))
			if _, err := c.ExecPrepared(ctxT(t, 10*time.Second), "p", nil, nil, nil).Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"unnamed_parse_of_execute", func(t *testing.T, c *pgconn.PgConn, val string) {
			execSimple(t, c, prep(val))
			// Parse and Describe in one round trip, Bind in the next (pgx's
			// QueryExecModeDescribeExec).
			if _, err := c.Prepare(ctxT(t, 10*time.Second), "", "EXECUTE p", nil); err != nil {
				t.Fatal(err)
			}
			if _, err := c.ExecPrepared(ctxT(t, 10*time.Second), "", nil, nil, nil).Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"named_parse_of_execute", func(t *testing.T, c *pgconn.PgConn, val string) {
			execSimple(t, c, prep(val))
			if _, err := c.Prepare(ctxT(t, 10*time.Second), "s", "EXECUTE p", nil); err != nil {
				t.Fatal(err)
			}
			execSimple(t, c, "SELECT 1")
			if _, err := c.ExecPrepared(ctxT(t, 10*time.Second), "s", nil, nil, nil).Close(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *tideConf, db *dbConf) { c.PoolMode = "transaction"; db.PoolSize = 1 })
			val := "x_" + tc.name
			// mine is what the client that ran it sees after; other what a
			// second session sees meanwhile.
			seen := func(url string) (mine, other string) {
				a := pgconnT(t, url)
				tc.run(t, a, val)
				b := pgconnT(t, url)
				other = showSimple(t, b, "search_path")
				mine = showSimple(t, a, "search_path")
				b.Close(ctxT(t, 5*time.Second))
				a.Close(ctxT(t, 5*time.Second))
				return mine, other
			}
			wantMine, wantOther := seen(e.DirectURL())
			if wantMine != val {
				t.Fatalf("PostgreSQL: the client's search_path is %q, want %q", wantMine, val)
			}
			gotMine, gotOther := seen(e.URL())
			if gotOther != wantOther {
				t.Errorf("another client got search_path %q (PostgreSQL: %q): the server went back with the first client's setting", gotOther, wantOther)
			}
			if gotMine != wantMine {
				t.Errorf("the client's own search_path is %q, PostgreSQL: %q", gotMine, wantMine)
			}
		})
	}
}

func pgconnT(t *testing.T, url string) *pgconn.PgConn {
	t.Helper()
	c, err := pgconn.Connect(ctxT(t, 10*time.Second), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func execSimple(t *testing.T, c *pgconn.PgConn, sql string) {
	t.Helper()
	if _, err := c.Exec(ctxT(t, 10*time.Second), sql).ReadAll(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func showSimple(t *testing.T, c *pgconn.PgConn, name string) string {
	t.Helper()
	res, err := c.Exec(ctxT(t, 10*time.Second), "SHOW "+name).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return string(res[0].Rows[0][0])
}

// TestTxnSQLPrepareStdStringsOff: with standard_conforming_strings off, a
// backslash escapes a quote in a plain string constant, so "SELECT 'it\'s';
// PREPARE q AS ..." prepares q. pgtide read the setting from the login's
// parameter view, which it drops after the startup reply, and so lexed
// every text as if the setting were on: the PREPARE looked like string
// content and reached the server under the client's own name "q", where a
// second client of the pool (pool_size 1: the same server) could EXECUTE
// it; in PostgreSQL q is the first session's alone (26000 for the other).
// The setting comes from the startup packet, a SET, or the database's
// default (what the client is told at login). Case "sjis": the same with
// the setting on and an escape string E'ソ' in client_encoding SJIS, whose
// second byte (0x5C) pgtide took for a backslash escaping the quote.
func TestTxnSQLPrepareStdStringsOff(t *testing.T) {
	for _, how := range []string{"startup", "set", "database", "sjis"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t, func(c *tideConf, db *dbConf) { c.PoolMode = "transaction"; db.PoolSize = 1 })
			if how == "database" {
				e.pg.Exec(t, "ALTER DATABASE "+e.DB+" SET standard_conforming_strings = off")
			}
			run := func(url string) (mine, other string) {
				cfg, err := pgconn.ParseConfig(url)
				if err != nil {
					t.Fatal(err)
				}
				text := `SELECT 'it\'s'; PREPARE q AS SELECT 42`
				switch how {
				case "startup":
					cfg.RuntimeParams["standard_conforming_strings"] = "off"
				case "sjis":
					cfg.RuntimeParams["client_encoding"] = "SJIS"
					text = "SELECT E'\x83\x5c'; PREPARE q AS SELECT 42"
				}
				a, err := pgconn.ConnectConfig(ctxT(t, 10*time.Second), cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer a.Close(context.Background())
				if how == "set" {
					execSimple(t, a, "SET standard_conforming_strings = off")
				}
				execSimple(t, a, text)
				b := pgconnT(t, url)
				defer b.Close(context.Background())
				res, err := b.Exec(ctxT(t, 10*time.Second), "EXECUTE q").ReadAll()
				if err != nil {
					other = "error " + sqlState(err)
				} else {
					other = string(res[0].Rows[0][0])
				}
				res, err = a.Exec(ctxT(t, 10*time.Second), "EXECUTE q").ReadAll()
				if err != nil {
					t.Fatalf("the first client's EXECUTE q: %v", err)
				}
				return string(res[0].Rows[0][0]), other
			}
			wantMine, wantOther := run(e.DirectURL())
			gotMine, gotOther := run(e.URL())
			if gotMine != wantMine || gotOther != wantOther {
				t.Errorf("through pgtide: EXECUTE q gives %q to its client and %q to another; PostgreSQL: %q and %q", gotMine, gotOther, wantMine, wantOther)
			}
		})
	}
}

// TestTxnLostStatementPreparedAgain: the statements pgtide prepares on a
// server are the pool's, and server-side code run by any client of the
// pool can drop one behind pgtide's back (a DO block that runs DEALLOCATE
// with a name from pg_prepared_statements). pgtide went on believing the
// server had it: every later Bind or Describe of that text on that server,
// by any client, new ones included, got 26000 until the server was
// closed. Now the server's 26000 makes pgtide prepare it there again for
// the next request: the request that met the loss fails (the server said
// so), the ones after it work, as they do straight against PostgreSQL,
// where no other session can touch a client's statements.
func TestTxnLostStatementPreparedAgain(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) { c.PoolMode = "transaction"; db.PoolSize = 1 })
	const text = "SELECT $1::int + 1"
	exec := func(c *pgconn.PgConn, name string) (string, error) {
		r := c.ExecPrepared(ctxT(t, 10*time.Second), name, [][]byte{[]byte("41")}, nil, nil).Read()
		if r.Err != nil {
			return "", r.Err
		}
		return string(r.Rows[0][0]), nil
	}
	for _, url := range []string{e.DirectURL(), e.URL()} {
		a := pgconnT(t, url)
		if _, err := a.Prepare(ctxT(t, 10*time.Second), "a1", text, nil); err != nil {
			t.Fatal(err)
		}
		if got, err := exec(a, "a1"); got != "42" {
			t.Fatalf("a1: %q, %v", got, err)
		}
		b := pgconnT(t, url)
		execSimple(t, b, `DO $$DECLARE n text; BEGIN
  FOR n IN SELECT name FROM pg_catalog.pg_prepared_statements LOOP EXECUTE 'DEALLOCATE ' || pg_catalog.quote_ident(n); END LOOP;
END$$`)
		_, first := exec(a, "a1") // through pgtide: the server's 26000
		if url == e.DirectURL() && first != nil {
			t.Fatalf("PostgreSQL: a1 after another session's DEALLOCATEs: %v", first)
		}
		if got, err := exec(a, "a1"); got != "42" {
			t.Errorf("%s: a1 again: %q, %v (first try: %v)", redact(url), got, err, first)
		}
		c := pgconnT(t, url)
		if _, err := c.Prepare(ctxT(t, 10*time.Second), "c1", text, nil); err != nil {
			t.Errorf("%s: a new client's Parse of the same text: %v", redact(url), err)
		} else if got, err := exec(c, "c1"); got != "42" {
			t.Errorf("%s: c1: %q, %v", redact(url), got, err)
		}
	}
}
