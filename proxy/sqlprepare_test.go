package proxy

import (
	"fmt"
	"strings"
	"testing"
)

// render shows refs as kind:name@text-of-span, for compact expectations.
func renderRefs(q string, refs []sqlRef) string {
	var parts []string
	kinds := map[int]string{sqlPrepare: "P", sqlExecute: "X", sqlDeallocate: "D", sqlDeallocateAll: "DA"}
	for _, r := range refs {
		s := fmt.Sprintf("%s:%s@%s", kinds[r.kind], r.name, q[r.start:r.end])
		if r.bad {
			s += "!"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func TestScanSQL(t *testing.T) {
	cases := []struct {
		q     string
		want  string
		stmts int
	}{
		{"SELECT 1", "", 1},
		{"prepare foo as select 1", "P:foo@foo", 1},
		{"PREPARE Foo (int, text) AS SELECT $1, $2", "P:foo@Foo", 1},
		{`PREPARE "Foo""x" AS SELECT 1`, `P:Foo"x@"Foo""x"`, 1},
		{"  /* c /* nested */ */ -- line\n EXECUTE\tfoo(1, 'a;b')", "X:foo@foo", 1},
		{"EXECUTE foo; EXECUTE bar(2); SELECT 'execute baz'", "X:foo@foo X:bar@bar", 3},
		{"deallocate ps", "D:ps@ps", 1},
		{"DEALLOCATE PREPARE ps", "D:ps@ps", 1},
		{"DEALLOCATE prepare", "D:prepare@prepare", 1},
		{"DEALLOCATE ALL", "DA:@ALL", 1},
		{"DEALLOCATE PREPARE ALL", "DA:@ALL", 1},
		{"PREPARE TRANSACTION 'gid1'", "", 1},
		{"PREPARE transaction AS SELECT 1", "P:transaction@transaction", 1},
		{"COMMIT PREPARED 'x'; ROLLBACK PREPARED 'y'", "", 2},
		{"EXPLAIN ANALYZE EXECUTE foo(1)", "X:foo@foo", 1},
		{"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE foo", "X:foo@foo", 1},
		{"CREATE TABLE t AS EXECUTE foo(3)", "X:foo@foo", 1},
		{"GRANT EXECUTE ON FUNCTION f() TO bob", "", 1},
		{"CREATE TRIGGER t AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION f()", "", 1},
		{"SELECT execute FROM t", "", 1},
		{"DO $$BEGIN EXECUTE 'PREPARE x AS SELECT 1'; END$$; EXECUTE y", "X:y@y", 2},
		{"DO $f$ EXECUTE foo $f$; PREPARE p AS SELECT $1", "P:p@p", 2},
		{`SELECT E'\'; EXECUTE foo'; EXECUTE bar`, "X:bar@bar", 2},
		{`SELECT 'a'';EXECUTE foo'; EXECUTE bar`, "X:bar@bar", 2},
		{`SELECT U&"d\0061t"; PREPARE U&"p" AS SELECT 1`, `P:@U&"p"!`, 2},
		{"select 1;;  ; execute x", "X:x@x", 2},
		{"PREPARE a AS SELECT 1; EXECUTE a; DEALLOCATE a", "P:a@a X:a@a D:a@a", 3},
		{"EXECUTE " + strings.Repeat("n", 70), "X:" + strings.Repeat("n", 63) + "@" + strings.Repeat("n", 70), 1},
		{"SELECT foo$bar$ FROM t; EXECUTE x", "X:x@x", 2},
	}
	for _, c := range cases {
		refs, n := scanSQL([]byte(c.q), true, nil)
		if got := renderRefs(c.q, refs); got != c.want || n != c.stmts {
			t.Errorf("scanSQL(%q) = %q, %d statements; want %q, %d", c.q, got, n, c.want, c.stmts)
		}
	}
	// standard_conforming_strings off: backslash escapes in plain strings.
	q := `SELECT '\'; EXECUTE foo'; EXECUTE bar`
	refs, _ := scanSQL([]byte(q), false, nil)
	if got := renderRefs(q, refs); got != "X:bar@bar" {
		t.Errorf("scanSQL(%q, scs off) = %q", q, got)
	}
	// A client encoding whose trail bytes can be ASCII: SJIS 0x83 0x5C
	// ("ソ") ends in a byte that is no backslash, in E'' strings and, with
	// standard_conforming_strings off, in plain ones too.
	for _, tc := range []struct {
		q   string
		std bool
		enc string
	}{
		{"SELECT E'\x83\x5c'; PREPARE q AS SELECT 1", true, "SJIS"},
		{"SELECT '\x83\x5c'; PREPARE q AS SELECT 1", false, "sjis"},
		{"SELECT E'\xa4\x5c'; PREPARE q AS SELECT 1", true, "BIG5"},
		{"SELECT E'\x81\x5c'; PREPARE q AS SELECT 1", true, "WIN936"},
		{"SELECT E'\x81\x30\x81\x5c'; PREPARE q AS SELECT 1", true, "GB18030"}, // 4 bytes, not 2 + a backslash
	} {
		refs, _ := scanSQL([]byte(tc.q), tc.std, clientMBLen(tc.enc))
		if got := renderRefs(tc.q, refs); got != "P:q@q" {
			t.Errorf("scanSQL(%q) in %s = %q, want P:q@q", tc.q, tc.enc, got)
		}
	}
	// JOHAB: a trail byte 0x3B is no semicolon, so the PREPARE's text runs
	// to the end.
	q = "PREPARE q AS SELECT \x84\x3b1"
	if refs, _ := scanSQL([]byte(q), true, clientMBLen("JOHAB")); len(refs) != 1 || refs[0].stmtEnd != len(q) {
		t.Errorf("scanSQL(%q) in JOHAB: %+v, want one PREPARE to the end", q, refs)
	}
	for _, enc := range []string{"UTF8", "LATIN1", "EUC_JP", "SQL_ASCII", ""} {
		if clientMBLen(enc) != nil {
			t.Errorf("clientMBLen(%q) is not nil", enc)
		}
	}
	// The statement end of a PREPARE is its text's end or its semicolon.
	q = "PREPARE a (int) AS SELECT $1 ; SELECT 2"
	refs, _ = scanSQL([]byte(q), true, nil)
	if len(refs) != 1 || q[refs[0].end:refs[0].stmtEnd] != " (int) AS SELECT $1 " {
		t.Errorf("stmtEnd wrong: %+v", refs)
	}
}

func TestMayNameStmts(t *testing.T) {
	for q, want := range map[string]bool{
		"SELECT 1": false, "select abalance from pgbench_accounts where aid = $1": false,
		"EXECUTE x": true, "x; prepare": true, "DeAlLoCaTe all": true, "exec": false,
	} {
		if got := mayNameStmts([]byte(q)); got != want {
			t.Errorf("mayNameStmts(%q) = %v", q, got)
		}
	}
}

func TestTruncateIdent(t *testing.T) {
	s := strings.Repeat("a", 62) + "é" // é is 2 bytes: 64 in all
	if got := truncateIdent(s); got != strings.Repeat("a", 62) {
		t.Errorf("truncateIdent cut a character: %q", got)
	}
}

// FuzzScanSQL: any text scans without panicking, to references whose spans
// lie in order inside their statements.
func FuzzScanSQL(f *testing.F) {
	for _, s := range []string{"PREPARE a AS SELECT 1; EXECUTE a", `EXECUTE "x""`, "DEALLOCATE PREPARE", "$a$ EXECUTE x",
		"/* /* */ EXECUTE y", "E'\\", `U&"`, "EXPLAIN (a EXECUTE b", "CREATE TABLE t AS EXECUTE"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, q string, std bool) {
		mb := mbLen(nil)
		if std && len(q)%2 == 1 { // some texts read as SJIS, some as GB18030
			mb = clientMBLen("SJIS")
		} else if len(q)%3 == 1 {
			mb = clientMBLen("GB18030")
		}
		refs, _ := scanSQL([]byte(q), std, mb)
		last := 0
		for _, r := range refs {
			if r.start < last || r.end <= r.start || r.stmtEnd < r.end || r.stmtEnd > len(q) {
				t.Fatalf("bad ref %+v in %q", r, q)
			}
			last = r.end
		}
		_ = mayNameStmts([]byte(q))
	})
}

// BenchmarkMayNameStmts is the cost every simple query and unnamed Parse
// pays for SQL-level prepared statements.
func BenchmarkMayNameStmts(b *testing.B) {
	q := []byte("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;")
	for i := 0; i < b.N; i++ {
		if mayNameStmts(q) {
			b.Fatal("matched")
		}
	}
}

// TestTxnExitStmt: the statements PostgreSQL lets through in a failed
// transaction block, and some it does not.
func TestTxnExitStmt(t *testing.T) {
	for q, want := range map[string]bool{
		"":                          true,
		" ; ":                       true,
		"ROLLBACK":                  true,
		"  /* c */ rollback to sp1": true,
		"-- c\ncommit":              true,
		"END":                       true,
		"abort":                     true,
		"PREPARE TRANSACTION 'x'":   true,
		"PREPARE p AS SELECT 1":     false,
		"SELECT 1":                  false,
		"rollbacks":                 false,
		"BEGIN":                     false,
	} {
		if got := txnExitStmt([]byte(q)); got != want {
			t.Errorf("txnExitStmt(%q) = %v, want %v", q, got, want)
		}
	}
}
