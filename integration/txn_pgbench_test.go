package integration

// Transaction- and statement-mode tests with pgbench and Go clients: pgbench
// in every query mode, an isolation probe with 50 clients on 5 servers,
// session parameters that follow the client, a transaction abandoned by its
// client, statement mode's refusal of transaction blocks.

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// tbTxnEnv is a pgtide whose database runs in mode with poolSize servers.
func tbTxnEnv(t *testing.T, mode string, poolSize int) *env {
	return newEnv(t, func(c *tideConf, db *dbConf) {
		db.PoolMode = mode
		db.PoolSize = poolSize
		c.MaxClientConn = 200
	})
}

// tbPgbench runs pgbench with args against host:port as the env's user; a run
// longer than 60 s is killed and fails the test.
func tbPgbench(t *testing.T, e *env, host string, port int, args ...string) (string, error) {
	t.Helper()
	bin := needBinary(t, "pgbench", "postgresql-client")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{"-h", host, "-p", strconv.Itoa(port), "-U", e.User}, args...)
	full = append(full, e.DB)
	cmd := exec.CommandContext(ctx, bin, full...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "PGPASSWORD="+e.Pass, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("pgbench %s: hung, killed after 60 s (%v)", strings.Join(args, " "), err)
	}
	return out.String(), err
}

var (
	tbProcessedRe = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	tbFailedRe    = regexp.MustCompile(`number of failed transactions: (\d+)`)
	tbTPSRe       = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
)

// TestTxnPgbench: pgbench -S in simple, extended and prepared mode and TPC-B
// in prepared mode, 20 and 32 clients on 5 servers in transaction mode.
func TestTxnPgbench(t *testing.T) {
	needBinary(t, "pgbench", "postgresql-client")
	e := tbTxnEnv(t, "transaction", 5)
	out, err := tbPgbench(t, e, e.pg.Host, e.pg.Port, "-i", "-s", "1", "-q")
	if err != nil {
		t.Fatalf("pgbench -i against PostgreSQL: %v\n%s", err, out)
	}
	runs := [][]string{
		{"-M", "simple", "-S", "-c", "20", "-j", "2", "-T", "3"},
		{"-M", "extended", "-S", "-c", "20", "-j", "2", "-T", "3"},
		{"-M", "prepared", "-S", "-c", "20", "-j", "2", "-T", "3"},
		{"-M", "prepared", "-c", "32", "-j", "2", "-T", "5"},
	}
	for _, args := range runs {
		name := strings.Join(args, " ")
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			out, err := tbPgbench(t, e, e.tide.Host, e.tide.Port, args...)
			if err != nil {
				t.Fatalf("pgbench %s through pgtide: %v\n%s", name, err, out)
			}
			if strings.Contains(strings.ToLower(out), "aborted") {
				t.Errorf("pgbench %s: output mentions aborted clients:\n%s", name, out)
			}
			m := tbFailedRe.FindStringSubmatch(out)
			if m == nil || m[1] != "0" {
				t.Errorf("pgbench %s: want \"number of failed transactions: 0\":\n%s", name, out)
			}
			m = tbProcessedRe.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("pgbench %s: no \"number of transactions actually processed\":\n%s", name, out)
			}
			n, _ := strconv.Atoi(m[1])
			if n <= 0 {
				t.Fatalf("pgbench %s: processed %d transactions:\n%s", name, n, out)
			}
			tps := ""
			if m := tbTPSRe.FindStringSubmatch(out); m != nil {
				tps = m[1]
			}
			t.Logf("pgbench %s: %d transactions, tps %s", name, n, tps)
		})
	}
	// pgbench's TPC-B run must have left consistent balances.
	mon := connect(t, e.DirectURL())
	ab := queryInt(t, mon, "SELECT sum(abalance) FROM pgbench_accounts")
	bb := queryInt(t, mon, "SELECT sum(bbalance) FROM pgbench_branches")
	tb := queryInt(t, mon, "SELECT sum(tbalance) FROM pgbench_tellers")
	hb := queryInt(t, mon, "SELECT coalesce(sum(delta), 0) FROM pgbench_history")
	if ab != bb || bb != tb || tb != hb {
		t.Errorf("after TPC-B: balances accounts %d, branches %d, tellers %d, history %d differ", ab, bb, tb, hb)
	}
}

