// Package admin is the admin console: clients that log in to the virtual
// database "pgtide" (config.AdminDatabaseName) or "pgbouncer" as a user
// listed in admin_users (every command) or stats_users (SHOW only) get a
// console speaking the simple query protocol, with PgBouncer 1.25's
// commands, column names and column types (show.go).
//
// The console reads and drives the pooler only through Backend, which
// *proxy.Server implements; it imports neither proxy nor pool.
package admin

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/proxy/wire"
)

// SQLSTATE codes of the admin console.
const (
	codeInsufficientPrivilege  = "42501"
	codeSyntaxError            = "42601"
	codeUndefinedObject        = "42704"
	codeConfigFileError        = "F0000"
	codeInternalError          = "XX000"
	codeInvalidAuthSpec        = "28000"
	codeAdminShutdown          = "57P01"
	codeQueryCanceled          = "57014"
	codeFeatureNotSupported    = "0A000"
	codeProtocolViolation      = "08P01"
	codeInvalidParameterValue  = "22023"
	codeCantChangeRuntimeParam = "55P02"
	codeNotInPrerequisiteState = "55000"
)

// maxBody bounds a message on the admin console.
const maxBody = 1 << 20

// Error is an error the console's client is told about; Code is the
// SQLSTATE. Serve returns one when the user may not use the console.
type Error struct {
	Code, Msg string
}

func (e *Error) Error() string { return e.Msg + " (SQLSTATE " + e.Code + ")" }

func syntaxError(format string, args ...any) error {
	return &Error{codeSyntaxError, fmt.Sprintf(format, args...)}
}

// Console serves admin console connections for one Backend.
type Console struct {
	b Backend

	mu    sync.Mutex
	conns map[uint64]*conn // open consoles by id
	stats statsWindow      // SHOW STATS averages (stats.go)

	statsOnce sync.Once
}

// New returns the console of b.
func New(b Backend) *Console {
	return &Console{b: b, conns: map[uint64]*conn{}}
}

// conn is one console connection. Its goroutine (Serve) alone reads nc;
// writes take wmu (a KILL_CLIENT or the shutdown watch write too).
type conn struct {
	c         *Console
	nc        net.Conn
	rd        *wire.Reader
	id        uint64
	db, user  string // db: the name it logged in with, pgtide or pgbouncer
	appName   string
	super     bool // admin_users: every command; stats_users: SHOW only
	connected time.Time
	log       zerolog.Logger
	reqStart  atomic.Int64 // unix ns when the running command started, 0 when idle

	wmu sync.Mutex
	// running: a command is being answered; stopping: the console must
	// close once it has been (both under wmu).
	running, stopping bool
	out               []byte // reply being built; owned by the console goroutine
}

// Serve runs a console on nc after the client authenticated as user for
// database db. It returns an *Error when the user may not use the console,
// and nil once a console session ends.
func (c *Console) Serve(nc net.Conn, rd *wire.Reader, log zerolog.Logger, db, user string, params map[string]string) error {
	cfg := c.b.Config()
	super := slices.Contains(cfg.AdminUsers, user)
	if !super && !slices.Contains(cfg.StatsUsers, user) {
		log.Warn().Msg("admin console refused: user is in neither admin_users nor stats_users")
		return &Error{codeInvalidAuthSpec, fmt.Sprintf("not allowed: user %q is in neither admin_users nor stats_users", user)}
	}
	_ = nc.SetDeadline(time.Time{})
	ac := &conn{
		c: c, nc: nc, rd: rd, id: c.b.NextID(), db: db, user: user, appName: params["application_name"],
		super: super, connected: time.Now(),
	}
	ac.log = log.With().Uint64("session", ac.id).Bool("admin_console", true).Logger()
	c.mu.Lock()
	c.conns[ac.id] = ac
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.conns, ac.id)
		c.mu.Unlock()
	}()
	c.statsOnce.Do(func() { go c.statsTicker() })

	stop := make(chan struct{})
	defer close(stop)
	go ac.watchShutdown(stop)

	ac.log.Info().Bool("admin", super).Msg("admin console connected")
	ac.startupReply()
	err := ac.loop()
	ac.log.Info().Err(err).Msg("admin console disconnected")
	return nil
}

