package proxy

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/integration/pgtest"
	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// parkedTestSession is a logged-in, idle transaction-mode session on a
// loopback socket of a Server with a parker, registered as a login
// registers it; cl is the client's end.
func parkedTestSession(t *testing.T) (*Server, *session, *suspendConn) {
	t.Helper()
	cfg := config.Default()
	s := New(cfg, zerolog.Nop())
	s.parker = newParker(s)
	if s.parker == nil {
		t.Fatal("no parker (epoll unavailable)")
	}
	t.Cleanup(func() { s.parker.close(); s.work.close() })
	c, _ := tcpPair(t, &s.susp)
	pe := &poolEntry{counters: &PoolCounters{}}
	pe.mode.Store(config.PoolTransaction)
	ss := newSession(s, c, wire.NewIdleReader(c), pe, cfg, map[string]string{"database": "d", "user": "u"})
	ss.loginOver()
	s.register(ss)
	s.admitted.Add(1)
	s.clients.Add(1)
	s.sessWG.Add(1)
	return s, ss, c
}

// A kill (KILL_CLIENT, shutdown, a timeout) that lands while the session
// goroutine is parking (after run found it parkable, before the parker
// took it) finds nothing parked to resume; the session must still end
// instead of waiting, parked with its FATAL sent, for a client that stays.
func TestKillWhileParking(t *testing.T) {
	s, ss, _ := parkedTestSession(t)
	ss.kill(codeAdminShutdown, "terminating connection due to administrator command")
	// The session goroutine's next step: run returned errParked.
	if s.park(ss) {
		// Parked: whatever resumes it must end it.
	} else {
		go s.runSession(ss) // it went on on its own goroutine
	}
	pgtest.WaitUntil(t, 5*time.Second, "the killed session to end", func() bool {
		return s.lookup(ss.keyPID) == nil
	})
}
