package integration

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestPgx(t *testing.T) {
	e := newEnv(t, nil)
	c := connect(t, e.URL())
	ctx := ctxT(t, 60*time.Second)

	var user, db string
	if err := c.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&user, &db); err != nil {
		t.Fatal(err)
	}
	if user != e.User || db != e.DB {
		t.Fatalf("current_user, current_database() = %s, %s; want %s, %s", user, db, e.User, e.DB)
	}

	if _, err := c.Exec(ctx, "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric)"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		tag, err := c.Exec(ctx, "INSERT INTO items VALUES ($1, $2, $3)", i, "item-"+strings.Repeat("z", i), i*10)
		if err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
		if tag.String() != "INSERT 0 1" {
			t.Fatalf("insert tag %q", tag.String())
		}
	}

	t.Run("QueryRowParams", func(t *testing.T) {
		var name string
		var price float64
		if err := c.QueryRow(ctx, "SELECT name, price::float8 FROM items WHERE id = $1 AND name LIKE $2", 7, "item-%").Scan(&name, &price); err != nil {
			t.Fatal(err)
		}
		if name != "item-zzzzzzz" || price != 70 {
			t.Fatalf("got %q %v", name, price)
		}
		err := c.QueryRow(ctx, "SELECT name FROM items WHERE id = $1", 999).Scan(&name)
		if !errors.Is(err, pgx.ErrNoRows) {
			t.Fatalf("no row: err = %v, want pgx.ErrNoRows", err)
		}
	})

	t.Run("Query", func(t *testing.T) {
		rows, err := c.Query(ctx, "SELECT id FROM items WHERE id % $1 = 0 ORDER BY id", 5)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != 4 || ids[0] != 5 || ids[3] != 20 {
			t.Fatalf("ids = %v", ids)
		}
		// A big result and a big parameter travel unchanged.
		var n, total int64
		if err := c.QueryRow(ctx, "SELECT count(*), sum(length(md5(g::text) || repeat('y', 200))) FROM generate_series(1, 200000) g").Scan(&n, &total); err != nil {
			t.Fatal(err)
		}
		if n != 200000 || total != 200000*232 {
			t.Fatalf("count/sum = %d/%d", n, total)
		}
		rows, err = c.Query(ctx, "SELECT g, repeat('r', 100) FROM generate_series(1, 50000) g")
		if err != nil {
			t.Fatal(err)
		}
		cnt := 0
		for rows.Next() {
			var g int32
			var s string
			if err := rows.Scan(&g, &s); err != nil {
				t.Fatal(err)
			}
			cnt++
			if int(g) != cnt || len(s) != 100 {
				t.Fatalf("row %d: g=%d len=%d", cnt, g, len(s))
			}
		}
		if rows.Err() != nil || cnt != 50000 {
			t.Fatalf("streamed %d rows, err %v", cnt, rows.Err())
		}
		big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
		var echoed string
		if err := c.QueryRow(ctx, "SELECT $1::text", big).Scan(&echoed); err != nil {
			t.Fatal(err)
		}
		if echoed != big {
			t.Fatalf("1 MiB parameter came back with %d bytes", len(echoed))
		}
	})

	t.Run("Transaction", func(t *testing.T) {
		other := connect(t, e.URL())
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO items VALUES ($1, $2, $3)", 100, "committed", 1); err != nil {
			t.Fatal(err)
		}
		if n := queryInt(t, other, "SELECT count(*) FROM items WHERE id = 100"); n != 0 {
			t.Fatalf("uncommitted row visible to another client")
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if n := queryInt(t, other, "SELECT count(*) FROM items WHERE id = 100"); n != 1 {
			t.Fatalf("committed row not visible to another client")
		}

		tx, err = c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO items VALUES ($1, $2, $3)", 101, "rolled back", 1); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if n := queryInt(t, c, "SELECT count(*) FROM items WHERE id = 101"); n != 0 {
			t.Fatalf("rolled back row is there")
		}
		if n := queryInt(t, other, "SELECT count(*) FROM items WHERE id = 101"); n != 0 {
			t.Fatalf("rolled back row visible to another client")
		}

		// An error inside a transaction aborts it (25P02 until ROLLBACK).
		tx, err = c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, "INSERT INTO items VALUES (1, 'dup', 0)")
		if sqlState(err) != "23505" {
			t.Fatalf("duplicate key: err = %v, want SQLSTATE 23505", err)
		}
		_, err = tx.Exec(ctx, "SELECT 1")
		if sqlState(err) != "25P02" {
			t.Fatalf("statement in aborted txn: err = %v, want SQLSTATE 25P02", err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if n := queryInt(t, c, "SELECT 41 + 1"); n != 42 {
			t.Fatalf("after rollback: %d", n)
		}
	})

	t.Run("ErrorKeepsConnection", func(t *testing.T) {
		_, err := c.Exec(ctx, "SELECT * FROM no_such_table")
		if sqlState(err) != "42P01" {
			t.Fatalf("err = %v, want SQLSTATE 42P01", err)
		}
		if n := queryInt(t, c, "SELECT count(*) FROM items"); n != 21 {
			t.Fatalf("count = %d, want 21", n)
		}
	})

	t.Run("Batch", func(t *testing.T) {
		// Many Syncs in flight at once (pgx pipelines a batch).
		b := &pgx.Batch{}
		for i := 0; i < 200; i++ {
			b.Queue("SELECT $1::int * 2", i)
		}
		br := c.SendBatch(ctx, b)
		for i := 0; i < 200; i++ {
			var v int
			if err := br.QueryRow().Scan(&v); err != nil {
				t.Fatalf("batch item %d: %v", i, err)
			}
			if v != 2*i {
				t.Fatalf("batch item %d = %d", i, v)
			}
		}
		if err := br.Close(); err != nil {
			t.Fatal(err)
		}
		if n := queryInt(t, c, "SELECT 7"); n != 7 {
			t.Fatalf("after batch: %d", n)
		}
	})
}
