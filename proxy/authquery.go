package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/auth"
	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// auth_query and server-login passthrough.
//
// auth_query: a user with no [users] section is looked up in PostgreSQL.
// pgtide logs in as auth_user to auth_dbname through a small pool of its
// own (never lent to a client, so no client can change its search_path)
// and runs auth_query with the user name as parameter $1 of the extended
// protocol (never interpolated). The returned secret, or its absence, is
// cached for auth_cache_ttl, or until a server refuses that user's login.
//
// Passthrough: when pgtide has no plaintext password for a user, the server
// login uses what the client's login revealed: the SCRAM ClientKey
// recovered from the client's proof against the stored verifier (config or
// auth_query), or the md5 hash itself. The material is kept per (database,
// user) pool, in memory only, set at the first successful client login and
// refreshed on each later one; it is never logged or shown by the admin
// console.

// authMaxCache bounds the secrets cache (looked-up and unknown users alike).
const authMaxCache = 10000

// SQLSTATEs of a lookup whose user name is not text in the auth
// connection's encoding (authQuerySecret).
const (
	codeCharacterNotInRepertoire = "22021" // invalid byte sequence
	codeUntranslatableCharacter  = "22P05" // no such character in the database's encoding
)

// authPoolSize is the size of each auth_user pool.
const authPoolSize = 2

// authState is the Server's auth_query pools and cache and the passthrough
// logins. Guarded by mu.
type authState struct {
	mu     sync.Mutex
	pools  map[string]*authPool // by the auth database's name
	cache  map[authCacheKey]authCached
	logins map[poolKey]serverLogin
	closed bool
}

type authPool struct {
	pool *pool.Pool
	dial pool.DialConfig
}

type authCacheKey struct{ db, user, authUser, query string }

type authCached struct {
	secret  auth.Secret
	found   bool
	expires time.Time
}

// serverLogin is what a passthrough server login authenticates with.
type serverLogin struct {
	sec      pool.LoginSecret
	password string // auth_query returned a plaintext password
}

// anyUserAllowed reports whether users with no [users] section may log in:
// auth_type trust, or auth_query looks them up.
func anyUserAllowed(cfg *config.Config) bool {
	return cfg.AuthType == "trust" || cfg.AuthQueryEnabled()
}

// authQuerySecret looks up user's secret with auth_query for a client of
// dbName. found is false when auth_query is off, the user has no row or a
// NULL secret, or the secret is malformed: the caller then runs the
// exchange against a random secret, as for an unknown user.
//
// The lookup runs in auth_dbname, never in dbName: the owner of a database
// a client can name could define the lookup function there and answer it
// for any role (config requires auth_dbname with auth_user). So a client
// that has not authenticated creates nothing per database it names: there
// is one auth pool, and the cache is bounded (authMaxCache, auth_cache_ttl).
func (s *Server) authQuerySecret(cfg *config.Config, dbName, user string, log zerolog.Logger) (auth.Secret, bool, error) {
	authDB := cfg.AuthDBName
	if !cfg.AuthQueryEnabled() || authDB == "" {
		return auth.Secret{}, false, nil
	}
	db, ok := cfg.ResolveDatabase(authDB)
	if !ok || authDB == config.AdminDatabaseName {
		return auth.Secret{}, false, nil
	}
	key := authCacheKey{authDB, user, cfg.AuthUser, cfg.AuthQuery}
	ttl := cfg.AuthCacheTTL.Duration
	st := &s.authq
	if ttl > 0 {
		st.mu.Lock()
		e, hit := st.cache[key]
		st.mu.Unlock()
		if hit && time.Now().Before(e.expires) {
			return e.secret, e.found, nil
		}
	}
	ap, err := s.authPoolFor(cfg, authDB, db)
	if err != nil {
		return auth.Secret{}, false, err
	}
	tmo := cfg.ServerConnectTimeout.Duration
	if tmo <= 0 {
		tmo = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), tmo)
	defer cancel()
	c, err := ap.pool.Acquire(ctx)
	if err != nil {
		log.Warn().Err(err).Str("auth_user", cfg.AuthUser).Str("auth_dbname", authDB).Msg("auth_query: no connection")
		return auth.Secret{}, false, &clientError{codeServerUnavailable, "authentication lookup failed: could not connect to the server"}
	}
	text, found, err := runAuthQuery(ctx, c, cfg.AuthQuery, user)
	var se *pool.ServerError
	switch {
	case err == nil || errors.As(err, &se):
		if c.TxStatus == wire.TxIdle {
			ap.pool.Release(c)
		} else {
			ap.pool.Discard(c)
		}
	default:
		ap.pool.Discard(c)
	}
	if errors.As(err, &se) && (se.Code == codeCharacterNotInRepertoire || se.Code == codeUntranslatableCharacter) {
		// The name is not text in the lookup connection's encoding (a
		// client's Latin-1, a long name cut inside a character), so no
		// role has it: PostgreSQL answers such a login as an unknown
		// user's (its mock exchange, then 28P01), and so does pgtide,
		// cached as any unknown user. A lookup error (08001 before the
		// exchange) told these names apart and cost a query every time.
		err = nil
	}
	if err != nil {
		log.Warn().Err(err).Str("auth_dbname", authDB).Msg("auth_query failed")
		return auth.Secret{}, false, &clientError{codeServerUnavailable, "authentication lookup failed"}
	}
	var secret auth.Secret
	if found {
		secret, err = auth.ParseSecret(text)
		if err != nil || secret.Kind == auth.SecretNone {
			// err never holds the secret.
			log.Warn().AnErr("reason", err).Msg("auth_query returned an unusable secret; treating the user as unknown")
			secret, found = auth.Secret{}, false
		}
	}
	if ttl > 0 {
		st.mu.Lock()
		if st.cache == nil || len(st.cache) >= authMaxCache {
			st.sweepCacheLocked()
		}
		st.cache[key] = authCached{secret: secret, found: found, expires: time.Now().Add(ttl)}
		st.mu.Unlock()
	}
	return secret, found, nil
}

