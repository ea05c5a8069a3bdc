package proxy

// The admin console: clients that log in to the virtual database "pgtide"
// (config.AdminDatabaseName) as a user listed in admin_users (every command)
// or stats_users (SHOW only) get a console speaking the simple query
// protocol, with PgBouncer's commands and column names (admin_show.go).
//
// PAUSE and DISABLE act through a per-database dbControl that every borrow
// passes (enterBorrow, called by session.borrow and login): a paused
// database lends no servers, so new transactions wait (bounded by
// query_wait_timeout); a disabled one refuses new logins.

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/wire"
)

// SQLSTATE codes of the admin console.
const (
	codeInsufficientPrivilege = "42501"
	codeSyntaxError           = "42601"
	codeUndefinedObject       = "42704"
	codeConfigFileError       = "F0000"
)

// adminMaxBody bounds a message on the admin console.
const adminMaxBody = 1 << 20

// sessionAdmin is what the admin console needs of a client session.
type sessionAdmin struct {
	id        uint64    // as in the session's log lines; SHOW CLIENTS id, KILL_CLIENT
	connected time.Time // fixed at login
	// ctl is the database's gate, looked up once; owned by the client goroutine.
	ctl *dbControl
	// waitStart is when the session started waiting for a server (unix ns),
	// 0 when it is not waiting (SHOW CLIENTS state, cl_waiting, maxwait).
	waitStart atomic.Int64
}

// dbControl is the admin state of one database name.
type dbControl struct {
	paused, disabled atomic.Bool
	// inflight counts borrows past the gate whose Acquire has not returned;
	// PAUSE waits for them as for lent servers.
	inflight atomic.Int64
}

// adminState is the Server's admin console state. The zero value is ready.
type adminState struct {
	dbs       sync.Map // database name → *dbControl; entries are never removed
	pausedAll atomic.Bool

	mu      sync.Mutex
	changed chan struct{}         // closed and dropped when a pause is lifted
	conns   map[uint64]*adminConn // open consoles by id

	statsOnce sync.Once
	stats     statsWindow
}

// db returns the control of a database name, creating it.
func (a *adminState) db(name string) *dbControl {
	if c, ok := a.dbs.Load(name); ok {
		return c.(*dbControl)
	}
	c, _ := a.dbs.LoadOrStore(name, &dbControl{})
	return c.(*dbControl)
}

// peek returns the control of a database name, or nil.
func (a *adminState) peek(name string) *dbControl {
	if c, ok := a.dbs.Load(name); ok {
		return c.(*dbControl)
	}
	return nil
}

func (a *adminState) paused(c *dbControl) bool { return a.pausedAll.Load() || c.paused.Load() }

// resumed wakes every borrow waiting on a pause.
func (a *adminState) resumed() {
	a.mu.Lock()
	if a.changed != nil {
		close(a.changed)
		a.changed = nil
	}
	a.mu.Unlock()
}

func (a *adminState) consoles() []*adminConn {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*adminConn, 0, len(a.conns))
	for _, ac := range a.conns {
		out = append(out, ac)
	}
	slices.SortFunc(out, func(x, y *adminConn) int { return cmpU64(x.id, y.id) })
	return out
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// enterBorrow is the gate of every borrow: it marks the session as waiting
// and blocks while its database is paused. The caller must call leave on
// the result once its Acquire has returned.
func (s *Server) enterBorrow(ctx context.Context, ss *session, start time.Time) (*dbControl, error) {
	c := ss.adm.ctl
	if c == nil {
		c = s.admin.db(ss.dbName)
		ss.adm.ctl = c
	}
	ss.adm.waitStart.Store(start.UnixNano())
	for {
		// Count first, then look: PAUSE sets the flag, then waits for
		// inflight to drain, so one of the two sees the other.
		c.inflight.Add(1)
		if !s.admin.paused(c) {
			return c, nil
		}
		c.inflight.Add(-1)
		if err := s.waitResume(ctx, c); err != nil {
			ss.adm.waitStart.Store(0)
			return nil, err
		}
	}
}

// leave ends a borrow's pass through the gate.
func (c *dbControl) leave(ss *session) {
	c.inflight.Add(-1)
	ss.adm.waitStart.Store(0)
}

