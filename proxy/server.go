// Package proxy is everything that faces a client: listeners, the startup
// packet, client authentication, the per-client session loop, transaction
// tracking, parameter bookkeeping and cancel routing.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/admin"
	"github.com/pgtide/pgtide/proxy/auth"
	"github.com/pgtide/pgtide/proxy/config"
)

// Server state, in order; it only moves forward.
const (
	stateRunning  int32 = iota
	stateSafeStop       // SIGINT: no new clients; sessions end at their next transaction boundary
	stateWaitStop       // SIGTERM: no new clients; wait for sessions to leave
	stateClosed
)

// Server accepts clients and owns the pools. One Server runs per process.
type Server struct {
	// testHookJoined, when set (tests only), runs in a login that holds its
	// server, after the parameter sync (joinWithServer).
	testHookJoined func()

	logp  atomic.Pointer[zerolog.Logger]
	cfg   atomic.Pointer[config.Config]
	state atomic.Int32

	listeners []net.Listener
	acceptWG  sync.WaitGroup
	// online restart and the Unix socket file (listen.go)
	reuseport       bool
	listenMu        sync.Mutex
	listenersClosed bool
	listenTuned     atomic.Bool // every TCP listener has the TCP options accepted sockets need (tuneListeners)
	unixPath        string
	unixFile        os.FileInfo
	serving         atomic.Bool // Serve has started the accept loops

	work   workers // kept goroutines for logins and resumed sessions (workers.go)
	parker *parker // idle clients without a goroutine (park.go); nil where unavailable; set by Serve

	mu       sync.Mutex // guards pools, limits, sessions
	pools    map[poolKey]*poolEntry
	dbLimit  map[string]*pool.Limiter
	dbHosts  map[string]*pool.Balancer // load_balance_hosts, per database like dbLimit
	usrLimit map[string]*pool.Limiter
	sessions map[uint32]*session // by the cancel key's process ID
	// Logins waiting for the server they need (joinWithServer), not yet
	// in sessions: SHOW CLIENTS lists them as waiting, as PgBouncer does.
	loginWaits map[*session]struct{}
	// Logged-in clients by database and by user name, for
	// max_db_client_connections and max_user_client_connections (limits.go).
	clientsByDB, clientsByUser map[string]int
	clients                    atomic.Int64 // connections past accept, including logins
	admitted                   atomic.Int64 // logged-in and logging-in clients, for max_client_conn
	consoleLogins              atomic.Int64 // admin console connections beyond max_client_conn (consoleMax)
	sessWG                     sync.WaitGroup
	msgBuf                     atomic.Int64 // bytes reserved for large buffered messages (buffer.go)

	done     chan struct{}
	doneOnce sync.Once

	observer      atomic.Pointer[Observer]
	loginFailures atomic.Uint64
	loginFails    loginFailureCounts // by reason (statslog.go)

	// OnReload, when set, re-reads the configuration file for the admin
	// console's RELOAD and returns why it was not applied. Set before Serve.
	OnReload func() error
	// OnApply, when set, puts a configuration in force as a reload does,
	// for the admin console's SET. Set before Serve.
	OnApply func(*config.Config) error
	// Version is what the admin console's SHOW VERSION reports.
	Version string

	// The admin console (proxy/admin) and what it drives (console.go).
	console          *admin.Console
	gate             gate           // PAUSE/DISABLE of every borrow (gate.go)
	susp             suspendCtl     // SUSPEND of client reads (suspend.go)
	bootCfg          *config.Config // the settings a reload does not apply keep its values
	consoles         atomic.Int64   // open consoles (counted in clients too)
	consolesStop     chan struct{}  // closed when consoles must close (checkConsolesStop)
	consolesStopOnce sync.Once
	stopBegun        chan struct{} // closed when the state leaves stateRunning
	stopOnce         sync.Once

	sec atomic.Pointer[security] // client TLS and HBA rules (tls.go)

	authq authState // auth_query pools and cache, passthrough logins (authquery.go)

	// test hooks
	nextSessionID atomic.Uint64
}

type poolKey struct{ db, user string }

type poolEntry struct {
	pool     *pool.Pool
	stmts    *stmtRegistry
	counters *PoolCounters
	dial     pool.DialConfig
	welcome  welcomeCache // logins without a server (welcome.go)
	logins   int          // logins in progress that borrow from it (autodb.go); guarded by Server.mu
	// mode is the pool mode new clients get (config.PoolMode): Reload
	// changes it while logins and the console read it.
	mode atomic.Value
}

