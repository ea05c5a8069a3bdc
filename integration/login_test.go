package integration

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// Logins and startup as PostgreSQL does them (issue 17), and the login
// hardening of issue 13 (items 2, 7 and 10).

// TestLoginSASLprepPassword (17.1): a [users] plaintext password that
// SASLprep changes (U+2168 ROMAN NUMERAL NINE becomes "IX", the role of
// node-postgres's CI) logs in to PostgreSQL with SCRAM, in session and
// transaction mode, whichever form the client types, as it does directly.
func TestLoginSASLprepPassword(t *testing.T) {
	psql := needBinary(t, "psql", "postgresql-client")
	pg := pgtest.Shared(t)
	const raw, ascii = "IX-\u2168", "IX-IX"
	user, db := uniqueName(t, "u"), uniqueName(t, "d")
	pg.Exec(t, fmt.Sprintf("SET password_encryption = 'scram-sha-256'; CREATE ROLE %s LOGIN PASSWORD %s",
		pgtest.QuoteIdent(user), pgtest.QuoteLiteral(raw)))
	pgtest.CreateDatabase(t, pg, db, user)
	conf := defaultConf()
	conf.Databases = []dbConf{{Name: "sess", DBName: db, PoolMode: "session"}, {Name: "txn", DBName: db, PoolMode: "transaction"}}
	conf.Users[user] = raw
	tide := pgtest.StartPgtide(t, conf.TOML(pg.Port))
	for _, form := range []string{raw, ascii} {
		// Directly, both forms log in (libpq SASLprep's the raw one).
		direct := runPsql(t, psql, urlNoPassword("127.0.0.1", pg.Port, db, user), form, "-Atc", "select current_user")
		if direct.code != 0 || strings.TrimSpace(direct.stdout) != user {
			t.Fatalf("direct login with %q: exit %d, %q %q", form, direct.code, direct.stdout, direct.stderr)
		}
		for _, section := range []string{"sess", "txn"} {
			r := runPsql(t, psql, urlNoPassword("127.0.0.1", tide.Port, section, user), form, "-Atc", "select current_user")
			if r.code != 0 || strings.TrimSpace(r.stdout) != user {
				t.Errorf("%s: login through pgtide with %q: exit %d, stdout %q, stderr %q", section, form, r.code, r.stdout, r.stderr)
			}
		}
	}
	if strings.Contains(tide.Logs(), raw) {
		t.Error("pgtide's output contains the password")
	}
}

// rawExchange writes pkt to addr, half-closes when closeWrite, and returns
// every byte the peer sends before it closes.
func rawExchange(t *testing.T, addr string, pkt []byte, closeWrite bool) []byte {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := nc.Write(pkt); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		_ = nc.(*net.TCPConn).CloseWrite()
	}
	got, err := io.ReadAll(nc)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset by peer") {
		t.Fatalf("read: %v (after %q)", err, got)
	}
	return got
}

func startupHeader(length, code uint32) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, length)
	binary.BigEndian.PutUint32(b[4:], code)
	return b
}

