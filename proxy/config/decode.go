package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// How decoding works: the TOML text is parsed once into a tree of
// toml.Primitive values (map[string]toml.Primitive per table). The tree is
// then walked against the Go types, key by key, with our own type checks, so
// that one bad value gives one keyed error and the walk goes on to find the
// rest. BurntSushi/toml's own decoder stops at the first mismatch and matches
// keys case-insensitively, which is why it is not asked to decode into the
// Config structs directly.
//
// Lines: toml v1.6 keeps each key's position but does not export it. It does
// put it in the ParseError returned when a toml.Unmarshaler fails, so
// lineProbe, which always fails, recovers the line of any key whose Primitive
// we hold. Only done when an error needs a line.

// decoder holds the state of one Parse.
type decoder struct {
	data  []byte
	errs  errorList
	md    toml.MetaData
	prims map[string]toml.Primitive // key path (toml.Key.String()) -> its value
	order map[string]int            // key path -> position in the document
	bad   map[string]bool           // key paths already reported
}

func newDecoder(name string, data []byte) *decoder {
	return &decoder{
		data:  data,
		errs:  errorList{file: name},
		prims: map[string]toml.Primitive{},
		order: map[string]int{},
		bad:   map[string]bool{},
	}
}

// decode fills cfg (which holds the defaults) from the document. It returns
// false when the document is not valid TOML, in which case nothing can be
// validated either.
func (d *decoder) decode(cfg *Config) bool {
	var top map[string]toml.Primitive
	md, err := toml.NewDecoder(bytes.NewReader(d.data)).Decode(&top)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			d.errs.add("", pe.Position.Line, "invalid TOML: "+d.syntaxMessage(pe))
		} else {
			d.errs.add("", 0, "invalid TOML: "+err.Error())
		}
		return false
	}
	d.md = md
	for i, k := range md.Keys() {
		d.order[k.String()] = i
	}
	d.walkStruct(nil, top, reflect.ValueOf(cfg).Elem())

	// Everything the walk accepted was decoded; anything else left over is a
	// key we do not know (normally already reported by the walk).
	for _, k := range d.md.Undecoded() {
		if d.reportedAbove(k) {
			continue
		}
		d.fail(k, "", fmt.Sprintf("unknown key %q", k[len(k)-1]))
	}
	return true
}

// secretKeys are the keys whose values are secrets: never quoted in an error.
var secretKeys = []string{"password"}

// syntaxMessage is what a TOML syntax error says. The parser quotes the text
// it choked on, which on a password line is part of the password (a value
// without quotes, a bad escape, a stray character after the closing quote):
// there only the line and key are given, never the parser's message.
func (d *decoder) syntaxMessage(pe toml.ParseError) string {
	lastKey := strings.ToLower(pe.LastKey)
	line := ""
	if lines := bytes.Split(d.data, []byte("\n")); pe.Position.Line >= 1 && pe.Position.Line <= len(lines) {
		line = strings.ToLower(string(lines[pe.Position.Line-1]))
	}
	for _, sk := range secretKeys {
		if strings.Contains(lastKey, sk) || strings.Contains(line, sk) {
			key := "a " + sk
			if strings.Contains(lastKey, sk) {
				key = pe.LastKey
			}
			return fmt.Sprintf("syntax error in or near the value of %s; the parser's message is not shown because it would quote the value, which may be a secret (a password is a string in quotes: \"...\", or '...' with no escapes)", key)
		}
	}
	return pe.Message
}

// reportedAbove reports whether k or a table containing it already has an error.
func (d *decoder) reportedAbove(k toml.Key) bool {
	for i := len(k); i > 0; i-- {
		if d.bad[k[:i].String()] {
			return true
		}
	}
	return false
}

// fail records a problem with key k. suffix is appended to the key's name
// (e.g. "[2]" for an array element).
func (d *decoder) fail(k toml.Key, suffix, reason string) {
	d.bad[k.String()] = true
	d.errs.add(k.String()+suffix, d.line(k), reason)
}

// line returns the line of key k, or of the nearest table that contains it,
// or 0 if unknown (for example a key that is not in the file at all).
func (d *decoder) line(k toml.Key) int {
	for i := len(k); i > 0; i-- {
		if p, ok := d.prims[k[:i].String()]; ok {
			if l := d.lineOf(p, 0); l > 0 {
				return l
			}
		}
	}
	return 0
}

// lineOf returns the line where p is defined. A table that is only implied
// (x in "[x.y]") has no position of its own: it gets its first child's.
func (d *decoder) lineOf(p toml.Primitive, depth int) int {
	var probe lineProbe
	var pe toml.ParseError
	if err := d.md.PrimitiveDecode(p, &probe); errors.As(err, &pe) && pe.Position.Line > 0 {
		return pe.Position.Line
	}
	var raw any
	_ = d.md.PrimitiveDecode(p, &raw)
	if _, ok := raw.(map[string]any); !ok || depth > 8 {
		return 0
	}
	var children map[string]toml.Primitive
	if err := d.md.PrimitiveDecode(p, &children); err != nil {
		return 0
	}
	first := 0
	for _, c := range children {
		if l := d.lineOf(c, depth+1); l > 0 && (first == 0 || l < first) {
			first = l
		}
	}
	return first
}

