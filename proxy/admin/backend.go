package admin

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/pgtide/pgtide/proxy/config"
)

// Backend is what the console needs of the pooler; *proxy.Server implements
// it. Every method is safe for concurrent use; the row methods return
// snapshots the console may keep.
type Backend interface {
	// Config is the configuration in force (the last reload's).
	Config() *config.Config
	// BootConfig is the configuration the process started with: the
	// settings that need a restart (listen, ...) still run with its values.
	BootConfig() *config.Config
	// BuildVersion is what SHOW VERSION reports after "pgtide ".
	BuildVersion() string
	// NextID numbers a console in the id space of client sessions (SHOW
	// CLIENTS id, KILL_CLIENT).
	NextID() uint64

	State() State
	// Stopping is closed when consoles must close: at once when the
	// process exits, during a drain once only consoles are left, so that a
	// console can watch the drain but does not hold it up.
	Stopping() <-chan struct{}
	// Done is closed when the process has shut down.
	Done() <-chan struct{}

	PoolRows() []Pool
	ClientRows() []Client
	ServerRows() []Server
	// Clients counts every client connection, logins and consoles included.
	Clients() int
	// DBState reports PAUSE and DISABLE of one database (PAUSE of every
	// database is in State).
	DBState(db string) (paused, disabled bool)
	// HasDatabase reports whether db is a [databases] section or a
	// database that has a pool (one reached through "*").
	HasDatabase(db string) bool

	// Pause stops lending servers of db ("" = every database); WaitPaused
	// then returns once none is lent, with ErrResumed when a RESUME came
	// first and ErrStopping when shutdown began.
	Pause(db string)
	WaitPaused(ctx context.Context, db string) error
	Resume(db string)
	// Suspend stops reading every client socket but the consoles' (an
	// error when already suspended); WaitSuspended then returns once no
	// session has anything in flight, with ErrResumed and ErrStopping as
	// WaitPaused. Resume("") ends it.
	Suspend() error
	WaitSuspended(ctx context.Context) error
	SetDisabled(db string, disabled bool)
	// Kill closes every client and server of db and pauses it.
	Kill(db string)
	// KillClient closes the client session with that id; false when there
	// is none.
	KillClient(id uint64) bool
	// Reconnect marks every server of db open now to be closed instead of
	// reused; WaitClosed returns once none of them is open (ErrStopping as
	// for WaitPaused).
	Reconnect(db string)
	WaitClosed(ctx context.Context, db string) error
	// ReloadConfig re-reads the configuration file (ErrNoReload when this
	// process cannot), returning why it was not applied.
	ReloadConfig() error
	// ApplyConfig puts cfg in force as a reload does (SET); ErrNoReload
	// when this process cannot.
	ApplyConfig(cfg *config.Config) error
	// Shutdown starts a shutdown: "" (now), "WAIT_FOR_SERVERS" (SIGINT) or
	// "WAIT_FOR_CLIENTS" (SIGTERM).
	Shutdown(mode string)
}

// Errors a Backend returns for the console to translate.
var (
	ErrStopping = errors.New("pgtide is shutting down")
	ErrResumed  = errors.New("resumed")
	ErrNoReload = errors.New("no reload in this process")
)

// State is the process-wide state of SHOW STATE.
type State struct {
	Running   bool // no shutdown has begun
	PausedAll bool // PAUSE (or KILL) without a database
	Suspended bool // SUSPEND until RESUME
}

// Pool is one (database, user) pool.
type Pool struct {
	Database, User string
	Mode           string // the pool mode new clients of this pool get
	Open, Idle     int    // server connections: open (idle + lent + dialing), idle
	// Used: the idle ones that must pass server_check_query before they
	// are lent again (idle longer than server_check_delay), PgBouncer's sv_used.
	Used   int
	Lent   int
	Totals Totals
}

// Totals are a pool's counters since it was created (SHOW STATS).
type Totals struct {
	Assign, Xact, Query, Recv, Sent uint64
	XactNs, QueryNs, WaitNs         int64
	ClientParse, ServerParse, Bind  uint64
}

// Client is one logged-in client session.
type Client struct {
	ID             uint64
	Database, User string
	Addr, Local    net.Addr
	Connected      time.Time
	Request        time.Time // start of the last request; zero = none yet
	WaitStart      time.Time // zero when not waiting for a server
	Server         uint64    // the linked server's id, 0 = none
	App            string
	Prepared       int
	TLS            string
	Pin            string // why the client is pinned to its server, "" = not pinned
}

// Server is one server connection.
type Server struct {
	ID             uint64
	PID            uint32
	Database, User string
	State          string // "active" (linked to a client), "idle", or "used" (idle, to be checked before it is lent)
	Addr, Local    net.Addr
	Connected      time.Time
	Request        time.Time
	CloseNeeded    bool
	Link           uint64 // the linked client's id, 0 = none
	App            string
}
