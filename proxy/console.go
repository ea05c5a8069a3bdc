package proxy

// The Backend of the admin console (proxy/admin): what the console reads
// and drives, implemented by *Server. The console package imports neither
// proxy nor pool; it sees sessions and servers only as the rows built here.

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/admin"
	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

var _ admin.Backend = (*Server)(nil)

// pgbouncerDatabase is PgBouncer's name for its console, accepted as well,
// so that tools written for PgBouncer (pgbouncer_exporter, psql -d
// pgbouncer scripts) work unchanged.
const pgbouncerDatabase = "pgbouncer"

// isConsole reports whether a client asking for database name gets the
// admin console: "pgtide", or "pgbouncer" unless [databases] has a section
// of that name.
func isConsole(cfg *config.Config, name string) bool {
	if name == config.AdminDatabaseName {
		return true
	}
	if name == pgbouncerDatabase {
		_, ok := cfg.Databases[name]
		return !ok
	}
	return false
}

// serveAdmin runs the admin console on an authenticated connection.
func (s *Server) serveAdmin(nc net.Conn, rd *wire.Reader, log zerolog.Logger, db, user string, params map[string]string) error {
	s.consoles.Add(1)
	s.checkConsolesStop() // a console that logged in during a drain with only consoles left
	err := s.console.Serve(nc, rd, log, db, user, params)
	s.consoles.Add(-1)
	var ae *admin.Error
	if errors.As(err, &ae) {
		return &clientError{ae.Code, ae.Msg}
	}
	return err
}

// connGone counts a client connection out; during a drain, the last one
// that is not a console lets the consoles go.
func (s *Server) connGone() {
	s.clients.Add(-1)
	s.checkConsolesStop()
}

// checkConsolesStop closes consolesStop once consoles must close: at
// Close, or during a drain once only consoles are left.
func (s *Server) checkConsolesStop() {
	st := s.state.Load()
	if st == stateRunning {
		return
	}
	if st == stateClosed || s.clients.Load() <= s.consoles.Load() {
		s.consolesStopOnce.Do(func() { close(s.consolesStop) })
	}
}

// beginStop closes stopBegun: waits on a pause or a console command end.
func (s *Server) beginStop() {
	s.stopOnce.Do(func() { close(s.stopBegun) })
	// A drain needs the traffic: suspended transactions go on to their end.
	if s.susp.resume() {
		s.gate.broadcast()
	}
	s.checkConsolesStop()
}

// BootConfig is the configuration the process started with.
func (s *Server) BootConfig() *config.Config { return s.bootCfg }

// BuildVersion is what SHOW VERSION reports after "pgtide ".
func (s *Server) BuildVersion() string { return s.Version }

// NextID numbers sessions and consoles.
func (s *Server) NextID() uint64 { return s.nextSessionID.Add(1) }

// State is SHOW STATE's.
func (s *Server) State() admin.State {
	return admin.State{Running: s.state.Load() == stateRunning, PausedAll: s.gate.pausedAll.Load(), Suspended: s.susp.on.Load()}
}

// Stopping is closed when the admin consoles must close.
func (s *Server) Stopping() <-chan struct{} { return s.consolesStop }

// sessionSnapshot is what outsiders (the console, KILL) may know of a
// session: session.snapshot is the only reader of its fields for them.
type sessionSnapshot struct {
	admin.Client
	ss     *session   // to act on it (kill)
	server *pool.Conn // the attached server, nil = none
}

// snapshot copies the session's state under its lock.
func (ss *session) snapshot() sessionSnapshot {
	snap := sessionSnapshot{ss: ss, Client: admin.Client{
		ID: ss.id, Database: ss.dbName, User: ss.userName, Connected: time.Unix(0, ss.connected),
		Addr: ss.conn.RemoteAddr(), Local: ss.conn.LocalAddr(),
	}}
	if w := ss.gate.waitStart.Load(); w != 0 {
		snap.WaitStart = time.Unix(0, w)
	}
	snap.TLS = admin.TLSInfo(ss.conn)
	ss.mu.Lock()
	if ss.sc != nil {
		snap.server = ss.sc
		snap.Server = ss.sc.ID
	}
	snap.Request = ss.queryStart
	snap.App = ss.want["application_name"]
	snap.Prepared = len(ss.stmts)
	snap.Pin = pinString(ss.st.pins) // sessionstate.go
	ss.mu.Unlock()
	return snap
}

