package main

import (
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
func printEffective(w io.Writer, cfg *config.Config) {
	fmt.Fprintln(w, "# effective settings (defaults filled in; passwords not shown)")
	v := reflect.ValueOf(cfg).Elem()
	writeFields(w, v, func(f reflect.StructField) bool { return f.Type.Kind() != reflect.Map })
	for _, name := range sortedKeys(cfg.Databases) {
		db := cfg.Databases[name]
		fmt.Fprintf(w, "\n[databases.%s]\n", tomlKey(name))
		writeFields(w, reflect.ValueOf(db), nil)
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
		fmt.Fprintln(w, "\n# In [databases.*] and [users.*], 0 and \"\" mean: inherit the global setting.")
	}
}

// writeFields prints each field of struct v that has a toml tag (and passes
// keep) as "key = value".
func writeFields(w io.Writer, v reflect.Value, keep func(reflect.StructField) bool) {
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