func (e *poolEntry) poolMode() config.PoolMode {
	m, _ := e.mode.Load().(config.PoolMode)
	return m
}

// New returns a Server for cfg. Call Listen, then Serve.
func New(cfg *config.Config, log zerolog.Logger) *Server {
	s := &Server{
		pools:         map[poolKey]*poolEntry{},
		dbLimit:       map[string]*pool.Limiter{},
		dbHosts:       map[string]*pool.Balancer{},
		usrLimit:      map[string]*pool.Limiter{},
		sessions:      map[uint32]*session{},
		loginWaits:    map[*session]struct{}{},
		clientsByDB:   map[string]int{},
		clientsByUser: map[string]int{},
		done:          make(chan struct{}),
		bootCfg:       cfg,

		consolesStop: make(chan struct{}),
		stopBegun:    make(chan struct{}),
	}
	s.console = admin.New(s)
	s.cfg.Store(cfg)
	s.logp.Store(&log)
	return s
}

// Config returns the configuration in force.
func (s *Server) Config() *config.Config { return s.cfg.Load() }

// Listen opens every configured TCP address and the Unix socket.
func (s *Server) Listen() error {
	cfg := s.Config()
	if err := s.loadSecurity(cfg); err != nil {
		return err
	}
	s.reuseport = cfg.SoReuseport
	// The Unix socket first: whoever waits for the TCP port to answer
	// (a test, a health check) may then use the socket at once too.
	var unixLn net.Listener
	if path := cfg.UnixSocketPath(); path != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("unix_socket_dir: %w", err)
		}
		ln, err := s.listenUnix(path, cfg.UnixSocketFileMode()) // listen.go
		if err != nil {
			return fmt.Errorf("listen %s: %w", path, err)
		}
		unixLn = ln
	}
	for _, addr := range cfg.Listen {
		ln, err := listenTCP(addr, cfg.SoReuseport)
		if err != nil {
			if unixLn != nil {
				s.listeners = append(s.listeners, unixLn)
			}
			s.closeListeners()
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		s.listeners = append(s.listeners, ln)
	}
	if unixLn != nil {
		s.listeners = append(s.listeners, unixLn)
	}
	for _, ln := range s.listeners {
		if err := setBacklog(ln, cfg.ListenBacklog); err != nil { // tcp.go
			s.closeListeners()
			return fmt.Errorf("listen_backlog: %w", err)
		}
	}
	s.tuneListeners(cfg) // tcp.go
	return nil
}

// Addrs returns the listening addresses (for tests and logs).
func (s *Server) Addrs() []net.Addr {
	var out []net.Addr
	for _, ln := range s.listeners {
		out = append(out, ln.Addr())
	}
	return out
}

// Serve accepts clients on every listener until shutdown.
func (s *Server) Serve() {
	s.parker = newParker(s)
	for _, ln := range s.listeners {
		s.logger().Info().Str("addr", ln.Addr().String()).Msg("listening")
		s.acceptWG.Add(1)
		go s.acceptLoop(ln)
	}
	s.serving.Store(len(s.listeners) > 0)
	go s.statsLoop()      // statslog.go
	go s.autodbLoop()     // autodb.go
	go s.waitNotifyLoop() // waitnotify.go
}

// Ready reports whether the server accepts new clients: it is listening and
// no shutdown has begun (the metrics endpoint's /readyz).
func (s *Server) Ready() bool {
	return s.serving.Load() && s.state.Load() == stateRunning
}

func (s *Server) acceptLoop(ln net.Listener) {
	defer s.acceptWG.Done()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.state.Load() != stateRunning || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: back off and keep serving.
			backoff = min(max(backoff*2, 5*time.Millisecond), time.Second)
			s.logger().Error().Err(err).Int64("backoff_ms", backoff.Milliseconds()).Msg("accept failed")
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.serveConn(nc) // listen.go
	}
}

func (s *Server) closeListeners() { s.stopListening() } // listen.go

