package proxy

import (
	"reflect"
	"testing"
)

// TestNoteQuery: which statement texts raise the state check, and which
// custom parameter names are remembered for the capture.
func TestNoteQuery(t *testing.T) {
	for _, c := range []struct {
		q       string
		flag    bool
		customs []string
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 1", false, nil},
		{"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1", false, nil},
		{"select pg_catalog.set_config('MyApp.Tenant', $1, false)", true, []string{"myapp.tenant"}},
		{"SELECT pg_advisory_lock(1)", true, nil},
		{"SELECT pg_try_advisory_xact_lock(1)", true, nil},
		{"CREATE TEMP TABLE t AS SELECT 1", true, nil},
		{"create temporary table t (a int)", true, nil},
		{"SELECT * INTO pg_temp.t FROM x", true, nil},
		{"SELECT temperature FROM weather", false, nil},
		{"SET myapp.user_id = 42", false, []string{"myapp.user_id"}},
		{"set session \"Ext\".knob TO 1", false, []string{"ext.knob"}},
		{"RESET app.x", false, []string{"app.x"}},
		{"SET search_path = a, b", false, nil},
		{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", true, nil},
		{"DECLARE c CURSOR FOR SELECT 1", false, nil},
	} {
		ss := &session{}
		if got := ss.noteQueryLocked([]byte(c.q)); got != c.flag {
			t.Errorf("%q: flag %v, want %v", c.q, got, c.flag)
		}
		var names []string
		for k := range ss.st.customs {
			names = append(names, k)
		}
		if !reflect.DeepEqual(names, c.customs) {
			t.Errorf("%q: customs %v, want %v", c.q, names, c.customs)
		}
	}
}

func TestNoteTag(t *testing.T) {
	for tag, want := range map[string]bool{
		"SET": true, "RESET": true, "DISCARD ALL": true, "DISCARD TEMP": true, "LISTEN": true,
		"UNLISTEN": true, "DO": true, "CALL": true, "DECLARE CURSOR": false, "CREATE TABLE": false,
		"SELECT 1": false, "UPDATE 1": false, "COMMIT": false, "BEGIN": false, "INSERT 0 1": false,
		"DROP TABLE": false, "CLOSE CURSOR": false, "SET CONSTRAINTS": false,
	} {
		ss := &session{}
		ss.noteTagLocked([]byte(tag + "\x00"))
		if ss.st.check != want {
			t.Errorf("tag %q: check %v, want %v", tag, ss.st.check, want)
		}
	}
	// Once pinned, DROP and CLOSE may release the pin.
	for _, tag := range []string{"DROP TABLE", "CLOSE CURSOR", "CLOSE CURSOR ALL"} {
		ss := &session{}
		ss.st.pins = pinTemp | pinCursor
		ss.noteTagLocked([]byte(tag + "\x00"))
		if !ss.st.check {
			t.Errorf("pinned, tag %q: no check", tag)
		}
		if got := ss.pinReason(); got != "temp_table,held_cursor" {
			t.Errorf("pinReason = %q", got)
		}
	}
}

func TestParseCapture(t *testing.T) {
	got := parseCapture([][]string{
		{"s", "TimeZone", "UTC"}, {"s", "role", "r"}, {"a", "session_authorization", "login"},
		{"p", "0", ""}, {"p", "2", ""}, {"p", "9", ""},
	}, "login")
	want := captured{settings: map[string]string{"timezone": "UTC", "role": "r"}, pins: pinTemp | pinListen}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	got = parseCapture([][]string{{"a", "session_authorization", "other"}, {"x", "", ""}}, "login")
	if got.settings["session_authorization"] != "other" || !got.prepared {
		t.Errorf("got %+v", got)
	}

	// captureGuardSQL lifted statement_timeout: the capture's own row is the
	// lifted value; the guard's is the client's, kept unless it is the
	// server's default (captureDefaultSQL).
	for _, c := range []struct{ client, def, want string }{{"5ms", "0", "5ms"}, {"0", "0", ""}, {"0", "1s", "0"}} {
		got = parseCapture([][]string{
			{"t", c.client, "0"}, {"d", "statement_timeout", c.def}, {"u", "", "0"},
			{"s", "statement_timeout", "0"}, {"s", "work_mem", "8MB"},
		}, "login")
		if got.settings["statement_timeout"] != c.want || got.settings["work_mem"] != "8MB" {
			t.Errorf("client %q, default %q: got %+v", c.client, c.def, got.settings)
		}
	}
}

// TestSyncQueries: values travel as parameters; resets and sets in the
// order that keeps privileges and encodings right.
func TestSyncQueries(t *testing.T) {
	want := map[string]string{"role": "r", "session_authorization": "s", "client_encoding": "GBK", "a": "1", "b": "x'\\"}
	qs := syncQueries([]string{"role", "b", "session_authorization", "a", "client_encoding"},
		[]string{"search_path", "role", "session_authorization"}, want)
	var sqls []string
	for _, q := range qs {
		sqls = append(sqls, q.SQL)
	}
	wantSQL := []string{
		`RESET "role"`, `RESET "session_authorization"`, `RESET "search_path"`,
		"SELECT pg_catalog.set_config($1, $2, false)",
		"SELECT pg_catalog.set_config($1, $2, false), pg_catalog.set_config($3, $4, false)",
		"SELECT pg_catalog.set_config($1, $2, false)",
		"SELECT pg_catalog.set_config($1, $2, false)",
	}
	if !reflect.DeepEqual(sqls, wantSQL) {
		t.Fatalf("got %q\nwant %q", sqls, wantSQL)
	}
	if !reflect.DeepEqual(qs[3].Args, []string{"client_encoding", "GBK"}) ||
		!reflect.DeepEqual(qs[4].Args, []string{"a", "1", "b", "x'\\"}) ||
		!reflect.DeepEqual(qs[5].Args, []string{"session_authorization", "s"}) ||
		!reflect.DeepEqual(qs[6].Args, []string{"role", "r"}) {
		t.Errorf("args %+v", qs)
	}
}

// BenchmarkNoteQuery is the per-Query cost every transaction-mode client
// pays for the text scan (pgbench -S's statement).
func BenchmarkNoteQuery(b *testing.B) {
	q := []byte("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;\x00")
	ss := &session{}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ss.noteQueryLocked(q)
	}
}