// waitResume blocks until c is not paused, ctx ends (query_wait_timeout)
// or shutdown begins.
func (s *Server) waitResume(ctx context.Context, c *dbControl) error {
	a := &s.admin
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		a.mu.Lock()
		if !a.paused(c) {
			a.mu.Unlock()
			return nil
		}
		if a.changed == nil {
			a.changed = make(chan struct{})
		}
		ch := a.changed
		a.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			if s.state.Load() != stateRunning {
				return &clientError{codeAdminShutdown, "terminating connection due to administrator command"}
			}
		case <-ctx.Done():
			return acquireError(pool.ErrWaitTimeout)
		}
	}
}

// loginAcquire borrows the server a login needs: refused for a disabled
// database, waiting while it is paused. Errors are for the client.
func (s *Server) loginAcquire(ctx context.Context, ss *session) (*pool.Conn, error) {
	if err := s.loginAllowed(ss); err != nil {
		return nil, err
	}
	gate, err := s.enterBorrow(ctx, ss, time.Now())
	if err != nil {
		return nil, err
	}
	sc, err := acquire(ctx, ss.pe.pool)
	gate.leave(ss)
	if err != nil {
		return nil, acquireError(err)
	}
	return sc, nil
}

// loginAllowed refuses a login to a database DISABLEd by the admin.
func (s *Server) loginAllowed(ss *session) error {
	c := s.admin.db(ss.dbName)
	ss.adm.ctl = c
	if c.disabled.Load() {
		return &clientError{codeCannotConnectNow, fmt.Sprintf("database %q is disabled", ss.dbName)}
	}
	return nil
}

// adminConn is one admin console connection. Its goroutine (serveAdmin)
// alone reads nc; writes take wmu (the shutdown watcher writes too).
type adminConn struct {
	s         *Server
	nc        net.Conn
	rd        *wire.Reader
	id        uint64
	user      string
	appName   string
	super     bool // admin_users: every command; stats_users: SHOW only
	connected time.Time
	log       zerolog.Logger
	reqStart  atomic.Int64 // unix ns when the running command started, 0 when idle

	wmu sync.Mutex
	out []byte // reply being built; owned by the console goroutine
}

// serveAdmin runs an admin console after the client authenticated. It
// returns a *clientError when the user may not use the console, and nil
// once a console session ends.
func (s *Server) serveAdmin(nc net.Conn, rd *wire.Reader, log zerolog.Logger, user string, params map[string]string) error {
	cfg := s.Config()
	super := slices.Contains(cfg.AdminUsers, user)
	if !super && !slices.Contains(cfg.StatsUsers, user) {
		log.Warn().Msg("admin console refused: user is in neither admin_users nor stats_users")
		return &clientError{codeInvalidAuthSpec, fmt.Sprintf("not allowed: user %q is in neither admin_users nor stats_users", user)}
	}
	_ = nc.SetDeadline(time.Time{})
	ac := &adminConn{
		s: s, nc: nc, rd: rd, id: s.nextSessionID.Add(1), user: user, appName: params["application_name"],
		super: super, connected: time.Now(),
	}
	ac.log = log.With().Uint64("session", ac.id).Bool("admin_console", true).Logger()
	s.admin.mu.Lock()
	if s.admin.conns == nil {
		s.admin.conns = map[uint64]*adminConn{}
	}
	s.admin.conns[ac.id] = ac
	s.admin.mu.Unlock()
	defer func() {
		s.admin.mu.Lock()
		delete(s.admin.conns, ac.id)
		s.admin.mu.Unlock()
	}()
	s.admin.statsOnce.Do(func() { go s.statsTicker() })

	stop := make(chan struct{})
	defer close(stop)
	go ac.watchShutdown(stop)

	ac.log.Info().Bool("admin", super).Msg("admin console connected")
	ac.startupReply(params)
	err := ac.loop()
	ac.log.Info().Err(err).Msg("admin console disconnected")
	return nil
}

// adminParams are the ParameterStatus values a console reports.
func adminParams(version, appName string) [][2]string {
	return [][2]string{
		{"server_version", "16.0 (pgtide " + version + ")"},
		{"server_encoding", "UTF8"},
		{"client_encoding", "UTF8"},
		{"DateStyle", "ISO, MDY"},
		{"TimeZone", "UTC"},
		{"integer_datetimes", "on"},
		{"standard_conforming_strings", "on"},
		{"is_superuser", "off"},
		{"application_name", appName},
	}
}

