package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestReloadPoolModeUnderLoad reloads pool_mode back and forth while clients
// log in and a console reads SHOW POOLS: the pool's mode is written by the
// reload and read by every login and by the console, which the -race build
// of pgtide reports as a data race unless the accesses are synchronized
// (the harness fails the test on "WARNING: DATA RACE" in pgtide's output).
// Every client must keep working, and the last reload's mode must be the
// one SHOW POOLS and new clients get.
func TestReloadPoolModeUnderLoad(t *testing.T) {
	a := newAdminEnv(t)
	adm := console(t, a.adminURL())
	ctx := ctxT(t, 120*time.Second)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var logins, failures atomic.Int64
	var firstErr atomic.Value
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Unnamed statements: a named one (pgx's default cache)
				// trips over a separate bug, statements recorded on a
				// server after a session-mode client's DISCARD ALL.
				c, err := pgx.Connect(ctx, a.URL()+"&default_query_exec_mode=exec")
				if err == nil {
					var n int
					err = c.QueryRow(ctx, "select 1").Scan(&n)
					c.Close(context.Background())
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				logins.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := console(t, a.adminURL())
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Exec(ctx, "SHOW POOLS; SHOW DATABASES").ReadAll(); err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, "SHOW POOLS: "+err.Error())
				return
			}
		}
	}()

	conf := a.conf
	modes := []string{"session", "transaction"}
	for i := range 30 {
		conf.PoolMode = modes[i%2]
		a.rewriteConfig(t, conf.TOML(a.pg.Port))
		if _, err := adminRun(t, adm, "RELOAD"); err != nil {
			t.Fatalf("RELOAD %d: %v", i, err)
		}
		// Let some logins run under this mode before the next reload.
		target := logins.Load() + 3
		if !pgtest.Eventually(20*time.Second, func() bool { return logins.Load() >= target || failures.Load() > 0 }) {
			t.Fatalf("no logins after reload %d", i)
		}
	}
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d client failures during reloads; first: %v", n, firstErr.Load())
	}
	last := modes[29%2]
	if p := findRow(mustAdmin(t, adm, "SHOW POOLS"), "database", a.DB); p == nil || p["pool_mode"] != last {
		t.Fatalf("SHOW POOLS after the last reload: %v; want pool_mode %s", p, last)
	}
	t.Logf("%d logins across 30 reloads of pool_mode", logins.Load())
}

// exporterColumns are the columns, in order, with their type OIDs, that
// PgBouncer 1.25 answers to the queries prometheus-community/
// pgbouncer_exporter runs (its collector.go: "SHOW STATS" to check the
// connection, then "SHOW VERSION;", "SHOW LISTS;", "SHOW CONFIG;", and
// "SHOW databases;", "SHOW stats_totals;", "SHOW pools;"). The type
// letters are PgBouncer's (src/pktbuf.c): s text 25, i int4 23, q int8 20,
// N numeric 1700.
var exporterColumns = map[string]string{
	"SHOW STATS": "database:25 total_server_assignment_count:1700 total_xact_count:1700 total_query_count:1700 " +
		"total_received:1700 total_sent:1700 total_xact_time:1700 total_query_time:1700 total_wait_time:1700 " +
		"total_client_parse_count:1700 total_server_parse_count:1700 total_bind_count:1700 " +
		"avg_server_assignment_count:1700 avg_xact_count:1700 " +
		"avg_query_count:1700 avg_recv:1700 avg_sent:1700 avg_xact_time:1700 avg_query_time:1700 " +
		"avg_wait_time:1700 avg_client_parse_count:1700 avg_server_parse_count:1700 avg_bind_count:1700",
	"SHOW VERSION;": "version:25",
	"SHOW LISTS;":   "list:25 items:23",
	"SHOW CONFIG;":  "key:25 value:25 default:25 changeable:25",
	"SHOW databases;": "name:25 host:25 port:23 database:25 force_user:25 pool_size:23 min_pool_size:23 " +
		"reserve_pool_size:23 server_lifetime:23 pool_mode:25 load_balance_hosts:25 max_connections:23 " +
		"current_connections:23 max_client_connections:23 current_client_connections:23 paused:23 disabled:23",
	"SHOW stats_totals;": "database:25 server_assignment_count:1700 xact_count:1700 query_count:1700 " +
		"bytes_received:1700 bytes_sent:1700 xact_time:1700 query_time:1700 wait_time:1700 " +
		"client_parse_count:1700 server_parse_count:1700 bind_count:1700",
	"SHOW pools;": "database:25 user:25 cl_active:23 cl_waiting:23 cl_active_cancel_req:23 " +
		"cl_waiting_cancel_req:23 sv_active:23 sv_active_cancel:23 sv_being_canceled:23 sv_idle:23 sv_used:23 " +
		"sv_tested:23 sv_login:23 maxwait:23 maxwait_us:23 pool_mode:25 load_balance_hosts:25",
}

