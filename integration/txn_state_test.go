package integration

// Session state in transaction mode (issue 12 items 1-3, DESIGN.md
// invariant 10): settings a client changes follow that client and only that
// client; state that cannot move pins the client to its server; nothing a
// client leaves behind reaches the next borrower.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// sessionView is what a client sees of its own session.
type sessionView struct {
	searchPath, stmtTimeout, isolation, tenant, currentUser string
	pid                                                     uint32
}

const viewSQL = `SELECT current_setting('search_path'), current_setting('statement_timeout'),
	current_setting('transaction_isolation'), coalesce(current_setting('myapp.tenant', true), ''),
	current_user::text, pg_backend_pid()`

func readView(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (sessionView, error) {
	var v sessionView
	err := q.QueryRow(ctx, viewSQL).Scan(&v.searchPath, &v.stmtTimeout, &v.isolation, &v.tenant, &v.currentUser, &v.pid)
	return v, err
}

// defaultView is what a client that changed nothing must see.
func defaultView(user string) sessionView {
	return sessionView{searchPath: `"$user", public`, stmtTimeout: "0", isolation: "read committed", currentUser: user}
}

func sameSettings(a, b sessionView) bool {
	a.pid, b.pid = 0, 0
	return a == b
}

// TestTxnSettingsFollowClient: client A sets search_path, statement_timeout,
// the isolation level (SET SESSION CHARACTERISTICS, as pgjdbc's
// setTransactionIsolation does), a custom parameter and a role, then runs 20
// transactions on a pool of 3 while other clients hold servers so A keeps
// moving: A sees its values every time, the others the defaults; after A
// leaves, 20 new clients see only defaults.
func TestTxnSettingsFollowClient(t *testing.T) {
	e := drvTxnEnv(t, 3)
	ctx := ctxT(t, 120*time.Second)
	role := e.User + "_r"
	e.pg.Exec(t, fmt.Sprintf("CREATE ROLE %s; GRANT %s TO %s", role, role, e.User))
	t.Cleanup(func() {
		e.pg.ExecIn(t, e.DB, "DROP OWNED BY "+role)
		e.pg.Exec(t, "DROP ROLE IF EXISTS "+role)
	})
	su := super(t, e.pg, e.DB)
	if _, err := su.Exec(ctx, "CREATE SCHEMA sa; GRANT USAGE ON SCHEMA sa TO "+role); err != nil {
		t.Fatal(err)
	}

	a := connect(t, e.URL())
	for _, q := range []string{
		"SET search_path = sa, public",
		"SET statement_timeout = '4321ms'",
		"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
		"SET myapp.tenant = 'tenant-a'",
		"SET ROLE " + role,
	} {
		if _, err := a.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	wantA := sessionView{searchPath: "sa, public", stmtTimeout: "4321ms", isolation: "serializable", tenant: "tenant-a", currentUser: role}
	def := defaultView(e.User)

	others := make([]*pgx.Conn, 2)
	for i := range others {
		others[i] = connect(t, e.URL())
	}
	pids := map[uint32]bool{}
	var held pgx.Tx // another client's open transaction, across A's next one
	for i := 0; i < 20; i++ {
		tx, err := a.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v, err := readView(ctx, tx)
		if err != nil {
			t.Fatalf("A, transaction %d: %v", i, err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		pids[v.pid] = true
		if !sameSettings(v, wantA) {
			t.Fatalf("A, transaction %d on backend %d: got %+v, want %+v", i, v.pid, v, wantA)
		}
		if held != nil {
			if err := held.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// Another client takes a server (likely the one A just used) and
		// holds it across A's next transaction.
		held, err = others[i%len(others)].Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ov, err := readView(ctx, held)
		if err != nil {
			t.Fatal(err)
		}
		if !sameSettings(ov, def) {
			t.Fatalf("other client, round %d on backend %d: got %+v, want defaults %+v", i, ov.pid, ov, def)
		}
	}
	if err := held.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if len(pids) < 2 {
		t.Errorf("A ran on %d server(s); the test wants it moved", len(pids))
	}
	a.Close(ctx)
	for _, o := range others {
		o.Close(ctx)
	}
	for i := 0; i < 20; i++ {
		c := connect(t, e.URL())
		v, err := readView(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if !sameSettings(v, def) {
			t.Fatalf("new client %d after A left, backend %d: got %+v, want defaults %+v", i, v.pid, v, def)
		}
		c.Close(ctx)
	}
}

// TestTxnSettingsSemantics: what is kept is what PostgreSQL keeps: SET
// LOCAL and SETs of a rolled-back transaction are not, set_config(..., false)
// inside a SELECT is, RESET ALL and RESET clear.
func TestTxnSettingsSemantics(t *testing.T) {
	e := drvTxnEnv(t, 2)
	ctx := ctxT(t, 60*time.Second)
	a := connect(t, e.URL())
	o := connect(t, e.URL())
	exec := func(c *pgx.Conn, q string) {
		t.Helper()
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// Moves A to the other server: o holds A's last one in a transaction.
	show := func(name string) string {
		t.Helper()
		otx, err := o.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer otx.Rollback(ctx)
		if _, err := otx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		var v string
		if err := a.QueryRow(ctx, "SELECT coalesce(current_setting($1, true), '')", name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	exec(a, "BEGIN; SET search_path = rolled_back; ROLLBACK")
	if got := show("search_path"); got != `"$user", public` {
		t.Errorf("after a rolled-back SET: search_path = %q", got)
	}
	exec(a, "BEGIN; SET LOCAL statement_timeout = '7s'; COMMIT")
	if got := show("statement_timeout"); got != "0" {
		t.Errorf("after SET LOCAL: statement_timeout = %q", got)
	}
	var s string
	if err := a.QueryRow(ctx, "SELECT set_config('myapp.x', 'kept', false)").Scan(&s); err != nil {
		t.Fatal(err)
	}
	if got := show("myapp.x"); got != "kept" {
		t.Errorf("after set_config(..., false) in a SELECT: myapp.x = %q", got)
	}
	exec(a, "SET lock_timeout = '3s'")
	if got := show("lock_timeout"); got != "3s" {
		t.Errorf("after SET: lock_timeout = %q", got)
	}
	exec(a, "RESET lock_timeout")
	if got := show("lock_timeout"); got != "0" {
		t.Errorf("after RESET: lock_timeout = %q", got)
	}
	exec(a, "SET TIME ZONE 'Asia/Tokyo'; SET work_mem = '7MB'")
	if got := show("work_mem"); got != "7MB" {
		t.Errorf("work_mem = %q", got)
	}
	exec(a, "RESET ALL")
	for name, want := range map[string]string{"work_mem": "4MB", "myapp.x": ""} {
		if got := show(name); got != want {
			t.Errorf("after RESET ALL: %s = %q, want %q", name, got, want)
		}
	}
	if got := show("TimeZone"); got == "Asia/Tokyo" {
		t.Errorf("after RESET ALL: TimeZone still %q", got)
	}
}

// scrapeURL starts pgtide with metrics; returns the env and the metrics base URL.
func stateEnv(t *testing.T, poolSize int, extra string) (*env, string) {
	mport, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.MaxClientConn = 300
		c.Extra = fmt.Sprintf("metrics_listen = \"127.0.0.1:%d\"\n", mport) + extra
		db.PoolSize = poolSize
	})
	return e, fmt.Sprintf("http://127.0.0.1:%d", mport)
}

func poolLabels(e *env, reason string) []string {
	return []string{fmt.Sprintf("database=%q", e.DB), fmt.Sprintf("user=%q", e.User), fmt.Sprintf("reason=%q", reason)}
}

func pinnedGauge(t *testing.T, base string, e *env, reason string) float64 {
	v, _ := scrapeMetrics(t, base).get("pgtide_pool_pinned_clients", poolLabels(e, reason)...)
	return v
}

// TestTxnPinning: a temporary table, a session advisory lock, LISTEN and a
// cursor WITH HOLD each work across transactions in transaction mode, with
// other clients cycling through the pool; the metric shows the pin and its
// reason, the log says it once, and the pin ends when the state is released.
func TestTxnPinning(t *testing.T) {
	e, base := stateEnv(t, 3, "")
	ctx := ctxT(t, 120*time.Second)
	a := connect(t, e.URL())
	b := connect(t, e.URL())
	churn := func() { // b moves through servers, holding one for a moment
		t.Helper()
		tx, err := b.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	exec := func(q string) {
		t.Helper()
		if _, err := a.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	wantGauge := func(reason string, want float64) {
		t.Helper()
		if got := pinnedGauge(t, base, e, reason); got != want {
			t.Fatalf("pgtide_pool_pinned_clients{reason=%q} = %v, want %v", reason, got, want)
		}
	}

	t.Run("temp table", func(t *testing.T) {
		exec("CREATE TEMP TABLE tt (v int)")
		churn()
		exec("INSERT INTO tt VALUES (1), (2)")
		churn()
		if n := queryInt(t, a, "SELECT count(*) FROM tt"); n != 2 {
			t.Fatalf("temp table has %d rows", n)
		}
		wantGauge("temp_table", 1)
		exec("DROP TABLE tt")
		wantGauge("temp_table", 0)
	})
	t.Run("advisory lock", func(t *testing.T) {
		exec("SELECT pg_advisory_lock(4242)")
		churn()
		var got bool
		if err := b.QueryRow(ctx, "SELECT pg_try_advisory_lock(4242)").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got {
			t.Fatal("another client took the advisory lock A holds")
		}
		wantGauge("advisory_lock", 1)
		exec("SELECT pg_advisory_unlock_all()")
		wantGauge("advisory_lock", 0)
		if err := b.QueryRow(ctx, "SELECT pg_try_advisory_lock(4242)").Scan(&got); err != nil || !got {
			t.Fatalf("lock not free after unlock_all: %v %v", got, err)
		}
		if _, err := b.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("listen", func(t *testing.T) {
		exec("LISTEN chan_a")
		churn()
		churn()
		if _, err := b.Exec(ctx, "NOTIFY chan_a, 'hello'"); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		n, err := a.WaitForNotification(wctx)
		cancel()
		if err != nil {
			t.Fatalf("notification not delivered: %v", err)
		}
		if n.Channel != "chan_a" || n.Payload != "hello" {
			t.Fatalf("notification %+v", n)
		}
		wantGauge("listen", 1)
		exec("UNLISTEN *")
		wantGauge("listen", 0)
	})
	t.Run("cursor with hold", func(t *testing.T) {
		exec("BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 10) g; COMMIT")
		churn()
		if n := queryInt(t, a, "FETCH 3 FROM c"); n != 1 {
			t.Fatalf("first FETCH gave %d", n)
		}
		churn()
		if n := queryInt(t, a, "FETCH 1 FROM c"); n != 4 {
			t.Fatalf("second FETCH gave %d", n)
		}
		wantGauge("held_cursor", 1)
		exec("CLOSE c")
		wantGauge("held_cursor", 0)
	})
	if n := strings.Count(e.tide.Logs(), "client pinned to its server connection"); n != 5 {
		t.Errorf("%d pin log lines, want 5 (one per pin: four of A, one of B while it held the lock)", n)
	}
}

// TestTxnPinRefuse: with pin_policy = "refuse", state that would pin fails
// with 0A000 naming it, and is gone afterwards.
func TestTxnPinRefuse(t *testing.T) {
	e, base := stateEnv(t, 2, "pin_policy = \"refuse\"\n")
	ctx := ctxT(t, 60*time.Second)
	a := connect(t, e.URL())
	_, err := a.Exec(ctx, "CREATE TEMP TABLE tr (v int)")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "0A000" || !strings.Contains(pe.Message, "temporary") {
		t.Fatalf("CREATE TEMP TABLE: %v, want 0A000 naming the temporary object", err)
	}
	if n := queryInt(t, a, "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()"); n != 0 {
		t.Fatalf("%d temporary relations left", n)
	}
	_, err = a.Exec(ctx, "LISTEN refused")
	if !errors.As(err, &pe) || pe.Code != "0A000" || !strings.Contains(pe.Message, "LISTEN") {
		t.Fatalf("LISTEN: %v, want 0A000 naming LISTEN", err)
	}
	v, _ := scrapeMetrics(t, base).get("pgtide_pool_pin_refusals_total", poolLabels(e, "temp_table")...)
	if v != 1 {
		t.Errorf("pin_refusals_total{temp_table} = %v", v)
	}
	if got := pinnedGauge(t, base, e, "listen"); got != 0 {
		t.Errorf("pinned{listen} = %v under refuse", got)
	}
	// Settings still work under refuse.
	if _, err := a.Exec(ctx, "SET search_path = x"); err != nil {
		t.Fatal(err)
	}
	if s := queryString(t, a, "SELECT current_setting('search_path')"); s != "x" {
		t.Fatalf("search_path %q", s)
	}
}

// TestTxnStateLeavesNothing: a client that pinned and changed state
// disconnects; with one server, every later client gets that server and
// finds none of it. Also in session mode with an empty server_reset_query.
func TestTxnStateLeavesNothing(t *testing.T) {
	for _, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, func(c *tideConf, db *dbConf) {
				c.PoolMode = mode
				c.Extra = "server_reset_query = \"\"\n"
				db.PoolSize = 1
			})
			ctx := ctxT(t, 60*time.Second)
			a := connect(t, e.URL())
			pid := queryInt(t, a, "SELECT pg_backend_pid()")
			for _, q := range []string{
				"CREATE TEMP TABLE gone (v int)", "SELECT pg_advisory_lock(77)", "LISTEN gone",
				"SET search_path = nowhere", "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
				"SELECT set_config('myapp.tenant', 'leaked', false)",
			} {
				if _, err := a.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			a.Close(ctx)
			for i := 0; i < 3; i++ {
				c := connect(t, e.URL())
				if p := queryInt(t, c, "SELECT pg_backend_pid()"); p != pid {
					t.Logf("new client on backend %d, A was on %d", p, pid)
				}
				v, err := readView(ctx, c)
				if err != nil {
					t.Fatal(err)
				}
				if !sameSettings(v, defaultView(e.User)) {
					t.Fatalf("client %d after A left: %+v", i, v)
				}
				if n := queryInt(t, c, "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()"); n != 0 {
					t.Fatalf("client %d sees %d temporary relations", i, n)
				}
				if n := queryInt(t, c, "SELECT count(*) FROM pg_listening_channels()"); n != 0 {
					t.Fatalf("client %d is listening on %d channels", i, n)
				}
				var ok bool
				if err := c.QueryRow(ctx, "SELECT pg_try_advisory_lock(77)").Scan(&ok); err != nil || !ok {
					t.Fatalf("client %d cannot take the lock A held: %v %v", i, ok, err)
				}
				if _, err := c.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
					t.Fatal(err)
				}
				c.Close(ctx)
			}
		})
	}
}

// TestTxnParamsGBK (issue 13 item 6): a parameter value re-applied to a
// server whose client_encoding is GBK and backslash_quote on cannot break out
// of its quoting: 0x95 0x5c is one GBK character, so a backslash-escaping
// quoter leaves a lone backslash that escapes its closing quote.
func TestTxnParamsGBK(t *testing.T) {
	e := drvTxnEnv(t, 1)
	ctx := ctxT(t, 60*time.Second)
	base := map[string]string{"client_encoding": "GBK", "backslash_quote": "on"}
	dial := func(extra map[string]string) *pgconn.PgConn {
		t.Helper()
		cfg, err := pgconn.ParseConfig(e.URL())
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams = map[string]string{}
		for k, v := range base {
			cfg.RuntimeParams[k] = v
		}
		for k, v := range extra {
			cfg.RuntimeParams[k] = v
		}
		c, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	run := func(c *pgconn.PgConn, q string) ([][][]byte, error) {
		res, err := c.Exec(ctx, q).ReadAll()
		if err != nil {
			return nil, err
		}
		return res[len(res)-1].Rows, nil
	}
	// The first client leaves the only server in GBK with backslash_quote on.
	c1 := dial(nil)
	if _, err := run(c1, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	c1.Close(ctx)
	payload := "\x95\x5c', false); CREATE TABLE pwned (); --"
	c2 := dial(map[string]string{"myapp.evil": payload})
	if _, err := run(c2, "SELECT 1"); err != nil {
		t.Logf("second client: %v", err)
	}
	su := super(t, e.pg, e.DB)
	var n int
	if err := su.QueryRow(ctx, "SELECT count(*) FROM pg_class WHERE relname = 'pwned'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("a startup parameter's value broke out of its quoting and ran CREATE TABLE pwned")
	}
	rows, err := run(c2, "SELECT current_setting('myapp.evil') = convert_from('\\x955c27'::bytea, 'GBK') || ', false); CREATE TABLE pwned (); --'")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || string(rows[0][0]) != "t" {
		t.Fatalf("myapp.evil does not hold the value sent: %q", rows)
	}
}

// TestTxnStatePsycopg2: testdata/txn_psycopg2_state.py (settings following
// client A across 20 transactions on a pool of 3, defaults for everyone
// else and after A leaves, a temporary table and an advisory lock pinned)
// directly, then through pgtide in transaction mode.
func TestTxnStatePsycopg2(t *testing.T) {
	py := needPython(t, "psycopg2", "python3-psycopg2")
	e := txnPyEnv(t, 3)
	role := e.User + "_r"
	e.pg.Exec(t, fmt.Sprintf("CREATE ROLE %s; GRANT %s TO %s", role, role, e.User))
	t.Cleanup(func() { e.pg.Exec(t, "DROP ROLE IF EXISTS "+role) })
	t.Run("direct", func(t *testing.T) {
		runTxnPy(t, py, "txn_psycopg2_state.py", e.pg.Host, e.pg.Port, e.DB, e.User, e.Pass)
	})
	t.Run("pgtide", func(t *testing.T) {
		runTxnPy(t, py, "txn_psycopg2_state.py", e.tide.Host, e.tide.Port, e.DB, e.User, e.Pass)
	})
}

// TestTxnStatePsql: the report, with psql. A psql client sets the
// isolation level and search_path and leaves; 8 fresh psql clients see the
// defaults and can create a table. A psql session's own settings hold over
// 20 statements while a pgx client keeps taking servers.
func TestTxnStatePsql(t *testing.T) {
	psql := needBinary(t, "psql", "postgresql-client")
	e := drvTxnEnv(t, 3)
	url := urlNoPassword("127.0.0.1", e.tide.Port, e.DB, e.User)
	r := runPsql(t, psql, url, e.Pass, "-v", "ON_ERROR_STOP=1", "-c",
		"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", "-c", "SET search_path = nowhere")
	if r.code != 0 {
		t.Fatalf("psql: %d %s", r.code, r.stderr)
	}
	for i := 0; i < 8; i++ {
		r := runPsql(t, psql, url, e.Pass, "-v", "ON_ERROR_STOP=1", "-At", "-c",
			"SELECT current_setting('default_transaction_isolation') || '|' || current_setting('search_path')",
			"-c", fmt.Sprintf("CREATE TABLE t%d (v int)", i))
		if r.code != 0 || strings.TrimSpace(strings.Split(r.stdout, "\n")[0]) != `read committed|"$user", public` {
			t.Fatalf("fresh psql %d: code %d, stdout %q, stderr %q", i, r.code, r.stdout, r.stderr)
		}
	}

	ctx := ctxT(t, 60*time.Second)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { // another client keeps taking servers and checks the defaults
		c, err := pgx.Connect(ctx, e.URL())
		if err != nil {
			done <- err
			return
		}
		defer c.Close(context.Background())
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			var v string
			if err := c.QueryRow(ctx, "SELECT current_setting('search_path') || '|' || pg_sleep(0.002)::text").Scan(&v); err != nil {
				done <- err
				return
			}
			if v != `"$user", public|` {
				done <- fmt.Errorf("other client sees %q", v)
				return
			}
		}
	}()
	script := "SET search_path = pg_catalog, public;\nSET statement_timeout = '9s';\n" +
		strings.Repeat("SELECT current_setting('search_path') || '|' || current_setting('statement_timeout');\n", 20)
	path := filepath.Join(t.TempDir(), "state.sql")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runPsql(t, psql, url, e.Pass, "-v", "ON_ERROR_STOP=1", "-At", "-f", path) // one Query per statement
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r.code != 0 {
		t.Fatalf("psql: %d %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(r.stdout, "SET\n", "")), "\n")
	if len(lines) != 20 {
		t.Fatalf("psql printed %d lines: %q", len(lines), r.stdout)
	}
	for i, l := range lines {
		if l != "pg_catalog, public|9s" {
			t.Fatalf("psql statement %d saw %q", i, l)
		}
	}
}

// TestTxnSettingsPipelined: a client that sends its next batch without
// waiting for the ReadyForQuery of a SET (pgconn pipeline mode) gets
// correct answers: pgtide's own check of the session is ordered before
// the client's next batch on the server.
func TestTxnSettingsPipelined(t *testing.T) {
	e := drvTxnEnv(t, 2)
	ctx := ctxT(t, 60*time.Second)
	a := connect(t, e.URL())
	o := connect(t, e.URL())
	for i := 0; i < 30; i++ {
		want := fmt.Sprintf("s%d", i)
		p := a.PgConn().StartPipeline(ctx)
		p.SendQueryParams("SET search_path = "+want, nil, nil, nil, nil)
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}
		p.SendQueryParams("SELECT current_setting('search_path')", nil, nil, nil, nil)
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}
		var got string
		for n := 0; n < 4; n++ {
			res, err := p.GetResults()
			if err != nil {
				t.Fatal(err)
			}
			if rr, ok := res.(*pgconn.ResultReader); ok {
				r := rr.Read()
				if r.Err != nil {
					t.Fatal(r.Err)
				}
				if len(r.Rows) == 1 {
					got = string(r.Rows[0][0])
				}
			}
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("round %d: search_path %q, want %q", i, got, want)
		}
		if s := queryString(t, o, "SELECT current_setting('search_path')"); s != `"$user", public` {
			t.Fatalf("other client sees %q", s)
		}
	}
}

// TestTxnPinShownInShowClients: SHOW CLIENTS' pin column names why a client
// keeps its server, and empties when the state is released.
func TestTxnPinShownInShowClients(t *testing.T) {
	a := newAdminEnv(t) // transaction mode
	c := connect(t, a.URL()+"&application_name=pinner")
	adm := console(t, a.adminURL())
	pinOf := func() string {
		row := findRow(mustAdmin(t, adm, "SHOW CLIENTS"), "application_name", "pinner")
		if row == nil {
			t.Fatal("SHOW CLIENTS has no row for the client")
		}
		return row["pin"]
	}
	if p := pinOf(); p != "" {
		t.Fatalf("pin before any state = %q; want empty", p)
	}
	if _, err := c.Exec(ctxT(t, 10*time.Second), "CREATE TEMP TABLE pinned_t (i int)"); err != nil {
		t.Fatal(err)
	}
	if p := pinOf(); p != "temp_table" {
		t.Fatalf("pin after CREATE TEMP TABLE = %q; want temp_table", p)
	}
	if _, err := c.Exec(ctxT(t, 10*time.Second), "DROP TABLE pinned_t"); err != nil {
		t.Fatal(err)
	}
	if p := pinOf(); p != "" {
		t.Fatalf("pin after DROP TABLE = %q; want empty", p)
	}
}
