package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestTLSCBind: over TLS pgtide offers SCRAM-SHA-256-PLUS with
// tls-server-end-point channel binding, so clients with
// channel_binding=require log in, for a user with a plaintext password and
// for one with only a SCRAM verifier (the server login is then passthrough
// with the ClientKey of a bound exchange); without TLS they cannot.
func TestTLSCBind(t *testing.T) {
	psql := needBinary(t, "psql", "postgresql-client")
	certs := pgtest.NewCerts(t)
	e := newPassthroughEnv(t)
	pgtest.CreateRole(t, e.pg, e.user, e.pass)
	pgtest.CreateDatabase(t, e.pg, e.db, e.user)
	verifier := storedSecret(t, e.pg, e.user)
	if !strings.HasPrefix(verifier, "SCRAM-SHA-256$") {
		t.Fatalf("role's password is not a SCRAM verifier")
	}
	plainUser := uniqueName(t, "p")
	plainPass := "Pw-" + plainUser
	pgtest.CreateRole(t, e.pg, plainUser, plainPass)
	e.secrets = append(e.secrets, verifier, plainPass)
	conf := defaultConf()
	conf.Users[e.user] = verifier
	conf.Users[plainUser] = plainPass
	conf.Extra = clientTLSConf(certs, "prefer")
	e.start(t, conf)
	users := map[string]string{"verifier": e.user, "plaintext": plainUser}
	passOf := map[string]string{e.user: e.pass, plainUser: plainPass}

	for kind, user := range users {
		t.Run("psql "+kind, func(t *testing.T) {
			r := runPsql(t, psql, tlsURL(e.tide.Port, e.db, user, "", "sslmode", "require", "channel_binding", "require"),
				passOf[user], "-c", `\conninfo`, "-tA", "-c", "select current_user")
			if r.code != 0 || !strings.Contains(r.stdout, "SSL connection (protocol: TLSv1.") || !strings.Contains(r.stdout, "\n"+user+"\n") {
				t.Fatalf("exit %d, stdout %q, stderr %q; want an SSL connection as %s", r.code, r.stdout, r.stderr, user)
			}
		})
		t.Run("pgx "+kind, func(t *testing.T) {
			for _, neg := range []string{"postgres", "direct"} {
				c := connect(t, tlsURL(e.tide.Port, e.db, user, passOf[user], "sslmode", "verify-full", "sslrootcert", certs.CAFile,
					"channel_binding", "require", "sslnegotiation", neg))
				if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
					t.Fatalf("%s: pgx connection is not TLS: %T", neg, c.PgConn().Conn())
				}
				if got := queryString(t, c, "select current_user"); got != user {
					t.Fatalf("%s: current_user = %q", neg, got)
				}
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		_, err := pgx.Connect(ctxT(t, 10*time.Second), tlsURL(e.tide.Port, e.db, e.user, e.pass+"x", "sslmode", "require", "channel_binding", "require"))
		if sqlState(err) != "28P01" {
			t.Fatalf("got %v, want SQLSTATE 28P01", err)
		}
	})
	t.Run("require without TLS", func(t *testing.T) {
		r := runPsql(t, psql, tlsURL(e.tide.Port, e.db, e.user, "", "sslmode", "disable", "channel_binding", "require"), e.pass, "-c", "select 1")
		if r.code == 0 || !strings.Contains(r.stderr, "channel binding") {
			t.Fatalf("psql: exit %d, stderr %q; want a channel binding failure", r.code, r.stderr)
		}
		c, err := pgx.Connect(ctxT(t, 10*time.Second), tlsURL(e.tide.Port, e.db, e.user, e.pass, "sslmode", "disable", "channel_binding", "require"))
		if err == nil {
			c.Close(context.Background())
			t.Fatal("pgx: channel_binding=require without TLS logged in")
		}
		// Plain SCRAM is still fine without TLS.
		c = connect(t, tlsURL(e.tide.Port, e.db, e.user, e.pass, "sslmode", "disable"))
		if queryInt(t, c, "select 4") != 4 {
			t.Fatal("plain SCRAM without TLS")
		}
	})
	t.Run("downgrade refused", func(t *testing.T) {
		// "y,,": the client supports binding but was not shown -PLUS.
		client, err := scram.SHA256.NewClient("", e.pass, "")
		if err != nil {
			t.Fatal(err)
		}
		errResp := rawCBindLogin(t, e.tide.Addr, e.db, e.user, "SCRAM-SHA-256", client.NewConversationAdvertisingChannelBinding())
		if errResp.Code != "28000" || errResp.Message != "SCRAM channel binding negotiation error" {
			t.Fatalf("got %s %q, want 28000 SCRAM channel binding negotiation error", errResp.Code, errResp.Message)
		}
	})
	t.Run("wrong binding data refused", func(t *testing.T) {
		// A man in the middle with a certificate of its own.
		client, err := scram.SHA256.NewClient("", e.pass, "")
		if err != nil {
			t.Fatal(err)
		}
		cb := scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: bytes.Repeat([]byte{1}, 32)}
		errResp := rawCBindLogin(t, e.tide.Addr, e.db, e.user, "SCRAM-SHA-256-PLUS", client.NewConversationWithChannelBinding(cb))
		if errResp.Code != "28000" || errResp.Message != "SCRAM channel binding check failed" {
			t.Fatalf("got %s %q, want 28000 SCRAM channel binding check failed", errResp.Code, errResp.Message)
		}
	})
}

