package admin

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/proxy/config"
)

// restartKeys are the settings a reload does not apply (docs/reload.md):
// the running process keeps the values it started with.
var restartKeys = []string{"listen", "unix_socket_dir", "so_reuseport", "metrics_listen", "log_format"}

// configRow is one SHOW CONFIG row.
type configRow struct {
	key, value, def string
	changeable      bool
}

// configRows lists the top-level settings in force: the last reload's,
// and the start's for the keys a reload does not apply. [users] and
// [databases] are not shown, nor any password.
func configRows(cfg, boot *config.Config) []configRow {
	def := config.Default()
	v, bv, dv := reflect.ValueOf(cfg).Elem(), reflect.ValueOf(boot).Elem(), reflect.ValueOf(def).Elem()
	typ := v.Type()
	var rows []configRow
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		key := strings.Split(f.Tag.Get("toml"), ",")[0]
		if key == "" || key == "-" || f.Type.Kind() == reflect.Map || strings.Contains(key, "password") {
			continue
		}
		r := configRow{key: key, value: configValue(v.Field(i)), def: configValue(dv.Field(i)), changeable: true}
		if slices.Contains(restartKeys, key) {
			r.value, r.changeable = configValue(bv.Field(i)), false
		}
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b configRow) int { return strings.Compare(a.key, b.key) })
	return rows
}

func showConfig(cfg, boot *config.Config) table {
	t := table{cols: cols("key", "value", "default", "changeable")}
	for _, r := range configRows(cfg, boot) {
		ch := "no"
		if r.changeable {
			ch = "yes"
		}
		t.add(r.key, r.value, r.def, ch)
	}
	return t
}

// configValue formats a setting as PgBouncer does: durations in seconds,
// booleans as 0 and 1, lists joined with commas.
func configValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case config.Duration:
		return seconds(x.Duration)
	case bool:
		if x {
			return "1"
		}
		return "0"
	}
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		if b, err := m.MarshalText(); err == nil {
			return string(b)
		}
	}
	switch v.Kind() {
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = configValue(v.Index(i))
		}
		return strings.Join(parts, ",")
	case reflect.String:
		return v.String()
	}
	return fmt.Sprint(v.Interface())
}

// seconds formats d in seconds: "30", or "0.5" below a whole second.
func seconds(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10)
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

// fakeParams are settings some drivers SET or SHOW on any connection;
// PgBouncer's console fakes them (src/admin.c), and so does pgtide's.
var fakeParams = []struct{ name, value string }{
	{"client_encoding", "UTF-8"},
	{"default_transaction_isolation", "read committed"},
	{"standard_conforming_strings", "on"},
	{"datestyle", "ISO"},
	{"timezone", "GMT"},
	{"extra_float_digits", "2"},
}

func fakeParam(name string) (string, bool) {
	for _, p := range fakeParams {
		if strings.EqualFold(p.name, name) {
			return p.value, true
		}
	}
	return "", false
}

// set is SET key = value: the running configuration with one setting
// changed, checked as a configuration file is, and put in force as a
// reload does. It lasts until the next reload or restart, which read the
// file again. Values are written as SHOW CONFIG shows them (durations in
// seconds, booleans 0/1, lists comma-separated) or as in the file ("30s").
func (ac *conn) set(key, value string) error {
	if _, ok := fakeParam(key); ok {
		ac.out, _ = (&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000",
			Message: "SET ignored"}).Encode(ac.out)
		ac.out, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SET")}).Encode(ac.out)
		return nil
	}
	if !ac.super {
		return &Error{codeInsufficientPrivilege, "admin access needed"}
	}
	b := ac.c.b
	cfg := b.Config()
	var row *configRow
	for _, r := range configRows(cfg, b.BootConfig()) {
		if r.key == key {
			row = &r
			break
		}
	}
	switch {
	case row == nil:
		return &Error{codeUndefinedObject, fmt.Sprintf("unrecognized configuration parameter %q", key)}
	case !row.changeable:
		return &Error{codeCantChangeRuntimeParam, fmt.Sprintf("parameter %q cannot be changed without restarting pgtide", key)}
	case strings.HasSuffix(key, "_file"):
		// A path from the console would make pgtide read any file its OS
		// user can, and its parse errors quote what they found (a line of
		// a password file, of a private key): paths change in the file.
		return &Error{codeCantChangeRuntimeParam, fmt.Sprintf("parameter %q names a file: change it in the configuration file and RELOAD", key)}
	}
	next, err := withSetting(cfg, key, value)
	if err != nil {
		return &Error{codeInvalidParameterValue, fmt.Sprintf("invalid value for parameter %q: %v", key, err)}
	}
	ac.log.Info().Str("command", "SET").Str("key", key).Str("value", value).Msg("admin command")
	if err := b.ApplyConfig(next); err != nil {
		if errors.Is(err, ErrNoReload) {
			return &Error{codeFeatureNotSupported, "SET is not available in this process"}
		}
		return &Error{codeConfigFileError, "configuration not changed (the running one stays): " + err.Error()}
	}
	ac.out, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SET")}).Encode(ac.out)
	return nil
}

// withSetting returns cfg with the setting key set to value, checked as a
// configuration file is: rendered as TOML and parsed again.
func withSetting(cfg *config.Config, key, value string) (*config.Config, error) {
	next := *cfg // maps and slices are shared, never written: one field is replaced
	v := reflect.ValueOf(&next).Elem()
	typ := v.Type()
	for i := 0; i < typ.NumField(); i++ {
		if strings.Split(typ.Field(i).Tag.Get("toml"), ",")[0] != key {
			continue
		}
		if err := setValue(v.Field(i), value); err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(&next); err != nil {
			return nil, err
		}
		checked, err := config.Parse("SET "+key, buf.Bytes())
		if err != nil {
			var ce *config.Errors
			if errors.As(err, &ce) && len(ce.List) > 0 {
				return nil, ce.List[0]
			}
			return nil, err
		}
		return checked, nil
	}
	return nil, fmt.Errorf("no such setting")
}

// setValue parses value into the setting f.
func setValue(f reflect.Value, value string) error {
	switch f.Interface().(type) {
	case config.Duration:
		if secs, err := strconv.ParseFloat(value, 64); err == nil {
			if secs < 0 {
				return fmt.Errorf("%q is negative", value)
			}
			f.Set(reflect.ValueOf(config.Duration{Duration: time.Duration(secs * float64(time.Second))}))
			return nil
		}
		d, err := time.ParseDuration(value)
		if err != nil {
			return fmt.Errorf("%q is neither seconds nor a duration like \"30s\"", value)
		}
		f.Set(reflect.ValueOf(config.Duration{Duration: d}))
		return nil
	}
	switch f.Kind() {
	case reflect.Bool:
		switch strings.ToLower(value) {
		case "1", "on", "true", "yes":
			f.SetBool(true)
		case "0", "off", "false", "no":
			f.SetBool(false)
		default:
			return fmt.Errorf("%q is not a boolean (0 or 1)", value)
		}
	case reflect.Int:
		n, err := strconv.Atoi(value)
		if err != nil {
			return fmt.Errorf("%q is not an integer", value)
		}
		f.SetInt(int64(n))
	case reflect.String:
		f.SetString(value)
	case reflect.Slice:
		var list []string
		for _, s := range strings.Split(value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
		f.Set(reflect.ValueOf(list))
	default:
		return fmt.Errorf("cannot be set from the console")
	}
	return nil
}
