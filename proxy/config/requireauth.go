package config

import (
	"fmt"
	"slices"
	"strings"
)

// serverAuthMethods are the server authentication requests pgtide can
// answer, by libpq's require_auth names ("none": the server asks for none).
var serverAuthMethods = []string{"password", "md5", "scram-sha-256", "none"}

// ParseRequireAuth parses a server_require_auth value, with the syntax and
// rules of libpq's require_auth: a comma-separated list of methods the
// server may ask for, or of methods it may not ask for, each written
// "!method" (the two forms do not mix). It returns the allowed methods in
// a fixed order; "" allows all of them.
func ParseRequireAuth(s string) ([]string, error) {
	if s == "" {
		return slices.Clone(serverAuthMethods), nil
	}
	var listed []string
	negated := strings.HasPrefix(s, "!")
	for m := range strings.SplitSeq(s, ",") {
		neg := strings.HasPrefix(m, "!")
		m = strings.TrimPrefix(m, "!")
		switch {
		case neg != negated && neg:
			return nil, fmt.Errorf("negative method %q cannot be mixed with non-negative methods", "!"+m)
		case neg != negated:
			return nil, fmt.Errorf("method %q cannot be mixed with negative methods", m)
		case m == "gss" || m == "sspi" || m == "oauth":
			return nil, fmt.Errorf("pgtide does not speak %s to servers; the methods are %s", m, strings.Join(serverAuthMethods, ", "))
		case !slices.Contains(serverAuthMethods, m):
			return nil, fmt.Errorf("unknown method %q (want %s, each optionally prefixed with \"!\")", m, strings.Join(serverAuthMethods, ", "))
		case slices.Contains(listed, m):
			return nil, fmt.Errorf("method %q is listed more than once", m)
		}
		listed = append(listed, m)
	}
	var allowed []string
	for _, m := range serverAuthMethods {
		if slices.Contains(listed, m) != negated {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) == 0 {
		return nil, fmt.Errorf("%q allows no authentication method at all", s)
	}
	return allowed, nil
}

// EffectiveServerRequireAuth is server_require_auth as the list of allowed
// methods, comma-separated; "" when every method is allowed.
func (db Database) EffectiveServerRequireAuth() string {
	allowed, err := ParseRequireAuth(db.ServerRequireAuth)
	if err != nil || len(allowed) == len(serverAuthMethods) {
		return "" // invalid values do not pass validation
	}
	return strings.Join(allowed, ",")
}

func (d *decoder) validateServerRequireAuth(name string, db Database) {
	if _, err := ParseRequireAuth(db.ServerRequireAuth); err != nil {
		d.fail(k("databases", name, "server_require_auth"), "", err.Error())
	}
}
