package config

import "fmt"

// Warnings lists settings that are valid but probably not what was meant:
// users who cannot log in because nothing gives them a password. pgtide
// -check-config prints them and the daemon logs them at start and reload.
func (c *Config) Warnings() []string {
	var out []string
	if c.AuthType == "trust" {
		return nil
	}
	how := fmt.Sprintf("auth_type %q needs one", c.AuthType)
	if c.AuthType == "hba" {
		how = "every HBA method but trust and cert needs one"
	}
	for _, name := range sortedNames(c.Users) {
		if c.Users[name].Password == "" {
			out = append(out, fmt.Sprintf("users.%s: no password: this user cannot log in (%s)", quoteKey(name), how))
		}
	}
	// The console has no database to run auth_query in unless auth_dbname names one.
	lookup := c.AuthQueryEnabled() && c.AuthDBName != ""
	seen := map[string]bool{}
	for _, list := range []struct {
		key   string
		users []string
	}{{"admin_users", c.AdminUsers}, {"stats_users", c.StatsUsers}} {
		for _, u := range list.users {
			if _, ok := c.Users[u]; ok || seen[u] || lookup {
				continue
			}
			seen[u] = true
			out = append(out, fmt.Sprintf("%s: %q has no [users.%s] password (and auth_query needs auth_dbname to serve the console): this user cannot open the admin console (%s)", list.key, u, quoteKey(u), how))
		}
	}
	return out
}
