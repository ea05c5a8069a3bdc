package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// iniEntry is one "key = value" line of a PgBouncer-style ini file.
type iniEntry struct {
	Section string // lower-cased, e.g. "pgbouncer", "databases", "users"
	Key     string // as written (database and user names are case-sensitive)
	Value   string // trimmed
	Line    int    // 1-based
	File    string // the file it came from (set by loadINI; %include may name others)
	Seq     int    // position among all entries of all files (set by loadINI)
}

// maxIncludeDepth bounds %include nesting (PgBouncer allows 10).
const maxIncludeDepth = 10

// loadINI parses data (the text of file) and, in place of each %include
// line, the file it names, as PgBouncer does. A relative path is looked up
// next to the including file first, then from the working directory.
// An included file starts in the section of the %include line.
func loadINI(file string, data []byte) ([]iniEntry, error) {
	var out []iniEntry
	if err := loadINIInto(&out, file, data, "", 0); err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Seq = i
	}
	return out, nil
}

func loadINIInto(out *[]iniEntry, file string, data []byte, section string, depth int) error {
	entries, err := parseINISection(data, section)
	if err != nil {
		return fmt.Errorf("%s: %v", file, err)
	}
	for _, e := range entries {
		e.File = file
		if e.Key != "%include" {
			*out = append(*out, e)
			continue
		}
		if depth >= maxIncludeDepth {
			return fmt.Errorf("%s:%d: %%include nested more than %d deep", file, e.Line, maxIncludeDepth)
		}
		path := e.Value
		if !filepath.IsAbs(path) {
			if alt := filepath.Join(filepath.Dir(file), path); fileExists(alt) || !fileExists(path) {
				path = alt
			}
		}
		inc, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%s:%d: %%include: %v", file, e.Line, err)
		}
		if err := loadINIInto(out, path, inc, e.Section, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// parseINI reads an ini file the way PgBouncer does: [section] headers,
// "key = value" lines, whole-line comments starting with ';' or '#'.
// %include lines are returned as entries with Key "%include".
func parseINI(data []byte) ([]iniEntry, error) { return parseINISection(data, "") }

// parseINISection is parseINI starting in section (for an included file).
func parseINISection(data []byte, section string) ([]iniEntry, error) {
	var out []iniEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if n == 1 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		switch {
		case line == "" || line[0] == ';' || line[0] == '#':
			continue
		case strings.HasPrefix(line, "%include"):
			out = append(out, iniEntry{Section: section, Key: "%include", Value: strings.TrimSpace(line[len("%include"):]), Line: n})
			continue
		case line[0] == '[':
			end := strings.IndexByte(line, ']')
			if end < 0 {
				return nil, fmt.Errorf("line %d: section header without ']'", n)
			}
			section = strings.ToLower(strings.TrimSpace(line[1:end]))
			continue
		}
		eq := strings.IndexByte(line, '=')
		if eq < 0 {
			return nil, fmt.Errorf("line %d: expected \"key = value\"", n)
		}
		key := strings.TrimSpace(line[:eq])
		if key == "" {
			return nil, fmt.Errorf("line %d: empty key", n)
		}
		if section == "" {
			return nil, fmt.Errorf("line %d: %q is outside any [section]", n, key)
		}
		val := strings.TrimSpace(line[eq+1:])
		// PgBouncer allows a value (or a database name) in double quotes.
		key = unquoteDouble(key)
		out = append(out, iniEntry{Section: section, Key: key, Value: val, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func unquoteDouble(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return s
}

// connParam is one key=value of a [databases] or [users] line.
type connParam struct{ Key, Value string }

// parseConnString splits `host=... port=5432 password='a b'` into pairs.
// Values may be single-quoted; inside quotes ” and \' are a quote and \\ a
// backslash. Keys are lower-cased.
func parseConnString(s string) ([]connParam, error) {
	var out []connParam
	i := 0
	for {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) {
			return out, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := strings.ToLower(s[start:i])
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) || s[i] != '=' {
			return nil, fmt.Errorf("%q: expected key=value", key)
		}
		i++
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				switch {
				case c == '\\' && i+1 < len(s):
					val.WriteByte(s[i+1])
					i += 2
				case c == '\'' && i+1 < len(s) && s[i+1] == '\'':
					val.WriteByte('\'')
					i += 2
				case c == '\'':
					i++
					closed = true
				default:
					val.WriteByte(c)
					i++
				}
				if closed {
					break
				}
			}
			if !closed {
				return nil, fmt.Errorf("%s: unterminated quoted value", key)
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				val.WriteByte(s[i])
				i++
			}
		}
		if key == "" {
			return nil, fmt.Errorf("empty key before '='")
		}
		out = append(out, connParam{Key: key, Value: val.String()})
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// authEntry is one line of a PgBouncer auth_file.
type authEntry struct {
	User, Secret string
	Line         int
}

// parseAuthFile reads `"user" "secret"` lines (a doubled "" is a quote inside
// a field). Lines that do not start with a quote are ignored, as PgBouncer
// does. Errors never include the secret.
func parseAuthFile(data []byte) ([]authEntry, error) {
	var out []authEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, `"`) {
			continue
		}
		user, rest, ok := quotedField(line)
		if !ok {
			return nil, fmt.Errorf("line %d: unterminated quoted user name", n)
		}
		rest = strings.TrimSpace(rest)
		if !strings.HasPrefix(rest, `"`) {
			return nil, fmt.Errorf("line %d: expected a quoted password after user %q", n, user)
		}
		secret, _, ok := quotedField(rest)
		if !ok {
			return nil, fmt.Errorf("line %d: unterminated quoted password for user %q", n, user)
		}
		out = append(out, authEntry{User: user, Secret: secret, Line: n})
	}
	return out, sc.Err()
}

// quotedField parses a leading "..." field and returns it and the rest.
func quotedField(s string) (field, rest string, ok bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] == '"' {
			if i+1 < len(s) && s[i+1] == '"' {
				b.WriteByte('"')
				i++
				continue
			}
			return b.String(), s[i+1:], true
		}
		b.WriteByte(s[i])
	}
	return "", "", false
}
