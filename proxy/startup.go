package proxy

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/auth"
	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// Startup packet codes (the first 4 bytes after the length).
const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
	// PostgreSQL refuses startup packets whose body (after the length)
	// is above this size.
	maxStartupPacket = 10000
)

// handleConn runs one client connection from accept to close.
func (s *Server) handleConn(nc net.Conn) {
	start := time.Now()
	log := &loginLog{s: s, nc: nc}
	handedOver := false
	defer func() {
		if handedOver {
			return // runSession owns the connection now
		}
		if r := recover(); r != nil {
			log.get().Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("session panicked; closing its connections")
		}
		_ = nc.Close()
		s.connGone() // console.go
		s.sessWG.Done()
	}()
	cfg := s.Config()
	if tmo := cfg.ClientLoginTimeout.Duration; tmo > 0 {
		_ = nc.SetDeadline(time.Now().Add(tmo))
	}
	rd := wire.NewIdleReader(nc)
	ss, err := s.startup(&nc, &rd, cfg, log) // TLS replaces nc and rd
	if err != nil {
		var ce *clientError
		var drop *startupDrop
		if errors.As(err, &drop) {
			s.loginFailures.Add(1)
			if o := s.obs(); o != nil {
				o.Login("", "", false)
			}
			log.get().Info().Err(err).Str("sqlstate", drop.code).Msg("login failed: malformed startup packet")
			return
		}
		if errors.As(err, &ce) {
			_, _ = nc.Write(fatalFrame(err, ce))
			s.loginFailures.Add(1)
			if o := s.obs(); o != nil {
				o.Login("", "", false)
			}
		}
		if ss == nil || !errors.Is(err, errClientGone) {
			s.logLoginFailed(*log.get(), err) // statslog.go
		}
		return
	}
	if ss == nil { // a cancel request, or a client that left during negotiation
		return
	}
	// The session parks or runs on another worker (park.go, workers.go):
	// an idle client keeps no goroutine, and this one serves the next
	// login on the stack this one grew.
	handedOver = true
	ss.accepted = start.UnixNano()
	s.startSession(ss)
}

// loginLog is a login's logger, built on its first use: most logins log
// nothing (log_connections is a session's line), and building it formats
// the client's address and copies the logger's fields.
type loginLog struct {
	s        *Server
	nc       net.Conn
	user, db string // from the startup packet, once named
	named    bool
	l        *zerolog.Logger
	lNamed   bool // l has user and database
}

func (ll *loginLog) get() *zerolog.Logger {
	if ll.l == nil {
		l := ll.s.logger().With().Str("client", ll.nc.RemoteAddr().String()).Logger()
		ll.l = &l
	}
	if ll.named && !ll.lNamed {
		l := ll.l.With().Str("user", ll.user).Str("database", ll.db).Logger()
		ll.l, ll.lNamed = &l, true
	}
	return ll.l
}

// admit reserves one of max clients (0 = no limit).
// consoleMax is how many admin console connections (logging in, or in)
// may go beyond max_client_conn.
const consoleMax = 16

func (s *Server) admit(max int) bool {
	for {
		cur := s.admitted.Load()
		if max > 0 && cur >= int64(max) {
			return false
		}
		if s.admitted.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// startupDrop is a startup packet PostgreSQL answers by closing the
// connection without a byte, after a line in its log: a bad length, or EOF
// part-way through. pgtide does the same: a reply can hurt (node-postgres
// sends Terminate before its startup packet when a client is ended at once,
// and an ErrorResponse then crashes the process with an unhandled
// rejection).
type startupDrop struct{ code, msg string }

func (e *startupDrop) Error() string { return e.msg }

// readStartupPacket reads one length-prefixed packet of the startup phase
// (which has no type byte) and returns its body.
func readStartupPacket(rd *wire.Reader) ([]byte, error) {
	if err := rd.Ensure(4); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &startupDrop{codeProtocolViolation, "incomplete startup packet"}
		}
		return nil, err // nothing at all: a probe, or a client that disliked our 'N'
	}
	n := int(int32(binary.BigEndian.Uint32(rd.Buffered())))
	if n < 8 || n-4 > maxStartupPacket { // PostgreSQL's limit is on the body
		return nil, &startupDrop{codeProtocolViolation, fmt.Sprintf("invalid length of startup packet: %d", n)}
	}
	if err := rd.Ensure(n); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, &startupDrop{codeProtocolViolation, "incomplete startup packet"}
		}
		return nil, err
	}
	body := rd.Buffered()[4:n]
	rd.Discard(n)
	return body, nil
}