func (ac *adminConn) startupReply(params map[string]string) {
	out := ac.out[:0]
	out, _ = (&pgproto3.AuthenticationOk{}).Encode(out)
	for _, kv := range adminParams(ac.s.Version, params["application_name"]) {
		out, _ = (&pgproto3.ParameterStatus{Name: kv[0], Value: kv[1]}).Encode(out)
	}
	// A key nobody can use: cancel requests for the console are ignored.
	var key [4]byte
	v := randUint64()
	for i := range key {
		key[i] = byte(v >> (8 * i))
	}
	out, _ = (&pgproto3.BackendKeyData{ProcessID: uint32(v >> 32), SecretKey: key[:]}).Encode(out)
	out, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(out)
	ac.out = out
	ac.flush()
}

// flush writes the reply built in ac.out.
func (ac *adminConn) flush() {
	if len(ac.out) == 0 {
		return
	}
	ac.wmu.Lock()
	_ = ac.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := ac.nc.Write(ac.out)
	ac.wmu.Unlock()
	if err != nil {
		_ = ac.nc.Close()
	}
	ac.out = ac.out[:0]
	if cap(ac.out) > 256<<10 {
		ac.out = nil
	}
}

// fatal tells the console why it is closed, and closes it (any goroutine).
func (ac *adminConn) fatal(code, msg string) {
	ac.wmu.Lock()
	_ = ac.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = ac.nc.Write(errorFrame("FATAL", code, msg))
	ac.wmu.Unlock()
	_ = ac.nc.Close()
}

// watchShutdown closes the console once the server stops: at Close, or
// during a drain (SHUTDOWN, SIGINT, SIGTERM) once only consoles are left,
// so a console can watch the drain but does not hold it up.
func (ac *adminConn) watchShutdown(stop chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		st := ac.s.state.Load()
		if st == stateRunning {
			continue
		}
		ac.s.admin.mu.Lock()
		n := len(ac.s.admin.conns)
		ac.s.admin.mu.Unlock()
		if st == stateClosed || ac.s.clients.Load() <= int64(n) {
			ac.fatal(codeAdminShutdown, "terminating connection due to administrator command")
			return
		}
	}
}

// loop reads the console's messages until Terminate or disconnect.
func (ac *adminConn) loop() error {
	skipping := false // an extended-protocol message was refused: skip to Sync
	for {
		typ, body, err := ac.rd.ReadMessage(adminMaxBody)
		if err != nil {
			return classifyClientErr(err)
		}
		switch typ {
		case 'Q':
			if skipping {
				continue
			}
			q := string(body)
			if i := strings.IndexByte(q, 0); i >= 0 {
				q = q[:i]
			}
			ac.query(q)
		case 'X':
			return nil
		case 'S':
			skipping = false
			ac.out, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(ac.out)
			ac.flush()
		case 'H':
		case 'P', 'B', 'D', 'E', 'C':
			if !skipping {
				skipping = true
				ac.out = append(ac.out, errorFrame("ERROR", codeFeatureNotSupported, "admin console supports only simple queries")...)
				ac.flush()
			}
		case 'F':
			ac.out = append(ac.out, errorFrame("ERROR", codeFeatureNotSupported, "admin console supports only simple queries")...)
			ac.out, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(ac.out)
			ac.flush()
		default:
			ac.fatal(codeProtocolViolation, fmt.Sprintf("invalid frontend message type %d", typ))
			return fmt.Errorf("%w: message type %q", errProtocol, typ)
		}
	}
}

// query runs every statement of a simple Query and ends with ReadyForQuery.
// The first failing statement ends the query, as in PostgreSQL.
func (ac *adminConn) query(q string) {
	ac.reqStart.Store(time.Now().UnixNano())
	defer ac.reqStart.Store(0)
	stmts := splitStatements(q)
	if len(stmts) == 0 {
		ac.out, _ = (&pgproto3.EmptyQueryResponse{}).Encode(ac.out)
	}
	for _, st := range stmts {
		cmd, err := parseAdminCommand(st)
		if err == nil {
			err = ac.exec(cmd)
		}
		if err != nil {
			ce, ok := err.(*clientError)
			if !ok {
				ce = &clientError{codeInternalError, err.Error()}
			}
			ac.log.Info().Str("command", st).Str("sqlstate", ce.Code).Str("error", ce.Msg).Msg("admin command failed")
			ac.out = append(ac.out, errorFrame("ERROR", ce.Code, ce.Msg)...)
			break
		}
	}
	ac.out, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(ac.out)
	ac.flush()
}

