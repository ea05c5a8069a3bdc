package proxy

import (
	"errors"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Event logging switches (log_connections, log_disconnections,
// log_pooler_errors) and the periodic stats line (stats_period). Every
// switch is read from the configuration in force when the event happens, so
// a reload changes them at once.

// logConnected logs a client's successful login (log_connections).
func (s *Server) logConnected(ss *session) {
	if !s.Config().LogConnections || !s.logsAt(zerolog.InfoLevel) {
		return // ss.logger() formats the client's address: not for nothing
	}
	ev := ss.logger().Info().Str("pool_mode", string(ss.mode))
	ss.mu.Lock()
	if ss.sc != nil { // session mode: the server is the client's for good
		ev = ev.Uint32("server_pid", ss.sc.PID)
	}
	if app := ss.want["application_name"]; app != "" {
		ev = ev.Str("application_name", app)
	}
	ss.mu.Unlock()
	ev.Msg("client connected")
}

// logDisconnected logs a logged-in client's end (log_disconnections).
func (s *Server) logDisconnected(ss *session, err error) {
	if !s.Config().LogDisconnections || !s.logsAt(zerolog.InfoLevel) {
		return
	}
	ss.logger().Info().Err(err).Int64("duration_ms", time.Since(time.Unix(0, ss.accepted)).Milliseconds()).Msg("client disconnected")
}

// logsAt reports whether the logger writes events of level lvl (zerolog's
// own test), so that a line that would be dropped costs nothing to build.
func (s *Server) logsAt(lvl zerolog.Level) bool {
	return lvl >= s.logger().GetLevel() && lvl >= zerolog.GlobalLevel()
}

// logLoginFailed logs a login that did not complete, once: an error pgtide
// sent (log_pooler_errors; at warn, with the reason) or a client that left
// during login (log_disconnections). It also counts refused logins by reason
// (pgtide_login_failures_total).
func (s *Server) logLoginFailed(log zerolog.Logger, err error) {
	cfg := s.Config()
	var ce *clientError
	if errors.As(err, &ce) {
		reason := loginFailureReason(err, ce)
		s.loginFails.add(reason)
		if cfg.LogPoolerErrors {
			ev := log.Warn().Err(err).Str("sqlstate", ce.Code).Str("reason", reason)
			var lf *loginFailure
			if errors.As(err, &lf) {
				for _, f := range lf.fields {
					ev = ev.Str(f[0], f[1])
				}
			}
			ev.Msg("login failed")
		}
		return
	}
	if cfg.LogDisconnections {
		log.Info().Err(err).Msg("login failed")
	}
}

// loginFailure is a clientError with extra fields for the one log line of a
// refused login (the auth method, PostgreSQL's detail).
type loginFailure struct {
	*clientError
	reason string // "" = from the SQLSTATE (loginFailureReason)
	fields [][2]string
}

func (e *loginFailure) Unwrap() error { return e.clientError }

// Reasons a login is refused, the reason label of pgtide_login_failures_total.
const (
	reasonPassword        = "password"         // 28P01: wrong password or unknown user
	reasonNotAllowed      = "not_allowed"      // 28000: TLS required, HBA, certificate, console access
	reasonUnknownDatabase = "unknown_database" // 3D000
	reasonTooMany         = "too_many_clients" // 53300 (max_client_conn)
	reasonUnavailable     = "unavailable"      // shutting down, database disabled, pool closing
	reasonWaitTimeout     = "wait_timeout"     // 57014: no server in query_wait_timeout
	reasonServerLogin     = "server_login"     // the server refused pgtide's login, or could not be reached
	reasonAuthQuery       = "auth_query"       // the auth_query lookup failed
	reasonProtocol        = "protocol"         // 08P01, 0A000: not a (supported) PostgreSQL client
	reasonOther           = "other"
)

// loginFailureReason classifies an error pgtide sent during a login.
func loginFailureReason(err error, ce *clientError) string {
	var lf *loginFailure
	if errors.As(err, &lf) && lf.reason != "" {
		return lf.reason
	}
	switch {
	case strings.HasPrefix(ce.Msg, "could not connect to the server"):
		return reasonServerLogin
	case strings.HasPrefix(ce.Msg, "authentication lookup failed"):
		return reasonAuthQuery
	}
	switch ce.Code {
	case codeInvalidPassword:
		return reasonPassword
	case codeInvalidAuthSpec:
		return reasonNotAllowed
	case codeUnknownDatabase:
		return reasonUnknownDatabase
	case codeTooManyConnections:
		return reasonTooMany
	case codeCannotConnectNow, codeAdminShutdown:
		return reasonUnavailable
	case codeQueryCanceled:
		return reasonWaitTimeout
	case codeProtocolViolation, codeFeatureNotSupported:
		return reasonProtocol
	case codeServerUnavailable, codeConnectionFailure:
		return reasonServerLogin
	}
	return reasonOther
}

// loginFailureCounts counts refused logins by reason.
type loginFailureCounts struct {
	mu sync.Mutex
	n  map[string]uint64
}

func (c *loginFailureCounts) add(reason string) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]uint64{}
	}
	c.n[reason]++
	c.mu.Unlock()
}

