package integration

// Session-state capture (proxy/sessionstate.go) in transaction mode when
// the client pipelines its next query behind it: the capture failing, and
// the client's cancel request arriving while it runs.

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// sendCancel sends a CancelRequest to addr and waits for pgtide to close
// the connection.
func sendCancel(t *testing.T, addr string, pid uint32, key []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, _ := (&pgproto3.CancelRequest{ProcessID: pid, SecretKey: key}).Encode(nil)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var one [1]byte
	_, _ = c.Read(one[:])
}

// readToZ reads messages up to a ReadyForQuery (or the deadline) and
// describes them: D(values), C(tag), E(severity code message), T, Z(status);
// ParameterStatus and NoticeResponse are left out.
func readToZ(c net.Conn, fe *pgproto3.Frontend, d time.Duration) ([]string, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	var out []string
	for {
		m, err := fe.Receive()
		if err != nil {
			return out, err
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			vals := make([]string, len(m.Values))
			for i, v := range m.Values {
				vals[i] = string(v)
			}
			out = append(out, "D("+strings.Join(vals, ",")+")")
		case *pgproto3.CommandComplete:
			out = append(out, "C("+string(m.CommandTag)+")")
		case *pgproto3.ErrorResponse:
			out = append(out, "E("+m.Severity+" "+m.Code+" "+m.Message+")")
		case *pgproto3.ReadyForQuery:
			out = append(out, "Z("+string(m.TxStatus)+")")
			return out, nil
		case *pgproto3.RowDescription:
			out = append(out, "T")
		case *pgproto3.ParameterStatus, *pgproto3.NoticeResponse:
		default:
			out = append(out, fmt.Sprintf("%T", m))
		}
	}
}

// captureEnv is a transaction-mode client whose next capture blocks
// while lockSettings holds pg_settings (which only pgtide's capture reads)
// locked, until release.
type captureEnv struct {
	*relEnv
	tc     *net.TCPConn
	fe     *pgproto3.Frontend
	pid    uint32 // the client's cancel key
	key    []byte
	lk     *pgx.Conn
	locked bool
}

func newCaptureEnv(t *testing.T) *captureEnv {
	r := newRelEnv(t, func(c *tideConf, db *dbConf) { db.PoolSize = 2 })
	ce := &captureEnv{relEnv: r}
	ce.tc, ce.fe, ce.pid, ce.key = rawLoginKey(t, r.URL())
	send(t, ce.tc, &pgproto3.Query{String: "SELECT 1"})
	if _, err := readUntil(t, ce.tc, ce.fe, 10*time.Second, 'Z'); err != nil {
		t.Fatal(err)
	}
	ce.lk = super(t, r.pg, r.DB)
	t.Cleanup(func() { ce.release(t) })
	return ce
}

func (ce *captureEnv) lockSettings(t *testing.T) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	if _, err := ce.lk.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	ce.locked = true
	if _, err := ce.lk.Exec(ctx, "LOCK TABLE pg_catalog.pg_settings IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
}

func (ce *captureEnv) release(t *testing.T) {
	if ce.locked {
		ce.locked = false
		if _, err := ce.lk.Exec(ctxT(t, 10*time.Second), "ROLLBACK"); err != nil {
			t.Errorf("releasing the lock: %v", err)
		}
	}
}

// startCapture locks pg_settings, sends q, which changes a setting and
// whose reply is slower than pgtide's inline pump waits (so a pump
// goroutine reads it and the client is read meanwhile), and waits until
// pgtide's capture after it is blocked on the lock. It returns the
// capture's backend pid.
func (ce *captureEnv) startCapture(t *testing.T, q string) int32 {
	t.Helper()
	ce.lockSettings(t)
	send(t, ce.tc, &pgproto3.Query{String: q})
	var pid int32
	pgtest.WaitUntil(t, 10*time.Second, "pgtide's capture waiting on the lock of pg_settings", func() bool {
		err := ce.mon.QueryRow(ctxT(t, 5*time.Second),
			"SELECT pid FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock' AND query LIKE '%pg_settings%'", ce.User).Scan(&pid)
		return err == nil
	})
	return pid
}

// expectReplies reads up to a ReadyForQuery and compares readToZ's
// description with want.
func (ce *captureEnv) expectReplies(t *testing.T, what, want string) {
	t.Helper()
	got, err := readToZ(ce.tc, ce.fe, 10*time.Second)
	if err != nil || strings.Join(got, " ") != want {
		t.Fatalf("%s: %v (err %v); want %s", what, got, err, want)
	}
}

