package admin

import (
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

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

// set is SET key = value. pgtide's settings change through the
// configuration file and RELOAD, so that the file stays the truth; the
// console says so rather than applying a change a reload would undo.
func (ac *conn) set(key, value string) error {
	for _, r := range configRows(ac.c.b.Config(), ac.c.b.BootConfig()) {
		if r.key != key {
			continue
		}
		if !r.changeable {
			return &Error{codeCantChangeRuntimeParam, fmt.Sprintf("parameter %q cannot be changed without restarting pgtide", key)}
		}
		return &Error{codeFeatureNotSupported, fmt.Sprintf("SET is not supported: change %q in the configuration file and RELOAD", key)}
	}
	return &Error{codeUndefinedObject, fmt.Sprintf("unrecognized configuration parameter %q", key)}
}
