package proxy

import (
	"fmt"

	"github.com/pgtide/pgtide/proxy/config"
)

// What a reload does to clients already connected (docs/reload.md):
//
//   - A client whose database or user is no longer in the configuration is
//     closed at its next transaction boundary (at once when it is between
//     transactions) with FATAL 57P01 naming the reason; an open transaction
//     is never cut short. A client waiting for a server gets the same error.
//   - A client whose pool was replaced (the database was repointed, or the
//     server login changed) moves to the new pool at its next server
//     borrow, keeping its prepared statements (re-registered there).
//   - Everyone else is untouched; sizes and limits apply to the next borrow.

// closeRemoved marks the sessions whose database or user cfg no longer has.
func (s *Server) closeRemoved(cfg *config.Config) {
	s.mu.Lock()
	var doomed []*session
	var why []string
	for _, ss := range s.sessions {
		if msg := removedReason(cfg, ss.dbName, ss.userName); msg != "" {
			doomed = append(doomed, ss)
			why = append(why, msg)
		}
	}
	s.mu.Unlock()
	for i, ss := range doomed {
		ss.logger().Info().Str("reason", why[i]).Msg("reload: closing the client at its next transaction boundary")
		ss.closeAtBoundary(why[i])
	}
}

// removedReason says why (db, user) has no pool under cfg ("" if it has).
func removedReason(cfg *config.Config, db, user string) string {
	if _, ok := cfg.ResolveDatabase(db); !ok {
		return fmt.Sprintf("database %q was removed from the configuration", db)
	}
	if _, ok := cfg.Users[user]; !ok && !anyUserAllowed(cfg) { // auth_query users: authquery.go
		return fmt.Sprintf("user %q was removed from the configuration", user)
	}
	return ""
}

// removedError is what a client is told when its pool is gone for good.
func (s *Server) removedError(db, user string) error {
	msg := removedReason(s.Config(), db, user)
	if msg == "" {
		msg = "the database is being reconfigured; retry"
	}
	return &clientError{codeAdminShutdown, msg}
}

// closeAtBoundary ends the session now if it is between transactions, or
// at its next boundary, telling the client msg (57P01).
func (ss *session) closeAtBoundary(msg string) {
	ss.mu.Lock()
	if ss.closing {
		ss.mu.Unlock()
		return // shutdown got there first
	}
	ss.closing, ss.closeMsg = true, msg
	now := ss.sc == nil || ss.boundaryLocked()
	ss.mu.Unlock()
	if now {
		ss.kill(codeAdminShutdown, msg)
	}
}

// closeWhyLocked is the message for a session closed at its boundary.
func (ss *session) closeWhyLocked() string {
	if ss.closeMsg != "" {
		return ss.closeMsg
	}
	return "terminating connection due to administrator command"
}

// moveStmtsLocked re-registers the client's prepared statements in pe's
// registry (the session moves to a replacement pool): the client keeps
// using its statement names, and they are prepared again on the new
// servers as they are used.
func (ss *session) moveStmtsLocked(pe *poolEntry) {
	var execs []string
	for name, st := range ss.stmts {
		if st.parse == nil {
			continue // the client's own SQL PREPARE: in no registry
		}
		if st.exec != nil {
			execs = append(execs, name) // mapped below, once what they EXECUTE is
			continue
		}
		_, rest, ok1 := cstring(st.parse[5:])
		query, types, ok2 := cstring(rest)
		if !ok1 || !ok2 {
			delete(ss.stmts, name)
			continue
		}
		ss.stmts[name] = pe.stmts.getDep(query, types, st.dep)
	}
	for _, name := range execs {
		x := ss.stmts[name].exec
		q, dep, _, _ := ss.sqlNamedParseLocked(x.query)
		ss.stmts[name] = newExecStmt(q, x.types, dep, x.query)
	}
}
