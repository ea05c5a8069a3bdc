package main

import (
	"crypto/tls"
	"encoding"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/pgtide/pgtide/proxy/config"
)

// printEffective writes every setting of cfg, defaults included, as TOML
// (sorted, so the output is stable). Passwords are never printed: a set
// password shows as a comment saying which form it has.
func printEffective(w io.Writer, cfg *config.Config) { printEffectiveRaw(w, cfg, nil) }

// printEffectiveRaw is printEffective with the file's top-level values
// (raw, may be nil), so that durations show as they were written ("600s",
// not "10m0s"). Settings whose default depends on others show the value in
// effect (client_tls_sslmode, client_tls_min_version, server_tls_sslmode),
// and the pool each (database, user) pair gets closes the output.
func printEffectiveRaw(w io.Writer, cfg *config.Config, raw map[string]any) {
	fmt.Fprintln(w, "# effective settings (defaults filled in; passwords not shown)")
	v := reflect.ValueOf(cfg).Elem()
	inEffect := map[string]string{
		"client_tls_sslmode":     tomlString(cfg.EffectiveClientTLSSSLMode()),
		"client_tls_min_version": tomlString(map[uint16]string{tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}[cfg.ClientTLSVersion()]),
	}
	ct := reflect.TypeFor[config.Config]()
	for i := 0; i < ct.NumField(); i++ {
		f := ct.Field(i)
		key := strings.Split(f.Tag.Get("toml"), ",")[0]
		if s, ok := raw[key].(string); ok && f.Type == reflect.TypeFor[config.Duration]() {
			inEffect[key] = tomlString(s) // as written; it validated
		}
	}
	writeFieldsWith(w, v, func(f reflect.StructField) bool { return f.Type.Kind() != reflect.Map }, inEffect)
	for _, name := range sortedKeys(cfg.Databases) {
		db := cfg.Databases[name]
		fmt.Fprintf(w, "\n[databases.%s]\n", tomlKey(name))
		override := map[string]string{"server_tls_sslmode": tomlString(db.EffectiveServerTLSSSLMode())}
		if len(db.Ports) > 1 {
			override["port"] = tomlValue(reflect.ValueOf(db.Ports)) // one per host
		}
		writeFieldsWith(w, reflect.ValueOf(db), nil, override)
		if db.DBName == "" {
			fmt.Fprintln(w, "# dbname \"\" = the database name the client asks for")
		}
	}
	for _, name := range sortedKeys(cfg.Users) {
		u := cfg.Users[name]
		fmt.Fprintf(w, "\n[users.%s]\n", tomlKey(name))
		writeFields(w, reflect.ValueOf(u), nil)
	}
	if len(cfg.Databases) > 0 || len(cfg.Users) > 0 {
		fmt.Fprintln(w, "\n# In [databases.*] and [users.*], 0 and \"\" mean: inherit the global setting (a [users.*] timeout: \"\" inherits, \"0\" turns it off for that user).")
	}
	printPools(w, cfg)
}

// printPools says, as comments, what the pool of each (database, user)
// pair gets once the global, database and user settings are combined.
func printPools(w io.Writer, cfg *config.Config) {
	if len(cfg.Databases) == 0 {
		return
	}
	users := sortedKeys(cfg.Users)
	if cfg.AuthQueryEnabled() || len(users) == 0 {
		users = append(users, "") // users not in [users] (auth_query, trust)
	}
	fmt.Fprintln(w, "\n# Pools in effect (database x user):")
	for _, dbName := range sortedKeys(cfg.Databases) {
		db, _ := cfg.ResolveDatabase(dbName)
		for _, u := range users {
			uc := cfg.Users[u]
			who := u
			if u == "" {
				who = "(other users)"
			}
			maxDB := db.MaxDBConnections
			if maxDB == 0 {
				maxDB = cfg.MaxDBConnections
			}
			dbname := strconv.Quote(db.DBName)
			if dbName == "*" && cfg.Databases["*"].DBName == "" {
				dbname = "(the name the client asks for)"
			}
			server := db.Targets()[0].String()
			if ts := db.Targets(); len(ts) > 1 {
				list := make([]string, len(ts))
				for i, t := range ts {
					list[i] = t.String()
				}
				server = fmt.Sprintf("%s (load_balance_hosts %q)", strings.Join(list, ", "), cfg.EffectiveLoadBalanceHosts(db))
			}
			lifetime, _ := config.Duration{Duration: cfg.EffectiveServerLifetime(db)}.MarshalText()
			fmt.Fprintf(w, "#   %s x %s: pool_mode %q, pool_size %d, max_db_connections %d, server %s dbname %s, server_tls_sslmode %q, server_lifetime %q\n",
				dbName, who, cfg.EffectivePoolMode(db, uc), cfg.EffectivePoolSize(db, uc), maxDB, server, dbname, db.EffectiveServerTLSSSLMode(), lifetime)
		}
	}
}

// writeFields prints each field of struct v that has a toml tag (and passes
// keep) as "key = value".
func writeFields(w io.Writer, v reflect.Value, keep func(reflect.StructField) bool) {
	writeFieldsWith(w, v, keep, nil)
}

// writeFieldsWith is writeFields with some values replaced (key -> TOML value).
func writeFieldsWith(w io.Writer, v reflect.Value, keep func(reflect.StructField) bool, override map[string]string) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := strings.Split(f.Tag.Get("toml"), ",")[0]
		if key == "" || key == "-" || (keep != nil && !keep(f)) {
			continue
		}
		if key == "password" {
			fmt.Fprintf(w, "# %s = %s\n", key, passwordForm(v.Field(i).String()))
			continue
		}
		if o, ok := override[key]; ok {
			fmt.Fprintf(w, "%s = %s\n", key, o)
			continue
		}
		fmt.Fprintf(w, "%s = %s\n", key, tomlValue(v.Field(i)))
	}
}

// passwordForm describes a stored password without revealing it.
func passwordForm(p string) string {
	switch {
	case p == "":
		return "(not set)"
	case strings.HasPrefix(p, "SCRAM-SHA-256$"):
		return "(set: SCRAM-SHA-256 verifier, not shown)"
	case strings.HasPrefix(p, "md5") && len(p) == 35:
		return "(set: md5 hash, not shown)"
	}
	return "(set: plaintext, not shown)"
}

// tomlValue renders a config value as TOML.
func tomlValue(v reflect.Value) string {
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		b, err := m.MarshalText()
		if err == nil {
			return tomlString(string(b))
		}
	}
	switch v.Kind() {
	case reflect.String:
		return tomlString(v.String())
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int64, reflect.Int32:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = tomlValue(v.Index(i))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return tomlString(fmt.Sprint(v.Interface()))
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// tomlKey quotes a table key unless it is a bare key.
func tomlKey(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return tomlString(s)
		}
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