// startup negotiates encryption, reads the StartupMessage, authenticates
// and attaches the client to its pool. It returns (nil, nil) when the
// connection was a cancel request. After a TLS handshake *ncp is the TLS
// connection and *rdp a new Reader over it (tls.go).
func (s *Server) startup(ncp *net.Conn, rdp **wire.Reader, cfg *config.Config, log *loginLog) (*session, error) {
	nc, rd := *ncp, *rdp
	var authOpts auth.Options // channel binding data once on TLS
	useTLS := func(tc *tls.Conn, endPoint []byte) {
		nc, rd = tc, wire.NewIdleReader(tc)
		*ncp, *rdp = nc, rd
		authOpts.TLSServerEndPoint = endPoint
	}
	if err := rd.Ensure(1); err != nil {
		return nil, classifyClientErr(err)
	}
	if rd.Buffered()[0] == tlsRecordHandshake {
		tc, endPoint, err := s.acceptDirectTLS(nc, rd)
		if err != nil {
			return nil, err
		}
		useTLS(tc, endPoint)
	}
	var body []byte
	// One SSLRequest and one GSSENCRequest per connection, as PostgreSQL
	// (ProcessStartupPacket's ssl_done, gss_done): one more is read as a
	// startup packet of protocol 1234.5679 (5680) and refused, where it
	// was answered 'N' for as long as the client sent them.
	sslDone, gssDone := false, false
	for {
		var err error
		body, err = readStartupPacket(rd)
		if err != nil {
			return nil, classifyClientErr(err)
		}
		code := binary.BigEndian.Uint32(body)
		_, isTLS := nc.(*tls.Conn)
		switch {
		case (code == codeSSLRequest && !sslDone || code == codeGSSENCRequest && !gssDone) && !isTLS:
			if code == codeSSLRequest {
				sslDone = true
			} else {
				gssDone = true
			}
			// Bytes after the request would be read in the clear and
			// trusted as if they came over TLS (CVE-2021-23222 style).
			if rd.Len() > 0 {
				return nil, &clientError{codeProtocolViolation, "received unencrypted data after SSL request"}
			}
			if code == codeSSLRequest {
				tc, endPoint, err := s.acceptTLS(nc)
				if err != nil {
					return nil, err
				}
				if tc != nil {
					useTLS(tc, endPoint)
					continue
				}
			} else if _, err := nc.Write([]byte{'N'}); err != nil {
				return nil, errClientGone
			}
			continue
		case code == codeCancelRequest:
			s.handleCancel(body)
			return nil, nil
		}
		major, minor := code>>16, code&0xffff
		if major != 3 {
			msg := fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", major, minor)
			if major < 3 {
				// PostgreSQL answers a protocol 2 client in protocol 2:
				// 'E' and the text as one C string.
				_, _ = nc.Write(append([]byte("EFATAL:  "+msg+"\n"), 0))
				return nil, &startupDrop{codeFeatureNotSupported, msg}
			}
			return nil, &clientError{codeFeatureNotSupported, msg}
		}
		params, err := parseStartupParams(body[4:])
		if err != nil {
			return nil, err
		}
		return s.login(nc, rd, cfg, log, minor, params, authOpts)
	}
}

func parseStartupParams(b []byte) (map[string]string, error) {
	params := map[string]string{}
	bad := &clientError{codeProtocolViolation, "invalid startup packet layout: expected terminator as last byte"}
	for len(b) > 0 {
		if b[0] == 0 {
			if len(b) != 1 {
				return nil, bad
			}
			return params, nil
		}
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			return nil, bad
		}
		k := string(b[:i])
		b = b[i+1:]
		j := bytes.IndexByte(b, 0)
		if j < 0 {
			return nil, bad
		}
		params[k] = string(b[:j])
		b = b[j+1:]
	}
	return nil, bad
}

