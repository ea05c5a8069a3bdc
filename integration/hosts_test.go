package integration

// Several hosts per database (host = "a,b", port = [..], load_balance_hosts):
// two relays in front of the one PostgreSQL are two hosts of a list.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// hostRelay forwards TCP connections to PostgreSQL and counts them: logins
// (every connection but a cancel request) and cancels (one whose first
// message is a CancelRequest); open is the connections open now.
type hostRelay struct {
	ln                    net.Listener
	port                  int
	target                string
	logins, cancels, open atomic.Int32
	silent                atomic.Bool // accept, then never answer: a host that hangs
}

func startHostRelay(t *testing.T, target string) *hostRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &hostRelay{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return r
}

func (r *hostRelay) serve(c net.Conn) {
	r.open.Add(1)
	defer r.open.Add(-1)
	defer c.Close()
	var head [8]byte // length and code of the first message
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if binary.BigEndian.Uint32(head[4:]) == 80877102 {
		r.cancels.Add(1)
	} else {
		r.logins.Add(1)
	}
	if r.silent.Load() {
		_, _ = io.Copy(io.Discard, c) // until pgtide gives up
		return
	}
	s, err := net.Dial("tcp", r.target)
	if err != nil {
		return
	}
	defer s.Close()
	if _, err := s.Write(head[:]); err != nil {
		return
	}
	go func() { _, _ = io.Copy(c, s); c.Close() }()
	_, _ = io.Copy(s, c)
}

// down closes the listener: connections to its port are refused from now on.
func (r *hostRelay) down() { r.ln.Close() }

// hostsSection is a database section's server lines for a list of relays.
func hostsSection(lb string, relays ...*hostRelay) string {
	hosts := make([]string, len(relays))
	ports := make([]string, len(relays))
	for i, r := range relays {
		hosts[i], ports[i] = "127.0.0.1", strconv.Itoa(r.port)
	}
	// One TCP connection per server login (no SSLRequest refused first),
	// so that the relays count dials.
	s := fmt.Sprintf("host = %q\nport = [%s]\nserver_tls_sslmode = \"disable\"\n", strings.Join(hosts, ","), strings.Join(ports, ", "))
	if lb != "" {
		s += fmt.Sprintf("load_balance_hosts = %q\n", lb)
	}
	return s
}

// logins returns each relay's login count.
func logins(relays ...*hostRelay) []int32 {
	out := make([]int32, len(relays))
	for i, r := range relays {
		out[i] = r.logins.Load()
	}
	return out
}

// holdClients connects n clients (session mode: each holds a server) and
// runs a query on each.
func holdClients(t *testing.T, url string, n int) []*pgx.Conn {
	t.Helper()
	out := make([]*pgx.Conn, n)
	for i := range out {
		out[i] = connect(t, url)
		if got := queryInt(t, out[i], "SELECT 1"); got != 1 {
			t.Fatalf("client %d: SELECT 1 = %d", i, got)
		}
	}
	return out
}

