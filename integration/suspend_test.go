package integration

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestConsoleSuspend: SUSPEND waits for a query in flight, then stops
// client traffic: a client in the middle of a transaction sends its next
// statements, and neither reaches PostgreSQL; an idle client and a new one
// wait too; the console (and a new console) keeps working. After RESUME the
// transaction completes, whole, and the others get their answers.
func TestConsoleSuspend(t *testing.T) {
	stamp := fmt.Sprint(time.Now().UnixNano())
	a := &adminEnv{admPass: "Adm-" + stamp, statPass: "Stat-" + stamp}
	a.env = newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		db.PoolSize = 4
		c.Extra = "admin_users = [\"adm\"]\nstats_users = [\"stat\"]\n"
		c.Users["adm"] = a.admPass
		c.Users["stat"] = a.statPass
	})
	a.secrets = append(a.secrets, a.admPass, a.statPass)
	ctx := ctxT(t, 90*time.Second)

	direct := connect(t, a.DirectURL())
	if _, err := direct.Exec(ctx, "CREATE TABLE susp (n int)"); err != nil {
		t.Fatal(err)
	}
	adm := console(t, a.adminURL())

	// A transaction open on its server, and a query in flight.
	txc := connect(t, a.URL())
	if _, err := txc.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := txc.Exec(ctx, "INSERT INTO susp VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	txPID := queryInt(t, txc, "SELECT pg_backend_pid()")
	slow := connect(t, a.URL())
	slowDone := make(chan error, 1)
	go func() { _, err := slow.Exec(ctx, "SELECT pg_sleep(0.5)"); slowDone <- err }()
	sleeping := func() int64 {
		return queryInt(t, direct, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'SELECT pg_sleep%' AND state = 'active'", a.DB)
	}
	if !pgtest.Eventually(20*time.Second, func() bool { return sleeping() == 1 }) {
		t.Fatal("the slow query never started")
	}
	idle := connect(t, a.URL())
	queryInt(t, idle, "SELECT 1")

	// SUSPEND returns only once the query in flight has been answered.
	mustAdmin(t, adm, "SUSPEND")
	if n := sleeping(); n != 0 {
		t.Errorf("SUSPEND returned while a query was still running on its server (%d)", n)
	}
	select {
	case err := <-slowDone:
		if err != nil {
			t.Errorf("the query in flight at SUSPEND: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the answer of the query in flight at SUSPEND never reached its client")
	}
	if r := findRow(mustAdmin(t, adm, "SHOW STATE"), "key", "suspended"); r["value"] != "yes" {
		t.Errorf("SHOW STATE while suspended: %v", r)
	}
	if _, err := adminRun(t, adm, "SUSPEND"); sqlState(err) != "55000" {
		t.Errorf("SUSPEND while suspended: %v; want 55000", err)
	}

	// Traffic sent while suspended.
	txDone := make(chan error, 1)
	go func() {
		_, err := txc.Exec(ctx, "INSERT INTO susp VALUES (2)")
		if err == nil {
			_, err = txc.Exec(ctx, "COMMIT")
		}
		txDone <- err
	}()
	idleDone := make(chan int64, 1)
	go func() {
		var n int64
		_ = idle.QueryRow(ctx, "SELECT 42").Scan(&n)
		idleDone <- n
	}()
	newDone := make(chan int64, 1)
	go func() {
		var n int64
		if c, err := pgx.Connect(ctx, a.URL()); err == nil {
			_ = c.QueryRow(ctx, "SELECT 7").Scan(&n)
			c.Close(context.Background())
		}
		newDone <- n
	}()

	// The console works meanwhile, a new one too.
	if rows := mustAdmin(t, adm, "SHOW CLIENTS"); len(rows) < 4 {
		t.Errorf("SHOW CLIENTS while suspended: %d rows", len(rows))
	}
	adm2 := console(t, a.adminURL())
	if r := findRow(mustAdmin(t, adm2, "SHOW STATE"), "key", "suspended"); r["value"] != "yes" {
		t.Errorf("SHOW STATE on a console opened while suspended: %v", r)
	}
	// Nothing the clients sent reaches PostgreSQL (a check that can only
	// pass too easily on a slow machine, never fail by being slow).
	for range 15 {
		var state, query string
		if err := direct.QueryRow(ctx, "SELECT state, query FROM pg_stat_activity WHERE pid = $1", txPID).Scan(&state, &query); err != nil {
			t.Fatal(err)
		}
		if state != "idle in transaction" || query != "SELECT pg_backend_pid()" {
			t.Fatalf("while suspended the transaction's server is %q running %q; want it untouched", state, query)
		}
		if n := queryInt(t, direct, "SELECT count(*) FROM susp"); n != 0 {
			t.Fatalf("while suspended %d rows were committed", n)
		}
		select {
		case err := <-txDone:
			t.Fatalf("the transaction got an answer while suspended: %v", err)
		case n := <-idleDone:
			t.Fatalf("an idle client got an answer while suspended: %d", n)
		case n := <-newDone:
			t.Fatalf("a new client got an answer while suspended: %d", n)
		default:
		}
		time.Sleep(20 * time.Millisecond)
	}

	mustAdmin(t, adm2, "RESUME")
	select {
	case err := <-txDone:
		if err != nil {
			t.Fatalf("the suspended transaction after RESUME: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the suspended transaction never finished after RESUME")
	}
	if n := queryInt(t, direct, "SELECT count(*) FROM susp WHERE n IN (1, 2)"); n != 2 {
		t.Errorf("after RESUME the transaction committed %d of its 2 rows", n)
	}
	if n := <-idleDone; n != 42 {
		t.Errorf("the idle client after RESUME got %d", n)
	}
	if n := <-newDone; n != 7 {
		t.Errorf("the client that connected while suspended got %d", n)
	}
	if r := findRow(mustAdmin(t, adm, "SHOW STATE"), "key", "suspended"); r["value"] != "no" {
		t.Errorf("SHOW STATE after RESUME: %v", r)
	}
	// The servers went back clean: every one lent again works.
	for range 3 {
		queryInt(t, idle, "SELECT 1")
	}
}

// TestConsoleSuspendHoldsIdleTimeouts: a client held by SUSPEND is not idle
// by choice: idle_transaction_timeout does not end its transaction. Idle
// clients parked without a goroutine (park.go), at login or by the idle
// sweep during the SUSPEND, wait too and go on after RESUME.
func TestConsoleSuspendHoldsIdleTimeouts(t *testing.T) {
	stamp := fmt.Sprint(time.Now().UnixNano())
	a := &adminEnv{admPass: "Adm-" + stamp}
	a.env = newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		c.Extra = "admin_users = [\"adm\"]\nidle_transaction_timeout = \"2s\"\n"
		c.Users["adm"] = a.admPass
	})
	a.secrets = append(a.secrets, a.admPass)
	ctx := ctxT(t, 60*time.Second)
	adm := console(t, a.adminURL())
	parkedAtLogin := connect(t, a.URL()) // nothing sent: parked at once
	idle := connect(t, a.URL())
	queryInt(t, idle, "SELECT 1") // idle from now: the sweep parks it
	txc := connect(t, a.URL())
	if _, err := txc.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	mustAdmin(t, adm, "SUSPEND")
	woken := make(chan int64, 1)
	go func() {
		var n int64
		_ = parkedAtLogin.QueryRow(ctx, "SELECT 8").Scan(&n)
		woken <- n
	}()
	// Longer than idle_transaction_timeout and than the idle sweep (a wait
	// that can only make the test pass too easily on a slow machine, never
	// fail).
	time.Sleep(3 * time.Second)
	select {
	case n := <-woken:
		t.Fatalf("a parked client got an answer while suspended: %d", n)
	default:
	}
	mustAdmin(t, adm, "RESUME")
	if n := <-woken; n != 8 {
		t.Fatalf("the parked client after RESUME got %d", n)
	}
	if got := queryInt(t, idle, "SELECT 6"); got != 6 {
		t.Fatalf("the idle client after RESUME: %d", got)
	}
	if got := queryInt(t, txc, "SELECT 5"); got != 5 {
		t.Fatalf("in the transaction after RESUME: %d", got)
	}
	if _, err := txc.Exec(ctx, "COMMIT"); err != nil {
		t.Fatalf("COMMIT after a SUSPEND longer than idle_transaction_timeout: %v", err)
	}
}

// TestSIGUSR1PauseSIGUSR2Resume: the signals are PAUSE and RESUME, as
// PgBouncer's: a transaction waits after SIGUSR1, goes on after SIGUSR2,
// and pgtide keeps running. SIGUSR2 also ends a SUSPEND (the way out when
// no console is at hand).
func TestSIGUSR1PauseSIGUSR2Resume(t *testing.T) {
	a := newAdminEnv(t)
	ctx := ctxT(t, 60*time.Second)
	c := connect(t, a.URL())
	queryInt(t, c, "SELECT 1")
	adm := console(t, a.adminURL())
	state := func() adminRow {
		out := adminRow{}
		for _, r := range mustAdmin(t, adm, "SHOW STATE") {
			out[r["key"]] = r["value"]
		}
		return out
	}
	if err := a.tide.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if !pgtest.Eventually(10*time.Second, func() bool { return state()["paused"] == "yes" }) {
		t.Fatalf("SHOW STATE after SIGUSR1: %v; want paused", state())
	}
	done := make(chan int64, 1)
	go func() {
		var n int64
		_ = c.QueryRow(ctx, "SELECT 3").Scan(&n)
		done <- n
	}()
	if !pgtest.Eventually(10*time.Second, func() bool {
		r := findRow(mustAdmin(t, adm, "SHOW POOLS"), "database", a.DB)
		return r != nil && r["cl_waiting"] == "1"
	}) {
		t.Fatal("the query sent after SIGUSR1 never waited")
	}
	if err := a.tide.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if n := <-done; n != 3 {
		t.Fatalf("the query after SIGUSR2 got %d", n)
	}
	mustAdmin(t, adm, "SUSPEND")
	if err := a.tide.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if !pgtest.Eventually(10*time.Second, func() bool { s := state(); return s["suspended"] == "no" && s["active"] == "yes" }) {
		t.Fatalf("SHOW STATE after SUSPEND and SIGUSR2: %v", state())
	}
	if got := queryInt(t, c, "SELECT 4"); got != 4 || a.tide.Exited() {
		t.Fatalf("after the signals: %d, exited %v", got, a.tide.Exited())
	}
}

// TestConsoleSuspendUnderLoad: SUSPEND and RESUME over and over while 16
// clients run two-table transactions (issue 11's ledger; transaction mode
// on a pool of 4, session mode on 16). Each SUSPEND returns; while
// suspended nothing commits (the committed row count stays put) and each
// client learns of at most the one commit whose reply was already on its
// way; afterwards every transaction is whole or absent and every
// acknowledged commit is there.
func TestConsoleSuspendUnderLoad(t *testing.T) {
	for _, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) { testSuspendUnderLoad(t, mode) })
	}
}

