package proxy

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/proxy/config"
)

type removedRecorder struct {
	Observer
	removed []poolKey
}

func (r *removedRecorder) PoolRemoved(db, user string) {
	r.removed = append(r.removed, poolKey{db, user})
}

// TestSweepAutodb: only pools of "*" databases are freed, once unused for
// autodb_idle_timeout; a login in progress or a borrow keeps them.
func TestSweepAutodb(t *testing.T) {
	cfg, err := config.Parse("t.toml", []byte("autodb_idle_timeout = \"1m\"\n[databases.app]\nport = 1\n[databases.\"*\"]\nport = 1\n[users.u]\npassword = \"pw\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg, zerolog.Nop())
	defer s.Close()
	rec := &removedRecorder{}
	s.SetObserver(rec)
	get := func(db string) *poolEntry {
		d, _ := cfg.ResolveDatabase(db)
		return s.poolFor(cfg, db, d, "u", cfg.Users["u"])
	}
	get("app")
	get("auto1")
	busy := get("auto2")
	_, done := s.loginPool(cfg, "auto2", config.Database{Host: "127.0.0.1", Port: 1, DBName: "auto2"}, "u", cfg.Users["u"])
	if busy.logins != 1 {
		t.Fatalf("logins = %d", busy.logins)
	}
	idle := map[*poolEntry]time.Time{}
	now := time.Now()
	s.sweepAutodb(idle, now)                     // first sight: idle from now
	s.sweepAutodb(idle, now.Add(30*time.Second)) // not yet
	if len(s.Pools()) != 3 {
		t.Fatalf("pools freed before autodb_idle_timeout: %v", s.Pools())
	}
	s.sweepAutodb(idle, now.Add(61*time.Second))
	pools := map[string]bool{}
	for _, p := range s.Pools() {
		pools[p.Database] = true
	}
	if !pools["app"] || pools["auto1"] || !pools["auto2"] || len(pools) != 2 {
		t.Fatalf("after the timeout: pools %v; want app (configured) and auto2 (login in progress)", pools)
	}
	if len(rec.removed) != 1 || rec.removed[0] != (poolKey{"auto1", "u"}) {
		t.Fatalf("PoolRemoved calls %v", rec.removed)
	}
	// The login fails: its pool goes at once.
	done(false)
	if len(s.Pools()) != 1 || len(rec.removed) != 2 {
		t.Fatalf("after a failed login: pools %v, removed %v", s.Pools(), rec.removed)
	}
	// A failed login of a configured database and user keeps its pool.
	_, done = s.loginPool(cfg, "app", cfg.Databases["app"], "u", cfg.Users["u"])
	done(false)
	if len(s.Pools()) != 1 {
		t.Fatalf("a failed login removed a configured pool")
	}
}