// Round robin (the default) spreads new server connections over the hosts;
// the admin console shows the list and each server's own address.
func TestHostListRoundRobin(t *testing.T) {
	pg := pgtest.Shared(t)
	r1, r2 := startHostRelay(t, pg.Addr()), startHostRelay(t, pg.Addr())
	admPass := "Adm-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.Extra = "admin_users = [\"adm\"]\n"
		c.Users["adm"] = admPass
		db.Server = hostsSection("", r1, r2)
	})
	e.secrets = append(e.secrets, admPass)
	holdClients(t, e.URL(), 6)
	if got := logins(r1, r2); got[0] != 3 || got[1] != 3 {
		t.Fatalf("server logins per host = %v, want [3 3]", got)
	}

	adm := console(t, e.tide.ConnString("pgtide", "adm", admPass))
	rows, err := adminRun(t, adm, "SHOW SERVERS")
	if err != nil {
		t.Fatal(err)
	}
	perPort := map[string]int{}
	for _, r := range rows {
		if r["database"] == e.DB {
			perPort[r["addr"]+":"+r["port"]]++
		}
	}
	want := map[string]int{fmt.Sprintf("127.0.0.1:%d", r1.port): 3, fmt.Sprintf("127.0.0.1:%d", r2.port): 3}
	if fmt.Sprint(perPort) != fmt.Sprint(want) {
		t.Errorf("SHOW SERVERS addr:port = %v, want %v", perPort, want)
	}
	rows, err = adminRun(t, adm, "SHOW DATABASES")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rows {
		if r["name"] != e.DB {
			continue
		}
		found = true
		if r["host"] != "127.0.0.1,127.0.0.1" || r["port"] != strconv.Itoa(r1.port) || r["load_balance_hosts"] != "round-robin" {
			t.Errorf("SHOW DATABASES row: host %q port %q load_balance_hosts %q; want the list, the first port, round-robin", r["host"], r["port"], r["load_balance_hosts"])
		}
	}
	if !found {
		t.Errorf("SHOW DATABASES has no row for %s", e.DB)
	}
	rows, err = adminRun(t, adm, "SHOW POOLS")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r["database"] == e.DB && r["load_balance_hosts"] != "round-robin" {
			t.Errorf("SHOW POOLS load_balance_hosts = %q, want round-robin", r["load_balance_hosts"])
		}
	}
}

// disable sends every new server connection to the first host while it is
// up; once it refuses, logins go on through the second without an error.
func TestHostListDisable(t *testing.T) {
	pg := pgtest.Shared(t)
	r1, r2 := startHostRelay(t, pg.Addr()), startHostRelay(t, pg.Addr())
	e := newEnv(t, func(c *tideConf, db *dbConf) { db.Server = hostsSection("disable", r1, r2) })
	holdClients(t, e.URL(), 4)
	if got := logins(r1, r2); got[0] != 4 || got[1] != 0 {
		t.Fatalf("server logins per host = %v, want [4 0]", got)
	}
	r1.down()
	holdClients(t, e.URL(), 3)
	if got := logins(r1, r2); got[0] != 4 || got[1] != 3 {
		t.Fatalf("with the first host down: server logins per host = %v, want [4 3]", got)
	}
	logs := e.tide.Logs()
	if strings.Contains(logs, "server connection failed") {
		t.Errorf("a dial failed although the second host was up:\n%s", logs)
	}
	said := false
	for _, line := range strings.Split(logs, "\n") {
		said = said || strings.Contains(line, "server host failed; trying the next host of the list") && strings.Contains(line, fmt.Sprintf(`"server":"127.0.0.1:%d"`, r1.port))
	}
	if !said {
		t.Errorf("the log does not say that the first host failed:\n%s", logs)
	}
}