func classifyClientErr(err error) error {
	var ce *clientError
	var drop *startupDrop
	if errors.As(err, &ce) || errors.As(err, &drop) {
		return err
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return errClientGone
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &clientError{codeProtocolViolation, "client_login_timeout: login not completed in time"}
	}
	return fmt.Errorf("%w: %w", errClientGone, err)
}

// login handles a StartupMessage: protocol negotiation, limits,
// authentication, pool attachment, and the startup reply. authOpts is what
// the connection gives authentication (TLS channel binding).
func (s *Server) login(nc net.Conn, rd *wire.Reader, cfg *config.Config, log *loginLog, minor uint32, params map[string]string, authOpts auth.Options) (res *session, err error) {
	if err := negotiateProtocol(nc, minor, params); err != nil {
		return nil, err
	}
	user, dbName, err := startupNames(params)
	if err != nil {
		return nil, err
	}
	log.user, log.db, log.named = user, dbName, true
	if err := s.refuseStartup(params); err != nil {
		return nil, err
	}
	// max_client_conn counts admitted clients, reserved here with a CAS:
	// counting every accepted socket instead made a connection storm refuse
	// nearly everyone, refused sockets included, while slots were free.
	// An admin console login that finds max_client_conn full takes one of
	// consoleMax places kept for it: logins that never finish (half-open
	// ones, up to client_login_timeout) must not lock the operator out.
	if s.admit(cfg.MaxClientConn) {
		defer func() {
			if res == nil { // refused, failed, or an admin console that ended
				s.admitted.Add(-1) // a session released it when it ends (runSession)
			}
		}()
	} else {
		if !isConsole(cfg, dbName) || s.consoleLogins.Add(1) > consoleMax {
			if isConsole(cfg, dbName) {
				s.consoleLogins.Add(-1)
			}
			return nil, &clientError{codeTooManyConnections, "sorry, too many clients already"}
		}
		defer s.consoleLogins.Add(-1) // a console is served within this call
	}

	method, secret, known, err := s.clientSecret(cfg, nc, user, dbName, log)
	if err != nil {
		return nil, err
	}
	keys, final, err := authenticate(nc, rd, method, user, secret, authOpts)
	if err != nil {
		return nil, err
	}
	if len(final) > 0 {
		// SCRAM's last message goes out with what follows it (one write);
		// a login that fails from here sends it before its error.
		defer func() {
			if final != nil {
				_, _ = nc.Write(final)
			}
		}()
	}
	if isConsole(cfg, dbName) {
		if final != nil {
			if _, err := nc.Write(final); err != nil {
				return nil, errClientGone
			}
			final = nil
		}
		return nil, s.serveAdmin(nc, rd, *log.get(), dbName, user, params) // console.go
	}

	db, ok := cfg.ResolveDatabase(dbName)
	if !ok || dbName == config.AdminDatabaseName {
		return nil, &clientError{codeUnknownDatabase, fmt.Sprintf("database %q does not exist", dbName)}
	}
	if known {
		s.rememberServerLogin(poolKey{dbName, user}, secret, keys) // passthrough (authquery.go)
	}
	pe, loginDone := s.loginPool(cfg, dbName, db, user, cfg.Users[user]) // a failed login leaves no pool behind (autodb.go)
	defer func() { loginDone(res != nil) }()

	ss := newSession(s, nc, rd, pe, cfg, params)
	if err := ss.wantFromStartup(cfg, db, params); err != nil {
		return nil, err
	}
	if err := s.loginAllowed(ss); err != nil { // admin DISABLE
		return nil, err
	}
	if view := s.welcomeFromCache(ss); view != nil {
		err = s.joinFromCache(cfg, ss, view)
	} else {
		err = s.joinWithServer(cfg, ss, pe)
	}
	if err != nil {
		return nil, err
	}
	err = writeStartupReply(nc, ss, final)
	final = nil // written, or the client is gone
	if err != nil {
		ss.finish(false)
		return nil, err
	}
	// The login's deadline (client_login_timeout) ends here, before the
	// session can be killed the ordinary way (loginOver): clearing it after
	// would erase a kill's linger deadline, and the session would read on
	// until the client closes.
	_ = nc.SetDeadline(time.Time{})
	if ce := ss.loginOver(); ce != nil { // killed while logging in: its FATAL
		ss.finish(false)
		return nil, ce
	}
	pe.counters.Logins.Add(1)
	if o := s.obs(); o != nil {
		o.Login(dbName, user, true)
	}
	return ss, nil
}

