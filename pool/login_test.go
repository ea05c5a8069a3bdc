package pool

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/proxy/auth"
)

// fakeServer accepts one connection and authenticates it with proxy/auth's
// server side (method m, stored secret s), then sends the rest of a
// startup reply. The channel carries the server's authentication error.
func fakeServer(t *testing.T, m auth.Method, s auth.Secret) (DialConfig, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 1)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				ch <- err
				return
			}
			if err, again := serveLogin(nc, m, s); !again {
				ch <- err
				return
			}
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	return DialConfig{Host: "127.0.0.1", Port: port, Database: "db", User: "u", Timeout: 5 * time.Second}, ch
}

// serveLogin runs one connection of fakeServer; again is true when the
// client left before its StartupMessage (after a refused SSLRequest).
func serveLogin(nc net.Conn, m auth.Method, s auth.Secret) (err error, again bool) {
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	be := pgproto3.NewBackend(nc, nc)
	be.SetMaxBodyLen(1 << 16)
	sm, err := be.ReceiveStartupMessage()
	for err == nil {
		if _, ok := sm.(*pgproto3.SSLRequest); !ok {
			break
		}
		if _, err = nc.Write([]byte{'N'}); err == nil { // no TLS here
			sm, err = be.ReceiveStartupMessage()
		}
	}
	if err != nil {
		return err, true
	}
	user := sm.(*pgproto3.StartupMessage).Parameters["user"]
	if err := auth.Authenticate(be, m, user, s); err != nil {
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"})
		_ = be.Flush()
		return err, false
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 77, SecretKey: []byte{9, 8, 7, 6}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		return err, false
	}
	_, _ = be.Receive() // Terminate
	return nil, false
}

func parseSecret(t *testing.T, s string) auth.Secret {
	t.Helper()
	sec, err := auth.ParseSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// clientKeyOf derives the SCRAM ClientKey of pw for a verifier (what a
// client's proof reveals to pgtide).
func clientKeyOf(t *testing.T, pw string, s auth.Secret) []byte {
	t.Helper()
	salted, err := pbkdf2.Key(sha256.New, pw, s.Salt, s.Iter, 32)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, salted)
	m.Write([]byte("Client Key"))
	return m.Sum(nil)
}

func md5Hash(pw, user string) string {
	sum := md5.Sum([]byte(pw + user))
	return "md5" + hex.EncodeToString(sum[:])
}

func TestPassthroughLogin(t *testing.T) {
	const pw = "s3cret"
	v, err := auth.SCRAMVerifier(pw, 4096)
	if err != nil {
		t.Fatal(err)
	}
	verifier := parseSecret(t, v)
	other := parseSecret(t, must(auth.SCRAMVerifier(pw, 4096))) // same password, another salt
	scramSec := LoginSecret{ClientKey: clientKeyOf(t, pw, verifier), ServerKey: verifier.ServerKey, Salt: verifier.Salt, Iter: verifier.Iter}
	wrongKey := scramSec
	wrongKey.ClientKey = clientKeyOf(t, "nope", verifier)
	badServerKey := scramSec
	badServerKey.ServerKey = make([]byte, 32)

	cases := []struct {
		name     string
		method   auth.Method
		stored   auth.Secret
		password string
		sec      LoginSecret
		want     string // "" = success; else a substring of the error
	}{
		{"scram client key", auth.SCRAM, verifier, "", scramSec, ""},
		{"scram client key, no server key", auth.SCRAM, verifier, "", LoginSecret{ClientKey: scramSec.ClientKey}, ""},
		{"scram password", auth.SCRAM, verifier, pw, LoginSecret{}, ""},
		{"scram wrong key", auth.SCRAM, verifier, "", wrongKey, "28P01"},
		{"scram other verifier", auth.SCRAM, other, "", scramSec, "differs from pgtide's"},
		{"scram bad server signature", auth.SCRAM, verifier, "", badServerKey, "invalid SCRAM server signature"},
		{"scram nothing", auth.SCRAM, verifier, "", LoginSecret{}, "no password or client key"},
		{"md5 hash", auth.MD5, parseSecret(t, md5Hash(pw, "u")), "", LoginSecret{MD5: md5Hash(pw, "u")}, ""},
		{"md5 plain server", auth.MD5, parseSecret(t, pw), "", LoginSecret{MD5: md5Hash(pw, "u")}, ""},
		{"md5 password", auth.MD5, parseSecret(t, pw), pw, LoginSecret{}, ""},
		{"md5 wrong hash", auth.MD5, parseSecret(t, pw), "", LoginSecret{MD5: md5Hash("x", "u")}, "28P01"},
		{"md5 nothing", auth.MD5, parseSecret(t, pw), "", LoginSecret{}, "neither its password nor its md5 hash"},
		{"cleartext", auth.Cleartext, parseSecret(t, pw), pw, LoginSecret{}, ""},
		{"cleartext without password", auth.Cleartext, parseSecret(t, pw), "", LoginSecret{MD5: md5Hash(pw, "u")}, "no plaintext password"},
		{"trust", auth.Trust, auth.Secret{}, "", LoginSecret{}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dc, ch := fakeServer(t, tc.method, tc.stored)
			dc.Password = tc.password
			c, err := Login(context.Background(), dc, tc.sec)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Login: %v", err)
				}
				if c.PID != 77 || string(c.Secret) != "\x09\x08\x07\x06" || c.Params["server_version"] != "15.0" || c.TxStatus != 'I' {
					t.Fatalf("conn: pid %d, params %v, status %c", c.PID, c.Params, c.TxStatus)
				}
				_ = c.Close()
				if serr := <-ch; serr != nil {
					t.Fatalf("server: %v", serr)
				}
				return
			}
			if err == nil {
				_ = c.Close()
				t.Fatalf("Login succeeded, want error %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Login: %v, want %q", err, tc.want)
			}
			if tc.want == "differs from pgtide's" && !errors.Is(err, ErrVerifierMismatch) {
				t.Fatalf("Login: %v, want ErrVerifierMismatch", err)
			}
			<-ch
		})
	}
}

// TestPassthroughLoginTLSRefused: sslmode=prefer falls back to a plain connection when
// the server answers 'N'; require fails.
func TestPassthroughLoginTLSRefused(t *testing.T) {
	sec := LoginSecret{MD5: md5Hash("pw", "u")}
	dc, ch := fakeServer(t, auth.MD5, parseSecret(t, "pw"))
	dc.SSLMode = "prefer"
	c, err := Login(context.Background(), dc, sec)
	if err != nil {
		t.Fatalf("prefer: %v", err)
	}
	_ = c.Close()
	if err := <-ch; err != nil {
		t.Fatalf("server: %v", err)
	}
	dc, _ = fakeServer(t, auth.MD5, parseSecret(t, "pw"))
	dc.SSLMode = "require"
	if _, err := Login(context.Background(), dc, sec); err == nil || !strings.Contains(err.Error(), "refused TLS") {
		t.Fatalf("require: %v, want a refused-TLS error", err)
	}
}

func TestPassthroughLoginSecretNeverPrinted(t *testing.T) {
	s := LoginSecret{ClientKey: []byte("KEYKEYKEY"), MD5: "md5" + strings.Repeat("ab", 16)}
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		if got := fmt.Sprintf(f, s); got != "[secret]" {
			t.Errorf("%s printed %q", f, got)
		}
	}
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}
