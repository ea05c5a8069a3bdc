package config

import (
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
