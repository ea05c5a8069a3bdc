package proxy

import "github.com/pgtide/pgtide/proxy/config"

// server_fast_close (PgBouncer's): in session mode a client keeps its
// server until it disconnects, so a server that RECONNECT, or a reload that
// replaced its pool (the database repointed, the server login changed),
// retired would stay open for as long as the client does. With
// server_fast_close on, such a client is closed at its next transaction
// boundary (at once when it is between transactions) with 57P01, and its
// server closed with it, as PgBouncer closes both. A transaction is never
// cut short. Transaction and statement mode give servers back at every
// boundary already: the setting does not concern them.

// fastCloseMsg tells the client why its session ended.
const fastCloseMsg = "database configuration changed: server connection closed (server_fast_close)"

// fastClose marks the session-mode sessions whose server is retired to be
// closed at their next transaction boundary, when server_fast_close is on.
// It runs after RECONNECT and after a reload.
func (s *Server) fastClose(cfg *config.Config) {
	if !cfg.ServerFastClose {
		return
	}
	s.mu.Lock()
	var doomed []*session
	for _, ss := range s.sessions {
		if ss.mode == config.PoolSession {
			doomed = append(doomed, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range doomed {
		ss.mu.Lock()
		sc := ss.sc
		ss.mu.Unlock()
		if sc == nil || !sc.Pool().Retired(sc) {
			continue
		}
		ss.logger().Info().Uint32("server_pid", sc.PID).Msg("server_fast_close: closing the client and its retired server at its next transaction boundary")
		ss.closeAtBoundary(fastCloseMsg)
	}
}