const codeInternalError = "XX000"

// adminCmd is one parsed console command.
type adminCmd struct {
	Verb string // upper case: SHOW, PAUSE, KILL_CLIENT, ...
	Arg  string // SHOW's subject and SHUTDOWN's mode in upper case; a database name as written; "" when none
}

type argRule int

const (
	argNone argRule = iota
	argOptional
	argRequired
)

// adminVerbs: the commands, their argument, and whether stats_users may
// run them.
var adminVerbs = map[string]struct {
	arg      argRule
	readOnly bool
}{
	"SHOW": {argRequired, true}, "PAUSE": {argOptional, false}, "RESUME": {argOptional, false},
	"RECONNECT": {argOptional, false}, "DISABLE": {argRequired, false}, "ENABLE": {argRequired, false},
	"KILL": {argOptional, false}, "KILL_CLIENT": {argRequired, false}, "WAIT_CLOSE": {argOptional, false},
	"RELOAD": {argNone, false}, "SHUTDOWN": {argOptional, false},
}

var showSubjects = []string{
	"HELP", "POOLS", "CLIENTS", "SERVERS", "DATABASES", "USERS", "STATS", "STATS_TOTALS",
	"STATS_AVERAGES", "CONFIG", "LISTS", "STATE", "VERSION",
}

func syntaxError(format string, args ...any) error {
	return &clientError{codeSyntaxError, fmt.Sprintf(format, args...)}
}

// splitStatements splits a simple Query at semicolons outside double
// quotes, dropping empty statements.
func splitStatements(q string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case '"':
			quoted = !quoted
		case ';':
			if !quoted {
				if st := strings.TrimSpace(q[start:i]); st != "" {
					out = append(out, st)
				}
				start = i + 1
			}
		}
	}
	if st := strings.TrimSpace(q[start:]); st != "" {
		out = append(out, st)
	}
	return out
}

// adminWords splits a statement into words: bare words, or identifiers in
// double quotes ("" inside stands for one quote).
func adminWords(st string) ([]string, error) {
	var words []string
	for i := 0; i < len(st); {
		r := rune(st[i])
		switch {
		case unicode.IsSpace(r):
			i++
		case r == '"':
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(st) {
					return nil, syntaxError("unterminated quoted identifier in %q", st)
				}
				if st[j] == '"' {
					if j+1 < len(st) && st[j+1] == '"' {
						b.WriteByte('"')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(st[j])
				j++
			}
			if b.Len() == 0 {
				return nil, syntaxError("zero-length quoted identifier in %q", st)
			}
			words = append(words, b.String())
			i = j + 1
		default:
			j := i
			for j < len(st) && !unicode.IsSpace(rune(st[j])) && st[j] != '"' {
				j++
			}
			words = append(words, st[i:j])
			i = j
		}
	}
	return words, nil
}

// parseAdminCommand parses one console statement (no semicolons).
func parseAdminCommand(st string) (adminCmd, error) {
	st = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(st), ";"))
	words, err := adminWords(st)
	if err != nil {
		return adminCmd{}, err
	}
	if len(words) == 0 {
		return adminCmd{}, syntaxError("empty command")
	}
	verb := strings.ToUpper(words[0])
	spec, ok := adminVerbs[verb]
	if !ok {
		return adminCmd{}, syntaxError("invalid command %q, use SHOW HELP;", st)
	}
	args := words[1:]
	switch {
	case len(args) > 1:
		return adminCmd{}, syntaxError("too many arguments to %s", verb)
	case len(args) == 1 && spec.arg == argNone:
		return adminCmd{}, syntaxError("%s takes no argument", verb)
	case len(args) == 0 && spec.arg == argRequired:
		if verb == "SHOW" {
			return adminCmd{}, syntaxError("SHOW needs a subject, use SHOW HELP;")
		}
		return adminCmd{}, syntaxError("%s needs an argument", verb)
	}
	cmd := adminCmd{Verb: verb}
	if len(args) == 1 {
		cmd.Arg = args[0]
	}
	switch verb {
	case "SHOW":
		cmd.Arg = strings.ToUpper(cmd.Arg)
		if !slices.Contains(showSubjects, cmd.Arg) {
			return adminCmd{}, syntaxError("unknown SHOW subject %q, use SHOW HELP;", args[0])
		}
	case "SHUTDOWN":
		cmd.Arg = strings.ToUpper(cmd.Arg)
		if cmd.Arg != "" && cmd.Arg != "WAIT_FOR_SERVERS" && cmd.Arg != "WAIT_FOR_CLIENTS" {
			return adminCmd{}, syntaxError("SHUTDOWN takes WAIT_FOR_SERVERS or WAIT_FOR_CLIENTS, not %q", args[0])
		}
	case "KILL_CLIENT":
		if _, err := strconv.ParseUint(cmd.Arg, 10, 64); err != nil {
			return adminCmd{}, syntaxError("invalid client id %q", cmd.Arg)
		}
	}
	return cmd, nil
}

