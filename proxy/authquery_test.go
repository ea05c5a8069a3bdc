package proxy

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/auth"
	"github.com/pgtide/pgtide/proxy/config"
)

// fakeLookupServer is a PostgreSQL stand-in that trusts every login and
// answers extended-protocol queries from rows (user name -> secret; a
// missing user gives no row, "NULL" a NULL secret).
type fakeLookupServer struct {
	ln   net.Listener
	rows map[string]string
	mu   sync.Mutex
	seen []string // $1 of each query
	sqls []string // the query texts
	wg   sync.WaitGroup
}

func newFakeLookupServer(t *testing.T, rows map[string]string) *fakeLookupServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeLookupServer{ln: ln, rows: rows}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer nc.Close()
				f.serve(nc)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

func (f *fakeLookupServer) serve(nc net.Conn) {
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	be := pgproto3.NewBackend(nc, nc)
	if _, err := be.ReceiveStartupMessage(); err != nil {
		return
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if be.Flush() != nil {
		return
	}
	var user string
	for {
		msg, err := be.Receive()
		if err != nil {
			return
		}
		switch m := msg.(type) {
		case *pgproto3.Parse:
			f.mu.Lock()
			f.sqls = append(f.sqls, m.Query)
			f.mu.Unlock()
			be.Send(&pgproto3.ParseComplete{})
		case *pgproto3.Bind:
			user = string(m.Parameters[0])
			f.mu.Lock()
			f.seen = append(f.seen, user)
			f.mu.Unlock()
			be.Send(&pgproto3.BindComplete{})
		case *pgproto3.Execute:
			if user == "boom" {
				be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42883", Message: "function pgtide.user_lookup(unknown) does not exist"})
				continue
			}
			if sec, ok := f.rows[user]; ok {
				v := []byte(sec)
				if sec == "NULL" {
					v = nil
				}
				be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte(user), v}})
			}
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
		case *pgproto3.Sync:
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if be.Flush() != nil {
				return
			}
		case *pgproto3.Terminate:
			return
		}
	}
}

func (f *fakeLookupServer) queries() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