// With the first host down from the start, every login succeeds through
// the others, in both modes; a unix socket directory is a host of the list.
func TestHostListFirstDown(t *testing.T) {
	pg := pgtest.Shared(t)
	for _, lb := range []string{"round-robin", "disable"} {
		t.Run(lb, func(t *testing.T) {
			dead, r2 := startHostRelay(t, pg.Addr()), startHostRelay(t, pg.Addr())
			dead.down()
			e := newEnv(t, func(c *tideConf, db *dbConf) { db.Server = hostsSection(lb, dead, r2) })
			cs := holdClients(t, e.URL(), 4)
			if got := r2.logins.Load(); got != 4 {
				t.Errorf("logins through the live host = %d, want 4", got)
			}
			var n int64
			if err := cs[0].QueryRow(ctxT(t, 10*time.Second), "SELECT count(*) FROM generate_series(1, 1000)").Scan(&n); err != nil || n != 1000 {
				t.Errorf("query: %d, %v", n, err)
			}
		})
	}
	t.Run("psql", func(t *testing.T) {
		psql := needBinary(t, "psql", "postgresql-client")
		dead, r2 := startHostRelay(t, pg.Addr()), startHostRelay(t, pg.Addr())
		dead.down()
		e := newEnv(t, func(c *tideConf, db *dbConf) { db.Server = hostsSection("round-robin", dead, r2) })
		for i := range 2 {
			r := runPsql(t, psql, urlNoPassword("127.0.0.1", e.tide.Port, e.DB, e.User), e.Pass, "-At", "-c", "select 40 + 2")
			if r.code != 0 || r.stdout != "42\n" {
				t.Fatalf("psql %d: exit %d, stdout %q, stderr %q", i, r.code, r.stdout, r.stderr)
			}
		}
		if got := r2.logins.Load(); got != 1 { // the second psql reuses the first one's server
			t.Errorf("logins through the live host = %d, want 1", got)
		}
	})
	t.Run("unix socket", func(t *testing.T) {
		if pg.SocketDir == "" {
			t.Fatal("the test PostgreSQL has no socket directory")
		}
		dead := startHostRelay(t, pg.Addr())
		dead.down()
		e := newEnv(t, func(c *tideConf, db *dbConf) {
			db.Server = fmt.Sprintf("host = \"127.0.0.1,%s\"\nport = [%d, %d]\nserver_tls_sslmode = \"disable\"\nload_balance_hosts = \"disable\"\n", pg.SocketDir, dead.port, pg.Port)
		})
		c := connect(t, e.URL())
		if got := queryString(t, c, "SELECT coalesce(inet_server_addr()::text, 'unix')"); got != "unix" {
			t.Errorf("server address = %q, want the unix socket", got)
		}
	})
}

// A host that accepts connections and never answers costs one dial its
// share of server_connect_timeout, then goes last: logins go on through the
// other host, and the next dials do not try it first.
func TestHostListHungHost(t *testing.T) {
	pg := pgtest.Shared(t)
	hung, r2 := startHostRelay(t, pg.Addr()), startHostRelay(t, pg.Addr())
	hung.silent.Store(true)
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.Extra = "server_connect_timeout = \"2s\"\n"
		db.Server = hostsSection("disable", hung, r2)
	})
	holdClients(t, e.URL(), 3)
	if got := logins(hung, r2); got[0] != 1 || got[1] != 3 {
		t.Errorf("connections per host = %v, want [1 3]: the hung host tried once, then last", got)
	}
}

// A server's refusal of the login (wrong password, no such database) is not
// tried again at the next host: the client gets the server's error, as with
// one host.
func TestHostListLoginRefusalNotRetried(t *testing.T) {
	pg := pgtest.Shared(t)
	for _, tc := range []struct {
		name, code string
		modify     func(e *dbConf, user string)
	}{
		{"wrong password", "28P01", func(d *dbConf, user string) { d.User, d.Password = user, "not-the-password" }},
		{"no such database", "3D000", func(d *dbConf, _ string) { d.DBName = "no_such_db_hosts" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r1, r2 := startHostRelay(t, pg.Addr()), startHostRelay(t, pg.Addr())
			var user string
			e := newEnv(t, func(c *tideConf, db *dbConf) {
				db.Server = hostsSection("disable", r1, r2)
				user = "u_refused_" + strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
				tc.modify(db, user)
			})
			if tc.code == "28P01" {
				pgtest.CreateRole(t, pg, user, "the-real-password")
			}
			_, err := pgx.Connect(ctxT(t, 15*time.Second), e.URL())
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != tc.code {
				t.Fatalf("login: %v, want the server's %s", err, tc.code)
			}
			if got := logins(r1, r2); got[0] != 1 || got[1] != 0 {
				t.Errorf("connections per host = %v, want [1 0]: a refused login is not tried at the next host", got)
			}
		})
	}
}

