package proxy

import (
	"fmt"

	"github.com/pgtide/pgtide/proxy/config"
)

// admitLogin decides, once the client is registered, whether its login may
// complete: not while pgtide shuts down, and not past max_db_client_connections
// or max_user_client_connections (the [databases]/[users] value, else the
// global one; 0 = no limit). The counts include the client itself and are
// read under the same lock register took, so two logins cannot both take
// the last place. The errors are PostgreSQL's for datconnlimit/rolconnlimit.
func (s *Server) admitLogin(cfg *config.Config, ss *session) error {
	if !s.loginsOpen() {
		return &clientError{codeCannotConnectNow, "the database system is shutting down"}
	}
	maxDB := cfg.MaxDBClientConnections
	if db, ok := cfg.ResolveDatabase(ss.dbName); ok && db.MaxDBClientConnections > 0 {
		maxDB = db.MaxDBClientConnections
	}
	maxUser := cfg.MaxUserClientConnections
	if u, ok := cfg.Users[ss.userName]; ok && u.MaxUserClientConnections > 0 {
		maxUser = u.MaxUserClientConnections
	}
	s.mu.Lock()
	nDB, nUser := s.clientsByDB[ss.dbName], s.clientsByUser[ss.userName]
	s.mu.Unlock()
	switch {
	case maxDB > 0 && nDB > maxDB:
		return &clientError{codeTooManyConnections, fmt.Sprintf("too many connections for database %q", ss.dbName)}
	case maxUser > 0 && nUser > maxUser:
		return &clientError{codeTooManyConnections, fmt.Sprintf("too many connections for role %q", ss.userName)}
	}
	return nil
}

// dropCount decrements m[k], deleting it at zero so that names of clients
// long gone do not accumulate.
func dropCount(m map[string]int, k string) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}
