// Package pool owns server connections: dialing and authenticating them,
// lending them out per (database, user), resetting, health checks and
// lifetimes. It speaks only the little protocol it needs for that (a simple
// query and its replies); client-facing protocol work lives in package proxy.
package pool

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/proxy/wire"
)

// ServerReadBuf is the initial read buffer of a server connection.
const ServerReadBuf = 16 << 10

// maxServerMsg bounds messages pgtide itself must decode from a server.
const maxServerMsg = 64 << 20

// DialConfig says where and as whom to open server connections.
type DialConfig struct {
	// Host is a host name, an IP address or a unix socket directory (starts
	// with "/"), or several, comma-separated (hosts.go).
	Host string
	Port int // the port of every host (unless Ports)
	// Ports, when set, gives each host of Host its own port: as many,
	// comma-separated, in the same order ("5432,5433"). A string keeps
	// DialConfig comparable.
	Ports string
	// Balancer, when set, orders the hosts of a list for each dial
	// (load_balance_hosts; hosts.go); nil: the list's order. A pointer
	// keeps DialConfig comparable; it is set per dial, not configured.
	Balancer *Balancer
	Database string
	User     string
	Password string
	Timeout  time.Duration
	// TLS to the server, as libpq's sslmode, sslrootcert, sslcert, sslkey
	// ("" mode = disable).
	SSLMode, SSLRootCert, SSLCert, SSLKey string
	// RequireAuth lists, comma-separated, the authentication methods the
	// server may ask for, as libpq's require_auth: "password", "md5",
	// "scram-sha-256", "none" (no authentication at all). "" allows every
	// method pgtide speaks. A string keeps DialConfig comparable.
	RequireAuth string
}

// Conn is one authenticated server connection.
//
// Ownership: a Conn is owned by the pool while idle and by exactly one
// borrower between Acquire and Release/Discard. The borrower alone reads and
// writes Net and Reader and may change Params, Applied and TxStatus. In the
// proxy the borrower is a session: its pump goroutine and its client
// goroutine both update these three, always under the session's mu, and
// Exec/ExecParams (pgtide's own queries) run only while the pump is not
// reading.
type Conn struct {
	ID       uint64
	Net      net.Conn
	Reader   *wire.Reader
	PID      uint32
	Secret   []byte
	Addr     net.Addr // where cancel requests for this backend go
	TxStatus byte     // from the last ReadyForQuery: 'I', 'T' or 'E'

	// Params holds the values the server last reported with ParameterStatus.
	Params map[string]string
	// Defaults is Params as the server reported them at login, before any
	// SET: its own defaults for this database and role. Never modified.
	Defaults map[string]string
	// Applied records parameters pgtide set on this connection, keyed by the
	// lower-case name: the requested value and the reported value it gave.
	Applied map[string]AppliedParam
	// LoginUser is the session_authorization the server reported at login:
	// the pool's baseline, which SET SESSION AUTHORIZATION DEFAULT returns to.
	LoginUser string
	// Proto is per-connection state of the borrower's protocol layer (the
	// proxy's prepared statements); the pool never looks at it.
	Proto any

	// cancelUnsure: a cancel request for this backend was sent and the
	// server was not seen to act on it (Cancel gave up waiting, or its
	// write failed): it may still arrive, and would stop whatever the
	// backend runs then. Such a connection is never lent again (Release
	// closes it; Reusable).
	cancelUnsure atomic.Bool
	// partial: the borrower has written part of a message and not yet the
	// rest (SetPartial): the server takes the next bytes it gets as that
	// rest, so nothing can be sent to clean it, and it is never lent in
	// that state (Reusable).
	partial atomic.Bool
	// holder is the borrower's name for whom the connection was last lent
	// to (SetHolder); 0 for none. It outlives the loan: the pool keeps it
	// until the next borrower sets it again, and drops it with the
	// connection.
	holder atomic.Uint32

	created  time.Time
	lifetime time.Duration // jittered server_lifetime, 0 = none
	lastUsed time.Time
	pool     *Pool
	tlsConf  *tls.Config // non-nil when the connection uses TLS; cancels use it too

	// Alive's check, made once per connection so that a borrow allocates
	// nothing: the socket, the peek and its result (the pool's goroutine).
	raw       syscall.RawConn
	peekFn    func(fd uintptr) bool
	peekAlive bool
	peekBuf   [1]byte

	// WriteThenWait's state for its callback, made once (the borrower's
	// goroutine).
	wtwFn  func(fd uintptr) bool
	wtwBuf []byte
	wtwN   int
	wtwErr error
	wtwMid bool // the write is done: the next call is the wake-up
}