// rawCBindLogin logs into pgtide at addr over TLS (SSLRequest) with a SCRAM
// conversation that selects mech, and returns the ErrorResponse that ends
// the login. It checks that pgtide offered SCRAM-SHA-256-PLUS first.
func rawCBindLogin(t *testing.T, addr, db, user, mech string, conv *scram.ClientConversation) *pgproto3.ErrorResponse {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:], 8)
	binary.BigEndian.PutUint32(req[4:], 80877103)
	if _, err := nc.Write(req[:]); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := nc.Read(b[:]); err != nil || b[0] != 'S' {
		t.Fatalf("SSLRequest answered %q, %v", b[:], err)
	}
	tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
	fe := pgproto3.NewFrontend(tc, tc)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": user, "database": db}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	sasl, ok := msg.(*pgproto3.AuthenticationSASL)
	if !ok {
		t.Fatalf("got %T, want AuthenticationSASL", msg)
	}
	if want := []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}; !slices.Equal(sasl.AuthMechanisms, want) {
		t.Fatalf("offered %v over TLS, want %v", sasl.AuthMechanisms, want)
	}
	first, err := conv.Step("")
	if err != nil {
		t.Fatal(err)
	}
	fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: mech, Data: []byte(first)})
	for range 2 {
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		msg, err = fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			return m
		case *pgproto3.AuthenticationSASLContinue:
			final, err := conv.Step(string(m.Data))
			if err != nil {
				t.Fatal(err)
			}
			fe.Send(&pgproto3.SASLResponse{Data: []byte(final)})
		default:
			t.Fatalf("got %T", msg)
		}
	}
	t.Fatal("login was not refused")
	return nil
}

// TestTLSCBindPlainPgtide: a pgtide without TLS cannot satisfy
// channel_binding=require, and offers only SCRAM-SHA-256.
func TestTLSCBindPlainPgtide(t *testing.T) {
	psql := needBinary(t, "psql", "postgresql-client")
	e := newEnv(t, nil)
	r := runPsql(t, psql, tlsURL(e.tide.Port, e.DB, e.User, "", "sslmode", "prefer", "channel_binding", "require"), e.Pass, "-c", "select 1")
	if r.code == 0 || !strings.Contains(r.stderr, "channel binding") {
		t.Fatalf("psql: exit %d, stderr %q; want a channel binding failure", r.code, r.stderr)
	}
	c, err := pgx.Connect(ctxT(t, 10*time.Second), tlsURL(e.tide.Port, e.DB, e.User, e.Pass, "sslmode", "prefer", "channel_binding", "require"))
	if err == nil {
		c.Close(context.Background())
		t.Fatal("pgx: channel_binding=require logged in to a pgtide without TLS")
	}
	if !strings.Contains(err.Error(), "SCRAM-SHA-256-PLUS") {
		t.Fatalf("pgx: %v; want the no SCRAM-SHA-256-PLUS error", err)
	}
	r = runPsql(t, psql, tlsURL(e.tide.Port, e.DB, e.User, "", "sslmode", "prefer", "channel_binding", "prefer"), e.Pass, "-tA", "-c", "select 1")
	if r.code != 0 {
		t.Fatalf("channel_binding=prefer: exit %d, stderr %q", r.code, r.stderr)
	}
}
