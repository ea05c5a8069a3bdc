package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseINI(t *testing.T) {
	in := "\ufeff; comment\n# another\n\n[Databases]\napp = host=h port=1\n\"quoted db\" = host=x\n[pgbouncer]\n  Listen_Port = 6543  \nempty =\n%include /etc/more.ini\n"
	got, err := parseINI([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []iniEntry{
		{Section: "databases", Key: "app", Value: "host=h port=1", Line: 5},
		{Section: "databases", Key: "quoted db", Value: "host=x", Line: 6},
		{Section: "pgbouncer", Key: "Listen_Port", Value: "6543", Line: 8},
		{Section: "pgbouncer", Key: "empty", Value: "", Line: 9},
		{Section: "pgbouncer", Key: "%include", Value: "/etc/more.ini", Line: 10},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseINIErrors(t *testing.T) {
	for in, want := range map[string]string{
		"[pgbouncer\nx=1\n":    "line 1: section header without ']'",
		"[pgbouncer]\nnoeq\n":  "line 2: expected \"key = value\"",
		"[pgbouncer]\n = 1\n":  "line 2: empty key",
		"listen_port = 6432\n": `line 1: "listen_port" is outside any [section]`,
	} {
		_, err := parseINI([]byte(in))
		if err == nil || err.Error() != want {
			t.Errorf("parseINI(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestParseConnString(t *testing.T) {
	got, err := parseConnString(`host=10.0.0.1  port = 5433 DBName=app password='it''s a \'secret\'' user=u application_name=''`)
	if err != nil {
		t.Fatal(err)
	}
	want := []connParam{
		{"host", "10.0.0.1"}, {"port", "5433"}, {"dbname", "app"},
		{"password", "it's a 'secret'"}, {"user", "u"}, {"application_name", ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"host", "host=x port", "password='open", "=x"} {
		if _, err := parseConnString(bad); err == nil {
			t.Errorf("parseConnString(%q) succeeded", bad)
		} else if strings.Contains(err.Error(), "open") {
			t.Errorf("error for %q reveals the value: %v", bad, err)
		}
	}
}

func TestParseAuthFile(t *testing.T) {
	in := `"alice" "plain pw"
"bob"   "md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" extra ignored
; comment
not a quoted line
"a ""quoted"" name" "pw""with""quotes"
`
	got, err := parseAuthFile([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []authEntry{
		{"alice", "plain pw", 1},
		{"bob", "md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 2},
		{`a "quoted" name`, `pw"with"quotes`, 5},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{`"alice`, `"alice" secretword`, `"alice" "secretword`} {
		_, err := parseAuthFile([]byte(bad))
		if err == nil {
			t.Errorf("parseAuthFile(%q) succeeded", bad)
		} else if strings.Contains(err.Error(), "secretword") {
			t.Errorf("error reveals the secret: %v", err)
		}
	}
}

func TestPgbDuration(t *testing.T) {
	for in, want := range map[string]string{
		"0": "0", "15": "15s", "600": "600s", "0.5": "500ms", "2.5": "2.5s", "30s": "30s", "5min": "5m0s", "0s": "0",
	} {
		got, err := pgbDuration(in)
		if err != nil || got != want {
			t.Errorf("pgbDuration(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"-1", "abc", "", "NaN"} {
		if got, err := pgbDuration(bad); err == nil {
			t.Errorf("pgbDuration(%q) = %q, want an error", bad, got)
		}
	}
}