// negotiateProtocol answers a StartupMessage for a protocol newer than
// 3.0 or with _pq_ options. Protocol 3.2 (and made-up minors) are
// negotiated down to 3.0, as a PostgreSQL older than 18 would; _pq_
// options are all unrecognized, and taken out of params.
func negotiateProtocol(nc net.Conn, minor uint32, params map[string]string) error {
	var unknown []string
	for k := range params {
		if strings.HasPrefix(k, "_pq_.") {
			unknown = append(unknown, k)
			delete(params, k)
		}
	}
	if minor > 0 || len(unknown) > 0 {
		// The version field is the whole version negotiated down to, 3.0,
		// as PostgreSQL sends it (FrontendProtocol): libpq compares it with
		// the whole version it asked for, so a 0 reads as "up to 0.0" (pgx
		// takes the low half, which is 0 either way).
		msg, _ := (&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: pgproto3.ProtocolVersion30, UnrecognizedOptions: unknown}).Encode(nil)
		if _, err := nc.Write(msg); err != nil {
			return errClientGone
		}
	}
	return nil
}

// startupNames returns the user and database a StartupMessage names; the
// database defaults to the user name, in params too, as in PostgreSQL.
func startupNames(params map[string]string) (user, dbName string, err error) {
	user = params["user"]
	if user == "" {
		return "", "", &clientError{codeInvalidAuthSpec, "no PostgreSQL user name specified in startup packet"}
	}
	dbName = params["database"]
	if dbName == "" {
		dbName = user
	}
	// As PostgreSQL (ProcessStartupPacket): names are cut to a name's
	// length, so an overlong one finds what PostgreSQL would, and no name
	// kept per login (the auth_query cache, logs) is larger than that.
	user, dbName = cutName(user), cutName(dbName)
	params["user"], params["database"] = user, dbName
	return user, dbName, nil
}

// nameMax is PostgreSQL's NAMEDATALEN less its NUL.
const nameMax = 63

func cutName(s string) string {
	if len(s) > nameMax {
		return s[:nameMax]
	}
	return s
}

// refuseStartup says why a login is refused before authentication (a
// replication connection, or pgtide shutting down), or nil.
func (s *Server) refuseStartup(params map[string]string) error {
	if params["replication"] != "" && params["replication"] != "false" && params["replication"] != "off" {
		return &clientError{codeFeatureNotSupported, "replication connections are not supported by pgtide"}
	}
	if !s.loginsOpen() {
		return &clientError{codeCannotConnectNow, "the database system is shutting down"}
	}
	return nil
}

// clientSecret returns how the client authenticates and against what.
// An unknown user runs the same exchange against a mock secret (known is
// false), so a wrong user and a wrong password look the same.
func (s *Server) clientSecret(cfg *config.Config, nc net.Conn, user, dbName string, log *loginLog) (method auth.Method, secret auth.Secret, known bool, err error) {
	method, err = s.clientAuthMethod(cfg, nc, user, dbName) // TLS mode, HBA (hba.go)
	if err != nil {
		return 0, auth.Secret{}, false, err
	}
	ucfg, known := cfg.Users[user]
	if known {
		secret, err = auth.ParseSecret(ucfg.Password)
		if err != nil {
			return 0, auth.Secret{}, false, &clientError{codeInvalidPassword, fmt.Sprintf("password authentication failed for user %q", user)}
		}
	} else if method != auth.Trust {
		secret, known, err = s.authQuerySecret(cfg, dbName, user, *log.get()) // authquery.go
		if err != nil {
			return 0, auth.Secret{}, false, err
		}
	}
	if !known && method != auth.Trust {
		// A mock exchange (auth.AuthenticateKeys): for SCRAM, a salt that
		// is stable per user name and no more work than a real user's.
		secret = auth.Secret{Kind: auth.SecretNone}
	}
	return auth.ChooseMethod(method, secret), secret, known, nil
}

