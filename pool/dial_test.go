package pool

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/proxy/auth"
)

// TestDialSASLprep (issue 17, item 1): a plaintext password that SASLprep
// changes (U+2168 ROMAN NUMERAL NINE normalises to "IX") logs in with SCRAM
// in both its forms, as it does with libpq; md5 hashes the raw password.
func TestDialSASLprep(t *testing.T) {
	const raw, prepped = "IX-\u2168", "IX-IX"
	verifier := parseSecret(t, must(auth.SCRAMVerifier(raw, 4096))) // SASLprep'd, as PostgreSQL stores it
	for _, tc := range []struct {
		name   string
		method auth.Method
		stored auth.Secret
		pw     string
	}{
		{"scram raw form", auth.SCRAM, verifier, raw},
		{"scram ASCII form", auth.SCRAM, verifier, prepped},
		{"md5 raw", auth.MD5, parseSecret(t, md5Hash(raw, "u")), raw},
		{"cleartext raw", auth.Cleartext, parseSecret(t, raw), raw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dc, ch := fakeServer(t, tc.method, tc.stored)
			dc.Password = tc.pw
			c, err := Dial(context.Background(), dc)
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			_ = c.Close()
			if serr := <-ch; serr != nil {
				t.Fatalf("server: %v", serr)
			}
		})
	}
}

// TestDialRequireAuth (issue 13, item 10): a request that RequireAuth does
// not allow ends the login before anything is sent, with libpq's words.
func TestDialRequireAuth(t *testing.T) {
	const pw = "s3cret"
	for _, tc := range []struct {
		name    string
		method  auth.Method
		stored  auth.Secret
		require string
		want    string // "" = success
	}{
		{"cleartext refused", auth.Cleartext, parseSecret(t, pw), "scram-sha-256", `authentication method requirement "scram-sha-256" failed: server requested a cleartext password`},
		{"cleartext refused by exclusion", auth.Cleartext, parseSecret(t, pw), "md5,scram-sha-256,none", "server requested a cleartext password"},
		{"md5 refused", auth.MD5, parseSecret(t, pw), "scram-sha-256", "server requested a hashed password"},
		{"scram refused", auth.SCRAM, parseSecret(t, pw), "md5", "server requested SASL authentication"},
		{"trust refused", auth.Trust, auth.Secret{}, "scram-sha-256", "server did not complete authentication"},
		{"scram allowed", auth.SCRAM, parseSecret(t, pw), "scram-sha-256", ""},
		{"trust allowed", auth.Trust, auth.Secret{}, "scram-sha-256,none", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dc, ch := fakeServer(t, tc.method, tc.stored)
			dc.Password, dc.RequireAuth = pw, tc.require
			c, err := Dial(context.Background(), dc)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				_ = c.Close()
				if serr := <-ch; serr != nil {
					t.Fatalf("server: %v", serr)
				}
				return
			}
			if err == nil {
				_ = c.Close()
				t.Fatalf("Dial succeeded, want %q", tc.want)
			}
			var ae *AuthError
			if !errors.As(err, &ae) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Dial: %v, want an AuthError with %q", err, tc.want)
			}
			// The server got no password: its exchange ended with the
			// connection, not with a wrong password.
			if serr := <-ch; errors.Is(serr, auth.ErrPasswordMismatch) {
				t.Fatalf("server saw a password: %v", serr)
			}
		})
	}
}

// tlsFakeServer is fakeServer over TLS: it answers the SSLRequest with 'S'
// and runs SCRAM with channel binding data cbData (what the server believes
// its certificate's tls-server-end-point hash is).
func tlsFakeServer(t *testing.T, s auth.Secret, cbData func(*x509.Certificate) []byte) (DialConfig, <-chan error) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 1)
	go func() {
		ch <- func() error {
			nc, err := ln.Accept()
			if err != nil {
				return err
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
			var req [8]byte
			if _, err := io.ReadFull(nc, req[:]); err != nil {
				return err
			}
			if _, err := nc.Write([]byte{'S'}); err != nil {
				return err
			}
			tc := tls.Server(nc, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
			be := pgproto3.NewBackend(tc, tc)
			sm, err := be.ReceiveStartupMessage()
			if err != nil {
				return err
			}
			user := sm.(*pgproto3.StartupMessage).Parameters["user"]
			if _, err := auth.AuthenticateKeys(be, auth.SCRAM, user, s, auth.Options{TLSServerEndPoint: cbData(cert)}); err != nil {
				be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28000", Message: "authentication failed"})
				_ = be.Flush()
				return err
			}
			be.Send(&pgproto3.AuthenticationOk{})
			be.Send(&pgproto3.BackendKeyData{ProcessID: 77, SecretKey: []byte{9, 8, 7, 6}})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if err := be.Flush(); err != nil {
				return err
			}
			_, _ = be.Receive() // Terminate
			return nil
		}()
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	return DialConfig{Host: "127.0.0.1", Port: port, Database: "db", User: "u", SSLMode: "require", Timeout: 5 * time.Second}, ch
}

// TestDialChannelBinding: over TLS, the SCRAM login uses
// SCRAM-SHA-256-PLUS bound to the server's certificate (as pgconn's
// default did): it succeeds against the right binding data and fails
// against other data, which an unbound exchange would not notice.
func TestDialChannelBinding(t *testing.T) {
	sec := parseSecret(t, must(auth.SCRAMVerifier("pw", 4096)))
	right := func(c *x509.Certificate) []byte {
		b, err := auth.TLSServerEndPoint(c)
		if err != nil {
			t.Error(err)
		}
		return b
	}
	dc, ch := tlsFakeServer(t, sec, right)
	dc.Password = "pw"
	c, err := Dial(context.Background(), dc)
	if err != nil {
		t.Fatalf("Dial over TLS: %v", err)
	}
	_ = c.Close()
	if serr := <-ch; serr != nil {
		t.Fatalf("server: %v", serr)
	}
	dc, ch = tlsFakeServer(t, sec, func(*x509.Certificate) []byte { return make([]byte, 32) })
	dc.Password = "pw"
	if c, err := Dial(context.Background(), dc); err == nil {
		_ = c.Close()
		t.Fatal("Dial succeeded against other channel binding data: the exchange was not bound")
	}
	if serr := <-ch; !errors.Is(serr, auth.ErrChannelBindingCheck) {
		t.Fatalf("server: %v, want a channel binding check failure", serr)
	}
}
