package config

import (
	"strings"
	"testing"
	"time"
)

func TestAuthQueryConfig(t *testing.T) {
	c := mustParse(t, `
auth_user = "lookup"
auth_dbname = "app"
[databases.app]
[users.lookup]
password = "pw"
`)
	if !c.AuthQueryEnabled() || c.AuthQuery != DefaultAuthQuery || c.AuthCacheTTL.Duration != time.Minute || c.AuthDBName != "app" {
		t.Fatalf("got auth_user %q, auth_query %q, ttl %s, dbname %q", c.AuthUser, c.AuthQuery, c.AuthCacheTTL, c.AuthDBName)
	}
	if mustParse(t, "").AuthQueryEnabled() {
		t.Fatal("auth_query enabled by default")
	}

	for _, tc := range []struct{ src, key, reason string }{
		{`auth_user = "nobody"`, "auth_user", "has no [users.nobody] section"},
		{"auth_user = \"l\"\n[users.l]\npassword = \"md5" + strings.Repeat("0", 32) + "\"", "auth_user", "must be the plaintext password"},
		{"auth_user = \"l\"\n[users.l]\npassword = \"\"", "auth_user", "must be the plaintext password"},
		{"auth_user = \"l\"\nauth_query = \"SELECT 1\"\n[users.l]\npassword = \"x\"", "auth_query", "parameter $1"},
		{"auth_user = \"l\"\nauth_query = \" \"\n[users.l]\npassword = \"x\"", "auth_query", "must not be empty"},
		{"auth_user = \"l\"\nauth_dbname = \"nope\"\n[users.l]\npassword = \"x\"", "auth_dbname", `database "nope" has no [databases] section`},
		{"auth_user = \"l\"\nauth_dbname = \"pgtide\"\n[users.l]\npassword = \"x\"", "auth_dbname", "admin console"},
		{`auth_cache_ttl = "-1s"`, "auth_cache_ttl", "must not be negative"},
	} {
		fes := fieldErrors(t, parseErrors(t, tc.src))
		found := false
		for _, fe := range fes {
			found = found || (fe.Key == tc.key && strings.Contains(fe.Reason, tc.reason))
			if strings.Contains(fe.Reason, "md5000") {
				t.Errorf("%q: reason shows the secret: %s", tc.src, fe.Reason)
			}
		}
		if !found {
			t.Errorf("%q: errors %v, want %s: ...%s...", tc.src, fes, tc.key, tc.reason)
		}
	}
}
