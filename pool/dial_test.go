package pool

import (
	"context"
	"errors"
	"strings"
	"testing"

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
