package config

import (
	"strings"
	"testing"
)

func TestServerRequireAuth(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"", ""},
		{"scram-sha-256", "scram-sha-256"},
		{"md5,scram-sha-256", "md5,scram-sha-256"},
		{"!password", "md5,scram-sha-256,none"},
		{"!password,!md5", "scram-sha-256,none"},
		{"password,md5,scram-sha-256,none", ""},
	} {
		c, err := Parse("x.toml", []byte("[databases.a]\nserver_require_auth = \""+tc.value+"\""))
		if err != nil {
			t.Fatalf("%q: %v", tc.value, err)
		}
		if got := c.Databases["a"].EffectiveServerRequireAuth(); got != tc.want {
			t.Errorf("%q: allowed %q, want %q", tc.value, got, tc.want)
		}
	}
	for _, tc := range []struct{ value, reason string }{
		{"scram", `unknown method "scram"`},
		{"md5,!password", "cannot be mixed with non-negative methods"},
		{"!md5,password", "cannot be mixed with negative methods"},
		{"md5,md5", "listed more than once"},
		{"gss", "pgtide does not speak gss"},
		{"!password,!md5,!scram-sha-256,!none", "allows no authentication method"},
	} {
		errs := parseErrors(t, "[databases.a]\nserver_require_auth = \""+tc.value+"\"")
		found := false
		for _, fe := range fieldErrors(t, errs) {
			if fe.Key == "databases.a.server_require_auth" && strings.Contains(fe.Reason, tc.reason) {
				found = true
			}
		}
		if !found {
			t.Errorf("%q: got %v, want databases.a.server_require_auth: ...%s...", tc.value, errs, tc.reason)
		}
	}
}