// AppliedParam is a parameter pgtide set on a server for a client.
type AppliedParam struct{ Want, Got string }

// SetHolder records for whom the connection is lent, as a number the
// borrower chooses (the proxy: the cancel-key process ID pgtide minted for
// a session-mode client, 0 otherwise); HolderOf finds it by backend PID.
// Any goroutine; it stays until set again or the connection closes.
func (c *Conn) SetHolder(h uint32) { c.holder.Store(h) }

// Holder is what SetHolder last recorded.
func (c *Conn) Holder() uint32 { return c.holder.Load() }

// Pool returns the pool the connection belongs to.
func (c *Conn) Pool() *Pool { return c.pool }

// Created is when the connection was opened.
func (c *Conn) Created() time.Time { return c.created }

// Dial opens and authenticates a server connection with a plaintext
// password (or none). It runs the login itself (Login), not pgconn's: the
// SCRAM password must be SASLprep'd as PostgreSQL does (pgconn uses PRECIS,
// which leaves e.g. U+2168 unnormalised), while md5 and cleartext use it raw,
// and server_require_auth must be enforced. The server is started with no
// client-specific parameters; clients' settings are applied with SET when
// they borrow it, so that a reset returns it to neutral.
func Dial(ctx context.Context, dc DialConfig) (*Conn, error) {
	return Login(ctx, dc, LoginSecret{})
}