// sweepCacheLocked drops expired entries, and everything if still full.
func (st *authState) sweepCacheLocked() {
	if st.cache == nil {
		st.cache = map[authCacheKey]authCached{}
		return
	}
	now := time.Now()
	for k, e := range st.cache {
		if !now.Before(e.expires) {
			delete(st.cache, k)
		}
	}
	if len(st.cache) >= authMaxCache {
		clear(st.cache)
	}
}

// forgetAuthUser drops what auth_query said about user, so that the next
// login looks it up again: called when a server login as user failed, which
// means PostgreSQL no longer accepts what the cache holds (a password
// changed or revoked, NOLOGIN, an expired VALID UNTIL).
func (s *Server) forgetAuthUser(user string) {
	st := &s.authq
	st.mu.Lock()
	for k := range st.cache {
		if k.user == user {
			delete(st.cache, k)
		}
	}
	st.mu.Unlock()
}

// serverRefusedLogin reports whether err says the server refused the login
// itself (SQLSTATE class 28, or a SCRAM verifier that is no longer the
// server's), as opposed to an unreachable server or a missing database.
func serverRefusedLogin(err error) bool {
	if errors.Is(err, pool.ErrVerifierMismatch) {
		return true
	}
	var se *pool.ServerError
	if errors.As(err, &se) {
		return strings.HasPrefix(se.Code, "28")
	}
	var pe interface{ SQLState() string }
	return errors.As(err, &pe) && strings.HasPrefix(pe.SQLState(), "28")
}

// authPoolFor returns the auth_user pool for authDB, replacing one whose
// server login changed since (a reload). Pools of another auth database
// (auth_dbname changed) are closed: there is never more than one.
func (s *Server) authPoolFor(cfg *config.Config, authDB string, db config.Database) (*authPool, error) {
	u := cfg.Users[cfg.AuthUser]
	sec, err := auth.ParseSecret(u.Password)
	if err != nil || sec.Kind != auth.SecretPlain {
		return nil, &clientError{codeServerUnavailable, "authentication lookup failed: auth_user has no plaintext password"}
	}
	dc := s.dialConfig(cfg, db, u, cfg.AuthUser)
	dc.User, dc.Password = cfg.AuthUser, sec.Plain
	st := &s.authq
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return nil, &clientError{codeCannotConnectNow, "the database system is shutting down"}
	}
	if ap := st.pools[authDB]; ap != nil {
		if ap.dial == dc {
			return ap, nil
		}
		go ap.pool.Close()
	}
	for name, ap := range st.pools {
		if name != authDB {
			delete(st.pools, name)
			go ap.pool.Close()
		}
	}
	if st.pools == nil {
		st.pools = map[string]*authPool{}
	}
	log := s.logger().With().Str("database", authDB).Str("user", cfg.AuthUser).Str("pool", "auth_query").Logger()
	ap := &authPool{dial: dc}
	ap.pool = pool.New(pool.Options{
		Size: authPoolSize, IdleTimeout: cfg.ServerIdleTimeout.Duration, Lifetime: cfg.ServerLifetime.Duration,
	}, func(ctx context.Context) (*pool.Conn, error) { return pool.Dial(ctx, dc) }, log)
	st.pools[authDB] = ap
	return ap, nil
}