// TestConsoleAsPgbouncer is pgbouncer_exporter's view of pgtide: it logs in
// to database "pgbouncer" as a stats user and runs the exporter's queries,
// which must answer with PgBouncer 1.25's columns and types and with values
// the exporter can parse.
func TestConsoleAsPgbouncer(t *testing.T) {
	a := newAdminEnv(t)
	client := connect(t, a.URL())
	queryInt(t, client, "select 1")
	ctx := ctxT(t, 60*time.Second)

	c := console(t, a.tide.ConnString("pgbouncer", "stat", a.statPass))
	for _, q := range []string{"SHOW STATS", "SHOW VERSION;", "SHOW LISTS;", "SHOW CONFIG;", "SHOW databases;",
		"SHOW stats_totals;", "SHOW pools;"} {
		res, err := c.Exec(ctx, q).ReadAll()
		if err != nil || len(res) != 1 {
			t.Fatalf("%s: %v (%d results)", q, err, len(res))
		}
		var got []string
		for _, f := range res[0].FieldDescriptions {
			got = append(got, fmt.Sprintf("%s:%d", f.Name, f.DataTypeOID))
		}
		if strings.Join(got, " ") != exporterColumns[q] {
			t.Errorf("%s columns\n got %s\nwant %s", q, strings.Join(got, " "), exporterColumns[q])
		}
		// The exporter reads every non-label column as a number (NULL is
		// NaN), and SHOW LISTS items and two SHOW CONFIG values too.
		for _, row := range res[0].Rows {
			for i, f := range res[0].FieldDescriptions {
				numeric := f.DataTypeOID != 25 ||
					q == "SHOW CONFIG;" && f.Name == "value" && (string(row[0]) == "max_client_conn" || string(row[0]) == "max_user_connections")
				if numeric && row[i] != nil {
					if _, err := strconv.ParseFloat(string(row[i]), 64); err != nil {
						t.Errorf("%s: %s = %q is not a number", q, f.Name, row[i])
					}
				}
			}
		}
		switch q {
		case "SHOW VERSION;":
			if len(res[0].Rows) != 1 || !strings.HasPrefix(string(res[0].Rows[0][0]), "pgtide ") {
				t.Errorf("SHOW VERSION: %q", res[0].Rows)
			}
		case "SHOW pools;":
			found := false
			for _, row := range res[0].Rows {
				found = found || string(row[0]) == a.DB && string(row[2]) == "1" && string(row[15]) == "transaction"
			}
			if !found {
				t.Errorf("SHOW pools: no row for %s with one active client in transaction mode", a.DB)
			}
		}
	}
	// The console names the database its user logged in to.
	if r := findRow(mustAdmin(t, c, "SHOW CLIENTS"), "user", "stat"); r == nil || r["database"] != "pgbouncer" {
		t.Errorf("SHOW CLIENTS: the console's own row is %v; want database pgbouncer", r)
	}
	// Only admin_users may change anything, under either name.
	if _, err := adminRun(t, c, "PAUSE"); sqlState(err) != "42501" {
		t.Errorf("PAUSE by a stats user on database pgbouncer: %v; want 42501", err)
	}
	adm := console(t, a.tide.ConnString("pgbouncer", "adm", a.admPass))
	mustAdmin(t, adm, "RECONNECT "+a.DB)
	if _, err := adminRun(t, adm, "SET listen = '0.0.0.0:1'"); sqlState(err) != "55P02" {
		t.Errorf("SET listen: %v; want 55P02 (needs a restart)", err)
	}
	// A file path is not set from the console: pgtide would read any file
	// its user can and quote what it found in a parse error (before: SET
	// auth_hba_file = a password file showed its first line).
	secretFile := filepath.Join(t.TempDir(), "pgpass")
	if err := os.WriteFile(secretFile, []byte("127.0.0.1:5432:*:someone:TopSecretPw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := adminRun(t, adm, "SET auth_hba_file = '"+secretFile+"'")
	if sqlState(err) != "55P02" || strings.Contains(fmt.Sprint(err), "TopSecretPw") {
		t.Errorf("SET auth_hba_file: %v; want 55P02 without the file's content", err)
	}
}

// TestConsoleSet changes a setting at run time with SET, as PgBouncer's
// console allows: it is in force at once (SHOW CONFIG, and a pool's mode),
// and the next RELOAD reads the file again.
func TestConsoleSet(t *testing.T) {
	a := newAdminEnv(t)
	adm := console(t, a.adminURL())
	client := connect(t, a.URL())
	queryInt(t, client, "select 1")

	mustAdmin(t, adm, "SET pool_mode = session; SET query_wait_timeout = '2.5'")
	conf := map[string]adminRow{}
	for _, r := range mustAdmin(t, adm, "SHOW CONFIG") {
		conf[r["key"]] = r
	}
	if conf["pool_mode"]["value"] != "session" || conf["query_wait_timeout"]["value"] != "2.5" {
		t.Fatalf("SHOW CONFIG after SET: pool_mode %v, query_wait_timeout %v", conf["pool_mode"], conf["query_wait_timeout"])
	}
	if p := findRow(mustAdmin(t, adm, "SHOW POOLS"), "database", a.DB); p["pool_mode"] != "session" {
		t.Fatalf("SHOW POOLS after SET pool_mode = session: %v", p)
	}
	// A value the configuration file would refuse is refused, and nothing changes.
	if _, err := adminRun(t, adm, "SET default_pool_size = 0"); sqlState(err) != "22023" {
		t.Errorf("SET default_pool_size = 0: %v; want 22023", err)
	}
	if r := findRow(mustAdmin(t, adm, "SHOW CONFIG"), "key", "default_pool_size"); r["value"] != fmt.Sprint(a.conf.DefaultPoolSize) {
		t.Errorf("default_pool_size after a refused SET: %v", r)
	}
	// A client logging in now gets the mode SET chose, and works.
	c2 := connect(t, a.URL())
	queryInt(t, c2, "select 1")
	// The log line is written after the login was answered and reaches the
	// harness through a pipe: wait for it rather than look once.
	if !pgtest.Eventually(5*time.Second, func() bool { return strings.Contains(a.tide.Logs(), `"pool_mode":"session"`) }) {
		t.Errorf("no client logged in with pool_mode session after SET")
	}
	mustAdmin(t, adm, "RELOAD")
	if p := findRow(mustAdmin(t, adm, "SHOW POOLS"), "database", a.DB); p["pool_mode"] != "transaction" {
		t.Errorf("SHOW POOLS after RELOAD: %v; want the file's transaction", p)
	}
}

// TestConsoleShowsTLS: SHOW CLIENTS' tls column says which protocol and
// cipher a TLS client (and the console itself) uses, as PgBouncer's does.
func TestConsoleShowsTLS(t *testing.T) {
	certs := pgtest.NewCerts(t)
	stamp := fmt.Sprint(time.Now().UnixNano())
	admPass := "Adm-" + stamp
	e := newEnv(t, func(c *tideConf, _ *dbConf) {
		c.Extra = clientTLSConf(certs, "require") + "admin_users = [\"adm\"]\n"
		c.Users["adm"] = admPass
	})
	e.secrets = append(e.secrets, admPass)
	client := connect(t, tlsURL(e.tide.Port, e.DB, e.User, e.Pass, "sslmode", "require", "application_name", "tls_client"))
	queryInt(t, client, "select 1")
	adm := console(t, tlsURL(e.tide.Port, "pgtide", "adm", admPass, "sslmode", "require"))
	rows := mustAdmin(t, adm, "SHOW CLIENTS")
	for _, who := range []string{"tls_client", ""} {
		r := findRow(rows, "application_name", who)
		if r == nil || !strings.HasPrefix(r["tls"], "TLSv1.") || !strings.Contains(r["tls"], "/TLS_") {
			t.Errorf("SHOW CLIENTS tls of %q: %v; want TLSv1.x/<cipher>", who, r)
		}
	}
}