// TestStartupMalformedClosesSilently (17.2): where PostgreSQL closes a
// connection without a byte on a malformed startup packet (node-postgres
// sends Terminate before the startup packet when a client is ended at
// once), pgtide does too, and logs each. Where PostgreSQL answers (an
// unsupported protocol version), pgtide answers the same way.
func TestStartupMalformedClosesSilently(t *testing.T) {
	e := newEnv(t, nil)
	// PostgreSQL's limit is 10000 bytes after the length word.
	overLimit := append(startupHeader(10005, 3<<16), make([]byte, 10005-8)...)
	for _, tc := range []struct {
		name       string
		pkt        []byte
		closeWrite bool
		log        string
	}{
		{"terminate before startup", []byte{'X', 0, 0, 0, 4}, false, "invalid length of startup packet: 1476395008"},
		{"length 3", []byte{0, 0, 0, 3}, false, "invalid length of startup packet: 3"},
		{"length over the limit", overLimit, false, "invalid length of startup packet: 10005"},
		{"EOF mid-packet", append(startupHeader(40, 3<<16), 'u', 's'), true, "incomplete startup packet"},
		{"EOF mid-length", []byte{0, 0}, true, "incomplete startup packet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rawExchange(t, e.pg.Addr(), tc.pkt, tc.closeWrite); len(got) != 0 {
				t.Fatalf("PostgreSQL itself answered %q; the test's premise is wrong", got)
			}
			before := strings.Count(e.tide.Logs(), tc.log)
			if got := rawExchange(t, e.tide.Addr, tc.pkt, tc.closeWrite); len(got) != 0 {
				t.Fatalf("pgtide answered %q, want no byte (as PostgreSQL)", got)
			}
			if !pgtest.Eventually(10*time.Second, func() bool { return strings.Count(e.tide.Logs(), tc.log) > before }) {
				t.Fatalf("pgtide did not log %q", tc.log)
			}
		})
	}
	// Unsupported protocol versions: PostgreSQL sends FATAL 0A000 (in
	// protocol 2 to a protocol 2 client), and so does pgtide.
	for _, tc := range []struct {
		name string
		code uint32
	}{{"unknown code 1234.5681", 1234<<16 | 5681}, {"protocol 4.0", 4 << 16}, {"protocol 2.0", 2 << 16}} {
		t.Run(tc.name, func(t *testing.T) {
			want := rawExchange(t, e.pg.Addr(), startupHeader(8, tc.code), false)
			got := rawExchange(t, e.tide.Addr, startupHeader(8, tc.code), false)
			major, minor := tc.code>>16, tc.code&0xffff
			text := fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0 to 3.", major, minor)
			if major < 3 {
				prefix := "EFATAL:  " + text
				if !bytes.HasPrefix(want, []byte(prefix)) || !bytes.HasPrefix(got, []byte(prefix)) || !bytes.HasSuffix(got, []byte("\n\x00")) {
					t.Fatalf("protocol 2 error: pgtide %q, PostgreSQL %q", got, want)
				}
				return
			}
			for who, b := range map[string][]byte{"PostgreSQL": want, "pgtide": got} {
				var er pgproto3.ErrorResponse
				if len(b) < 5 || b[0] != 'E' || er.Decode(b[5:]) != nil {
					t.Fatalf("%s answered %q, want an ErrorResponse", who, b)
				}
				if er.Severity != "FATAL" || er.Code != "0A000" || !strings.HasPrefix(er.Message, text) {
					t.Errorf("%s: %s %s %q, want FATAL 0A000 %q...", who, er.Severity, er.Code, er.Message, text)
				}
			}
		})
	}
}

// TestServerLoginErrorsAsPostgreSQL (17.3): a server login that fails
// reaches the client with PostgreSQL's severity, code and message, and
// nothing else: no backend address, no pgconn wrapping, one SQLSTATE.
func TestServerLoginErrorsAsPostgreSQL(t *testing.T) {
	psql := needBinary(t, "psql", "postgresql-client")
	const tidePass = "Pw-only-pgtide-knows"
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.Databases = append(c.Databases, dbConf{Name: "gone", DBName: "no_such_database_on_server"})
	})
	// pgtide's [users] password for the role is not the server's.
	wrongUser := uniqueName(t, "w")
	pgtest.CreateRole(t, e.pg, wrongUser, "Pw-the-server-has")
	e.conf.Users[wrongUser] = tidePass
	reloadTo(t, e, e.conf, "debug")
	for _, tc := range []struct {
		name, db, user, pass string
		code, msg            string
	}{
		{"wrong [users] password", e.DB, wrongUser, tidePass, "28P01", fmt.Sprintf("password authentication failed for user %q", wrongUser)},
		{"unknown database on the server", "gone", e.User, e.Pass, "3D000", `database "no_such_database_on_server" does not exist`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := connectErr(t, e.tide.ConnString(tc.db, tc.user, tc.pass))
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a server error", err)
			}
			if pe.Severity != "FATAL" || pe.Code != tc.code || pe.Message != tc.msg {
				t.Errorf("got %s %s %q, want FATAL %s %q", pe.Severity, pe.Code, pe.Message, tc.code, tc.msg)
			}
			r := runPsql(t, psql, urlNoPassword("127.0.0.1", e.tide.Port, tc.db, tc.user), tc.pass, "-c", "select 1")
			line := "FATAL:  " + tc.msg
			if r.code != 2 || !strings.Contains(r.stderr, line) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("psql: exit %d, stderr %q; want one line with %q", r.code, r.stderr, line)
			}
			for _, leak := range []string{strconv.Itoa(e.pg.Port), "SQLSTATE", "failed to connect", "server login failed"} {
				if strings.Contains(r.stderr, leak) || strings.Contains(pe.Message, leak) {
					t.Errorf("the client sees %q: %q", leak, r.stderr)
				}
			}
		})
	}
	if !strings.Contains(e.tide.Logs(), "server connection failed") {
		t.Error("pgtide's log has no line for the failed server logins")
	}
}

// startupAt sends a StartupMessage for user and db to addr and returns the
// frontend and its first reply (the connection closes with the test).
func startupAt(t *testing.T, addr, user, db string) (*pgproto3.Frontend, pgproto3.BackendMessage) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	fe := pgproto3.NewFrontend(nc, nc)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": user, "database": db}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	return fe, msg
}