var errLineProbe = errors.New("line probe")

// lineProbe is a toml.Unmarshaler that always fails; see the comment at the top.
type lineProbe struct{}

func (*lineProbe) UnmarshalTOML(any) error { return errLineProbe }

// sortedKeys returns the keys of m in document order.
func (d *decoder) sortedKeys(path toml.Key, m map[string]toml.Primitive) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	pos := func(k string) int {
		if i, ok := d.order[child(path, k).String()]; ok {
			return i
		}
		return len(d.order)
	}
	sort.Slice(keys, func(i, j int) bool {
		pi, pj := pos(keys[i]), pos(keys[j])
		if pi != pj {
			return pi < pj
		}
		return keys[i] < keys[j]
	})
	return keys
}

func child(path toml.Key, k string) toml.Key {
	c := make(toml.Key, len(path)+1)
	copy(c, path)
	c[len(path)] = k
	return c
}

// tomlFields maps the toml tags of struct type t to field indexes.
func tomlFields(t reflect.Type) (map[string]int, []string) {
	idx := map[string]int{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		idx[name] = i
		names = append(names, name)
	}
	return idx, names
}

var (
	configKeys   = func() []string { _, n := tomlFields(reflect.TypeFor[Config]()); return n }()
	databaseKeys = func() []string { _, n := tomlFields(reflect.TypeFor[Database]()); return n }()
	userKeys     = func() []string { _, n := tomlFields(reflect.TypeFor[User]()); return n }()
)

// pgbouncerHints answers PgBouncer settings that have a different shape here.
var pgbouncerHints = map[string]string{
	"listen_addr": `pgtide uses listen = ["host:port", ...] instead of listen_addr and listen_port`,
	"listen_port": `pgtide uses listen = ["host:port", ...] instead of listen_addr and listen_port`,
	"auth_file":   `pgtide reads users from [users.NAME] tables in this file`,
}

// walkStruct decodes the table children (at path) into struct rv.
func (d *decoder) walkStruct(path toml.Key, children map[string]toml.Primitive, rv reflect.Value) {
	fields, names := tomlFields(rv.Type())
	for _, k := range d.sortedKeys(path, children) {
		kp := child(path, k)
		d.prims[kp.String()] = children[k]
		i, ok := fields[k]
		if !ok {
			d.fail(kp, "", unknownKeyReason(path, k, names))
			continue
		}
		if k == "port" && rv.Type() == reflect.TypeFor[Database]() {
			d.decodePort(kp, children[k], rv.Addr().Interface().(*Database))
			continue
		}
		d.decodeValue(kp, children[k], rv.Field(i))
	}
}