func quoteConnValue(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// Close closes the socket, telling the server with Terminate first.
func (c *Conn) Close() error {
	_ = c.Net.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.Net.Write([]byte{wire.FeTerminate, 0, 0, 0, 4})
	return c.Net.Close()
}

// Alive reports whether an idle connection still looks usable: nothing is
// waiting to be read (an idle server sends nothing unless it is terminating
// or has an asynchronous message) and the socket is not closed. It costs one
// non-blocking recv syscall.
func (c *Conn) Alive() bool {
	if c.Reader.Len() > 0 {
		return false
	}
	if c.raw == nil && !c.initRaw() {
		return true
	}
	if c.raw == nil {
		return false
	}
	c.peekAlive = true
	err := c.raw.Read(c.peekFn)
	return err == nil && c.peekAlive
}

// peek is Alive's non-blocking look at the socket.
// initRaw caches the socket's raw handle (under TLS the socket beneath). It
// reports false when the connection has no socket to look at; c.raw stays
// nil too when the handle could not be had.
func (c *Conn) initRaw() bool {
	sc, ok := rawConn(c.Net).(syscall.Conn)
	if !ok {
		return false
	}
	if rc, err := sc.SyscallConn(); err == nil {
		c.raw, c.peekFn, c.wtwFn = rc, c.peek, c.writeThenWait
	}
	return true
}

// WriteThenWait writes b to a plain (not TLS) socket and waits until the
// reply can be read or the read deadline passes, without the read that
// would find nothing yet: the socket's readiness is reset before the write,
// so the reply cannot be missed. n is what was written; n < len(b) with
// err nil means the socket's buffer filled (write the rest as usual) or,
// with ok false, that nothing was tried (TLS, no socket). err is the
// write's error, or the wait's (a deadline). The reader must not be in use
// meanwhile: the borrower calls it where it would read.
func (c *Conn) WriteThenWait(b []byte) (n int, ok bool, err error) {
	if c.tlsConf != nil {
		return 0, false, nil
	}
	if c.raw == nil && !c.initRaw() || c.raw == nil {
		return 0, false, nil
	}
	c.wtwBuf, c.wtwN, c.wtwErr, c.wtwMid = b, 0, nil, false
	rerr := c.raw.Read(c.wtwFn)
	n, err = c.wtwN, c.wtwErr
	c.wtwBuf, c.wtwErr = nil, nil
	if err == nil && n == len(b) {
		err = rerr
	}
	return n, true, err
}

func (c *Conn) writeThenWait(fd uintptr) bool {
	if c.wtwMid {
		return true // readable (or closed): the caller reads
	}
	for c.wtwN < len(c.wtwBuf) {
		// A raw call: see proxy/rawio.go for why.
		p := c.wtwBuf[c.wtwN:]
		m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch {
		case e == syscall.EINTR:
		case e == syscall.EAGAIN:
			return true // buffer full: the caller writes the rest
		case e != 0:
			c.wtwErr = e
			return true
		case m == 0:
			c.wtwErr = io.ErrShortWrite
			return true
		default:
			c.wtwN += int(m)
		}
	}
	c.wtwMid = true
	return false
}

func (c *Conn) peek(fd uintptr) bool {
	// A raw call, as the data path's reads and writes (proxy/rawio.go).
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.peekBuf[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	switch {
	case e == syscall.EAGAIN || e == syscall.EWOULDBLOCK:
	case e != 0: // a reset, or EINTR: not known alive
		c.peekAlive = false
	case n > 0: // unexpected data: a FATAL or notice while idle
		c.peekAlive = false
	default: // orderly shutdown
		c.peekAlive = false
	}
	return true
}

// ServerError is an ErrorResponse received from the server.
type ServerError struct {
	Severity, Code, Message string
	// Raw is the whole ErrorResponse frame, to forward to a client as is.
	Raw []byte
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("server: %s: %s (SQLSTATE %s)", e.Severity, e.Message, e.Code)
}

// Exec runs sql with the simple query protocol and consumes every reply up
// to ReadyForQuery, keeping Params and TxStatus current. The replies are
// never seen by a client. The first ErrorResponse is returned as a
// *ServerError after the ReadyForQuery that follows it.
func (c *Conn) Exec(ctx context.Context, sql string) error {
	return c.ExecMulti(ctx, []string{sql})
}

// ExecMulti sends each query as its own Query message in one write and waits
// for all their ReadyForQuery replies.
func (c *Conn) ExecMulti(ctx context.Context, sqls []string) error {
	var out []byte
	for _, q := range sqls {
		var err error
		out, err = (&pgproto3.Query{String: q}).Encode(out)
		if err != nil {
			return err
		}
	}
	return c.roundTrip(ctx, out, len(sqls), nil)
}

// roundTrip writes out, pgtide's own requests, and consumes the replies up
// to the rfqs-th ReadyForQuery: the one reply loop for server-side queries.
// It keeps Params and TxStatus current, refuses a COPY FROM STDIN, hands
// each DataRow body to row (when not nil; valid only during the call) and
// returns the first ErrorResponse as a *ServerError.
func (c *Conn) roundTrip(ctx context.Context, out []byte, rfqs int, row func(body []byte)) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.Net.SetDeadline(dl)
		defer c.Net.SetDeadline(time.Time{})
	}
	if _, err := c.Net.Write(out); err != nil {
		return fmt.Errorf("write to server: %w", err)
	}
	var first error
	for rfqs > 0 {
		typ, body, err := c.Reader.ReadMessage(maxServerMsg)
		if err != nil {
			return fmt.Errorf("read from server: %w", err)
		}
		switch typ {
		case wire.BeReadyForQuery:
			rfqs--
			if len(body) > 0 {
				c.TxStatus = body[0]
			}
		case wire.BeParameterStatus:
			if k, v := wire.ParseParameterStatus(body); k != "" {
				c.Params[k] = v
			}
		case wire.BeDataRow:
			if row != nil {
				row(body)
			}
		case wire.BeErrorResponse:
			if first == nil {
				first = DecodeError(typ, body)
			}
		case wire.BeCopyInResponse: // COPY FROM STDIN from pgtide's own query: refuse it
			fail, _ := (&pgproto3.CopyFail{Message: "COPY not allowed here"}).Encode(nil)
			if _, err := c.Net.Write(fail); err != nil {
				return err
			}
		}
	}
	return first
}

// ParamQuery is one statement for ExecParams: SQL with $n placeholders and
// the text values that fill them.
type ParamQuery struct {
	SQL  string
	Args []string
}

// ExecParams runs each query with the extended protocol (unnamed statement
// and portal, text parameters) in one pipeline ending with a single Sync,
// and consumes every reply up to its ReadyForQuery. Values travel as
// parameters, never inside the SQL text, so no quoting can be broken by a
// client encoding (GBK's trail byte 0x5c) or backslash_quote. A query that
// fails makes the server skip the rest. The unnamed statement is replaced.
func (c *Conn) ExecParams(ctx context.Context, qs []ParamQuery) error {
	out := AppendParamQueries(nil, qs)
	out, _ = (&pgproto3.Sync{}).Encode(out)
	return c.roundTrip(ctx, out, 1, nil)
}

