package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSyntaxErrorHidesPassword: a TOML syntax error on or in a password
// value never repeats any part of the value (issue 13.8), wherever the
// parser stops in it; errors elsewhere keep the parser's message.
func TestSyntaxErrorHidesPassword(t *testing.T) {
	const secret = "Zq7Hv2Kw3Jx"
	for _, src := range []string{
		"[users.a]\npassword = " + secret + "\n",                        // no quotes
		"[users.a]\npassword = " + secret + " trailing\n",               // no quotes, two words
		"[users.a]\npassword = \"" + secret + "\n",                      // unterminated
		"[users.a]\npassword = '" + secret + "\n",                       // unterminated literal
		"[users.a]\npassword = \"" + secret + "\" " + secret + "\n",     // junk after the string
		"[users.a]\npassword = \"Zq7Hv2\\Kw3Jx\"\n",                     // bad escape
		"[users.a]\npassword = \"\"\"Zq7Hv2\nKw3Jx\\q\"\"\"\n",          // bad escape, multi-line string
		"[users.a]\npassword = 12" + secret + "\n",                      // starts like a number
		"[users.a]\npassword = true" + secret + "\n",                    // starts like a boolean
		"[users.a]\npassword = [\"" + secret + "\"\n",                   // unterminated array
		"[users]\na = {password = " + secret + "}\n",                    // inline table
		"users.a.password = " + secret + "\n",                           // dotted key
		"[databases.x]\npassword = " + secret + "\n",                    // a database's password
		"[users.a]\nPassword = " + secret + "\n",                        // wrong case is still a password line
		"[users.a]\npassword = \"Zq7Hv2\u0001Kw3Jx\"\n",                 // control character
		"[databases.x]\nuser = \"u\"\npassword = \"" + secret + "\"x\n", // junk glued to the string
	} {
		_, err := Parse("test.toml", []byte(src))
		if err == nil {
			t.Errorf("%q: parsed without error", src)
			continue
		}
		msg := err.Error()
		// No run of 3 or more characters of the secret (the parser quotes
		// words, single characters and escapes).
		for i := 0; i+3 <= len(secret); i++ {
			if strings.Contains(msg, secret[i:i+3]) {
				t.Errorf("%q: error repeats part of the password (%q): %s", src, secret[i:i+3], msg)
				break
			}
		}
		for _, frag := range []string{`"Zq`, `'x'`, `'\q'`, `'\K'`, `'0x01'`, `"Zq7Hv2Kw3Jx"`, `'Z'`, `'K'`, `'1'`, `'t'`} {
			if strings.Contains(msg, frag) {
				t.Errorf("%q: error quotes the value (%s): %s", src, frag, msg)
			}
		}
		if !strings.Contains(msg, "test.toml:") || !strings.Contains(msg, "invalid TOML") {
			t.Errorf("%q: error lacks the file, line or kind: %s", src, msg)
		}
	}
	// A syntax error away from any password keeps the parser's words.
	_, err := Parse("test.toml", []byte("pool_mode = session\n[users.a]\npassword = \"ok\"\n"))
	if err == nil || !strings.Contains(err.Error(), `found "session"`) {
		t.Errorf("syntax error in pool_mode: %v; want the parser's message", err)
	}
}

// TestAuthDBNameRequired: auth_query never runs in the client's database, so
// auth_user without auth_dbname is an error naming the key (issue 13.4).
func TestAuthDBNameRequired(t *testing.T) {
	src := "auth_user = \"l\"\n[databases.\"*\"]\n[users.l]\npassword = \"x\"\n"
	found := false
	for _, fe := range fieldErrors(t, parseErrors(t, src)) {
		if fe.Key == "auth_dbname" && strings.Contains(fe.Reason, "must be set when auth_user is set") {
			found = true
		}
	}
	if !found {
		t.Fatalf("auth_user without auth_dbname: want an auth_dbname error")
	}
	c := mustParse(t, "auth_user = \"l\"\nauth_dbname = \"postgres\"\n[databases.\"*\"]\n[users.l]\npassword = \"x\"\n")
	if c.AuthDBName != "postgres" {
		t.Fatalf("auth_dbname = %q", c.AuthDBName)
	}
}