// Reload swaps in a new configuration: pool sizes, limits, timeouts,
// databases and users apply to the next borrow; a database whose address
// changed gets a fresh pool (the old one drains as its servers come back).
// Listen addresses need a restart.
func (s *Server) Reload(cfg *config.Config) {
	if err := s.loadSecurity(cfg); err != nil {
		s.logger().Error().Err(err).Msg("reload failed; keeping the running configuration")
		return
	}
	s.cfg.Store(cfg)
	s.tuneListeners(cfg) // tcp.go: TCP options for new clients
	s.mu.Lock()
	var stale []*pool.Pool
	var removed []poolKey
	for k, e := range s.pools {
		db, okDB := cfg.ResolveDatabase(k.db)
		u, okUser := cfg.Users[k.user]
		if !okDB || (!okUser && !anyUserAllowed(cfg)) {
			stale = append(stale, e.pool)
			removed = append(removed, k)
			delete(s.pools, k)
			continue
		}
		dc := s.dialConfig(cfg, db, u, k.user)
		if dc != e.dial {
			stale = append(stale, e.pool)
			delete(s.pools, k)
			continue
		}
		e.mode.Store(cfg.EffectivePoolMode(db, u))
		e.pool.SetOptions(s.poolOptionsLocked(cfg, db, u, k))
	}
	for name, l := range s.dbLimit {
		if db, ok := cfg.ResolveDatabase(name); ok {
			l.SetMax(pick(db.MaxDBConnections, cfg.MaxDBConnections))
		}
	}
	for name, b := range s.dbHosts {
		if db, ok := cfg.ResolveDatabase(name); ok {
			b.SetRoundRobin(cfg.EffectiveLoadBalanceHosts(db) == config.LoadBalanceRoundRobin)
		}
	}
	for name, l := range s.usrLimit {
		l.SetMax(pick(cfg.Users[name].MaxUserConnections, cfg.MaxUserConnections))
	}
	s.mu.Unlock()
	for _, p := range stale {
		p.Close()
	}
	if r, ok := s.obs().(PoolRemover); ok { // autodb.go
		for _, k := range removed {
			r.PoolRemoved(k.db, k.user)
		}
	}
	s.closeRemoved(cfg) // reload.go
	s.fastClose(cfg)    // fastclose.go
	s.logger().Info().Int("databases", len(cfg.Databases)).Int("users", len(cfg.Users)).Msg("configuration reloaded")
}

func pick(v, def int) int {
	if v != 0 {
		return v
	}
	return def
}

func (s *Server) dialConfig(cfg *config.Config, db config.Database, u config.User, user string) pool.DialConfig {
	dc := pool.DialConfig{
		Host: db.Host, Port: db.Port, Ports: pool.PortList(db.Ports), Database: db.DBName,
		User: user, Timeout: cfg.ServerConnectTimeout.Duration,
	}
	if db.User != "" {
		dc.User = db.User
	}
	setServerTLS(&dc, db) // tls.go
	switch {
	case db.Password != "":
		dc.Password = db.Password
	case db.User == "" || db.User == user:
		if sec, err := auth.ParseSecret(u.Password); err == nil && sec.Kind == auth.SecretPlain {
			dc.Password = sec.Plain
		}
	}
	return dc
}

func (s *Server) poolOptionsLocked(cfg *config.Config, db config.Database, u config.User, k poolKey) pool.Options {
	size := cfg.EffectivePoolSize(db, u)
	minSize := pick(db.MinPoolSize, cfg.MinPoolSize)
	opts := pool.Options{
		Size: size, MinSize: min(minSize, size),
		IdleTimeout: cfg.ServerIdleTimeout.Duration, Lifetime: cfg.EffectiveServerLifetime(db),
		CheckQuery: cfg.ServerCheckQuery, CheckDelay: cfg.ServerCheckDelay.Duration, CheckTimeout: cfg.ServerConnectTimeout.Duration,
		LoginRetry: cfg.ServerLoginRetry.Duration, ConnectQuery: db.ConnectQuery,
		ReserveSize: pick(u.ReservePoolSize, pick(db.ReservePoolSize, cfg.ReservePoolSize)), ReserveTimeout: cfg.ReservePoolTimeout.Duration,
	}
	if l := s.dbLimit[k.db]; l != nil {
		opts.Limits = append(opts.Limits, l)
	}
	if l := s.usrLimit[k.user]; l != nil {
		opts.Limits = append(opts.Limits, l)
	}
	return opts
}

// poolFor returns the pool for (database, user), creating it on first use.
func (s *Server) poolFor(cfg *config.Config, dbName string, db config.Database, userName string, u config.User) *poolEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.poolForLocked(cfg, dbName, db, userName, u)
}