// TestTxnIsolation: 50 clients on 5 servers, each in a loop BEGIN; INSERT rows
// tagged with its id; SELECT: it must see exactly its own committed rows plus
// the ones of its open transaction, never another client's uncommitted rows;
// then COMMIT or ROLLBACK at random. Afterwards exactly the committed rows are
// in the table.
func TestTxnIsolation(t *testing.T) {
	e := tbTxnEnv(t, "transaction", 5)
	ctx := ctxT(t, 40*time.Second)
	mon := super(t, e.pg, e.DB)
	setup := connect(t, e.DirectURL())
	if _, err := setup.Exec(ctx, "CREATE TABLE iso (client int, iter int, seq int, fate text, PRIMARY KEY (client, iter, seq))"); err != nil {
		t.Fatal(err)
	}

	const clients, iters, perTxn = 50, 8, 3
	type key struct{ client, iter int }
	var commitSent sync.Map // key -> true, stored before COMMIT is sent
	committed := make([][]bool, clients)
	errs := make(chan error, clients)
	modes := []string{"", "&default_query_exec_mode=simple_protocol", "&default_query_exec_mode=describe_exec", "&default_query_exec_mode=exec"}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for c := 0; c < clients; c++ {
		committed[c] = make([]bool, iters)
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			fail := func(format string, args ...any) {
				errs <- fmt.Errorf("client %d: %s", c, fmt.Sprintf(format, args...))
			}
			conn, err := pgx.Connect(ctx, e.URL()+modes[c%len(modes)])
			if err != nil {
				fail("connect: %v", err)
				return
			}
			defer conn.Close(context.Background())
			rng := rand.New(rand.NewSource(int64(c)))
			<-start
			for it := 0; it < iters; it++ {
				commit := rng.Intn(2) == 0
				fate := "rollback"
				if commit {
					fate = "commit"
				}
				tx, err := conn.Begin(ctx)
				if err != nil {
					fail("iter %d: BEGIN: %v", it, err)
					return
				}
				var pid1, pid2 int32
				if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid1); err != nil {
					fail("iter %d: pid: %v", it, err)
					return
				}
				for s := 0; s < perTxn; s++ {
					if _, err := tx.Exec(ctx, "INSERT INTO iso VALUES ($1, $2, $3, $4)", c, it, s, fate); err != nil {
						fail("iter %d: INSERT: %v", it, err)
						return
					}
				}
				// Own rows: committed earlier plus this transaction's.
				rows, _ := tx.Query(ctx, "SELECT iter, seq FROM iso WHERE client = $1 ORDER BY iter, seq", c)
				got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
					var i, s int
					err := r.Scan(&i, &s)
					return fmt.Sprintf("%d.%d", i, s), err
				})
				if err != nil {
					fail("iter %d: SELECT own: %v", it, err)
					return
				}
				var want []string
				for i := 0; i <= it; i++ {
					if i == it || committed[c][i] {
						for s := 0; s < perTxn; s++ {
							want = append(want, fmt.Sprintf("%d.%d", i, s))
						}
					}
				}
				if strings.Join(got, " ") != strings.Join(want, " ") {
					fail("iter %d: sees own rows [%s], want [%s]", it, strings.Join(got, " "), strings.Join(want, " "))
					return
				}
				// Other clients' rows: only ever committed ones.
				rows, _ = tx.Query(ctx, "SELECT DISTINCT client, iter, fate FROM iso WHERE client <> $1", c)
				type other struct {
					key
					fate string
				}
				others, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (other, error) {
					var o other
					err := r.Scan(&o.client, &o.iter, &o.fate)
					return o, err
				})
				if err != nil {
					fail("iter %d: SELECT others: %v", it, err)
					return
				}
				for _, o := range others {
					if o.fate != "commit" {
						fail("iter %d: sees client %d's rows of iteration %d that it rolls back", it, o.client, o.iter)
						return
					}
					if _, ok := commitSent.Load(o.key); !ok {
						fail("iter %d: sees client %d's rows of iteration %d before that client sent COMMIT", it, o.client, o.iter)
						return
					}
				}
				if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid2); err != nil {
					fail("iter %d: pid: %v", it, err)
					return
				}
				if pid1 != pid2 {
					fail("iter %d: transaction moved from backend %d to %d", it, pid1, pid2)
					return
				}
				if commit {
					commitSent.Store(key{c, it}, true)
					if err := tx.Commit(ctx); err != nil {
						fail("iter %d: COMMIT: %v", it, err)
						return
					}
					committed[c][it] = true
				} else if err := tx.Rollback(ctx); err != nil {
					fail("iter %d: ROLLBACK: %v", it, err)
					return
				}
				if conn.PgConn().TxStatus() != 'I' {
					fail("iter %d: TxStatus %q after end of transaction", it, conn.PgConn().TxStatus())
					return
				}
			}
		}(c)
	}
	close(start)
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 20 {
			t.Error(err)
		}
	}
	if n > 20 {
		t.Errorf("... and %d more client errors", n-20)
	}
	if n > 0 {
		rows, _ := mon.Query(context.Background(), "SELECT pid, state, coalesce(backend_xid::text, ''), left(query, 60) FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend' ORDER BY pid", e.User)
		act, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var pid int32
			var st, xid, q string
			err := r.Scan(&pid, &st, &xid, &q)
			return fmt.Sprintf("pid %d %s xid=%s %q", pid, st, xid, q), err
		})
		t.Logf("server backends of the test user after the failure (%v):\n%s", err, strings.Join(act, "\n"))
		t.FailNow()
	}

	// From a direct connection: exactly the committed rows.
	rows, _ := setup.Query(ctx, "SELECT client, iter, count(*), min(fate) FROM iso GROUP BY client, iter ORDER BY client, iter")
	type grp struct {
		client, iter, n int
		fate            string
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (grp, error) {
		var g grp
		err := r.Scan(&g.client, &g.iter, &g.n, &g.fate)
		return g, err
	})
	if err != nil {
		t.Fatal(err)
	}
	var gotS, wantS []string
	for _, g := range got {
		gotS = append(gotS, fmt.Sprintf("%d.%d:%d:%s", g.client, g.iter, g.n, g.fate))
	}
	total := 0
	for c := 0; c < clients; c++ {
		for it := 0; it < iters; it++ {
			if committed[c][it] {
				wantS = append(wantS, fmt.Sprintf("%d.%d:%d:commit", c, it, perTxn))
				total++
			}
		}
	}
	sort.Strings(gotS)
	sort.Strings(wantS)
	if strings.Join(gotS, " ") != strings.Join(wantS, " ") {
		t.Errorf("table after the run:\n got %v\nwant %v", gotS, wantS)
	}
	t.Logf("%d of %d transactions committed", total, clients*iters)
}