// snapshots returns a snapshot of every logged-in session and of every
// login waiting for its server (setLoginWait).
func (s *Server) snapshots() []sessionSnapshot {
	s.mu.Lock()
	list := make([]*session, 0, len(s.sessions)+len(s.loginWaits))
	for _, ss := range s.sessions {
		list = append(list, ss)
	}
	for ss := range s.loginWaits { // waiting in their login, as PgBouncer lists them
		list = append(list, ss)
	}
	s.mu.Unlock()
	out := make([]sessionSnapshot, len(list))
	for i, ss := range list {
		out[i] = ss.snapshot()
	}
	return out
}

// ClientRows lists the logged-in client sessions.
func (s *Server) ClientRows() []admin.Client {
	snaps := s.snapshots()
	out := make([]admin.Client, len(snaps))
	for i, sn := range snaps {
		out[i] = sn.Client
	}
	return out
}

// ServerRows lists the server connections: lent ones through the sessions
// they are attached to, then the idle ones.
func (s *Server) ServerRows() []admin.Server {
	var out []admin.Server
	row := func(db, user, state string, ci pool.ConnInfo) admin.Server {
		return admin.Server{ID: ci.ID, PID: ci.PID, Database: db, User: user, State: state, Addr: ci.Addr,
			Local: ci.Local, Connected: ci.Created, Request: ci.LastUsed, CloseNeeded: ci.CloseNeeded}
	}
	for _, sn := range s.snapshots() {
		if sn.server == nil {
			continue
		}
		r := row(sn.Database, sn.User, "active", sn.server.Info())
		r.Request = sn.Request
		if r.Request.IsZero() {
			r.Request = sn.Connected
		}
		r.Link, r.App = sn.ID, sn.App
		out = append(out, r)
	}
	now := time.Now()
	for _, p := range s.poolList("") {
		for _, ci := range p.e.pool.IdleConns() {
			state := "idle"
			if s.needsCheck(ci, now) {
				state = "used"
			}
			out = append(out, row(p.k.db, p.k.user, state, ci))
		}
	}
	return out
}

// usedServers counts the idle servers of a pool that needsCheck.
func (s *Server) usedServers(e *poolEntry, st pool.Stats) int {
	if st.Idle == 0 || s.Config().ServerCheckQuery == "" {
		return 0
	}
	n, now := 0, time.Now()
	for _, ci := range e.pool.IdleConns() {
		if s.needsCheck(ci, now) {
			n++
		}
	}
	return n
}

// needsCheck reports whether an idle server must pass server_check_query
// before it is lent (pool.Pool.check's rule): PgBouncer's "used" servers.
func (s *Server) needsCheck(ci pool.ConnInfo, now time.Time) bool {
	cfg := s.Config()
	return cfg.ServerCheckQuery != "" && now.Sub(ci.LastUsed) >= cfg.ServerCheckDelay.Duration
}

// PoolRows lists the pools.
func (s *Server) PoolRows() []admin.Pool {
	items := s.poolList("")
	out := make([]admin.Pool, len(items))
	for i, p := range items {
		st := p.e.pool.Stats()
		c := p.e.counters
		out[i] = admin.Pool{Database: p.k.db, User: p.k.user, Mode: string(p.e.poolMode()),
			Open: st.Open, Idle: st.Idle, Used: s.usedServers(p.e, st), Lent: st.Lent,
			Totals: admin.Totals{Assign: c.Waits.Load(), Xact: c.Xacts.Load(), Query: c.Queries.Load(),
				Recv: c.BytesIn.Load(), Sent: c.BytesOut.Load(),
				XactNs: c.XactNanos.Load(), QueryNs: c.QueryNanos.Load(), WaitNs: c.WaitNanos.Load()}}
	}
	return out
}

// DBState reports PAUSE and DISABLE of db.
func (s *Server) DBState(db string) (paused, disabled bool) {
	if c := s.gate.peek(db); c != nil {
		return c.paused.Load(), c.disabled.Load()
	}
	return false, false
}

// HasDatabase accepts a [databases] section or a database that has a pool
// (one reached through "*").
func (s *Server) HasDatabase(name string) bool {
	if _, ok := s.Config().Databases[name]; ok && name != "*" {
		return true
	}
	return len(s.poolList(name)) > 0
}

// Pause stops lending servers of db ("" = all).
func (s *Server) Pause(db string) { s.gate.setPaused(db, true) }

// Resume lifts PAUSE (and KILL's pause) of db, or of everything, and
// SUSPEND with it when db is "".
func (s *Server) Resume(db string) {
	if db == "" && s.susp.resume() {
		s.logger().Info().Msg("RESUME: client sockets are read again")
	}
	s.gate.setPaused(db, false)
}