// TestAutodbIdleTimeout: PgBouncer's key and default; "0" turns it off;
// negative and sub-second values are errors.
func TestAutodbIdleTimeout(t *testing.T) {
	if d := mustParse(t, "").AutodbIdleTimeout.Duration; d != time.Hour {
		t.Fatalf("default autodb_idle_timeout = %s, want 1h", d)
	}
	if d := mustParse(t, `autodb_idle_timeout = "0"`).AutodbIdleTimeout.Duration; d != 0 {
		t.Fatalf("autodb_idle_timeout = \"0\" gives %s", d)
	}
	for _, tc := range []struct{ src, reason string }{
		{`autodb_idle_timeout = "-1s"`, "must not be negative"},
		{`autodb_idle_timeout = "500ms"`, "at least 1s"},
		{`autodb_idle_timeout = 60`, "a bare number has no unit"},
	} {
		found := false
		for _, fe := range fieldErrors(t, parseErrors(t, tc.src)) {
			found = found || (fe.Key == "autodb_idle_timeout" && strings.Contains(fe.Reason, tc.reason))
		}
		if !found {
			t.Errorf("%s: want autodb_idle_timeout: ...%s...", tc.src, tc.reason)
		}
	}
}

// writeKeyPair writes a self-signed certificate and its key into dir.
func writeKeyPair(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pgtide"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestKeyFilePermissions: a private key others can read is refused with
// PostgreSQL's message, for clients' and servers' TLS alike (issue 13.9).
func TestKeyFilePermissions(t *testing.T) {
	certFile, keyFile := writeKeyPair(t, t.TempDir())
	root := os.Geteuid() == 0
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true},
		{0o640, root}, // a root-owned key may be group-readable
		{0o644, false}, {0o604, false}, {0o660, false}, {0o620, false}, {0o610, false},
	} {
		if err := os.Chmod(keyFile, tc.mode); err != nil {
			t.Fatal(err)
		}
		for _, src := range []struct{ toml, key string }{
			{fmt.Sprintf("client_tls_cert_file = %q\nclient_tls_key_file = %q\n", certFile, keyFile), "client_tls_key_file"},
			{fmt.Sprintf("[databases.a]\nserver_tls_cert_file = %q\nserver_tls_key_file = %q\n", certFile, keyFile), "databases.a.server_tls_key_file"},
		} {
			_, err := Parse("test.toml", []byte(src.toml))
			if tc.ok {
				if err != nil {
					t.Errorf("mode %04o: %v", tc.mode, err)
				}
				continue
			}
			want := fmt.Sprintf("%s: private key file %q has group or world access", src.key, keyFile)
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "u=rw (0600) or less") {
				t.Errorf("mode %04o: got %v, want ...%s...", tc.mode, err, want)
			}
			if err := CheckKeyFile(keyFile); err == nil {
				t.Errorf("mode %04o: CheckKeyFile accepts it", tc.mode)
			}
		}
	}
	if !root {
		return
	}
	// Owned by someone else than pgtide's user and root.
	if err := os.Chmod(keyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(keyFile, 54321, 54321); err != nil {
		t.Fatal(err)
	}
	_, err := Parse("test.toml", []byte(fmt.Sprintf("client_tls_cert_file = %q\nclient_tls_key_file = %q\n", certFile, keyFile)))
	if err == nil || !strings.Contains(err.Error(), "must be owned by the user pgtide runs as or root") {
		t.Errorf("key owned by another user: %v", err)
	}
}

// TestFileModeWarning: a world-readable file with secrets gets a warning;
// one without secrets, or readable by its owner (and group) only, none.
func TestFileModeWarning(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pgtide.toml")
	withSecret := mustParse(t, "[users.a]\npassword = \"md5"+strings.Repeat("0", 32)+"\"\n")
	withDBSecret := mustParse(t, "[databases.a]\nuser = \"u\"\npassword = \"p\"\n")
	without := mustParse(t, "[databases.a]\n")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Config{withSecret, withDBSecret} {
		if w := c.FileModeWarning(path); !strings.Contains(w, "holds passwords and is readable by every user") || !strings.Contains(w, "0644") {
			t.Errorf("0644 with a secret: warning %q", w)
		}
	}
	if w := without.FileModeWarning(path); w != "" {
		t.Errorf("no secrets: warning %q", w)
	}
	for _, mode := range []os.FileMode{0o600, 0o640} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if w := withSecret.FileModeWarning(path); w != "" {
			t.Errorf("mode %04o: warning %q", mode, w)
		}
	}
}
