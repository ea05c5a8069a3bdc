package proxy

import (
	"reflect"
	"testing"
)

func TestAdminParseCommand(t *testing.T) {
	ok := []struct {
		in   string
		want adminCmd
	}{
		{"SHOW POOLS", adminCmd{"SHOW", "POOLS"}},
		{"show pools;", adminCmd{"SHOW", "POOLS"}},
		{"  Show   stats_totals ; ", adminCmd{"SHOW", "STATS_TOTALS"}},
		{"pause", adminCmd{"PAUSE", ""}},
		{"PAUSE appdb", adminCmd{"PAUSE", "appdb"}},
		{"pause AppDB", adminCmd{"PAUSE", "AppDB"}}, // names keep their case
		{`resume "my ""db"""`, adminCmd{"RESUME", `my "db"`}},
		{"disable appdb", adminCmd{"DISABLE", "appdb"}},
		{"ENABLE appdb", adminCmd{"ENABLE", "appdb"}},
		{"kill", adminCmd{"KILL", ""}},
		{"KILL appdb", adminCmd{"KILL", "appdb"}},
		{"kill_client 42", adminCmd{"KILL_CLIENT", "42"}},
		{"reconnect", adminCmd{"RECONNECT", ""}},
		{"wait_close appdb", adminCmd{"WAIT_CLOSE", "appdb"}},
		{"RELOAD;", adminCmd{"RELOAD", ""}},
		{"shutdown", adminCmd{"SHUTDOWN", ""}},
		{"shutdown wait_for_clients", adminCmd{"SHUTDOWN", "WAIT_FOR_CLIENTS"}},
		{"SHUTDOWN WAIT_FOR_SERVERS", adminCmd{"SHUTDOWN", "WAIT_FOR_SERVERS"}},
	}
	for _, c := range ok {
		got, err := parseAdminCommand(c.in)
		if err != nil || got != c.want {
			t.Errorf("parseAdminCommand(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	bad := []string{
		"", ";", "SELECT 1", "SHOW", "SHOW TABLES", "SHOW POOLS extra", "DISABLE", "ENABLE",
		"KILL_CLIENT", "KILL_CLIENT abc", "KILL_CLIENT -1", "RELOAD now", "SHUTDOWN NOW",
		"PAUSE a b", `PAUSE "unterminated`, `PAUSE ""`,
	}
	for _, in := range bad {
		got, err := parseAdminCommand(in)
		if err == nil {
			t.Errorf("parseAdminCommand(%q) = %+v; want an error", in, got)
			continue
		}
		if ce, ok := err.(*clientError); !ok || ce.Code != codeSyntaxError {
			t.Errorf("parseAdminCommand(%q) error %v; want SQLSTATE %s", in, err, codeSyntaxError)
		}
	}
}

func TestAdminSplitStatements(t *testing.T) {
	cases := map[string][]string{
		"":                           nil,
		" ; ;":                       nil,
		"SHOW POOLS":                 {"SHOW POOLS"},
		"SHOW POOLS; show stats;":    {"SHOW POOLS", "show stats"},
		`PAUSE "a;b"; RESUME "a;b"`:  {`PAUSE "a;b"`, `RESUME "a;b"`},
		"SHOW VERSION;;SHOW STATE\n": {"SHOW VERSION", "SHOW STATE"},
	}
	for in, want := range cases {
		if got := splitStatements(in); !reflect.DeepEqual(got, want) {
			t.Errorf("splitStatements(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestAdminStatsOnlyShow(t *testing.T) {
	for verb, spec := range adminVerbs {
		if spec.readOnly != (verb == "SHOW") {
			t.Errorf("%s: readOnly = %v; only SHOW is open to stats_users", verb, spec.readOnly)
		}
	}
}

func TestAdminAverages(t *testing.T) {
	then := statTotals{assign: 10, xact: 10, query: 20, recv: 1000, sent: 2000, xactNs: 1e6, queryNs: 2e6, waitNs: 0}
	now := statTotals{assign: 30, xact: 30, query: 60, recv: 3000, sent: 6000, xactNs: 3e6, queryNs: 6e6, waitNs: 2e6}
	got := averages(now, then, 10)
	want := [8]int64{2, 2, 4, 200, 400, 100, 100, 100}
	if got != want {
		t.Fatalf("averages = %v; want %v", got, want)
	}
	// A pool replaced by a reload restarts its counters: no negative rates.
	if got := averages(then, now, 10); got != [8]int64{} {
		t.Fatalf("averages after a counter reset = %v; want zeros", got)
	}
}