func unknownKeyReason(path toml.Key, k string, names []string) string {
	reason := fmt.Sprintf("unknown key %q", k)
	if s := closest(k, names); s != "" {
		return reason + fmt.Sprintf(" (did you mean %q?)", s)
	}
	if h, ok := pgbouncerHints[k]; ok {
		return reason + " (" + h + ")"
	}
	if len(path) > 0 && contains(configKeys, k) {
		return reason + fmt.Sprintf(" (%s is a top-level key: put it above the first [table] header)", k)
	}
	if len(path) == 0 && (contains(databaseKeys, k) || contains(userKeys, k)) {
		return reason + fmt.Sprintf(" (%s belongs in a [databases.NAME] or [users.NAME] table)", k)
	}
	return reason
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// decodeValue decodes the value p of key kp into fv, reporting a keyed error
// (and leaving fv unchanged) when it does not fit.
func (d *decoder) decodeValue(kp toml.Key, p toml.Primitive, fv reflect.Value) {
	var raw any
	if err := d.md.PrimitiveDecode(p, &raw); err != nil {
		d.fail(kp, "", err.Error())
		return
	}
	secret := kp[len(kp)-1] == "password"
	mismatch := func(suffix, want string, got any) {
		d.fail(kp, suffix, fmt.Sprintf("expected %s, got %s", want, describe(got, secret)))
	}

	if reflect.PointerTo(fv.Type()).Implements(textUnmarshalerType) {
		var s string
		switch v := raw.(type) {
		case string:
			s = v
		case int64:
			if v != 0 {
				d.fail(kp, "", fmt.Sprintf("expected a duration string, got integer %d (a bare number has no unit: write \"%ds\" for seconds)", v, v))
				return
			}
			s = "0"
		default:
			mismatch("", "a duration string like \"30s\"", raw)
			return
		}
		if err := fv.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			d.fail(kp, "", err.Error())
		}
		return
	}

	switch fv.Kind() {
	case reflect.String:
		s, ok := raw.(string)
		if !ok {
			mismatch("", "a string", raw)
			return
		}
		fv.SetString(s)
	case reflect.Int:
		n, ok := raw.(int64)
		if !ok {
			mismatch("", "an integer", raw)
			return
		}
		if fv.OverflowInt(n) {
			d.fail(kp, "", fmt.Sprintf("integer %d is out of range", n))
			return
		}
		fv.SetInt(n)
	case reflect.Bool:
		b, ok := raw.(bool)
		if !ok {
			mismatch("", "true or false", raw)
			return
		}
		fv.SetBool(b)
	case reflect.Slice: // []string is the only slice type in Config
		arr, ok := raw.([]any)
		if !ok {
			mismatch("", "an array of strings", raw)
			return
		}
		out := make([]string, 0, len(arr))
		for i, e := range arr {
			s, ok := e.(string)
			if !ok {
				mismatch(fmt.Sprintf("[%d]", i), "a string", e)
				return
			}
			out = append(out, s)
		}
		fv.Set(reflect.ValueOf(out))
	case reflect.Map: // map[string]Database or map[string]User
		if _, ok := raw.(map[string]any); !ok {
			mismatch("", "a table", raw)
			return
		}
		var entries map[string]toml.Primitive
		if err := d.md.PrimitiveDecode(p, &entries); err != nil {
			d.fail(kp, "", err.Error())
			return
		}
		if fv.IsNil() {
			fv.Set(reflect.MakeMap(fv.Type()))
		}
		for _, name := range d.sortedKeys(kp, entries) {
			ep := child(kp, name)
			d.prims[ep.String()] = entries[name]
			var eraw any
			_ = d.md.PrimitiveDecode(entries[name], &eraw)
			if _, ok := eraw.(map[string]any); !ok {
				reason := fmt.Sprintf("expected a table, got %s", describe(eraw, false))
				if _, isStr := eraw.(string); isStr && kp.String() == "databases" {
					reason += fmt.Sprintf(" (pgtide does not take PgBouncer connection strings: write a [databases.%s] table with host, port, dbname keys)", quoteKey(name))
				}
				d.fail(ep, "", reason)
				continue
			}
			var fieldsOf map[string]toml.Primitive
			if err := d.md.PrimitiveDecode(entries[name], &fieldsOf); err != nil {
				d.fail(ep, "", err.Error())
				continue
			}
			ev := reflect.New(fv.Type().Elem()).Elem()
			if ev.Type() == reflect.TypeFor[Database]() {
				ev.Set(reflect.ValueOf(defaultDatabase(name)))
			}
			d.walkStruct(ep, fieldsOf, ev)
			fv.SetMapIndex(reflect.ValueOf(name).Convert(fv.Type().Key()), ev)
		}
	default:
		d.fail(kp, "", fmt.Sprintf("internal error: cannot decode into %s", fv.Type()))
	}
}

// decodePort decodes a database's port: an integer (the port of every
// host), or an array of integers, one per host of its host list (Ports).
// An array of one is the same as the integer.
func (d *decoder) decodePort(kp toml.Key, p toml.Primitive, db *Database) {
	var raw any
	if err := d.md.PrimitiveDecode(p, &raw); err != nil {
		d.fail(kp, "", err.Error())
		return
	}
	const want = "an integer, or an array of integers with one port per host (port = [5432, 5433])"
	switch v := raw.(type) {
	case int64: // its range is validated with the rest
		db.Port, db.Ports = int(v), nil
	case []any:
		if len(v) == 0 {
			d.fail(kp, "", "expected "+want+", got an empty array")
			return
		}
		ports := make([]int, len(v))
		for i, e := range v {
			n, ok := e.(int64)
			if !ok {
				d.fail(kp, fmt.Sprintf("[%d]", i), fmt.Sprintf("expected an integer, got %s", describe(e, false)))
				return
			}
			if n < 1 || n > 65535 {
				d.fail(kp, fmt.Sprintf("[%d]", i), fmt.Sprintf("must be between 1 and 65535, got %d", n))
				return
			}
			ports[i] = int(n)
		}
		db.Port, db.Ports = ports[0], ports
		if len(ports) == 1 {
			db.Ports = nil
		}
	case string:
		reason := fmt.Sprintf("expected %s, got %s", want, describe(v, false))
		if strings.Contains(v, ",") {
			reason += fmt.Sprintf(" (PgBouncer's port=%s is written port = [%s] here)", v, strings.Join(SplitHosts(v), ", "))
		}
		d.fail(kp, "", reason)
	default:
		d.fail(kp, "", fmt.Sprintf("expected %s, got %s", want, describe(raw, false)))
	}
}

// quoteKey writes one key component as TOML would need it in a header.
func quoteKey(k string) string {
	return toml.Key{k}.String()
}

// describe names a decoded TOML value for an error message. Secret values
// are described by type only.
func describe(v any, secret bool) string {
	switch v := v.(type) {
	case string:
		if secret {
			return "a string"
		}
		if len(v) > 60 {
			v = v[:57] + "..."
		}
		return fmt.Sprintf("string %q", v)
	case int64:
		if secret {
			return "an integer"
		}
		return fmt.Sprintf("integer %d", v)
	case float64:
		if secret {
			return "a float"
		}
		return fmt.Sprintf("float %v", v)
	case bool:
		if secret {
			return "a boolean"
		}
		return fmt.Sprintf("boolean %v", v)
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case nil:
		return "nothing"
	}
	return "a date/time"
}