// exec runs one command, appending its reply (without ReadyForQuery).
func (ac *adminConn) exec(cmd adminCmd) error {
	if !ac.super && !adminVerbs[cmd.Verb].readOnly {
		return &clientError{codeInsufficientPrivilege, "admin access needed"}
	}
	s := ac.s
	if cmd.Verb == "SHOW" {
		return ac.show(cmd.Arg)
	}
	ac.log.Info().Str("command", cmd.Verb).Str("arg", cmd.Arg).Msg("admin command")
	switch cmd.Verb {
	case "PAUSE":
		if err := s.checkDB(cmd.Arg); err != nil {
			return err
		}
		s.admin.mu.Lock()
		if cmd.Arg == "" {
			s.admin.pausedAll.Store(true)
		} else {
			s.admin.db(cmd.Arg).paused.Store(true)
		}
		s.admin.mu.Unlock()
		if err := s.waitReleased(cmd.Arg); err != nil {
			return err
		}
	case "RESUME":
		if err := s.checkDB(cmd.Arg); err != nil {
			return err
		}
		s.resume(cmd.Arg)
	case "DISABLE", "ENABLE":
		if err := s.checkDB(cmd.Arg); err != nil {
			return err
		}
		s.admin.db(cmd.Arg).disabled.Store(cmd.Verb == "DISABLE")
	case "KILL":
		if err := s.checkDB(cmd.Arg); err != nil {
			return err
		}
		s.kill(cmd.Arg)
	case "RECONNECT":
		if err := s.checkDB(cmd.Arg); err != nil {
			return err
		}
		for _, p := range s.poolList(cmd.Arg) {
			p.e.pool.Reconnect()
		}
	case "WAIT_CLOSE":
		if err := s.checkDB(cmd.Arg); err != nil {
			return err
		}
		if err := s.waitClosed(cmd.Arg); err != nil {
			return err
		}
	case "KILL_CLIENT":
		if err := s.killClient(cmd.Arg); err != nil {
			return err
		}
	case "RELOAD":
		if s.OnReload == nil {
			return &clientError{codeFeatureNotSupported, "RELOAD is not available in this process"}
		}
		if err := s.OnReload(); err != nil {
			return &clientError{codeConfigFileError, "configuration not reloaded (the running one stays): " + err.Error()}
		}
	case "SHUTDOWN":
		switch cmd.Arg {
		case "WAIT_FOR_SERVERS":
			s.SafeShutdown()
		case "WAIT_FOR_CLIENTS":
			s.WaitShutdown(s.Config().ShutdownTimeout.Duration)
		default:
			go s.Close() // Close waits for sessions, this console among them
		}
	}
	ac.out, _ = (&pgproto3.CommandComplete{CommandTag: []byte(cmd.Verb)}).Encode(ac.out)
	return nil
}

// checkDB accepts "" (every database), a [databases] section or a database
// that has a pool (one reached through "*").
func (s *Server) checkDB(name string) error {
	if name == "" {
		return nil
	}
	if _, ok := s.Config().Databases[name]; ok && name != "*" {
		return nil
	}
	if len(s.poolList(name)) > 0 {
		return nil
	}
	return &clientError{codeUndefinedObject, fmt.Sprintf("no such database: %s", name)}
}

// resume lifts PAUSE (and KILL's pause) of db, or of everything.
func (s *Server) resume(db string) {
	a := &s.admin
	a.mu.Lock()
	if db == "" {
		a.pausedAll.Store(false)
		a.dbs.Range(func(_, v any) bool {
			v.(*dbControl).paused.Store(false)
			return true
		})
	} else {
		a.db(db).paused.Store(false)
	}
	a.mu.Unlock()
	a.resumed()
}