// tbShow reads every parameter in names with SHOW, inside tx when tx is set.
func tbShow(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, names []string) (map[string]string, error) {
	m := map[string]string{}
	for _, n := range names {
		var v string
		if err := q.QueryRow(ctx, "SHOW "+n).Scan(&v); err != nil {
			return nil, fmt.Errorf("SHOW %s: %w", n, err)
		}
		m[n] = v
	}
	var d, iv, hr string
	if err := q.QueryRow(ctx, "SELECT date '2024-03-05'::text, interval '1 day 2 hours'::text, to_char(timestamptz '2024-01-01 00:00:00+00', 'HH24')").Scan(&d, &iv, &hr); err != nil {
		return nil, err
	}
	m["date_text"], m["interval_text"], m["hour_text"] = d, iv, hr
	return m, nil
}

// TestTxnSessionParams: two clients share the one server (pool_size 1) in
// transaction mode; each keeps its own application_name, TimeZone and
// client_encoding (startup parameters) and DateStyle / IntervalStyle (SET)
// in every transaction and every autocommit statement.
func TestTxnSessionParams(t *testing.T) {
	e := tbTxnEnv(t, "transaction", 1)
	ctx := ctxT(t, 60*time.Second)
	names := []string{"application_name", "DateStyle", "TimeZone", "IntervalStyle", "client_encoding"}

	d := connect(t, e.DirectURL())
	def, err := tbShow(ctx, d, names)
	if err != nil {
		t.Fatal(err)
	}
	d.Close(ctx)
	if def["DateStyle"] == "SQL, DMY" || def["IntervalStyle"] == "iso_8601" || def["TimeZone"] == "Asia/Tokyo" {
		t.Fatalf("server defaults %v collide with the test's values", def)
	}

	dial := func(app, tz, enc string) *pgx.Conn {
		cfg, err := pgx.ParseConfig(e.URL())
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["application_name"] = app
		cfg.RuntimeParams["TimeZone"] = tz
		cfg.RuntimeParams["client_encoding"] = enc
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("connect %s: %v", app, err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	a := dial("a", "UTC", "UTF8")
	if _, err := a.Exec(ctx, "SET DateStyle = 'SQL, DMY'"); err != nil {
		t.Fatal(err)
	}
	b := dial("b", "Asia/Tokyo", "LATIN1")
	if _, err := b.Exec(ctx, "SET IntervalStyle = 'iso_8601'"); err != nil {
		t.Fatal(err)
	}
	wantA := map[string]string{
		"application_name": "a", "DateStyle": "SQL, DMY", "TimeZone": "UTC",
		"IntervalStyle": def["IntervalStyle"], "client_encoding": "UTF8",
		"date_text": "05/03/2024", "interval_text": def["interval_text"], "hour_text": "00",
	}
	wantB := map[string]string{
		"application_name": "b", "DateStyle": def["DateStyle"], "TimeZone": "Asia/Tokyo",
		"IntervalStyle": "iso_8601", "client_encoding": "LATIN1",
		"date_text": def["date_text"], "interval_text": "P1DT2H", "hour_text": "09",
	}
	var pidMu sync.Mutex
	pids := map[int32]string{} // backend -> first client and round seen there
	check := func(who string, c *pgx.Conn, want map[string]string, inTx bool, round int) error {
		var got map[string]string
		var pid int32
		defer func() {
			pidMu.Lock()
			if _, ok := pids[pid]; !ok && pid != 0 {
				pids[pid] = fmt.Sprintf("client %s round %d", who, round)
			}
			pidMu.Unlock()
		}()
		if inTx {
			tx, err := c.Begin(ctx)
			if err != nil {
				return err
			}
			if got, err = tbShow(ctx, tx, names); err != nil {
				_ = tx.Rollback(ctx)
				return err
			}
			if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return err
			}
			if err := tx.Commit(ctx); err != nil {
				return err
			}
		} else {
			var err error
			if got, err = tbShow(ctx, c, names); err != nil {
				return err
			}
			if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return err
			}
		}
		var bad []string
		for k, v := range want {
			if got[k] != v {
				bad = append(bad, fmt.Sprintf("%s = %q (want %q)", k, got[k], v))
			}
		}
		// What the driver was told by ParameterStatus must be its own too.
		for _, k := range []string{"application_name", "DateStyle", "TimeZone", "IntervalStyle", "client_encoding"} {
			if ps := c.PgConn().ParameterStatus(k); ps != want[k] {
				bad = append(bad, fmt.Sprintf("ParameterStatus %s = %q (want %q)", k, ps, want[k]))
			}
		}
		if len(bad) > 0 {
			sort.Strings(bad)
			return fmt.Errorf("client %s round %d (in transaction: %v): %s", who, round, inTx, strings.Join(bad, "; "))
		}
		return nil
	}

	// Interleaved one after the other on the single server.
	mon := super(t, e.pg, e.DB)
	backends := func() string {
		rows, _ := mon.Query(ctx, "SELECT pid, backend_start FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend' ORDER BY pid", e.User)
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var pid int32
			var start time.Time
			err := r.Scan(&pid, &start)
			return fmt.Sprintf("%d (started %s)", pid, start.Format("15:04:05.000")), err
		})
		if err != nil {
			return err.Error()
		}
		return strings.Join(got, ", ")
	}
	pidA := queryInt(t, a, "SELECT pg_backend_pid()")
	pidB := queryInt(t, b, "SELECT pg_backend_pid()")
	if pidA != pidB {
		// Not what this test is about, but with pool_size 1 and a healthy
		// PostgreSQL the one server must not be replaced.
		t.Errorf("pool_size 1 but client A ran on backend %d and then client B on backend %d (the server was replaced); the user's backends now: %s",
			pidA, pidB, backends())
	}
	for round := 0; round < 10; round++ {
		for _, inTx := range []bool{true, false} {
			if err := check("A", a, wantA, inTx, round); err != nil {
				t.Fatal(err)
			}
			if err := check("B", b, wantB, inTx, round); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Concurrently: the two clients queue for the one server.
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, cl := range []struct {
		who  string
		c    *pgx.Conn
		want map[string]string
	}{{"A", a, wantA}, {"B", b, wantB}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < 15; round++ {
				if err := check(cl.who, cl.c, cl.want, round%2 == 0, round); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(pids) != 1 {
		// With pool_size 1 and a healthy PostgreSQL the one server must
		// never be replaced; each replacement also drops its prepared
		// statements.
		t.Errorf("pool_size 1, yet the clients ran on %d different backends (first seen: %v); the user's backends now: %s",
			len(pids), pids, backends())
	}
	// A third client with no settings of its own sees the server defaults.
	c := connect(t, e.URL())
	got, err := tbShow(ctx, c, names)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"DateStyle", "TimeZone", "IntervalStyle", "date_text", "interval_text", "hour_text"} {
		if got[k] != def[k] {
			t.Errorf("fresh client C: %s = %q, want the default %q (leaked from A or B)", k, got[k], def[k])
		}
	}
	if got["application_name"] == "a" || got["application_name"] == "b" {
		t.Errorf("fresh client C: application_name = %q leaked", got["application_name"])
	}
}

// TestTxnAbandonedTransaction: pool_size 1 in transaction mode; client A opens
// a transaction and disappears (RST, Terminate, or in a failed transaction);
// client B gets the same backend (pgtide rolled back rather than closed it),
// in status idle, without A's rows.
func TestTxnAbandonedTransaction(t *testing.T) {
	rst := func(c *pgconn.PgConn) {
		raw := c.Conn()
		if tc, ok := raw.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		raw.Close()
	}
	cases := []struct {
		name string
		sql  string // run (simple protocol) before the client leaves
		tx   byte   // A's TxStatus after sql
		end  func(t *testing.T, c *pgconn.PgConn, mon *pgx.Conn)
	}{
		{"rst_in_transaction", "INSERT INTO abandoned VALUES (1)", 'T', func(_ *testing.T, c *pgconn.PgConn, _ *pgx.Conn) { rst(c) }},
		{"terminate_in_transaction", "INSERT INTO abandoned VALUES (2)", 'T', func(_ *testing.T, c *pgconn.PgConn, _ *pgx.Conn) {
			_ = c.Close(context.Background())
		}},
		{"rst_in_failed_transaction", "INSERT INTO abandoned VALUES (3); SELECT 1/0", 'E', func(_ *testing.T, c *pgconn.PgConn, _ *pgx.Conn) { rst(c) }},
		{"rst_during_query_in_transaction", "INSERT INTO abandoned VALUES (4)", 'T', func(t *testing.T, c *pgconn.PgConn, mon *pgx.Conn) {
			// The client leaves while its query runs on the server.
			fr := c.Frontend()
			fr.Send(&pgproto3.Query{String: "SELECT pg_sleep(1)"})
			_ = fr.Flush()
			waitRunning(t, mon, "SELECT pg_sleep(1)", 1)
			rst(c)
		}},
		{"rst_after_flush_in_transaction", "INSERT INTO abandoned VALUES (5)", 'T', func(t *testing.T, c *pgconn.PgConn, _ *pgx.Conn) {
			// Parse/Bind/Execute and a Flush, no Sync: the server has
			// answered, but the extended batch is still open.
			fr := c.Frontend()
			fr.Send(&pgproto3.Parse{Query: "INSERT INTO abandoned VALUES (6)"})
			fr.Send(&pgproto3.Bind{})
			fr.Send(&pgproto3.Execute{})
			fr.Send(&pgproto3.Flush{})
			_ = fr.Flush()
			_ = c.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				m, err := fr.Receive()
				if err != nil {
					t.Fatalf("waiting for the replies to the flushed batch: %v", err)
				}
				if _, ok := m.(*pgproto3.CommandComplete); ok {
					break // the server has answered
				}
			}
			rst(c)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A pgtide of its own per case, so that one case's stuck server
			// cannot fail the next.
			e := tbTxnEnv(t, "transaction", 1)
			ctx := ctxT(t, 30*time.Second)
			setup := connect(t, e.DirectURL())
			if _, err := setup.Exec(ctx, "CREATE TABLE abandoned (id int)"); err != nil {
				t.Fatal(err)
			}
			setup.Close(ctx)
			mon := super(t, e.pg, e.DB)
			a, err := pgconn.Connect(ctx, e.URL())
			if err != nil {
				t.Fatal(err)
			}
			res, err := a.Exec(ctx, "BEGIN; SELECT pg_backend_pid()::text").ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			pidA := string(res[1].Rows[0][0])
			_, _ = a.Exec(ctx, tc.sql).ReadAll() // the 1/0 case errors on purpose
			if a.TxStatus() != tc.tx {
				t.Fatalf("client A: TxStatus %q after %q, want %q", a.TxStatus(), tc.sql, tc.tx)
			}
			tc.end(t, a, mon)
			left := time.Now()

			var notices []string
			var mu sync.Mutex
			cfg, err := pgconn.ParseConfig(e.URL())
			if err != nil {
				t.Fatal(err)
			}
			cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
				mu.Lock()
				notices = append(notices, n.Code+" "+n.Message)
				mu.Unlock()
			}
			// A's server must be free again soon (well before pgtide's 10 s
			// fallback), whatever A was doing when it left.
			bctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			b, err := pgconn.ConnectConfig(bctx, cfg)
			if err != nil {
				t.Fatalf("client B (pool_size 1) could not log in within %v after A left: %v", time.Since(left).Round(time.Millisecond), err)
			}
			defer b.Close(context.Background())
			res, err = b.Exec(bctx, "SELECT pg_backend_pid()::text, (SELECT count(*) FROM abandoned)::text, txid_current_if_assigned() IS NULL").ReadAll()
			if err != nil {
				t.Fatalf("client B's first query (%v after A left): %v", time.Since(left).Round(time.Millisecond), err)
			}
			t.Logf("client B's first query answered %v after A left", time.Since(left).Round(time.Millisecond))
			row := res[0].Rows[0]
			pidB, n, noXid := string(row[0]), string(row[1]), string(row[2])
			if n != "0" {
				t.Errorf("client B sees %s rows of abandoned transactions", n)
			}
			if noXid != "t" {
				t.Errorf("client B's statement runs inside a transaction that already has an xid (A's)")
			}
			if b.TxStatus() != 'I' {
				t.Errorf("client B: TxStatus %q after a plain SELECT, want I", b.TxStatus())
			}
			if _, err := b.Exec(bctx, "BEGIN; ROLLBACK").ReadAll(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			for _, n := range notices {
				if strings.HasPrefix(n, "25001") {
					t.Errorf("client B's BEGIN warned %q: it inherited A's open transaction", n)
				}
			}
			mu.Unlock()
			if pidB != pidA {
				t.Errorf("client B got backend %s, A had %s: the server was closed and replaced instead of rolled back and reused", pidB, pidA)
			}
			var open int64
			if err := mon.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state LIKE 'idle in transaction%'", e.User).Scan(&open); err != nil {
				t.Fatal(err)
			}
			if open != 0 {
				t.Errorf("%d backends idle in transaction after A left and B finished", open)
			}
			if n := queryInt(t, mon, "SELECT count(*) FROM abandoned"); n != 0 {
				t.Errorf("the abandoned transaction left %d rows committed", n)
			}
		})
	}
}