// authenticate runs the client's authentication exchange and returns the
// keys it yields (for passthrough to servers), or what the client is told.
// final is the exchange's last message, not yet written (SCRAM's
// AuthenticationSASLFinal): the caller sends it with the reply that
// follows, saving a write and a client wake-up per login.
func authenticate(nc net.Conn, rd *wire.Reader, method auth.Method, user string, secret auth.Secret, authOpts auth.Options) (keys auth.Keys, final []byte, err error) {
	ac := &authConn{rd: rd, w: nc}
	keys, err = auth.AuthenticateKeys(ac, method, user, secret, authOpts)
	if err != nil {
		return auth.Keys{}, nil, authFailure(err, method, user)
	}
	// SCRAM leaves AuthenticationSASLFinal buffered: the caller sends it.
	if ac.err != nil {
		return auth.Keys{}, nil, classifyClientErr(ac.err)
	}
	return keys, ac.out, nil
}

// authConn is the client's side of an authentication exchange (auth.Conn)
// on the login's own Reader: a pgproto3.Backend would take an 8 KB read
// buffer per login that nothing gives back. Messages are bounded by
// maxStartupPacket, as the startup packet is.
type authConn struct {
	rd       *wire.Reader
	w        io.Writer
	out      []byte // encoded, not yet written
	err      error  // the first Encode error, returned by Flush
	authType uint32
}

func (c *authConn) Send(msg pgproto3.BackendMessage) {
	var err error
	if c.out, err = msg.Encode(c.out); err != nil && c.err == nil {
		c.err = err
	}
}

func (c *authConn) Flush() error {
	if c.err != nil {
		return c.err
	}
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.w.Write(c.out)
	c.out = c.out[:0]
	return err
}

func (c *authConn) SetAuthType(authType uint32) error {
	c.authType = authType
	return nil
}

// Receive reads one message as pgproto3.Backend would decode it during
// authentication: a 'p' by the auth type last set, Terminate, and nothing
// else.
func (c *authConn) Receive() (pgproto3.FrontendMessage, error) {
	typ, body, err := c.rd.ReadMessage(maxStartupPacket)
	if err != nil {
		return nil, err
	}
	var msg pgproto3.FrontendMessage
	switch typ {
	case 'p':
		switch c.authType {
		case pgproto3.AuthTypeSASL:
			msg = &pgproto3.SASLInitialResponse{}
		case pgproto3.AuthTypeSASLContinue, pgproto3.AuthTypeSASLFinal:
			msg = &pgproto3.SASLResponse{}
		default:
			msg = &pgproto3.PasswordMessage{}
		}
	case 'X':
		msg = &pgproto3.Terminate{}
	default:
		return nil, fmt.Errorf("message type %q during authentication", typ)
	}
	if err := msg.Decode(body); err != nil {
		// %v: a body without its NUL decodes as io.EOF, which is the
		// client's mistake, not the client gone (pgproto3.Backend said EOF).
		return nil, fmt.Errorf("malformed %q message: %v", typ, err)
	}
	return msg, nil
}