// scramSalt starts a SCRAM login as user at addr and returns the salt and
// iteration count of the server-first-message (the connection is dropped
// there), or the authentication request type when it is not SASL.
func scramSalt(t *testing.T, addr, user, db string) (salt []byte, iter int, authType uint32) {
	t.Helper()
	fe, msg := startupAt(t, addr, user, db)
	switch m := msg.(type) {
	case *pgproto3.AuthenticationSASL:
	case *pgproto3.AuthenticationMD5Password:
		return m.Salt[:], 0, pgproto3.AuthTypeMD5Password
	default:
		t.Fatalf("got %T, want an authentication request", msg)
	}
	fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=abcdefghijklmnop")})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	cont, ok := msg.(*pgproto3.AuthenticationSASLContinue)
	if !ok {
		t.Fatalf("got %T, want AuthenticationSASLContinue", msg)
	}
	for _, f := range strings.Split(string(cont.Data), ",") {
		switch {
		case strings.HasPrefix(f, "s="):
			if salt, err = base64.StdEncoding.DecodeString(f[2:]); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(f, "i="):
			iter, _ = strconv.Atoi(f[2:])
		}
	}
	return salt, iter, pgproto3.AuthTypeSASL
}

// TestUnknownUserMockSalt (13.2): an unknown user is shown a SCRAM salt
// that is the same on every attempt and differs between names, with the
// iteration count and salt length of a real user, as PostgreSQL's mock
// authentication does; under md5, unknown and real users both get a fresh
// random salt.
func TestUnknownUserMockSalt(t *testing.T) {
	e := newEnv(t, nil)
	ghost, phantom := "ghost_"+e.User, "phantom_"+e.User
	g1, gIter, _ := scramSalt(t, e.tide.Addr, ghost, e.DB)
	g2, _, _ := scramSalt(t, e.tide.Addr, ghost, e.DB)
	p1, _, _ := scramSalt(t, e.tide.Addr, phantom, e.DB)
	r1, rIter, _ := scramSalt(t, e.tide.Addr, e.User, e.DB)
	r2, _, _ := scramSalt(t, e.tide.Addr, e.User, e.DB)
	if !bytes.Equal(g1, g2) {
		t.Errorf("unknown user: salt %x, then %x; want the same salt each time (a real user's is: %x, %x)", g1, g2, r1, r2)
	}
	if bytes.Equal(g1, p1) {
		t.Errorf("two unknown users got the same salt %x", g1)
	}
	if !bytes.Equal(r1, r2) || len(g1) != len(r1) || gIter != rIter {
		t.Errorf("unknown user: %d-byte salt, %d iterations; real user: %d-byte salt %x/%x, %d iterations", len(g1), gIter, len(r1), r1, r2, rIter)
	}

	md := newEnv(t, func(c *tideConf, db *dbConf) { c.Extra = "auth_type = \"md5\"\n" })
	seen := map[string]bool{}
	for _, user := range []string{md.User, md.User, "ghost_" + md.User, "ghost_" + md.User} {
		salt, _, typ := scramSalt(t, md.tide.Addr, user, md.DB)
		if typ != pgproto3.AuthTypeMD5Password {
			t.Fatalf("auth_type md5, user %s: authentication request %d, want md5", user, typ)
		}
		if seen[string(salt)] {
			t.Errorf("md5 salt %x repeated (user %s); PostgreSQL sends a fresh one every time", salt, user)
		}
		seen[string(salt)] = true
	}
}

// TestSCRAMRefusesMD5Secret (13.7): with auth_type scram-sha-256, a user
// whose [users] secret is an md5 hash is refused, even with the right
// password, with PostgreSQL's 28P01 message; the log says why.
func TestSCRAMRefusesMD5Secret(t *testing.T) {
	e := newEnv(t, nil)
	md5User := uniqueName(t, "m")
	pgtest.CreateRole(t, e.pg, md5User, e.Pass)
	e.pg.Exec(t, fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s", pgtest.QuoteIdent(e.DB), pgtest.QuoteIdent(md5User)))
	// The server login does not depend on the client's secret: the
	// database table logs in as the env's own user.
	conf := e.conf
	conf.Databases = append(conf.Databases, dbConf{Name: "as_owner", DBName: e.DB, User: e.User, Password: e.Pass})
	conf.Users[md5User] = md5Hex(e.Pass, md5User)
	reloadTo(t, e, conf, "debug")
	err := connectErr(t, e.tide.ConnString("as_owner", md5User, e.Pass))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28P01" || pe.Message != fmt.Sprintf("password authentication failed for user %q", md5User) {
		t.Fatalf("right password, md5 secret, scram-sha-256: err = %v, want FATAL 28P01 password authentication failed", err)
	}
	if !pgtest.Eventually(10*time.Second, func() bool {
		return strings.Contains(e.tide.Logs(), fmt.Sprintf(`User \"%s\" does not have a valid SCRAM secret.`, md5User))
	}) {
		t.Error("pgtide's log does not say the user has no valid SCRAM secret")
	}
}