func authQueryConfig(t *testing.T, port int, extra string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("t.toml", []byte(`
auth_user = "lookup"
auth_dbname = "app"
auth_cache_ttl = "1h"
`+extra+`
[databases.app]
port = `+strconv.Itoa(port)+`
server_tls_sslmode = "disable"
[users.lookup]
password = "lookup-pw"
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestAuthQueryLookupAndCache(t *testing.T) {
	v, err := auth.SCRAMVerifier("pw", 4096)
	if err != nil {
		t.Fatal(err)
	}
	const odd = `o'hara"; DROP TABLE x; --`
	f := newFakeLookupServer(t, map[string]string{
		"alice": v,
		"bob":   "md5" + strings.Repeat("ab", 16),
		"nul":   "NULL",
		"bad":   "SCRAM-SHA-256$garbage",
		odd:     v,
	})
	cfg := authQueryConfig(t, f.ln.Addr().(*net.TCPAddr).Port, "")
	s := New(cfg, zerolog.Nop())
	defer s.closeAuth()
	log := zerolog.Nop()

	lookup := func(user string) (auth.Secret, bool) {
		t.Helper()
		sec, found, err := s.authQuerySecret(cfg, "app", user, log)
		if err != nil {
			t.Fatalf("lookup %q: %v", user, err)
		}
		return sec, found
	}
	if sec, found := lookup("alice"); !found || sec.Kind != auth.SecretSCRAM {
		t.Fatalf("alice: found %v, kind %s", found, sec.Kind)
	}
	if sec, found := lookup("bob"); !found || sec.Kind != auth.SecretMD5 {
		t.Fatalf("bob: found %v, kind %s", found, sec.Kind)
	}
	for _, u := range []string{"nobody", "nul", "bad"} {
		if _, found := lookup(u); found {
			t.Fatalf("%s: found, want unknown", u)
		}
	}
	if _, found := lookup(odd); !found {
		t.Fatal("a user name with quotes was not looked up as is")
	}
	// Cached: asking again runs no query.
	n := len(f.queries())
	lookup("alice")
	lookup("nobody")
	if got := len(f.queries()); got != n {
		t.Fatalf("cached lookups ran %d more queries", got-n)
	}
	q := f.queries()
	if q[len(q)-1] != odd {
		t.Fatalf("parameter $1 = %q, want the user name unchanged", q[len(q)-1])
	}
	f.mu.Lock()
	for _, sql := range f.sqls {
		if sql != config.DefaultAuthQuery {
			t.Errorf("query text %q, want the configured auth_query unchanged", sql)
		}
	}
	f.mu.Unlock()

	// A server error is an error for the client (and the connection is reused).
	if _, _, err := s.authQuerySecret(cfg, "app", "boom", log); err == nil || !strings.Contains(err.Error(), "authentication lookup failed") {
		t.Fatalf("boom: err = %v", err)
	}
	if _, found := lookup("bob"); !found {
		t.Fatal("bob after an error")
	}
	if st := s.authq.pools["app"].pool.Stats(); st.Open > authPoolSize {
		t.Fatalf("auth pool has %d connections, want at most %d", st.Open, authPoolSize)
	}
	// Clients of other databases: the lookup still runs in auth_dbname,
	// through the one auth pool.
	for _, db := range []string{"other1", "other2"} {
		if _, found, err := s.authQuerySecret(cfg, db, "carol-"+db, log); err != nil || found {
			t.Fatalf("lookup for a client of %s: found %v, err %v", db, found, err)
		}
	}
	if len(s.authq.pools) != 1 || s.authq.pools["app"] == nil {
		t.Fatalf("auth pools %v, want only auth_dbname's", s.authq.pools)
	}

	// A server that refuses alice's login drops what the cache says of her
	// (and nobody else's).
	n = len(f.queries())
	s.forgetAuthUser("alice")
	lookup("alice")
	lookup("bob")
	if got := len(f.queries()); got != n+1 {
		t.Fatalf("after forgetting alice: %d queries, want 1 (alice only)", got-n)
	}

	// auth_cache_ttl = 0: no cache.
	cfg0 := authQueryConfig(t, f.ln.Addr().(*net.TCPAddr).Port, "")
	cfg0.AuthCacheTTL.Duration = 0
	n = len(f.queries())
	for range 2 {
		if _, _, err := s.authQuerySecret(cfg0, "app", "alice", log); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(f.queries()); got != n+2 {
		t.Fatalf("ttl 0: %d queries, want 2", got-n)
	}
}

func TestAuthQueryOff(t *testing.T) {
	cfg, err := config.Parse("t.toml", []byte("[databases.app]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg, zerolog.Nop())
	if _, found, err := s.authQuerySecret(cfg, "app", "x", zerolog.Nop()); found || err != nil {
		t.Fatalf("auth_query off: found %v, err %v", found, err)
	}
	if anyUserAllowed(cfg) {
		t.Fatal("anyUserAllowed without auth_query or trust")
	}
}

func TestPassthroughRememberServerLogin(t *testing.T) {
	s := New(config.Default(), zerolog.Nop())
	v, _ := auth.SCRAMVerifier("pw", 4096)
	sec, _ := auth.ParseSecret(v)
	k := poolKey{"db", "u"}
	s.rememberServerLogin(k, sec, auth.Keys{}) // no ClientKey (trust): nothing kept
	if _, ok := s.authq.logins[k]; ok {
		t.Fatal("kept a SCRAM login without a ClientKey")
	}
	key := make([]byte, 32)
	key[0] = 7
	s.rememberServerLogin(k, sec, auth.Keys{ClientKey: key})
	got := s.authq.logins[k]
	if got.sec.ClientKey[0] != 7 || got.sec.Iter != 4096 || len(got.sec.Salt) == 0 || len(got.sec.ServerKey) != 32 {
		t.Fatal("SCRAM login not kept")
	}
	md5sec, _ := auth.ParseSecret("md5" + strings.Repeat("cd", 16))
	s.rememberServerLogin(k, md5sec, auth.Keys{}) // refreshed by a later login
	if s.authq.logins[k].sec.MD5 != md5sec.MD5 {
		t.Fatal("md5 login not kept")
	}
}

func TestServerRefusedLogin(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&pool.ServerError{Code: "28P01"}, true},
		{&pool.ServerError{Code: "28000"}, true},
		{fmt.Errorf("dial: %w", &pgconn.PgError{Code: "28P01"}), true},
		{fmt.Errorf("login: %w", pool.ErrVerifierMismatch), true},
		{&pool.ServerError{Code: "3D000"}, false},
		{&pool.ServerError{Code: "53300"}, false},
		{errors.New("connection refused"), false},
	} {
		if got := serverRefusedLogin(tc.err); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.want)
		}
	}
}