// A cancel request reaches the backend through the host that backend was
// reached by, and only that one.
func TestHostListCancel(t *testing.T) {
	pg := pgtest.Shared(t)
	r1, r2 := startHostRelay(t, pg.Addr()), startHostRelay(t, pg.Addr())
	e := newEnv(t, func(c *tideConf, db *dbConf) { db.Server = hostsSection("round-robin", r1, r2) })
	a := connect(t, e.URL()) // session mode: a's server is the first dial (r1), b's the second (r2)
	queryInt(t, a, "SELECT 1")
	b := connect(t, e.URL())
	queryInt(t, b, "SELECT 1")
	if got := logins(r1, r2); got[0] != 1 || got[1] != 1 {
		t.Fatalf("server logins per host = %v, want [1 1]", got)
	}
	mon := super(t, pg, "postgres")
	for i, tc := range []struct {
		c    *pgx.Conn
		via  *hostRelay
		name string
	}{{b, r2, "second host"}, {a, r1, "first host"}} {
		pid := queryInt(t, tc.c, "SELECT pg_backend_pid()")
		done := make(chan error, 1)
		go func() {
			_, err := tc.c.Exec(context.Background(), "SELECT pg_sleep(30)")
			done <- err
		}()
		pgtest.WaitUntil(t, 10*time.Second, "the sleep running", func() bool {
			return queryInt(t, mon, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep%'", pid) == 1
		})
		if err := tc.c.PgConn().CancelRequest(ctxT(t, 10*time.Second)); err != nil {
			t.Fatalf("%s: cancel request: %v", tc.name, err)
		}
		var err error
		select {
		case err = <-done:
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: the query was not cancelled", tc.name)
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57014" {
			t.Fatalf("%s: query ended with %v, want 57014", tc.name, err)
		}
		if tc.via.cancels.Load() != 1 {
			t.Errorf("%s: its relay saw %d cancel connections, want 1", tc.name, tc.via.cancels.Load())
		}
		other := r1
		if tc.via == r1 {
			other = r2
		}
		if want := int32(i); other.cancels.Load() != want { // the other host saw only its own client's cancel, if any
			t.Errorf("%s: the other relay saw %d cancel connections, want %d", tc.name, other.cancels.Load(), want)
		}
	}
}

// A reload that changes the host list moves new server connections to the
// new list and retires the old servers; one that changes only
// load_balance_hosts keeps the pool and changes where new ones go.
func TestHostListReload(t *testing.T) {
	pg := pgtest.Shared(t)
	r1, r2 := startHostRelay(t, pg.Addr()), startHostRelay(t, pg.Addr())
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.PoolMode = "transaction"
		db.Server = hostsSection("disable", r1, r2)
	})
	conf := e.conf
	a := connect(t, e.URL())
	queryInt(t, a, "SELECT 1")
	if got := logins(r1, r2); got[0] != 1 || got[1] != 0 {
		t.Fatalf("server logins per host = %v, want [1 0]", got)
	}

	// The list reversed: r2 first.
	conf.Databases[0].Server = hostsSection("disable", r2, r1)
	reloadTo(t, e, conf, "debug")
	queryInt(t, a, "SELECT 1") // a moves to the new pool at its next borrow
	b := connect(t, e.URL())
	queryInt(t, b, "SELECT 1")
	if got := logins(r1, r2); got[0] != 1 || got[1] != 1 {
		t.Fatalf("after the reload: server logins per host = %v, want [1 1]", got)
	}
	pgtest.WaitUntil(t, 10*time.Second, "the old pool's server closed", func() bool { return r1.open.Load() == 0 })

	// Only the mode changes: the pool stays (its server is reused), and new
	// servers go round the list.
	conf.Databases[0].Server = hostsSection("round-robin", r2, r1)
	reloadTo(t, e, conf, "debug")
	ctx := ctxT(t, 30*time.Second)
	txs := make([]pgx.Tx, 3)
	for i, c := range []*pgx.Conn{a, b, connect(t, e.URL())} {
		tx, err := c.Begin(ctx) // each holds a server: 2 new ones
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		txs[i] = tx
	}
	if got := logins(r1, r2); got[0] != 2 || got[1] != 2 {
		t.Errorf("after load_balance_hosts = round-robin: server logins per host = %v, want [2 2]", got)
	}
	for _, tx := range txs {
		_ = tx.Rollback(ctx)
	}
}