// authFailure turns a failed authentication exchange into what the client
// is told and pgtide logs.
func authFailure(err error, method auth.Method, user string) error {
	switch {
	case errors.Is(err, auth.ErrChannelBindingNegotiation):
		return &clientError{codeInvalidAuthSpec, auth.ErrChannelBindingNegotiation.Error()}
	case errors.Is(err, auth.ErrChannelBindingCheck):
		return &clientError{codeInvalidAuthSpec, auth.ErrChannelBindingCheck.Error()}
	case errors.Is(err, auth.ErrPasswordMismatch):
		// One log line, at warn (logLoginFailed), with these fields.
		lf := &loginFailure{clientError: &clientError{codeInvalidPassword, fmt.Sprintf("password authentication failed for user %q", user)},
			fields: [][2]string{{"method", method.String()}}}
		if errors.Is(err, auth.ErrNoSCRAMSecret) {
			// PostgreSQL's detail: the stored secret is an md5 hash.
			lf.fields = append(lf.fields, [2]string{"detail", fmt.Sprintf("User %q does not have a valid SCRAM secret.", user)})
		}
		return lf
	case errors.Is(err, auth.ErrProtocol):
		return &clientError{codeProtocolViolation, "invalid authentication response"}
	case errors.Is(err, auth.ErrAuthzID):
		return &clientError{codeFeatureNotSupported, "client uses authorization identity, but it is not supported"}
	case errors.Is(err, auth.ErrSCRAMExtension):
		return &clientError{codeFeatureNotSupported, "client requires an unsupported SCRAM extension"}
	}
	return classifyClientErr(err)
}

// joinFromCache lets a client in without a server: a server accepted
// these startup settings before and reported view, and the client waits
// for a server at its first query.
func (s *Server) joinFromCache(cfg *config.Config, ss *session, view map[string]string) error {
	if len(ss.view) == 0 {
		ss.view = maps.Clone(view) // one allocation at its size, not a map grown by doubling
	} else {
		for k, v := range view {
			ss.view[k] = v
		}
	}
	s.register(ss)
	if err := s.admitLogin(cfg, ss); err != nil { // shutdown, max_*_client_connections (limits.go)
		s.unregister(ss)
		return err
	}
	return nil
}

// joinWithServer borrows a server to prove the database is reachable and
// to learn the parameter values this client starts with (which the
// welcome cache keeps for the next client with the same settings). In
// session mode the client keeps that server.
func (s *Server) joinWithServer(cfg *config.Config, ss *session, pe *poolEntry) error {
	// A waitCtx, as a borrow's (waitctx.go): one that gets an idle server
	// at once makes no timer, and leaves no context behind in the session.
	start := time.Now()
	ctx := &waitCtx{parent: ss.ended, deadline: start.Add(ss.waitTimeout())}
	s.setLoginWait(ss, true)                   // SHOW CLIENTS lists it meanwhile (KILL_CLIENT ends it)
	sc, waited, err := s.loginAcquire(ctx, ss) // acquire, after admin DISABLE and PAUSE
	s.setLoginWait(ss, false)
	ctx.stop()
	if ce := ss.loginKilled(); ce != nil {
		if err == nil {
			ss.releaseOrDiscard(sc)
		}
		return ce
	}
	if err != nil {
		return err
	}
	// Until sc is attached or given back below, a panic (the connection's
	// recover in handleConn closes the client) must not keep it from the
	// pool: its state is unknown, so it is closed.
	held := true
	defer func() {
		if held {
			if r := recover(); r != nil {
				sc.Pool().Discard(sc)
				panic(r)
			}
		}
	}()
	// A server assignment, as a borrow's (session.borrow): PgBouncer counts
	// every link of a server to a client, a login's included.
	var d time.Duration
	if waited {
		d = time.Since(start)
	}
	pe.counters.Waits.Add(1)
	pe.counters.WaitNanos.Add(int64(d))
	if o := s.obs(); o != nil {
		o.Waited(ss.dbName, ss.userName, d)
	}
	if _, err := ss.syncParams(sc); err != nil {
		held = false
		ss.releaseOrDiscard(sc)
		return err
	}
	if s.testHookJoined != nil {
		s.testHookJoined()
	}
	fresh := make(map[string]string, len(sc.Params))
	for k, v := range sc.Params {
		ss.view[k] = v
		fresh[k] = v
	}
	w := &welcome{told: fresh, asked: maps.Clone(ss.want)}
	pe.welcome.put(welcomeKey(ss.want), w)
	ss.login, ss.welcomeKey = w, "" // what the client is told (writeStartupReply)
	s.register(ss)
	if err := s.admitLogin(cfg, ss); err != nil { // shutdown, max_*_client_connections (limits.go)
		s.unregister(ss)
		held = false
		ss.releaseOrDiscard(sc)
		return err
	}
	held = false
	if ss.mode == config.PoolSession {
		ss.attach(sc)
	} else {
		ss.releaseOrDiscard(sc)
	}
	return nil
}