func testSuspendUnderLoad(t *testing.T, mode string) {
	const clients = 16
	stamp := fmt.Sprint(time.Now().UnixNano())
	a := &adminEnv{admPass: "Adm-" + stamp}
	a.env = newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = mode
		db.PoolSize = 4
		if mode == "session" {
			db.PoolSize = clients
		}
		c.Extra = "admin_users = [\"adm\"]\n"
		c.Users["adm"] = a.admPass
	})
	a.secrets = append(a.secrets, a.admPass)
	direct := connect(t, a.DirectURL())
	setupLedger(t, direct, clients)
	adm := console(t, a.adminURL())
	l := &ledger{url: a.URL(), clients: clients}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { l.run(stop); close(done) }()
	committed := func() int64 { return queryInt(t, direct, "SELECT count(*) FROM ledger_a") }
	if !pgtest.Eventually(20*time.Second, func() bool { return l.commits.Load() > 0 }) {
		t.Fatal("the workload never committed")
	}
	for range 8 {
		time.Sleep(100 * time.Millisecond)
		mustAdmin(t, adm, "SUSPEND")
		rows, acked := committed(), l.commits.Load()
		time.Sleep(150 * time.Millisecond)
		if n := committed(); n != rows {
			t.Errorf("while suspended the committed rows went from %d to %d", rows, n)
		}
		if n := l.commits.Load(); n-acked > clients {
			t.Errorf("while suspended clients were told of %d more commits (at most %d replies were on their way)", n-acked, clients)
		}
		mustAdmin(t, adm, "RESUME")
	}
	before := l.commits.Load()
	if !pgtest.Eventually(20*time.Second, func() bool { return l.commits.Load() > before }) {
		t.Fatal("no commit after the last RESUME")
	}
	close(stop)
	<-done
	t.Logf("%d commits, %d failed attempts", l.commits.Load(), l.failures.Load())
	if f := l.failures.Load(); f > 0 {
		t.Errorf("%d transactions failed; SUSPEND must not fail any", f)
	}
	if v := l.check(t, direct); v > 0 {
		t.Fatalf("%d atomicity violations", v)
	}
}

