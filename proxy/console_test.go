package proxy

import (
	"testing"

	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/proxy/config"
)

func TestIsConsole(t *testing.T) {
	cfg := config.Default()
	cfg.Databases = map[string]config.Database{"*": {}, "app": {}}
	for name, want := range map[string]bool{"pgtide": true, "pgbouncer": true, "app": false, "other": false, "PGBOUNCER": false} {
		if got := isConsole(cfg, name); got != want {
			t.Errorf("isConsole(%q) = %v; want %v", name, got, want)
		}
	}
	// A [databases.pgbouncer] table wins over the console's second name.
	cfg.Databases["pgbouncer"] = config.Database{}
	if isConsole(cfg, "pgbouncer") || !isConsole(cfg, "pgtide") {
		t.Errorf("with a pgbouncer table: pgbouncer %v, pgtide %v; want false, true",
			isConsole(cfg, "pgbouncer"), isConsole(cfg, "pgtide"))
	}
}

// Consoles close on an event, not a poll: during a drain, when the last
// connection that is not a console goes; at Close at once.
func TestConsolesStopWhenOnlyConsolesLeft(t *testing.T) {
	stopped := func(s *Server) bool {
		select {
		case <-s.Stopping():
			return true
		default:
			return false
		}
	}
	s := New(config.Default(), zerolog.Nop())
	s.clients.Add(3) // two clients and a console
	s.consoles.Add(1)
	s.connGone() // running: nothing to do
	if stopped(s) {
		t.Fatal("consoles told to close while running")
	}
	s.state.Store(stateWaitStop)
	s.beginStop()
	if stopped(s) {
		t.Fatal("consoles told to close while a client is still connected")
	}
	s.connGone()
	if !stopped(s) {
		t.Fatal("consoles not told to close once only they were left")
	}
	select {
	case <-s.stopBegun:
	default:
		t.Fatal("stopBegun not closed when the drain began")
	}

	s2 := New(config.Default(), zerolog.Nop())
	s2.clients.Add(2)
	s2.consoles.Add(1)
	s2.state.Store(stateClosed)
	s2.beginStop()
	if !stopped(s2) {
		t.Fatal("consoles not told to close at Close")
	}
}