// runAuthQuery runs query with user as $1 (Parse/Bind/Execute/Sync, one
// text parameter) and returns the second column of the first row. found is
// false for no row or a NULL value. A server error is a *pool.ServerError
// returned after the ReadyForQuery that follows it.
func runAuthQuery(ctx context.Context, c *pool.Conn, query, user string) (string, bool, error) {
	var (
		value string
		found bool
		rows  int
		bad   error
	)
	err := c.QueryRaw(ctx, pool.ParamQuery{SQL: query, Args: []string{user}}, func(body []byte) {
		rows++
		if rows > 1 || bad != nil {
			return
		}
		var dr pgproto3.DataRow
		if err := dr.Decode(body); err != nil {
			bad = fmt.Errorf("auth_query: bad DataRow: %w", err)
			return
		}
		if len(dr.Values) != 2 {
			bad = fmt.Errorf("auth_query must return two columns (user name, secret), got %d", len(dr.Values))
			return
		}
		if dr.Values[1] != nil { // NULL: no secret
			value, found = string(dr.Values[1]), true
		}
	})
	switch {
	case err != nil:
		return "", false, err
	case bad != nil:
		return "", false, bad
	case rows > 1:
		return "", false, fmt.Errorf("auth_query returned %d rows for one user", rows)
	}
	return value, found, nil
}

// rememberServerLogin keeps what user's login revealed for the server
// logins of pool k, when pgtide has no plaintext password for them.
func (s *Server) rememberServerLogin(k poolKey, sec auth.Secret, keys auth.Keys) {
	var sl serverLogin
	switch {
	case sec.Kind == auth.SecretSCRAM && len(keys.ClientKey) > 0:
		sl.sec = pool.LoginSecret{ClientKey: keys.ClientKey, ServerKey: sec.ServerKey, Salt: sec.Salt, Iter: sec.Iter}
	case sec.Kind == auth.SecretMD5:
		sl.sec = pool.LoginSecret{MD5: sec.MD5}
	case sec.Kind == auth.SecretPlain:
		sl.password = sec.Plain
	default:
		return
	}
	st := &s.authq
	st.mu.Lock()
	if st.logins == nil {
		st.logins = map[poolKey]serverLogin{}
	}
	st.logins[k] = sl
	st.mu.Unlock()
}

// dialServer opens a server connection for pool k: with pgconn (pool.Dial)
// when the dial config has a password or logs in as another user, else
// with what a client's login left for passthrough (pool.Login).
func (s *Server) dialServer(ctx context.Context, k poolKey, dc pool.DialConfig) (c *pool.Conn, err error) {
	if dc.User == k.user {
		defer func() {
			// A cached auth_query secret must not outlive the server's
			// refusal of the same role (issue 13.11).
			if err != nil && serverRefusedLogin(err) {
				s.forgetAuthUser(k.user)
			}
		}()
	}
	if dc.Password != "" || dc.User != k.user {
		return pool.Dial(ctx, dc)
	}
	st := &s.authq
	st.mu.Lock()
	sl, ok := st.logins[k]
	st.mu.Unlock()
	switch {
	case ok && sl.password != "":
		dc.Password = sl.password
		return pool.Dial(ctx, dc)
	case ok && !sl.sec.Empty():
		return pool.Login(ctx, dc, sl.sec)
	}
	return pool.Dial(ctx, dc) // a server that needs no password
}

// closeAuth closes the auth_user pools (server shutdown).
func (s *Server) closeAuth() {
	st := &s.authq
	st.mu.Lock()
	st.closed = true
	pools := st.pools
	st.pools = nil
	st.logins = nil
	st.mu.Unlock()
	for _, ap := range pools {
		ap.pool.Close()
	}
}
