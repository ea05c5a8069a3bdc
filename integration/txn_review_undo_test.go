package integration

import "testing"

// TestTxnUndoCloseThenParseSameName: after an error, PostgreSQL skips a
// Close of s1 and a Parse of s1 with other text: s1 stays the first
// statement. undoSkippedLocked undid the dropped entries in queue order,
// so the Close's undo found the name taken (by the Parse) and the Parse's
// undo then deleted it: pgtide forgot s1. Now it undoes newest first.
func TestTxnUndoCloseThenParseSameName(t *testing.T) {
	e := prepEnv(t, 1, "")
	prepRun(t, e,
		prepClient{
			r(1, xparse("s1", "SELECT 1 AS v"), xsync),
			r(1, xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0),
				xcloseS("s1"), xparse("s1", "SELECT 2 AS v"), xsync),
			r(1, xbind("", "s1"), xexec("", 0), xsync),
		},
	)
}

// TestTxnUndoParseThenCloseSameName: the reverse order. PostgreSQL
// skips the Parse of s1 and its Close, so s1 never exists; pgtide's undo
// of the Close gave the client back the name s1 for the statement that
// was never prepared (undone in queue order, before the fix).
func TestTxnUndoParseThenCloseSameName(t *testing.T) {
	e := prepEnv(t, 1, "")
	prepRun(t, e,
		prepClient{
			r(1, xparse("", "SELECT 1/0"), xbind("", ""), xexec("", 0),
				xparse("s1", "SELECT 3 AS v"), xcloseS("s1"), xsync),
			r(1, xbind("", "s1"), xexec("", 0), xsync),
		},
	)
}

// TestTxnUndoSkippedUnnamedClose: a Close of the client's unnamed
// statement that PostgreSQL skips (an earlier message failed) leaves the
// statement in place; pgtide forgot it when it booked the Close
// (closeLocked: unnamedParse = nil, srv.unnamed = nil) and
// undoSkippedLocked did not take that back; the Close entry now carries
// the statement's Parse for it.
func TestTxnUndoSkippedUnnamedClose(t *testing.T) {
	e := prepEnv(t, 1, "")
	prepRun(t, e,
		prepClient{
			r(1, xparse("", "SELECT 5 AS v"), xsync),
			r(1, xbind("", "", "extra"), xcloseS(""), xsync),
			r(1, xbind("", ""), xexec("", 0), xsync),
		},
	)
}