type poolItem struct {
	k poolKey
	e *poolEntry
}

// poolList returns the pools of db ("" = all), sorted by database and user.
func (s *Server) poolList(db string) []poolItem {
	s.mu.Lock()
	out := make([]poolItem, 0, len(s.pools))
	for k, e := range s.pools {
		if db == "" || k.db == db {
			out = append(out, poolItem{k, e})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b poolItem) int {
		if c := strings.Compare(a.k.db, b.k.db); c != 0 {
			return c
		}
		return strings.Compare(a.k.user, b.k.user)
	})
	return out
}

// sessionList returns the logged-in client sessions, ordered by id.
func (s *Server) sessionList() []*session {
	s.mu.Lock()
	out := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		out = append(out, ss)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b *session) int { return cmpU64(a.adm.id, b.adm.id) })
	return out
}

// waitReleased waits until no server of db ("" = all) is lent and no
// borrow is past the gate: PAUSE returns when in-flight transactions have
// finished.
func (s *Server) waitReleased(db string) error {
	for {
		done := true
		for _, p := range s.poolList(db) {
			if p.e.pool.Stats().Lent > 0 {
				done = false
				break
			}
		}
		if done {
			s.admin.dbs.Range(func(k, v any) bool {
				if (db == "" || k.(string) == db) && v.(*dbControl).inflight.Load() > 0 {
					done = false
				}
				return done
			})
		}
		if done {
			return nil
		}
		if s.state.Load() != stateRunning {
			// A console blocked here must not hold up the drain.
			return &clientError{codeAdminShutdown, "pgtide is shutting down"}
		}
		if db == "" && !s.admin.pausedAll.Load() || db != "" && !s.admin.paused(s.admin.db(db)) {
			return &clientError{codeQueryCanceled, "PAUSE was lifted by RESUME before every server was released"}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill closes every client and server of db ("" = every database) at once
// and pauses it, as PgBouncer's KILL.
func (s *Server) kill(db string) {
	a := &s.admin
	a.mu.Lock()
	if db == "" {
		a.pausedAll.Store(true)
	} else {
		a.db(db).paused.Store(true)
	}
	a.mu.Unlock()
	for _, p := range s.poolList(db) {
		p.e.pool.Reconnect() // idle servers now, lent ones when released
	}
	for _, ss := range s.sessionList() {
		if db != "" && ss.dbName != db {
			continue
		}
		ss.mu.Lock()
		sc := ss.sc
		ss.mu.Unlock()
		ss.kill(codeAdminShutdown, "terminating connection due to administrator command")
		if sc != nil {
			// The pump sees the closed socket and discards the server.
			_ = sc.Net.Close()
		}
	}
}

// killClient closes the client (or console) with the given id.
func (s *Server) killClient(arg string) error {
	id, _ := strconv.ParseUint(arg, 10, 64)
	for _, ss := range s.sessionList() {
		if ss.adm.id == id {
			ss.kill(codeAdminShutdown, "terminating connection due to administrator command")
			return nil
		}
	}
	for _, ac := range s.admin.consoles() {
		if ac.id == id {
			ac.fatal(codeAdminShutdown, "terminating connection due to administrator command")
			return nil
		}
	}
	return &clientError{codeUndefinedObject, fmt.Sprintf("no such client: %d", id)}
}

// waitClosed waits until no server of db ("" = all) that RECONNECT marked
// is still open. Lent servers are seen through the sessions they are
// attached to; a server between borrower and pool for an instant is not,
// so the condition must hold on two looks in a row.
func (s *Server) waitClosed(db string) error {
	clean := 0
	for clean < 2 {
		if s.markedServers(db) == 0 {
			clean++
		} else {
			clean = 0
		}
		if s.state.Load() != stateRunning {
			// A console blocked here must not hold up the drain.
			return &clientError{codeAdminShutdown, "pgtide is shutting down"}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func (s *Server) markedServers(db string) int {
	n := 0
	for _, p := range s.poolList(db) {
		for _, ci := range p.e.pool.IdleConns() {
			if ci.CloseNeeded {
				n++
			}
		}
	}
	for _, ss := range s.sessionList() {
		if db != "" && ss.dbName != db {
			continue
		}
		ss.mu.Lock()
		sc := ss.sc
		ss.mu.Unlock()
		if sc != nil && sc.Info().CloseNeeded {
			n++
		}
	}
	return n
}