func (s *Server) poolForLocked(cfg *config.Config, dbName string, db config.Database, userName string, u config.User) *poolEntry {
	k := poolKey{dbName, userName}
	if e := s.pools[k]; e != nil {
		return e
	}
	if s.dbLimit[dbName] == nil {
		s.dbLimit[dbName] = pool.NewLimiter(pick(db.MaxDBConnections, cfg.MaxDBConnections))
	}
	if s.usrLimit[userName] == nil {
		s.usrLimit[userName] = pool.NewLimiter(pick(u.MaxUserConnections, cfg.MaxUserConnections))
	}
	hosts := s.dbHosts[dbName]
	if hosts == nil {
		hosts = pool.NewBalancer(cfg.EffectiveLoadBalanceHosts(db) == config.LoadBalanceRoundRobin)
		dblog := s.logger().With().Str("database", dbName).Logger()
		hosts.OnSkip(func(tg pool.Target, err error) {
			dblog.Warn().Err(err).Stringer("server", tg).Msg("server host failed; trying the next host of the list")
		})
		s.dbHosts[dbName] = hosts
	}
	dc := s.dialConfig(cfg, db, u, userName)
	log := s.logger().With().Str("database", dbName).Str("user", userName).Logger()
	dial := func(ctx context.Context) (*pool.Conn, error) {
		d := dc
		d.Balancer = hosts                // load_balance_hosts (pool/hosts.go)
		c, err := s.dialServer(ctx, k, d) // pool.Dial, or pool.Login for passthrough (authquery.go)
		if err != nil {
			ev := log.Warn().Err(err).Str("host", dc.Host).Int("port", dc.Port)
			if dc.Ports != "" {
				ev = ev.Str("ports", dc.Ports)
			}
			ev.Msg("server connection failed")
			return nil, err
		}
		tuneTCP(c.Net, s.Config()) // tcp.go
		log.Debug().Uint32("server_pid", c.PID).Stringer("server", c.Addr).Msg("server connection opened")
		return c, nil
	}
	e := &poolEntry{
		pool:     pool.New(s.poolOptionsLocked(cfg, db, u, k), dial, log),
		stmts:    newStmtRegistry(),
		counters: &PoolCounters{},
		dial:     dc,
	}
	e.mode.Store(cfg.EffectivePoolMode(db, u))
	s.pools[k] = e
	return e
}

// currentPool returns the pool in force for (database, user) under the
// current configuration, or nil when the database or user is gone.
func (s *Server) currentPool(dbName, userName string) *poolEntry {
	cfg := s.Config()
	db, ok := cfg.ResolveDatabase(dbName)
	if !ok {
		return nil
	}
	u, ok := cfg.Users[userName]
	if !ok && !anyUserAllowed(cfg) {
		return nil
	}
	return s.poolFor(cfg, dbName, db, userName, u)
}

// PoolStats is a snapshot of one pool, for the admin console and metrics.
type PoolStats struct {
	Database, User string
	Mode           config.PoolMode
	pool.Stats
	Counters *PoolCounters
	Clients  int // clients of this pool, logged in or logging in while they wait for a server
	// ClientsWaiting of them wait for a server, the longest for MaxClientWait:
	// in the pool's queue, at PAUSE or SUSPEND, or in their login (SHOW
	// POOLS' cl_waiting and maxwait). Stats.Waiting counts the pool's queue only.
	ClientsWaiting int
	MaxClientWait  time.Duration
	Used           int // idle servers due for server_check_query (console.go needsCheck)
}

// Pools returns a snapshot of every pool.
func (s *Server) Pools() []PoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	type agg struct {
		clients, waiting int
		maxWait          time.Duration
	}
	byPool := make(map[poolKey]*agg, len(s.pools))
	now := time.Now().UnixNano()
	count := func(ss *session) {
		k := poolKey{ss.dbName, ss.userName} // the pool key; both fixed at login
		a := byPool[k]
		if a == nil {
			a = &agg{}
			byPool[k] = a
		}
		a.clients++
		if w := ss.gate.waitStart.Load(); w != 0 {
			a.waiting++
			a.maxWait = max(a.maxWait, time.Duration(now-w))
		}
	}
	for _, ss := range s.sessions {
		count(ss)
	}
	for ss := range s.loginWaits {
		count(ss)
	}
	out := make([]PoolStats, 0, len(s.pools))
	for k, e := range s.pools {
		st := e.pool.Stats()
		ps := PoolStats{Database: k.db, User: k.user, Mode: e.poolMode(), Stats: st, Counters: e.counters, Used: s.usedServers(e, st)}
		if a := byPool[k]; a != nil {
			ps.Clients, ps.ClientsWaiting, ps.MaxClientWait = a.clients, a.waiting, a.maxWait
		}
		out = append(out, ps)
	}
	return out
}