// QueryParams runs one query as ExecParams does and returns its rows, each
// column as text (NULL as ""). Only for small results pgtide asks for itself.
func (c *Conn) QueryParams(ctx context.Context, q ParamQuery) ([][]string, error) {
	var rows [][]string
	err := c.QueryRaw(ctx, q, func(body []byte) {
		if r, ok := wire.ParseDataRow(body); ok {
			rows = append(rows, r)
		}
	})
	return rows, err
}

// QueryRaw runs one query as ExecParams does and hands each DataRow body to
// row, valid only during the call.
func (c *Conn) QueryRaw(ctx context.Context, q ParamQuery, row func(body []byte)) error {
	out := AppendParamQueries(nil, []ParamQuery{q})
	out, _ = (&pgproto3.Sync{}).Encode(out)
	return c.roundTrip(ctx, out, 1, row)
}

// AppendParamQueries appends Parse, Bind and Execute for each query (no
// Sync) to dst.
func AppendParamQueries(dst []byte, qs []ParamQuery) []byte {
	for _, q := range qs {
		dst, _ = (&pgproto3.Parse{Query: q.SQL}).Encode(dst)
		b := pgproto3.Bind{Parameters: make([][]byte, len(q.Args))}
		for i, a := range q.Args {
			b.Parameters[i] = []byte(a)
		}
		dst, _ = b.Encode(dst)
		dst, _ = (&pgproto3.Execute{}).Encode(dst)
	}
	return dst
}

// DecodeError turns an ErrorResponse (or NoticeResponse) body into a
// *ServerError that keeps the raw frame.
func DecodeError(typ byte, body []byte) *ServerError {
	var er pgproto3.ErrorResponse
	_ = er.Decode(body)
	raw := make([]byte, wire.HeaderLen+len(body))
	raw[0] = typ
	binary.BigEndian.PutUint32(raw[1:], uint32(len(body)+4))
	copy(raw[wire.HeaderLen:], body)
	sev := er.SeverityUnlocalized
	if sev == "" {
		sev = er.Severity
	}
	return &ServerError{Severity: sev, Code: er.Code, Message: er.Message, Raw: raw}
}

// Cancel asks the server to cancel whatever this connection's backend is
// running, and waits until the server has closed the cancel connection, by
// which time the backend has been signalled. Waiting matters: a cancel that
// lands after the connection was lent to another client would hit that
// client's query. When the request was sent but that close was not seen
// (ctx's deadline passed first, or the write failed), the request may
// still reach the backend later: Cancel returns an error and marks the
// connection, which is then closed instead of going back to the pool
// (Reusable).
func (c *Conn) Cancel(ctx context.Context) error {
	var d net.Dialer
	nc, err := d.DialContext(ctx, c.Addr.Network(), c.Addr.String())
	if err != nil {
		return err
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	if c.tlsConf != nil {
		if nc, err = negotiateTLS(nc, c.tlsConf, true); err != nil {
			return err
		}
		defer nc.Close()
	}
	msg, err := (&pgproto3.CancelRequest{ProcessID: c.PID, SecretKey: c.Secret}).Encode(nil)
	if err != nil {
		return err
	}
	if _, err := nc.Write(msg); err != nil {
		c.cancelUnsure.Store(true) // part of it may have gone out
		return err
	}
	var b [1]byte
	n, err := nc.Read(b[:]) // the server closes the connection when done
	switch {
	case n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
		return nil // closed: the request was acted on
	case err == nil:
		err = errors.New("the server answered a cancel request")
	}
	c.cancelUnsure.Store(true)
	return fmt.Errorf("cancel request sent, not confirmed: %w", err)
}

// Reusable reports whether the connection may be lent again: false once
// a cancel request for it may still be on its way (Cancel), and while a
// message is written only in part (SetPartial). Release closes a
// connection that is not.
func (c *Conn) Reusable() bool { return !c.cancelUnsure.Load() && !c.partial.Load() }

// SetPartial records that the borrower has written part of a message to
// the server and not the rest (true, before the first part), or that the
// rest followed (false, after the last part).
func (c *Conn) SetPartial(v bool) { c.partial.Store(v) }

// Partial reports whether a message is written to the server only in part.
func (c *Conn) Partial() bool { return c.partial.Load() }

func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

// String identifies the connection in logs.
func (c *Conn) String() string {
	return "server " + strconv.FormatUint(c.ID, 10) + " pid " + strconv.FormatUint(uint64(c.PID), 10)
}