// allowHBA puts "host all ROLE 127.0.0.1/32 METHOD" first in the shared
// server's pg_hba.conf, reloads it, and restores the file at cleanup.
func allowHBA(t *testing.T, pg *pgtest.Postgres, role, method string) {
	t.Helper()
	hbaMu.Lock()
	defer hbaMu.Unlock()
	path := filepath.Join(pg.DataDir, "pg_hba.conf")
	old, err := os.ReadFile(path)
	if err != nil {
		pgtest.SkipUnlessCI(t, "cannot read %s: %v", path, err)
	}
	line := fmt.Sprintf("host all %s 127.0.0.1/32 %s\n", role, method)
	if err := os.WriteFile(path, append([]byte(line), old...), 0o600); err != nil {
		pgtest.SkipUnlessCI(t, "cannot write %s: %v", path, err)
	}
	pg.Exec(t, "SELECT pg_reload_conf()")
	t.Cleanup(func() {
		hbaMu.Lock()
		defer hbaMu.Unlock()
		cur, err := os.ReadFile(path)
		if err == nil {
			_ = os.WriteFile(path, bytes.Replace(cur, []byte(line), nil, 1), 0o600)
			pg.Exec(t, "SELECT pg_reload_conf()")
		}
	})
}

// TestServerRequireAuthRefusesCleartext (13.10): a server that asks for a
// cleartext password is refused when server_require_auth says so, before
// the password is sent; without the key the same server login works.
func TestServerRequireAuthRefusesCleartext(t *testing.T) {
	e := newEnv(t, nil)
	conf := e.conf
	// Extra is rendered before the env's own table: a table of its own.
	conf.Extra = fmt.Sprintf("\n[databases.strict]\nhost = \"127.0.0.1\"\nport = %d\ndbname = %q\nserver_require_auth = \"scram-sha-256\"\n", e.pg.Port, e.DB)
	reloadTo(t, e, conf, "debug")
	allowHBA(t, e.pg, e.User, "password")
	// Without the key, the server's cleartext request is answered.
	if !pgtest.Eventually(10*time.Second, func() bool { return connectErr(t, e.URL()) == nil }) {
		t.Fatalf("login through pgtide to a server that asks for a cleartext password: %v", connectErr(t, e.URL()))
	}
	err := connectErr(t, e.tide.ConnString("strict", e.User, e.Pass))
	var pe *pgconn.PgError
	want := `could not connect to the server: authentication method requirement "scram-sha-256" failed: server requested a cleartext password`
	if !errors.As(err, &pe) || pe.Code != "08001" || pe.Message != want {
		t.Fatalf("err = %v, want FATAL 08001 %q", err, want)
	}
}

func md5Hex(password, user string) string {
	return fmt.Sprintf("md5%x", md5.Sum([]byte(password+user)))
}

// A SCRAM first message with an authorization identity (a=) or a mandatory
// extension (m=) gets PostgreSQL's 0A000 and message; pgtide said 08P01
// "invalid authentication response".
func TestSCRAMAuthzIDAndExtensionRefused(t *testing.T) {
	e := newEnv(t, nil)
	refusal := func(addr, first string) *pgproto3.ErrorResponse {
		fe, msg := startupAt(t, addr, e.User, e.DB)
		if _, ok := msg.(*pgproto3.AuthenticationSASL); !ok {
			t.Fatalf("got %T, want AuthenticationSASL", msg)
		}
		fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(first)})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		er, ok := msg.(*pgproto3.ErrorResponse)
		if !ok {
			t.Fatalf("%q: got %T, want ErrorResponse", first, msg)
		}
		return er
	}
	for _, first := range []string{"n,a=" + e.User + ",n=,r=abcdefghijklmnop", "n,,m=ext,n=,r=abcdefghijklmnop"} {
		want := refusal(e.pg.Addr(), first)
		got := refusal(e.tide.Addr, first)
		if got.Code != want.Code || got.Message != want.Message {
			t.Errorf("%q: pgtide %s %q, PostgreSQL %s %q", first, got.Code, got.Message, want.Code, want.Message)
		}
	}
}
