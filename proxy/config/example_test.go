package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// exampleKey matches "key = ..." and "# key = ..." lines of config.example.toml.
var exampleKey = regexp.MustCompile(`(?m)^#? ?([a-z_]+) = `)

// TestExampleKeysAreRead: every key config.example.toml shows is decoded
// (a field of Config, Database or User) and read by code outside the
// decoder and validator, so that no documented setting is silently ignored.
func TestExampleKeysAreRead(t *testing.T) {
	data, err := os.ReadFile("../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{} // toml key -> Go field name
	for _, typ := range []reflect.Type{reflect.TypeFor[Config](), reflect.TypeFor[Database](), reflect.TypeFor[User]()} {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			if key := strings.Split(f.Tag.Get("toml"), ",")[0]; key != "" {
				fields[key] = f.Name
			}
		}
	}
	src := readSources(t)
	for _, m := range exampleKey.FindAllSubmatch(data, -1) {
		key := string(m[1])
		name, ok := fields[key]
		if !ok {
			t.Errorf("config.example.toml shows %q, which pgtide does not decode", key)
			continue
		}
		if !regexp.MustCompile(`\.` + name + `\b`).MatchString(src) {
			t.Errorf("config.example.toml shows %q, but nothing outside proxy/config's decoding and validation reads %s", key, name)
		}
	}
}

// readSources returns the non-test Go sources of the module, less the
// files that only decode, default and validate the configuration.
func readSources(t *testing.T) string {
	var b strings.Builder
	skip := map[string]bool{"decode.go": true, "validate.go": true, "errors.go": true}
	err := filepath.WalkDir("../..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "integration") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		if filepath.Base(filepath.Dir(path)) == "config" && skip[d.Name()] {
			return nil
		}
		text, err := os.ReadFile(path)
		b.Write(text)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestUnixSocketMode(t *testing.T) {
	for in, want := range map[string]os.FileMode{"0770": 0o770, "700": 0o700, "0777": 0o777} {
		c, err := Parse("t.toml", []byte("unix_socket_mode = \""+in+"\"\n"))
		if err != nil || c.UnixSocketFileMode() != want {
			t.Errorf("%s: %v, %v", in, err, c)
		}
	}
	for _, in := range []string{"rwx", "0999", "01777", ""} {
		if _, err := Parse("t.toml", []byte("unix_socket_mode = \""+in+"\"\n")); err == nil || !strings.Contains(err.Error(), "unix_socket_mode") {
			t.Errorf("%q: %v, want an error naming unix_socket_mode", in, err)
		}
	}
}

func TestListenOverlap(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"127.0.0.1:6432", "127.0.0.1:6432", true},
		{"127.0.0.1:6432", "0.0.0.0:6432", true},
		{"0.0.0.0:6432", "127.0.0.1:6432", true},
		{":6432", "[::1]:6432", true},
		{"[::]:6432", "127.0.0.1:6432", true}, // dual-stack
		{"[::]:6432", "[::1]:6432", true},
		{"LocalHost:6432", "localhost:6432", true},
		{"127.0.0.1:6432", "127.0.0.1:6433", false},
		{"127.0.0.1:6432", "10.0.0.1:6432", false},
		{"0.0.0.0:6432", "[::1]:6432", false},
		{"127.0.0.1:0", "127.0.0.1:0", false},
	} {
		if got := listenOverlap(c.a, c.b); got != c.want {
			t.Errorf("listenOverlap(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
	_, err := Parse("t.toml", []byte(`listen = ["127.0.0.1:6432", "0.0.0.0:6432"]`))
	if err == nil || !strings.Contains(err.Error(), `listen[1]: "0.0.0.0:6432" overlaps listen[0] "127.0.0.1:6432"`) {
		t.Errorf("err = %v", err)
	}
	_, err = Parse("t.toml", []byte("listen = [\"127.0.0.1:6432\"]\nmetrics_listen = \"0.0.0.0:6432\"\n"))
	if err == nil || !strings.Contains(err.Error(), "metrics_listen") {
		t.Errorf("err = %v", err)
	}
}

func TestWarnings(t *testing.T) {
	c, err := Parse("t.toml", []byte(`admin_users = ["admin", "ops"]
stats_users = ["ops", "mon"]
[users.admin]
password = "x"
[users.nopw]
pool_size = 2
`))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(c.Warnings(), "\n")
	for _, want := range []string{"users.nopw: no password", `admin_users: "ops" has no [users.ops] password`, `stats_users: "mon"`} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings lack %q:\n%s", want, got)
		}
	}
	if strings.Count(got, `"ops"`) != 1 || strings.Contains(got, `"admin"`) {
		t.Errorf("warnings:\n%s", got)
	}
	c.AuthType = "trust"
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("trust: %q", w)
	}
}

func TestTCPValues(t *testing.T) {
	for _, c := range []struct{ toml, key string }{
		{`tcp_keepidle = "1500ms"`, "tcp_keepidle"},
		{`tcp_keepintvl = "-1s"`, "tcp_keepintvl"},
		{`tcp_keepcnt = -1`, "tcp_keepcnt"},
		{`tcp_user_timeout = "1500us"`, "tcp_user_timeout"},
		{`listen_backlog = -5`, "listen_backlog"},
		{`client_idle_timeout = "-1s"`, "client_idle_timeout"},
	} {
		if _, err := Parse("t.toml", []byte(c.toml)); err == nil || !strings.Contains(err.Error(), c.key) {
			t.Errorf("%s: %v, want an error naming %s", c.toml, err, c.key)
		}
	}
}