// LoginFailuresByReason returns the refused logins so far, by reason.
func (s *Server) LoginFailuresByReason() map[string]uint64 {
	c := &s.loginFails
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// logPoolerError logs a FATAL error pgtide itself sends to a logged-in
// client (log_pooler_errors).
func (s *Server) logPoolerError(log zerolog.Logger, code, msg string) {
	if !s.Config().LogPoolerErrors {
		return
	}
	log.Warn().Str("sqlstate", code).Str("error", msg).Msg("closing client with an error")
}

// counterSnap is a pool's totals at one moment.
type counterSnap struct {
	xacts, queries, in, out, waits uint64
	xactNs, queryNs, waitNs        int64
}

func snapCounters(c *PoolCounters) counterSnap {
	return counterSnap{
		xacts: c.Xacts.Load(), queries: c.Queries.Load(),
		in: c.BytesIn.Load(), out: c.BytesOut.Load(), waits: c.Waits.Load(),
		xactNs: c.XactNanos.Load(), queryNs: c.QueryNanos.Load(), waitNs: c.WaitNanos.Load(),
	}
}

// statsLoop logs one "stats" line per pool every stats_period, with the
// rates and averages over that period (PgBouncer's stats_period). It checks
// the setting at least every second, so a reload applies within a second.
func (s *Server) statsLoop() {
	prev := map[*PoolCounters]counterSnap{}
	last := time.Now()
	for {
		period := s.Config().StatsPeriod.Duration
		tick := time.Second
		if period > 0 && period < tick {
			tick = period
		}
		t := time.NewTimer(tick)
		select {
		case <-s.done:
			t.Stop()
			return
		case <-t.C:
		}
		now := time.Now()
		period = s.Config().StatsPeriod.Duration
		if period > 0 && now.Sub(last) < period {
			continue
		}
		cur := make(map[*PoolCounters]counterSnap, len(prev))
		for _, p := range s.Pools() {
			snap := snapCounters(p.Counters)
			cur[p.Counters] = snap
			if period > 0 {
				// A pool created during the period (or replaced by a
				// reload) has counters that started at zero.
				s.logPoolStats(p, prev[p.Counters], snap, now.Sub(last))
			}
		}
		prev, last = cur, now
	}
}

func (s *Server) logPoolStats(p PoolStats, a, b counterSnap, d time.Duration) {
	secs := d.Seconds()
	rate := func(n uint64) float64 { return math.Round(float64(n)/secs*100) / 100 }
	avgUs := func(ns int64, n uint64) int64 {
		if n == 0 {
			return 0
		}
		return ns / int64(n) / 1000
	}
	xacts, queries, waits := b.xacts-a.xacts, b.queries-a.queries, b.waits-a.waits
	s.logger().Info().
		Str("database", p.Database).Str("user", p.User).
		Int64("period_ms", d.Milliseconds()).
		Uint64("xacts", xacts).Uint64("queries", queries).
		Float64("xacts_per_s", rate(xacts)).Float64("queries_per_s", rate(queries)).
		Float64("bytes_in_per_s", rate(b.in-a.in)).Float64("bytes_out_per_s", rate(b.out-a.out)).
		Int64("avg_xact_us", avgUs(b.xactNs-a.xactNs, xacts)).
		Int64("avg_query_us", avgUs(b.queryNs-a.queryNs, queries)).
		Int64("avg_wait_us", avgUs(b.waitNs-a.waitNs, waits)).
		Int("clients", p.Clients).Int("servers_active", p.Lent).Int("servers_idle", p.Idle).
		Msg("stats")
}
