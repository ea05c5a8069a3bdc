package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// waitNoticeSession is a logged-in session whose client is the returned end
// of a pipe.
func waitNoticeSession(t *testing.T, cfg *config.Config) (*Server, *session, net.Conn) {
	t.Helper()
	s := New(cfg, zerolog.Nop())
	srvSide, client := net.Pipe()
	t.Cleanup(func() { srvSide.Close(); client.Close() })
	ss := &session{srv: s, conn: srvSide, rd: wire.NewReader(srvSide, 8192), counters: &PoolCounters{}, dbName: "db", want: map[string]string{}}
	s.register(ss)
	return s, ss, client
}

// readFrame reads one message from the client end.
func readFrame(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatal(err)
	}
	_, n := wire.Header(hdr)
	body := make([]byte, n-5)
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

// sentinel is what the test writes after a notice could have been: the
// next thing the client reads must be it, not a notice.
var sentinel = wire.AppendFrame(nil, 'Z', []byte{'I'})

func expectSentinel(t *testing.T, ss *session, c net.Conn) {
	t.Helper()
	go ss.toClient(sentinel)
	if f := readFrame(t, c); !bytes.Equal(f, sentinel) {
		t.Fatalf("client read %q, want only the sentinel (no notice)", f)
	}
}

// TestWaitNotice: a session waiting for a server past query_wait_notify is
// sent one NOTICE 00000 (a second look at the same wait sends none); a wait
// that ended, or one that is not due yet, gets none; nor does a session
// still logging in.
func TestWaitNotice(t *testing.T) {
	cfg := config.Default()
	cfg.QueryWaitNotify = config.Duration{Duration: time.Second}
	s, ss, c := waitNoticeSession(t, cfg)
	now := time.Now()

	// Not due yet.
	ss.gate.waitStart.Store(now.Add(-500*time.Millisecond).UnixNano() &^ waitNotified)
	s.notifyWaiting(now)
	expectSentinel(t, ss, c)

	// Due: one notice.
	ss.gate.waitStart.Store(now.Add(-2*time.Second).UnixNano() &^ waitNotified)
	s.notifyWaiting(now)
	f := readFrame(t, c)
	var n pgproto3.NoticeResponse
	if f[0] != 'N' || n.Decode(f[5:]) != nil || n.Severity != "NOTICE" || n.Code != "00000" || n.Message != waitNoticeText {
		t.Fatalf("notice frame %q (%+v)", f, n)
	}
	// The same wait, looked at again: nothing more.
	s.notifyWaiting(now.Add(time.Second))
	expectSentinel(t, ss, c)

	// A wait marked due, that ended before the notice went out: none.
	w := now.Add(-2*time.Second).UnixNano() &^ waitNotified
	ss.gate.waitStart.Store(0)
	ss.waitNotice(w | waitNotified)
	expectSentinel(t, ss, c)
	// ... nor when another wait began meanwhile.
	ss.gate.waitStart.Store(now.UnixNano() &^ waitNotified)
	ss.waitNotice(w | waitNotified)
	expectSentinel(t, ss, c)

	// Off: none.
	cfg2 := *cfg
	cfg2.QueryWaitNotify = config.Duration{}
	s.cfg.Store(&cfg2)
	ss.gate.waitStart.Store(now.Add(-time.Hour).UnixNano() &^ waitNotified)
	s.notifyWaiting(now)
	expectSentinel(t, ss, c)
	s.cfg.Store(cfg)

	// Still logging in: none.
	ss.mu.Lock()
	ss.loggingIn = true
	ss.mu.Unlock()
	ss.gate.waitStart.Store(now.Add(-time.Hour).UnixNano() &^ waitNotified)
	s.notifyWaiting(now)
	expectSentinel(t, ss, c)
}
