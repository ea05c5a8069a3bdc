package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// rvRun sends each round and renders every reply up to that round's
// number of ReadyForQuery messages.
func rvRun(t *testing.T, url string, rounds [][]pgproto3.FrontendMessage, rfqs []int) []string {
	t.Helper()
	c, fe := rawLogin(t, url)
	defer c.Close()
	var out []string
	for i, rd := range rounds {
		send(t, c, rd...)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for n := 0; n < rfqs[i]; {
			m, err := fe.Receive()
			if err != nil {
				out = append(out, "ERR "+err.Error())
				return out
			}
			s := xrender(m)
			if strings.HasPrefix(s, "ParameterStatus") || strings.HasPrefix(s, "Notice") {
				continue
			}
			out = append(out, s)
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				n++
			}
		}
	}
	return out
}

func rvCompare(t *testing.T, direct, tide []string) {
	t.Helper()
	if strings.Join(direct, "\n") != strings.Join(tide, "\n") {
		t.Errorf("differs:\nPostgreSQL:\n  %s\npgtide:\n  %s", strings.Join(direct, "\n  "), strings.Join(tide, "\n  "))
	}
}

// TestTxnNamedRollbackParseInFailedTxn: PostgreSQL accepts a Parse of a
// transaction exit statement (ROLLBACK, COMMIT) in a failed transaction
// block; pgtide's check of a failed transaction (parseNamedLocked) first
// refused every named Parse with 25P02, so the client could not leave the
// block that way. Now those statements, and empty ones, go through.
func TestTxnNamedRollbackParseInFailedTxn(t *testing.T) {
	r := newRelEnv(t, nil)
	rounds := [][]pgproto3.FrontendMessage{
		{xq("BEGIN"), xq("SELECT 1/0")},
		{xparse("rb", "ROLLBACK"), xbind("", "rb"), xexec("", 0), &pgproto3.Sync{}},
		{xq("SELECT 1")},
	}
	rfqs := []int{2, 1, 1}
	d := rvRun(t, r.DirectURL(), rounds, rfqs)
	p := rvRun(t, r.URL(), rounds, rfqs)
	rvCompare(t, d, p)
}

// TestTxnDupParseInFailedTxn: in a failed transaction block PostgreSQL
// answers a Parse of a name already in use with 25P02 (the aborted check
// comes first); pgtide checked the duplicate first and answered 42P05.
func TestTxnDupParseInFailedTxn(t *testing.T) {
	r := newRelEnv(t, nil)
	rounds := [][]pgproto3.FrontendMessage{
		{xparse("s1", "SELECT 1"), &pgproto3.Sync{}},
		{xq("BEGIN"), xq("SELECT 1/0")},
		{xparse("s1", "SELECT 2"), &pgproto3.Sync{}},
		{xq("ROLLBACK")},
	}
	rfqs := []int{1, 2, 1, 1}
	d := rvRun(t, r.DirectURL(), rounds, rfqs)
	p := rvRun(t, r.URL(), rounds, rfqs)
	rvCompare(t, d, p)
}