// TestStatementMode: pool_mode "statement": autocommit statements work, in
// the simple and the extended protocol; BEGIN / START TRANSACTION get
// SQLSTATE 0A000 and the connection stays usable.
func TestStatementMode(t *testing.T) {
	e := tbTxnEnv(t, "statement", 2)
	ctx := ctxT(t, 60*time.Second)
	setup := connect(t, e.DirectURL())
	if _, err := setup.Exec(ctx, "CREATE TABLE stmt_mode (id int PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}

	c, err := pgconn.Connect(ctx, e.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	simple := func(sql string) ([]*pgconn.Result, error) { return c.Exec(ctx, sql).ReadAll() }
	if res, err := simple("SELECT 41 + 1"); err != nil || string(res[0].Rows[0][0]) != "42" {
		t.Fatalf("SELECT 41 + 1: %v %v", res, err)
	}
	if _, err := simple("INSERT INTO stmt_mode VALUES (1, 'simple')"); err != nil {
		t.Fatalf("autocommit INSERT: %v", err)
	}
	for _, sql := range []string{"BEGIN", "START TRANSACTION", "begin isolation level serializable"} {
		_, err := simple(sql)
		if code := sqlState(err); code != "0A000" {
			t.Errorf("%q in statement mode: error %v (SQLSTATE %q), want SQLSTATE 0A000", sql, err, code)
		}
		if c.TxStatus() != 'I' {
			t.Errorf("after %q: TxStatus %q, want I", sql, c.TxStatus())
		}
		res, err := simple("SELECT 'usable'")
		if err != nil || string(res[0].Rows[0][0]) != "usable" {
			t.Fatalf("after %q was refused: %v %v", sql, res, err)
		}
		// A statement after the refused BEGIN is not inside a transaction:
		// its effect is committed at once.
		if res, err := simple("SELECT txid_current_if_assigned() IS NULL, now() = statement_timestamp()"); err != nil {
			t.Fatal(err)
		} else if got := string(res[0].Rows[0][0]) + string(res[0].Rows[0][1]); got != "tt" {
			t.Errorf("after %q: next statement runs inside a transaction (%s)", sql, got)
		}
	}
	// The extended protocol (pgx with its statement cache).
	p := connect(t, e.URL())
	for i := 2; i < 12; i++ {
		if _, err := p.Exec(ctx, "INSERT INTO stmt_mode VALUES ($1, $2)", i, fmt.Sprintf("ext%d", i)); err != nil {
			t.Fatalf("extended INSERT %d: %v", i, err)
		}
		if v := queryString(t, p, "SELECT v FROM stmt_mode WHERE id = $1", i); v != fmt.Sprintf("ext%d", i) {
			t.Fatalf("read back %q", v)
		}
	}
	_, err = p.Begin(ctx)
	if code := sqlState(err); code != "0A000" {
		t.Errorf("pgx Begin in statement mode: %v (SQLSTATE %q), want 0A000", err, code)
	}
	if v := queryInt(t, p, "SELECT count(*) FROM stmt_mode"); v != 11 {
		t.Errorf("after refused Begin: count %d, want 11", v)
	}
	// Several clients, two servers.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc, err := pgx.Connect(ctx, e.URL())
			if err != nil {
				errs <- err
				return
			}
			defer cc.Close(context.Background())
			for i := 0; i < 25; i++ {
				var n int
				if err := cc.QueryRow(ctx, "SELECT $1::int * 3", w*100+i).Scan(&n); err != nil || n != (w*100+i)*3 {
					errs <- fmt.Errorf("worker %d: %d, %v", w, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := queryInt(t, setup, "SELECT count(*) FROM stmt_mode"); n != 11 {
		t.Errorf("direct: %d rows, want 11 (autocommit statements committed)", n)
	}
}