// writeStartupReply tells the client it is in: AuthenticationOk, the
// parameters it starts with, pgtide's cancel key for it, ReadyForQuery;
// after final, the authentication exchange's last message (if any).
func writeStartupReply(nc net.Conn, ss *session, final []byte) error {
	size := len(final) + 9 + 17 + 6 // AuthenticationOk, BackendKeyData, ReadyForQuery
	for k, v := range ss.view {
		size += 5 + len(k) + 1 + len(v) + 1
	}
	out := append(make([]byte, 0, size), final...) // one allocation, not one per ParameterStatus
	out, _ = (&pgproto3.AuthenticationOk{}).Encode(out)
	for k, v := range ss.view {
		out, _ = (&pgproto3.ParameterStatus{Name: k, Value: v}).Encode(out)
	}
	ss.mu.Lock()
	ss.view = nil // only the startup reply needs it; idle clients keep less
	ss.mu.Unlock()
	var key [4]byte
	binary.BigEndian.PutUint32(key[:], ss.keySecret)
	out, _ = (&pgproto3.BackendKeyData{ProcessID: ss.keyPID, SecretKey: key[:]}).Encode(out)
	out, _ = (&pgproto3.ReadyForQuery{TxStatus: wire.TxIdle}).Encode(out)
	// Under wmu (invariant 3): in session mode the login's server is
	// attached and its pump runs already; what the server sends meanwhile
	// (a FATAL) must not be written into the middle of this reply.
	ss.wmu.Lock()
	_, err := nc.Write(out)
	ss.wmu.Unlock()
	if err != nil {
		return errClientGone
	}
	return nil
}

// acquireError turns a pool error into what the client is told.
func acquireError(err error) error {
	switch {
	case errors.Is(err, pool.ErrWaitTimeout):
		return &clientError{codeQueryCanceled, "query_wait_timeout: no server connection became available in time"}
	case errors.Is(err, pool.ErrClosed):
		return &clientError{codeCannotConnectNow, "the database is being reconfigured or shut down; retry"}
	}
	// The server's own refusal reaches the client as PostgreSQL sent it
	// (its code and message, nothing added); pgtide's log has the rest
	// (host, port, the attempt), which a client has no business knowing.
	var se *pool.ServerError
	if errors.As(err, &se) {
		// The server's code says nothing of who refused: count it as the server's (statslog.go).
		return &loginFailure{clientError: &clientError{se.Code, se.Message}, reason: reasonServerLogin}
	}
	var ae *pool.AuthError
	if errors.As(err, &ae) {
		return &clientError{codeServerUnavailable, "could not connect to the server: " + ae.Msg}
	}
	if errors.Is(err, pool.ErrVerifierMismatch) {
		return &clientError{codeServerUnavailable, "could not connect to the server: " + pool.ErrVerifierMismatch.Error()}
	}
	return &clientError{codeServerUnavailable, "could not connect to the server: " + connectFailure(err)}
}

// connectFailure names the kind of a failed server connection without
// its addresses or OS error text: they are in pgtide's log.
func connectFailure(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return "timeout expired"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
		return "server closed the connection unexpectedly"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "could not translate the server's host name"
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) || strings.Contains(err.Error(), "TLS") || strings.Contains(err.Error(), "tls:") {
		return "TLS negotiation failed"
	}
	return "see pgtide's log"
}

// handleCancel routes a CancelRequest carrying a pgtide-minted key to the
// server the client holds at this moment. Unknown keys are ignored silently,
// as PostgreSQL does.
func (s *Server) handleCancel(body []byte) {
	if len(body) < 12 {
		return
	}
	pid := binary.BigEndian.Uint32(body[4:8])
	secret := body[8:]
	ss := s.lookup(pid)
	if ss == nil {
		return
	}
	var want [4]byte
	binary.BigEndian.PutUint32(want[:], ss.keySecret)
	if subtle.ConstantTimeCompare(want[:], secret) != 1 {
		return
	}
	ss.cancel()
}
