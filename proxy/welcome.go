package proxy

import (
	"sort"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/pool"
)

// Logins without a server. A pool remembers, per set of startup settings a
// client asked for, the parameters a server reported to such a client (its
// "welcome", as PgBouncer caches it). A later login with the same startup
// settings is answered from it without borrowing a server: the client
// waits for a server at its first query (counted in cl_waiting), not in
// its login, and a login per transaction (pgbench -C) costs no borrow.
// Only a set that a server accepted is cached, so a startup setting the
// server would refuse is still refused at login. When the first server the
// client gets reports other values (the server was reconfigured or
// upgraded since), the client is sent ParameterStatus for each, as
// PostgreSQL does when a reported parameter changes, and the cache is
// refreshed.

// welcomeMax bounds the startup-setting sets remembered per pool.
const welcomeMax = 64

// welcome is what a login was told and what it asked for. Never modified
// once made (sessions share it): a refresh makes a new one.
type welcome struct {
	// told: the parameters a server reported to such a login, as the
	// client was told them.
	told map[string]string
	// asked: the client's startup settings (startup packet, options, the
	// database's client_encoding/datestyle/timezone), by lower-case name:
	// what RESET and DISCARD ALL return its session to (captureRestore).
	asked map[string]string
}

// welcomeCache is safe for concurrent use.
type welcomeCache struct {
	mu sync.Mutex
	m  map[string]*welcome
}

func (w *welcomeCache) get(key string) *welcome {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.m[key]
}

func (w *welcomeCache) put(key string, view *welcome) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]*welcome{}
	}
	if _, ok := w.m[key]; !ok && len(w.m) >= welcomeMax {
		for k := range w.m { // full: forget one at random
			delete(w.m, k)
			break
		}
	}
	w.m[key] = view
}

// welcomeKey is the client's startup settings in a canonical form.
func welcomeKey(want map[string]string) string {
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(want[k])
		b.WriteByte(0)
	}
	return b.String()
}

// welcomeFromCache returns the parameters to report to a client logging in
// without a server, or nil when it must borrow one: nothing cached for its
// startup settings, or the database is paused (a login waits for RESUME).
func (s *Server) welcomeFromCache(ss *session) map[string]string {
	c := s.gate.db(ss.dbName)
	if s.gate.paused(c) {
		return nil
	}
	key := welcomeKey(ss.want)
	v := ss.pe.welcome.get(key)
	if v == nil {
		return nil
	}
	// Marked by a leading byte: a client with no startup settings has
	// the empty key, and is still to be checked.
	ss.welcomeKey, ss.login = "\x00"+key, v
	return v.told
}

// checkWelcome runs on the first server a client that logged in from the
// cache gets, after its startup settings were applied: parameters the
// server reports differently reach the client as ParameterStatus, and the
// cache learns them. Called by the client goroutine before anything of the
// client's is forwarded, so the messages come before any reply.
func (ss *session) checkWelcome(sc *pool.Conn) {
	login := ss.login
	key := ss.welcomeKey[1:] // welcomeFromCache's mark
	ss.welcomeKey = ""
	if login == nil {
		return
	}
	told := login.told
	var out []byte
	for k, v := range sc.Params {
		if told[k] != v {
			out, _ = (&pgproto3.ParameterStatus{Name: k, Value: v}).Encode(out)
		}
	}
	if len(out) == 0 {
		return
	}
	fresh := make(map[string]string, len(sc.Params))
	for k, v := range sc.Params {
		fresh[k] = v
	}
	w := &welcome{told: fresh, asked: login.asked}
	ss.pe.welcome.put(key, w)
	ss.mu.Lock()
	ss.login = w // what it is told now
	ss.mu.Unlock()
	ss.logger().Info().Msg("server parameters changed since they were cached; the client is told the new values")
	ss.wmu.Lock()
	_, _ = ss.conn.Write(out)
	ss.wmu.Unlock()
}