// SetDisabled sets DISABLE of db.
func (s *Server) SetDisabled(db string, disabled bool) { s.gate.db(db).disabled.Store(disabled) }

// WaitPaused waits until no server of db ("" = all) is lent and no borrow
// is past the gate: PAUSE returns when in-flight transactions have
// finished. It wakes on the events that can end the wait: a server coming
// back to its pool, a borrow leaving the gate, RESUME, shutdown.
func (s *Server) WaitPaused(ctx context.Context, db string) error {
	for {
		gch := s.gate.wait()
		var pch <-chan struct{}
		for _, p := range s.poolList(db) {
			ch := p.e.pool.Changed()
			if p.e.pool.Stats().Lent > 0 {
				pch = ch
				break
			}
		}
		busy := pch != nil
		if !busy {
			s.gate.dbs.Range(func(k, v any) bool {
				if (db == "" || k.(string) == db) && v.(*dbControl).inflight.Load() > 0 {
					busy = true
				}
				return !busy
			})
		}
		if !busy {
			return nil
		}
		if s.state.Load() != stateRunning {
			return admin.ErrStopping
		}
		if db == "" && !s.gate.pausedAll.Load() || db != "" && !s.gate.paused(s.gate.db(db)) {
			return admin.ErrResumed
		}
		select {
		case <-pch:
		case <-gch:
		case <-s.stopBegun:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Kill closes every client and server of db ("" = every database) at once
// and pauses it, as PgBouncer's KILL.
func (s *Server) Kill(db string) {
	s.gate.setPaused(db, true)
	for _, p := range s.poolList(db) {
		p.e.pool.Reconnect() // idle servers now, lent ones when released
	}
	for _, sn := range s.snapshots() {
		if db != "" && sn.Database != db {
			continue
		}
		sn.ss.kill(codeAdminShutdown, "terminating connection due to administrator command")
		if sn.server != nil {
			// The pump sees the closed socket and discards the server.
			_ = sn.server.Net.Close()
		}
	}
}

// KillClient closes the client session with that id.
func (s *Server) KillClient(id uint64) bool {
	for _, sn := range s.snapshots() {
		if sn.ID == id {
			sn.ss.kill(codeAdminShutdown, "terminating connection due to administrator command")
			return true
		}
	}
	return false
}

// Reconnect marks every server of db open now to be closed when next
// released; idle ones close at once.
func (s *Server) Reconnect(db string) {
	for _, p := range s.poolList(db) {
		p.e.pool.Reconnect()
	}
	s.fastClose(s.Config()) // fastclose.go
}

// WaitClosed waits until no server of db ("" = all) that RECONNECT marked
// is still open, waking each time a server of a pool that has one closes.
func (s *Server) WaitClosed(ctx context.Context, db string) error {
	for {
		var pch <-chan struct{}
		for _, p := range s.poolList(db) {
			ch := p.e.pool.Changed()
			if p.e.pool.MarkedOpen() > 0 {
				pch = ch
				break
			}
		}
		if pch == nil {
			return nil
		}
		select {
		case <-pch:
		case <-s.stopBegun:
			return admin.ErrStopping
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ReloadConfig is the console's RELOAD.
func (s *Server) ReloadConfig() error {
	if s.OnReload == nil {
		return admin.ErrNoReload
	}
	return s.OnReload()
}

// ApplyConfig is the console's SET: cfg is the running configuration with
// one setting changed.
func (s *Server) ApplyConfig(cfg *config.Config) error {
	if s.OnApply == nil {
		return admin.ErrNoReload
	}
	return s.OnApply(cfg)
}

// Shutdown is the console's SHUTDOWN.
func (s *Server) Shutdown(mode string) {
	switch mode {
	case "WAIT_FOR_SERVERS":
		s.SafeShutdown()
	case "WAIT_FOR_CLIENTS":
		s.WaitShutdown(s.Config().ShutdownTimeout.Duration)
	default:
		go s.Close() // Close waits for sessions, the console that asked among them
	}
}

type poolItem struct {
	k poolKey
	e *poolEntry
}

// poolList returns the pools of db ("" = all).
func (s *Server) poolList(db string) []poolItem {
	s.mu.Lock()
	out := make([]poolItem, 0, len(s.pools))
	for k, e := range s.pools {
		if db == "" || k.db == db {
			out = append(out, poolItem{k, e})
		}
	}
	s.mu.Unlock()
	return out
}
