package config

import (
	"fmt"
	"strings"
)

// DefaultAuthQuery is the default auth_query: a SECURITY DEFINER function the
// README shows how to create. It is schema-qualified so that it never
// depends on a search_path.
const DefaultAuthQuery = "SELECT usename, passwd FROM pgtide.user_lookup($1)"

// AuthQueryEnabled reports whether users not in [users] are looked up in
// PostgreSQL with auth_query.
func (c *Config) AuthQueryEnabled() bool { return c.AuthUser != "" }

// validateAuthQuery checks auth_user, auth_query, auth_dbname and auth_cache_ttl.
func (d *decoder) validateAuthQuery(c *Config) {
	if c.AuthCacheTTL.Duration < 0 {
		d.fail(k("auth_cache_ttl"), "", fmt.Sprintf("must not be negative, got %s", c.AuthCacheTTL.Duration))
	}
	if c.AuthUser == "" {
		return
	}
	u, ok := c.Users[c.AuthUser]
	switch {
	case !ok:
		d.fail(k("auth_user"), "", fmt.Sprintf("user %q has no [users.%s] section: auth_user needs one with its plaintext password", c.AuthUser, quoteKey(c.AuthUser)))
	case u.Password == "" || strings.HasPrefix(u.Password, scramPrefix) || (strings.HasPrefix(u.Password, "md5") && len(u.Password) == 35):
		d.fail(k("auth_user"), "", fmt.Sprintf("[users.%s] password must be the plaintext password: pgtide logs in as auth_user itself", quoteKey(c.AuthUser)))
	}
	if strings.TrimSpace(c.AuthQuery) == "" {
		d.fail(k("auth_query"), "", "must not be empty when auth_user is set")
	} else if !strings.Contains(c.AuthQuery, "$1") {
		d.fail(k("auth_query"), "", "must take the user name as parameter $1")
	}
	switch {
	case c.AuthDBName == "":
		// Never the client's database: whoever owns a database a client can
		// name could define the lookup function there and answer it with a
		// secret of their own, for any role (docs/security.md).
		d.fail(k("auth_dbname"), "", "must be set when auth_user is set: auth_query runs in this one database (a [databases] name), never in the one a client asks for, whose owner could otherwise answer the lookup for any role")
	case c.AuthDBName == AdminDatabaseName:
		d.fail(k("auth_dbname"), "", fmt.Sprintf("%q is the admin console, not a database", AdminDatabaseName))
	default:
		if _, ok := c.ResolveDatabase(c.AuthDBName); !ok {
			d.fail(k("auth_dbname"), "", fmt.Sprintf("database %q has no [databases] section (and there is no [databases.\"*\"])", c.AuthDBName))
		}
	}
}