// TestTxnCaptureFailsWithPipelinedQuery: a client changes a setting (so
// pgtide captures the session's state when that transaction ends) and
// pipelines its next query while the capture runs; the capture then fails
// (here pg_cancel_backend; equally statement_timeout, lock_timeout). The
// pipelined query is already on that server: it must be answered there, in
// order (not dropped with the server, which left the client waiting forever
// and had its next query's reply read as this one's), the client's setting
// must still follow it, and the server must go back once the client is idle.
func TestTxnCaptureFailsWithPipelinedQuery(t *testing.T) {
	ce := newCaptureEnv(t)
	capPID := ce.startCapture(t, "SELECT pg_sleep(0.1); SET application_name = 'capfail'")
	// Q2, pipelined: the client has not seen Q1's ReadyForQuery yet.
	send(t, ce.tc, &pgproto3.Query{String: "SELECT 42"})
	time.Sleep(300 * time.Millisecond) // Q2 is queued and written behind the capture
	var ok bool
	if err := ce.mon.QueryRow(ctxT(t, 5*time.Second), "SELECT pg_cancel_backend($1)", capPID).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_cancel_backend(%d) = %v, %v", capPID, ok, err)
	}
	ce.release(t)
	ce.expectReplies(t, "Q1", "T D() C(SELECT 1) C(SET) Z(I)")
	ce.expectReplies(t, "Q2 (SELECT 42, pipelined during pgtide's capture, which failed)", "T D(42) C(SELECT 1) Z(I)")
	send(t, ce.tc, &pgproto3.Query{String: "SELECT 43, current_setting('application_name')"})
	ce.expectReplies(t, "Q3 (its own answer, with the client's setting)", "T D(43,capfail) C(SELECT 1) Z(I)")
	pgtest.WaitUntil(t, 3*time.Second, "the idle client's server back in the pool", func() bool {
		_, active, _ := ce.poolServers(t)
		return active == 0
	})
}

// TestTxnCancelDuringCapture: a client cancels its pipelined query while
// pgtide's own capture runs ahead of it on the server. The cancel is held
// until the capture is done: it does not stop the capture (whose answer,
// the client's new setting, is kept), and it is then sent for the
// client's query (57014 at once instead of the query's 3 s). PostgreSQL
// ignores a cancel that reaches a backend between two commands, and the
// held one is sent just as the query starts: an attempt where it lost
// that race is tried again (3 at most).
func TestTxnCancelDuringCapture(t *testing.T) {
	ce := newCaptureEnv(t)
	for attempt := 1; ; attempt++ {
		app := fmt.Sprintf("capcancel%d", attempt)
		ce.startCapture(t, "SELECT pg_sleep(0.1); SET application_name = '"+app+"'")
		send(t, ce.tc, &pgproto3.Query{String: "SELECT pg_sleep(3), 42"})
		time.Sleep(300 * time.Millisecond)
		sendCancel(t, ce.tide.Addr, ce.pid, ce.key)
		time.Sleep(300 * time.Millisecond)
		var waiting int
		if err := ce.mon.QueryRow(ctxT(t, 5*time.Second),
			"SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock'", ce.User).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting != 1 {
			t.Fatalf("after the client's cancel, %d of its backends wait on the lock; want 1: the cancel must not stop pgtide's capture", waiting)
		}
		start := time.Now()
		ce.release(t)
		ce.expectReplies(t, "Q1", "T D() C(SELECT 1) C(SET) Z(I)")
		got2, err := readToZ(ce.tc, ce.fe, 10*time.Second)
		d := time.Since(start)
		s2 := strings.Join(got2, " ")
		cancelled := strings.Contains(s2, "E(ERROR 57014 ") && strings.HasSuffix(s2, " Z(I)") && d < 2*time.Second
		if err != nil || (!cancelled && s2 != "T D(,42) C(SELECT 1) Z(I)") {
			t.Fatalf("Q2 (pg_sleep(3), cancelled by the client): %v (err %v) after %v; want 57014 then Z(I)", got2, err, d.Round(time.Millisecond))
		}
		send(t, ce.tc, &pgproto3.Query{String: "SELECT current_setting('application_name')"})
		ce.expectReplies(t, "Q3 (the setting Q1 made, which the capture saw)", "T D("+app+") C(SELECT 1) Z(I)")
		pgtest.WaitUntil(t, 3*time.Second, "the idle client's server back in the pool", func() bool {
			_, active, _ := ce.poolServers(t)
			return active == 0
		})
		if cancelled {
			return
		}
		t.Logf("attempt %d: the held cancel reached the backend before it started the query (answered %v after %v)", attempt, got2, d.Round(time.Millisecond))
		if attempt == 3 {
			t.Fatalf("in 3 attempts the client's cancel never stopped its query once pgtide's capture was done")
		}
	}
}