// TestConsoleSuspendTLS: a TLS client (whose reads go through tls.Conn,
// above the suspendConn) mid-transaction is held by SUSPEND like a plain
// one, and its transaction completes after RESUME; the console over TLS
// keeps working.
func TestConsoleSuspendTLS(t *testing.T) {
	certs := pgtest.NewCerts(t)
	admPass := "Adm-" + fmt.Sprint(time.Now().UnixNano())
	e := newEnv(t, func(c *tideConf, _ *dbConf) {
		c.PoolMode = "transaction"
		c.Extra = clientTLSConf(certs, "require") + "admin_users = [\"adm\"]\n"
		c.Users["adm"] = admPass
	})
	e.secrets = append(e.secrets, admPass)
	ctx := ctxT(t, 60*time.Second)
	direct := connect(t, e.DirectURL())
	if _, err := direct.Exec(ctx, "CREATE TABLE susp_tls (n int)"); err != nil {
		t.Fatal(err)
	}
	c := connect(t, tlsURL(e.tide.Port, e.DB, e.User, e.Pass, "sslmode", "require"))
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	adm := console(t, tlsURL(e.tide.Port, "pgtide", "adm", admPass, "sslmode", "require"))
	mustAdmin(t, adm, "SUSPEND")
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "INSERT INTO susp_tls VALUES (1)")
		if err == nil {
			_, err = c.Exec(ctx, "COMMIT")
		}
		done <- err
	}()
	for range 10 {
		if n := queryInt(t, direct, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'INSERT INTO susp_tls%'", e.DB); n != 0 {
			t.Fatal("the INSERT reached PostgreSQL while suspended")
		}
		select {
		case err := <-done:
			t.Fatalf("the TLS client got an answer while suspended: %v", err)
		default:
		}
		time.Sleep(20 * time.Millisecond)
	}
	mustAdmin(t, adm, "RESUME")
	if err := <-done; err != nil {
		t.Fatalf("the TLS client's transaction after RESUME: %v", err)
	}
	if n := queryInt(t, direct, "SELECT count(*) FROM susp_tls"); n != 1 {
		t.Fatalf("%d rows committed; want 1", n)
	}
}