// consoles returns the open consoles, ordered by id.
func (c *Console) consoles() []*conn {
	c.mu.Lock()
	out := make([]*conn, 0, len(c.conns))
	for _, ac := range c.conns {
		out = append(out, ac)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(x, y *conn) int { return cmpU64(x.id, y.id) })
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

// params are the ParameterStatus values a console reports.
func params(version, appName string) [][2]string {
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

func randUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

func (ac *conn) startupReply() {
	out := ac.out[:0]
	out, _ = (&pgproto3.AuthenticationOk{}).Encode(out)
	for _, kv := range params(ac.c.b.BuildVersion(), ac.appName) {
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
func (ac *conn) flush() {
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
func (ac *conn) fatal(code, msg string) {
	ac.wmu.Lock()
	_ = ac.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = ac.nc.Write(wire.ErrorFrame("FATAL", code, msg))
	ac.wmu.Unlock()
	_ = ac.nc.Close()
}

// watchShutdown closes the console when the Backend says consoles must go;
// a command being answered (SHUTDOWN itself) gets its reply first.
func (ac *conn) watchShutdown(stop chan struct{}) {
	select {
	case <-stop:
	case <-ac.c.b.Stopping():
		ac.wmu.Lock()
		ac.stopping = true
		running := ac.running
		ac.wmu.Unlock()
		if !running {
			ac.fatal(codeAdminShutdown, "terminating connection due to administrator command")
		}
	}
}

// busy marks a command as being answered; done ends it, closing the
// console if it must go.
func (ac *conn) busy() {
	ac.wmu.Lock()
	ac.running = true
	ac.wmu.Unlock()
}

func (ac *conn) done() {
	ac.wmu.Lock()
	ac.running = false
	stopping := ac.stopping
	ac.wmu.Unlock()
	if stopping {
		ac.fatal(codeAdminShutdown, "terminating connection due to administrator command")
	}
}

var errProtocol = errors.New("protocol violation")

// loop reads the console's messages until Terminate or disconnect.
func (ac *conn) loop() error {
	skipping := false // an extended-protocol message was refused: skip to Sync
	for {
		typ, body, err := ac.rd.ReadMessage(maxBody)
		if err != nil {
			return err
		}
		switch typ {
		case 'Q':
			if skipping {
				continue
			}
			q := string(body)
			for i := 0; i < len(q); i++ {
				if q[i] == 0 {
					q = q[:i]
					break
				}
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
				ac.out = append(ac.out, wire.ErrorFrame("ERROR", codeFeatureNotSupported, "admin console supports only simple queries")...)
				ac.flush()
			}
		case 'F':
			ac.out = append(ac.out, wire.ErrorFrame("ERROR", codeFeatureNotSupported, "admin console supports only simple queries")...)
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
func (ac *conn) query(q string) {
	ac.busy()
	defer ac.done()
	ac.reqStart.Store(time.Now().UnixNano())
	defer ac.reqStart.Store(0)
	stmts := splitStatements(q)
	if len(stmts) == 0 {
		ac.out, _ = (&pgproto3.EmptyQueryResponse{}).Encode(ac.out)
	}
	for _, st := range stmts {
		cmd, err := parseCommand(st)
		if err == nil {
			err = ac.exec(cmd)
		}
		if err != nil {
			ce, ok := err.(*Error)
			if !ok {
				ce = &Error{codeInternalError, err.Error()}
			}
			ac.log.Info().Str("command", st).Str("sqlstate", ce.Code).Str("error", ce.Msg).Msg("admin command failed")
			ac.out = append(ac.out, wire.ErrorFrame("ERROR", ce.Code, ce.Msg)...)
			break
		}
	}
	ac.out, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(ac.out)
	ac.flush()
}

var errShutdown = &Error{codeAdminShutdown, "pgtide is shutting down"}

// exec runs one command, appending its reply (without ReadyForQuery).
func (ac *conn) exec(cmd command) error {
	if cmd.Verb == "SET" {
		return ac.set(cmd.Arg, cmd.Value) // checks the privilege after the settings drivers fake
	}
	if !ac.super && !verbs[cmd.Verb].readOnly {
		return &Error{codeInsufficientPrivilege, "admin access needed"}
	}
	b := ac.c.b
	if cmd.Verb == "SHOW" {
		return ac.show(cmd.Arg)
	}
	ac.log.Info().Str("command", cmd.Verb).Str("arg", cmd.Arg).Msg("admin command")
	if cmd.Verb != "KILL_CLIENT" && cmd.Verb != "RELOAD" && cmd.Verb != "SHUTDOWN" && cmd.Arg != "" && !b.HasDatabase(cmd.Arg) {
		return &Error{codeUndefinedObject, fmt.Sprintf("no such database: %s", cmd.Arg)}
	}
	switch cmd.Verb {
	case "PAUSE":
		b.Pause(cmd.Arg)
		switch err := b.WaitPaused(context.Background(), cmd.Arg); {
		case errors.Is(err, ErrStopping):
			return errShutdown // a console blocked here must not hold up the drain
		case errors.Is(err, ErrResumed):
			return &Error{codeQueryCanceled, "PAUSE was lifted by RESUME before every server was released"}
		case err != nil:
			return err
		}
	case "SUSPEND":
		if err := b.Suspend(); err != nil {
			if errors.Is(err, ErrStopping) {
				return errShutdown
			}
			return &Error{codeNotInPrerequisiteState, "already suspended"}
		}
		switch err := b.WaitSuspended(context.Background()); {
		case errors.Is(err, ErrStopping):
			return errShutdown
		case errors.Is(err, ErrResumed):
			return &Error{codeQueryCanceled, "SUSPEND was lifted by RESUME before every session was quiet"}
		case err != nil:
			return err
		}
	case "RESUME":
		// As PgBouncer: a RESUME cannot undo a shutdown, so it says so
		// rather than answer as if the pooler were running again.
		if !b.State().Running {
			return errShutdown
		}
		b.Resume(cmd.Arg)
	case "DISABLE", "ENABLE":
		b.SetDisabled(cmd.Arg, cmd.Verb == "DISABLE")
	case "KILL":
		b.Kill(cmd.Arg)
	case "RECONNECT":
		b.Reconnect(cmd.Arg)
	case "WAIT_CLOSE":
		if err := b.WaitClosed(context.Background(), cmd.Arg); err != nil {
			if errors.Is(err, ErrStopping) {
				return errShutdown
			}
			return err
		}
	case "KILL_CLIENT":
		if err := ac.c.killClient(cmd.Arg); err != nil {
			return err
		}
	case "RELOAD":
		if err := b.ReloadConfig(); err != nil {
			if errors.Is(err, ErrNoReload) {
				return &Error{codeFeatureNotSupported, "RELOAD is not available in this process"}
			}
			return &Error{codeConfigFileError, "configuration not reloaded (the running one stays): " + err.Error()}
		}
	case "SHUTDOWN":
		b.Shutdown(cmd.Arg)
	}
	ac.out, _ = (&pgproto3.CommandComplete{CommandTag: []byte(cmd.Verb)}).Encode(ac.out)
	return nil
}

// killClient closes the client (or console) with the given id.
func (c *Console) killClient(arg string) error {
	var id uint64
	_, _ = fmt.Sscan(arg, &id)
	if c.b.KillClient(id) {
		return nil
	}
	for _, ac := range c.consoles() {
		if ac.id == id {
			ac.fatal(codeAdminShutdown, "terminating connection due to administrator command")
			return nil
		}
	}
	return &Error{codeUndefinedObject, fmt.Sprintf("no such client: %d", id)}
}
