package proxy

import (
	"reflect"
	"testing"

	"github.com/pgtide/pgtide/proxy/config"
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

// TestSetsDefault: which statement texts may return a parameter to its
// default for the session (session mode restores after them).
func TestSetsDefault(t *testing.T) {
	for q, want := range map[string]bool{
		"SET TimeZone TO DEFAULT":                             true,
		"set timezone to default":                             true,
		"SET search_path = DEFAULT":                           true,
		"SET search_path=DEFAULT;":                            true,
		"SET SESSION jit TO DEFAULT":                          true,
		"SET myapp.tenant = DEFAULT":                          true,
		"SET \"MyApp\".\"tenant\" TO DEFAULT":                 true,
		"SET /* c */ TimeZone -- c\n TO DEFAULT":              true,
		"SET TIME ZONE DEFAULT":                               true,
		"SET TIME ZONE LOCAL":                                 true,
		"SET SESSION TIME ZONE DEFAULT":                       true,
		"SET NAMES DEFAULT":                                   true,
		"SELECT 1; SET jit = on; SET jit TO DEFAULT\x00":      true,
		"UPDATE t SET a = DEFAULT":                            true, // a false match: harmless
		"SET TimeZone = 'UTC'":                                false,
		"SET TimeZone TO 'default'":                           false,
		"SET TimeZone TO \"default\"":                         false,
		"SET LOCAL TimeZone TO DEFAULT":                       false,
		"SET TIME ZONE 'UTC'":                                 false,
		"SET SESSION AUTHORIZATION DEFAULT":                   false,
		"ALTER TABLE t ALTER COLUMN c SET DEFAULT 1":          false,
		"INSERT INTO t DEFAULT VALUES":                        false,
		"RESET ALL":                                           false,
		"SELECT abalance FROM pgbench_accounts WHERE aid = 1": false,
		"SET":      false,
		"SET x TO": false,
		"SET \"x":  false,
	} {
		if got := setsDefault([]byte(q)); got != want {
			t.Errorf("setsDefault(%q) = %v, want %v", q, got, want)
		}
	}
}

// TestNoteSessionMsg: a session-mode statement that may SET ... TO DEFAULT
// counts when it is bound again without its text, until it is closed or
// parsed again with another text; a simple query drops the unnamed one.
func TestNoteSessionMsg(t *testing.T) {
	ss := &session{}
	parse := func(name, q string) bool {
		return ss.noteSessionMsg('P', []byte(name+"\x00"+q+"\x00\x00\x00"), true)
	}
	bind := func(name string) bool {
		return ss.noteSessionMsg('B', []byte("\x00"+name+"\x00\x00\x00\x00\x00\x00\x00"), true)
	}
	parse("s1", "SET TimeZone TO DEFAULT")
	parse("s2", "SET TimeZone = 'UTC'")
	parse("", "SET jit = DEFAULT")
	if !bind("s1") || bind("s2") || !bind("") {
		t.Fatalf("binds: s1 %v s2 %v unnamed %v", bind("s1"), bind("s2"), bind(""))
	}
	ss.noteSessionMsg('C', []byte("Ss1\x00"), true)
	if bind("s1") {
		t.Error("s1 counts after its Close")
	}
	parse("", "SELECT 1")
	if bind("") {
		t.Error("the unnamed statement counts after another Parse")
	}
	parse("", "SET jit = DEFAULT")
	if ss.noteSessionMsg('Q', []byte("SELECT 1\x00"), true) || bind("") {
		t.Error("the unnamed statement counts after a simple query")
	}
	if !ss.noteSessionMsg('Q', []byte("SET jit TO DEFAULT\x00"), true) {
		t.Error("a simple query that sets a default does not count")
	}
	// A streamed message: only its start was read.
	if !ss.noteSessionMsg('Q', []byte("SELECT"), false) {
		t.Error("a streamed Query does not count")
	}
	ss.noteSessionMsg('P', []byte("s3\x00SELECT"), false)
	if !bind("s3") || bind("s2") {
		t.Error("a streamed Parse: s3 should count, s2 not")
	}
	ss.noteSessionMsg('P', []byte("s4"), false) // not even its name
	if !bind("s2") {
		t.Error("after a Parse whose name was not read, every Bind should count")
	}
}

// BenchmarkSetsDefault is the per-Query cost every session-mode client
// pays for the text scan (pgbench -S's statement).
func BenchmarkSetsDefault(b *testing.B) {
	q := []byte("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;\x00")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		setsDefault(q)
	}
}

// TestNoteTagMayReset: in session mode a SET tag raises mayReset only
// after a text that may SET ... TO DEFAULT, and no tag lowers it (before,
// an ordinary SET after a RESET in the same transaction block lowered it,
// and the startup settings were not restored at its COMMIT).
func TestNoteTagMayReset(t *testing.T) {
	ss := &session{mode: config.PoolSession}
	ss.noteTagLocked([]byte("SET\x00"))
	if ss.st.mayReset {
		t.Error("an ordinary SET raised mayReset")
	}
	ss.st.setDefault = true
	ss.noteTagLocked([]byte("SET\x00"))
	if !ss.st.mayReset {
		t.Error("a SET ... TO DEFAULT did not raise mayReset")
	}
	ss = &session{mode: config.PoolSession}
	for _, tag := range []string{"RESET", "SET", "DO", "CALL", "SELECT 1"} {
		ss.noteTagLocked([]byte(tag + "\x00"))
		if !ss.st.mayReset {
			t.Errorf("mayReset lowered by %q after a RESET", tag)
		}
	}
}