// Clients is the number of client connections, including those logging in.
func (s *Server) Clients() int { return int(s.clients.Load()) }

// SafeShutdown (SIGINT) stops accepting clients; every session is closed
// with 57P01 at its next transaction boundary; the server is done when the
// last session ends.
func (s *Server) SafeShutdown() {
	if !s.state.CompareAndSwap(stateRunning, stateSafeStop) {
		if !s.state.CompareAndSwap(stateWaitStop, stateSafeStop) {
			return
		}
	}
	s.beginStop() // console.go
	s.logger().Info().Msg("safe shutdown: closing clients at their transaction boundaries")
	s.closeListeners()
	s.mu.Lock()
	list := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		list = append(list, ss)
	}
	s.mu.Unlock()
	for _, ss := range list {
		ss.shutdownAtBoundary()
	}
	go s.finishWhenEmpty(0)
}

// WaitShutdown (SIGTERM) stops accepting clients and waits for connected
// ones to leave, at most timeout (0 = no bound), then closes everything.
func (s *Server) WaitShutdown(timeout time.Duration) {
	if !s.state.CompareAndSwap(stateRunning, stateWaitStop) {
		return
	}
	s.beginStop()
	s.logger().Info().Int64("shutdown_timeout_ms", timeout.Milliseconds()).Msg("shutdown: waiting for clients to disconnect")
	s.closeListeners()
	go s.finishWhenEmpty(timeout)
}

func (s *Server) finishWhenEmpty(timeout time.Duration) {
	empty := make(chan struct{})
	go func() { s.sessWG.Wait(); close(empty) }()
	var tc <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		tc = t.C
	}
	select {
	case <-empty:
	case <-tc:
		s.logger().Warn().Msg("shutdown_timeout reached: closing remaining clients")
	case <-s.done:
		return
	}
	s.Close()
}

// Close shuts down at once: listeners, clients and pools. Safe to call twice.
func (s *Server) Close() {
	s.state.Store(stateClosed)
	s.beginStop()
	s.closeListeners()
	s.mu.Lock()
	list := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		list = append(list, ss)
	}
	s.mu.Unlock()
	for _, ss := range list {
		ss.kill(codeAdminShutdown, "terminating connection due to administrator command")
	}
	waited := make(chan struct{})
	go func() { s.sessWG.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(3 * time.Second):
	}
	s.mu.Lock()
	pools := s.pools
	s.pools = map[poolKey]*poolEntry{}
	s.mu.Unlock()
	for _, e := range pools {
		e.pool.Close()
	}
	s.closeAuth() // authquery.go
	s.removeUnixSocket()
	s.doneOnce.Do(func() {
		if s.parker != nil {
			s.parker.close()
		}
		s.work.close()
		close(s.done)
	})
}

// Done is closed when the server has shut down.
func (s *Server) Done() <-chan struct{} { return s.done }

func (s *Server) register(ss *session) {
	s.mu.Lock()
	for {
		// Positive as an int32, as PostgreSQL's process IDs are: drivers
		// read it signed (asyncpg showed a minted one as -1435743495).
		pid := uint32(randUint64()) & 0x7fffffff
		if pid == 0 || s.sessions[pid] != nil {
			continue
		}
		ss.keyPID = pid
		s.sessions[pid] = ss
		s.clientsByDB[ss.dbName]++
		s.clientsByUser[ss.userName]++
		break
	}
	s.mu.Unlock()
	s.susp.arm(ss.conn) // SUSPEND stops its reads from now on (suspend.go)
}

// setLoginWait adds a login waiting for its server to SHOW CLIENTS, or
// takes it off.
func (s *Server) setLoginWait(ss *session, on bool) {
	s.mu.Lock()
	if on {
		s.loginWaits[ss] = struct{}{}
	} else {
		delete(s.loginWaits, ss)
	}
	s.mu.Unlock()
}

func (s *Server) unregister(ss *session) {
	s.mu.Lock()
	if s.sessions[ss.keyPID] == ss {
		delete(s.sessions, ss.keyPID)
		dropCount(s.clientsByDB, ss.dbName)
		dropCount(s.clientsByUser, ss.userName)
	}
	s.mu.Unlock()
}

func (s *Server) lookup(pid uint32) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[pid]
}

// SetLogger replaces the logger used for new sessions (log level reload).
func (s *Server) SetLogger(l zerolog.Logger) { s.logp.Store(&l) }

func (s *Server) logger() *zerolog.Logger { return s.logp.Load() }
