package proxy

import (
	"time"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/config"
)

// Pools that come and go (issue 13.5). A [databases."*"] section lets a
// client name any database, and auth_query lets any role log in, so the
// (database, user) pools they create are not bounded by the configuration:
//
//   - a login that fails leaves no pool behind when the pool is one of
//     those (auto-created database or auth_query user) and nobody else
//     uses it;
//   - a pool of an auto-created database that has had no client, no lent
//     server and no borrow for autodb_idle_timeout is freed, as PgBouncer
//     does, with its idle servers, its metrics series and its statistics.

// PoolRemover is implemented by an Observer that keeps state per pool (the
// metrics' histograms): PoolRemoved says that the pool of (db, user) is
// gone for good, so its series can go too.
type PoolRemover interface {
	PoolRemoved(db, user string)
}

// loginPool returns the pool a login borrows from, counted as in use until
// done is called; done(false) (the login failed) frees the pool if the
// login created it for nothing.
func (s *Server) loginPool(cfg *config.Config, dbName string, db config.Database, userName string, u config.User) (*poolEntry, func(ok bool)) {
	s.mu.Lock()
	e := s.poolForLocked(cfg, dbName, db, userName, u)
	e.logins++
	s.mu.Unlock()
	return e, func(ok bool) {
		k := poolKey{dbName, userName}
		s.mu.Lock()
		e.logins--
		var gone *pool.Pool
		// (Sessions are counted last: it is a scan of them all.)
		if !ok && s.pools[k] == e && s.dynamicPool(s.Config(), k) && s.unusedLocked(k, e, 0) && s.sessionCountLocked(k) == 0 {
			gone = s.freePoolLocked(k, e)
		}
		s.mu.Unlock()
		s.closeFreed(k, gone)
	}
}

// dynamicPool reports whether the pool of k exists only because a client
// named it: its database resolves through "*", or its user through
// auth_query.
func (s *Server) dynamicPool(cfg *config.Config, k poolKey) bool {
	if _, ok := cfg.Databases[k.db]; !ok {
		return true
	}
	_, ok := cfg.Users[k.user]
	return !ok
}

// sessionCountLocked counts the logged-in clients of k.
func (s *Server) sessionCountLocked(k poolKey) int {
	n := 0
	for _, ss := range s.sessions {
		if ss.dbName == k.db && ss.userName == k.user {
			n++
		}
	}
	return n
}

// unusedLocked reports whether nobody uses e: no logged-in client, no login
// in progress, no lent server, no borrow waiting.
func (s *Server) unusedLocked(k poolKey, e *poolEntry, sessions int) bool {
	if sessions > 0 || e.logins > 0 {
		return false
	}
	st := e.pool.Stats()
	return st.Lent == 0 && st.Waiting == 0
}

// freePoolLocked forgets the pool of k and what was kept for it alone (the
// passthrough login, and for a database no other pool uses, its
// max_db_connections limiter and admin state unless PAUSE/DISABLE holds
// it). It returns the pool, for closeFreed once s.mu is released.
func (s *Server) freePoolLocked(k poolKey, e *poolEntry) *pool.Pool {
	delete(s.pools, k)
	s.authq.mu.Lock()
	delete(s.authq.logins, k)
	s.authq.mu.Unlock()
	for o := range s.pools {
		if o.db == k.db {
			return e.pool
		}
	}
	if _, explicit := s.Config().Databases[k.db]; !explicit {
		delete(s.dbLimit, k.db)
		delete(s.dbHosts, k.db)
	}
	if c := s.gate.peek(k.db); c != nil && !c.paused.Load() && !c.disabled.Load() && c.inflight.Load() == 0 {
		s.gate.dbs.CompareAndDelete(k.db, c)
	}
	return e.pool
}

// closeFreed closes a pool freePoolLocked returned and drops its series.
func (s *Server) closeFreed(k poolKey, p *pool.Pool) {
	if p == nil {
		return
	}
	p.Close()
	if r, ok := s.obs().(PoolRemover); ok {
		r.PoolRemoved(k.db, k.user)
	}
	s.logger().Debug().Str("database", k.db).Str("user", k.user).Msg("pool freed")
}

// autodbLoop frees the pools of auto-created databases ("*") unused for
// autodb_idle_timeout. It looks every quarter of the timeout, at least
// every second (so a reloaded setting applies within a second) and at most
// every 250 ms.
func (s *Server) autodbLoop() {
	idleSince := map[*poolEntry]time.Time{}
	s.tickLoop(func() time.Duration { return quarterTick(s.Config().AutodbIdleTimeout.Duration, 250*time.Millisecond) },
		func(now time.Time) { s.sweepAutodb(idleSince, now) })
}

// quarterTick is a looping check's period for a setting d: a quarter of d,
// at least floor, at most a second (so a reloaded d applies within one); a
// second when d is off.
func quarterTick(d, floor time.Duration) time.Duration {
	if d <= 0 {
		return time.Second
	}
	return min(max(d/4, floor), time.Second)
}

// tickLoop runs run every period() until the server is shut down.
func (s *Server) tickLoop(period func() time.Duration, run func(now time.Time)) {
	for {
		t := time.NewTimer(period())
		select {
		case <-s.done:
			t.Stop()
			return
		case <-t.C:
		}
		run(time.Now())
	}
}

// sweepAutodb frees the auto-created database pools idle for longer than
// autodb_idle_timeout: unused (unusedLocked) since idleSince and not
// borrowed from since then either. idleSince is the loop's memory.
func (s *Server) sweepAutodb(idleSince map[*poolEntry]time.Time, now time.Time) {
	cfg := s.Config()
	timeout := cfg.AutodbIdleTimeout.Duration
	type freed struct {
		k poolKey
		p *pool.Pool
	}
	if _, wildcard := cfg.Databases["*"]; timeout <= 0 || !wildcard {
		clear(idleSince) // (a reload that removes "*" removes its pools)
		return
	}
	var gone []freed
	s.mu.Lock()
	sessions := make(map[poolKey]int, len(s.pools))
	for _, ss := range s.sessions {
		sessions[poolKey{ss.dbName, ss.userName}]++
	}
	seen := make(map[*poolEntry]bool, len(s.pools))
	for k, e := range s.pools {
		if _, explicit := cfg.Databases[k.db]; explicit || !s.unusedLocked(k, e, sessions[k]) {
			continue
		}
		seen[e] = true
		since, ok := idleSince[e]
		if !ok {
			idleSince[e] = now
			continue
		}
		if last := e.pool.LastUsed(); last.After(since) {
			since = last
		}
		if now.Sub(since) >= timeout {
			gone = append(gone, freed{k, s.freePoolLocked(k, e)})
		}
	}
	s.mu.Unlock()
	for e := range idleSince {
		if !seen[e] {
			delete(idleSince, e) // in use again, or gone
		}
	}
	for _, f := range gone {
		s.closeFreed(f.k, f.p)
	}
}
