package pool

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"
	"github.com/xdg-go/stringprep"

	"github.com/pgtide/pgtide/proxy/wire"
)

// LoginSecret is what Login authenticates with when there is no plaintext
// password: key material taken from a client's login (SCRAM passthrough) or
// an md5 hash. Never log it: every fmt verb prints "[secret]".
type LoginSecret struct {
	// SCRAM-SHA-256: the ClientKey of the user's verifier, recovered from a
	// client's proof. Salt and Iter are the verifier's; the server must hold
	// the same verifier (same salt and iterations), else the proof cannot
	// match and Login says so. ServerKey, when known, checks the server's
	// signature.
	ClientKey, ServerKey []byte
	Salt                 []byte
	Iter                 int
	// MD5 is "md5" + hex(md5(password + user)): enough to answer an
	// AuthenticationMD5Password request (md5 passthrough).
	MD5 string
}

// String hides the secret.
func (LoginSecret) String() string { return "[secret]" }

// GoString hides the secret from %#v.
func (LoginSecret) GoString() string { return "[secret]" }

// Format hides the secret from every fmt verb.
func (LoginSecret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, "[secret]") }

// MarshalText hides the secret from encoders (JSON, loggers).
func (LoginSecret) MarshalText() ([]byte, error) { return []byte("[secret]"), nil }

// Empty reports whether s holds nothing to log in with.
func (s LoginSecret) Empty() bool { return len(s.ClientKey) == 0 && s.MD5 == "" }

// ErrVerifierMismatch means the server's SCRAM salt or iteration count
// differs from the verifier the ClientKey came from: passthrough needs the
// same verifier in pgtide (config or auth_query) and in the server.
var ErrVerifierMismatch = errors.New("the server's SCRAM verifier differs from pgtide's (salt or iteration count); SCRAM passthrough needs the same verifier on both")

// Login opens and authenticates a server connection, running the startup
// and authentication itself: with sec when there is no plaintext password
// (SCRAM-SHA-256 with a ClientKey, md5 with an md5 hash: passthrough), or
// with dc.Password, used for cleartext and md5 as is and for SCRAM after
// SASLprep, as libpq uses it. dc.RequireAuth is checked before any request
// is answered.
//
// TLS follows dc.SSLMode with the tls.Config pgconn builds from the same
// settings (sslrootcert, sslcert, sslkey, verify-ca/full); for "prefer" and
// "allow" the second attempt is made as pgconn makes it.
func Login(ctx context.Context, dc DialConfig, sec LoginSecret) (*Conn, error) {
	targets, err := dc.Targets()
	if err != nil {
		return nil, err
	}
	if dc.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dc.Timeout)
		defer cancel()
	}
	if len(targets) > 1 {
		return loginHosts(ctx, dc, sec, targets) // hosts.go
	}
	return loginTarget(ctx, dc, sec, targets[0])
}

// loginTarget logs in at one host: with TLS as dc.SSLMode says, and for
// "prefer" and "allow" the second attempt pgconn would make.
func loginTarget(ctx context.Context, dc DialConfig, sec LoginSecret, tg Target) (*Conn, error) {
	pc, err := dc.pgconnConfig(tg)
	if err != nil {
		return nil, err
	}
	type target struct {
		host string
		port uint16
		tls  *tls.Config
	}
	targets := []target{{pc.Host, pc.Port, pc.TLSConfig}}
	if dc.tlsFallback() {
		for _, fb := range pc.Fallbacks {
			targets = append(targets, target{fb.Host, fb.Port, fb.TLSConfig})
		}
	}
	var errs []error
	for _, tg := range targets {
		c, err := login(ctx, dc, sec, tg.host, tg.port, tg.tls)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if final(err) || ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// final reports whether a failed attempt makes the fallback attempt (the
// other side of sslmode prefer/allow) pointless, as pgconn and libpq judge
// it: a wrong password, a missing database or privilege, or a refusal that
// is pgtide's own. Other server errors (a pg_hba.conf line for hostssl or
// hostnossl only) are worth the other attempt.
func final(err error) bool {
	var se *ServerError
	if errors.As(err, &se) {
		return se.Code == "28P01" || se.Code == "3D000" || se.Code == "42501"
	}
	var ae *AuthError
	return errors.As(err, &ae) || errors.Is(err, ErrVerifierMismatch)
}

// AuthError is pgtide refusing, or unable to answer, a server's
// authentication request: server_require_auth forbids the method, or pgtide
// has nothing to answer it with. Its text names no address and no secret,
// so a client may be told.
type AuthError struct{ Msg string }

func (e *AuthError) Error() string { return e.Msg }

// requireAuth checks a server's authentication request against
// dc.RequireAuth, with libpq's words for a refusal.
func (dc DialConfig) requireAuth(method, reason string) error {
	if dc.RequireAuth == "" || slices.Contains(strings.Split(dc.RequireAuth, ","), method) {
		return nil
	}
	return &AuthError{fmt.Sprintf("authentication method requirement %q failed: %s", dc.RequireAuth, reason)}
}

// pgconnConfig parses the connection string of one host of dc, for its
// host, port and TLS settings (the TLS server name is that host's).
func (dc DialConfig) pgconnConfig(tg Target) (*pgconn.Config, error) {
	cs := fmt.Sprintf("host=%s port=%d dbname=%s user=%s",
		quoteConnValue(tg.Host), tg.Port, quoteConnValue(dc.Database), quoteConnValue(dc.User)) + dc.tlsConnString()
	cfg, err := pgconn.ParseConfig(cs)
	if err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	return cfg, nil
}

// login is one attempt at one address.
func login(ctx context.Context, dc DialConfig, sec LoginSecret, host string, port uint16, tlsConf *tls.Config) (*Conn, error) {
	network, addr := pgconn.NetworkAddress(host, port)
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = nc.Close()
		}
	}()
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	defer stop()
	if dl, has := ctx.Deadline(); has {
		_ = nc.SetDeadline(dl)
	}
	if tlsConf != nil {
		tc, err := negotiateTLS(nc, tlsConf, false)
		if err != nil {
			return nil, err
		}
		nc = tc
	}
	startup, err := (&pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters:      map[string]string{"user": dc.User, "database": dc.Database},
	}).Encode(nil)
	if err != nil {
		return nil, err
	}
	if _, err := nc.Write(startup); err != nil {
		return nil, err
	}
	rd := wire.NewRawReader(nc, ServerReadBuf) // raw reads on a plain socket (wire/idle.go)
	if err := authenticate(nc, rd, dc, sec); err != nil {
		return nil, err
	}
	now := time.Now()
	c := &Conn{
		Net: nc, Reader: rd, Addr: nc.RemoteAddr(), tlsConf: tlsConf, TxStatus: wire.TxIdle,
		Params: map[string]string{}, Applied: map[string]AppliedParam{},
		created: now, lastUsed: now,
	}
	for {
		typ, body, err := rd.ReadMessage(maxServerMsg)
		if err != nil {
			return nil, fmt.Errorf("read from server: %w", err)
		}
		switch typ {
		case wire.BeParameterStatus:
			if k, v := wire.ParseParameterStatus(body); k != "" {
				c.Params[k] = v
			}
		case wire.BeBackendKeyData:
			var kd pgproto3.BackendKeyData
			if err := kd.Decode(body); err != nil {
				return nil, fmt.Errorf("server: bad BackendKeyData: %w", err)
			}
			c.PID, c.Secret = kd.ProcessID, bytes.Clone(kd.SecretKey)
		case wire.BeErrorResponse:
			return nil, DecodeError(typ, body)
		case wire.BeNoticeResponse: // a notice during startup
		case wire.BeReadyForQuery:
			if len(body) > 0 {
				c.TxStatus = body[0]
			}
			if !stop() {
				return nil, ctx.Err()
			}
			_ = nc.SetDeadline(time.Time{})
			c.LoginUser = c.Params["session_authorization"]
			c.Defaults = maps.Clone(c.Params)
			if tc, ok := rawConn(nc).(*net.TCPConn); ok {
				_ = tc.SetNoDelay(true)
				_ = tc.SetKeepAlive(true)
			}
			ok = true
			return c, nil
		default:
			return nil, fmt.Errorf("server: unexpected message %q during startup", typ)
		}
	}
}

// authenticate answers the server's authentication requests up to
// AuthenticationOk.
func authenticate(nc net.Conn, rd *wire.Reader, dc DialConfig, sec LoginSecret) error {
	send := func(m pgproto3.FrontendMessage) error {
		b, err := m.Encode(nil)
		if err != nil {
			return err
		}
		_, err = nc.Write(b)
		return err
	}
	var sc *scramClient
	authed := false // a password or SCRAM exchange took place
	for {
		typ, body, err := rd.ReadMessage(maxServerMsg)
		if err != nil {
			return fmt.Errorf("read from server: %w", err)
		}
		switch typ {
		case wire.BeErrorResponse:
			return DecodeError(typ, body)
		case wire.BeNoticeResponse:
			continue
		case wire.BeAuthentication:
		default:
			return fmt.Errorf("server: unexpected message %q during authentication", typ)
		}
		if len(body) < 4 {
			return errors.New("server: short authentication message")
		}
		switch code := binary.BigEndian.Uint32(body); code {
		case pgproto3.AuthTypeOk:
			if sc != nil && !sc.done {
				return errors.New("server: AuthenticationOk before the SCRAM exchange finished")
			}
			if !authed {
				if err := dc.requireAuth("none", "server did not complete authentication"); err != nil {
					return err
				}
			}
			return nil
		case pgproto3.AuthTypeCleartextPassword:
			// Checked before anything is sent: a fake server (sslmode
			// prefer, or a hijacked address) must not collect the password.
			if err := dc.requireAuth("password", "server requested a cleartext password"); err != nil {
				return err
			}
			if dc.Password == "" {
				return &AuthError{fmt.Sprintf("server asked for a cleartext password for user %q, and pgtide has no plaintext password for it", dc.User)}
			}
			authed = true
			err = send(&pgproto3.PasswordMessage{Password: dc.Password})
		case pgproto3.AuthTypeMD5Password:
			if err := dc.requireAuth("md5", "server requested a hashed password"); err != nil {
				return err
			}
			var m pgproto3.AuthenticationMD5Password
			if err := m.Decode(body); err != nil {
				return fmt.Errorf("server: %w", err)
			}
			hash := sec.MD5
			if dc.Password != "" {
				sum := md5.Sum([]byte(dc.Password + dc.User))
				hash = "md5" + hex.EncodeToString(sum[:])
			}
			if len(hash) != 35 {
				return &AuthError{fmt.Sprintf("server asked for md5 authentication for user %q, and pgtide has neither its password nor its md5 hash", dc.User)}
			}
			authed = true
			sum := md5.Sum(append([]byte(hash[3:]), m.Salt[:]...))
			err = send(&pgproto3.PasswordMessage{Password: "md5" + hex.EncodeToString(sum[:])})
		case pgproto3.AuthTypeSASL:
			if err := dc.requireAuth("scram-sha-256", "server requested SASL authentication"); err != nil {
				return err
			}
			var m pgproto3.AuthenticationSASL
			if err := m.Decode(body); err != nil {
				return fmt.Errorf("server: %w", err)
			}
			if !slices.Contains(m.AuthMechanisms, scramMech) {
				return &AuthError{fmt.Sprintf("server offers SASL mechanisms %q, pgtide speaks SCRAM-SHA-256", m.AuthMechanisms)}
			}
			if len(sec.ClientKey) == 0 && dc.Password == "" {
				return &AuthError{fmt.Sprintf("server asked for SCRAM-SHA-256 for user %q, and pgtide has no password or client key for it (SCRAM passthrough needs a client to log in first)", dc.User)}
			}
			sc, err = newSCRAMClient(dc.Password, sec, channelBinding(nc), slices.Contains(m.AuthMechanisms, scramPlusMech))
			if err != nil {
				return err
			}
			authed = true
			err = send(&pgproto3.SASLInitialResponse{AuthMechanism: sc.mech, Data: []byte(sc.first())})
		case pgproto3.AuthTypeSASLContinue:
			if sc == nil {
				return errors.New("server: SASLContinue without SASL")
			}
			var m pgproto3.AuthenticationSASLContinue
			if err := m.Decode(body); err != nil {
				return fmt.Errorf("server: %w", err)
			}
			final, ferr := sc.final(string(m.Data))
			if ferr != nil {
				return ferr
			}
			err = send(&pgproto3.SASLResponse{Data: []byte(final)})
		case pgproto3.AuthTypeSASLFinal:
			if sc == nil {
				return errors.New("server: SASLFinal without SASL")
			}
			var m pgproto3.AuthenticationSASLFinal
			if err := m.Decode(body); err != nil {
				return fmt.Errorf("server: %w", err)
			}
			if err := sc.verify(string(m.Data)); err != nil {
				return err
			}
		default:
			return &AuthError{fmt.Sprintf("server asked for an authentication method pgtide does not support (code %d)", code)}
		}
		if err != nil {
			return fmt.Errorf("write to server: %w", err)
		}
	}
}

const (
	scramMech     = "SCRAM-SHA-256"
	scramPlusMech = "SCRAM-SHA-256-PLUS"
)

// channelBinding returns the tls-server-end-point data of the server's
// certificate on a TLS connection, nil otherwise or where the certificate's
// signature has no such binding (Ed25519).
func channelBinding(nc net.Conn) []byte {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return nil
	}
	st := tc.ConnectionState()
	cb, err := scram.NewTLSServerEndpointBinding(&st)
	if err != nil {
		return nil
	}
	return cb.Data
}

// scramClient is the client side of SCRAM-SHA-256 (RFC 5802, RFC 7677),
// computed from a ClientKey (or a password). On TLS it binds the exchange
// to the server's certificate (SCRAM-SHA-256-PLUS, tls-server-end-point)
// when the server offers it, as libpq and pgconn do by default.
type scramClient struct {
	password      string
	sec           LoginSecret
	mech          string
	gs2           string // GS2 header: "n,,", "y,," or "p=tls-server-end-point,,"
	cbData        []byte
	nonce         string
	clientFirst   string // client-first-message-bare
	authMessage   string
	serverKey     []byte
	done          bool
	wantSignature bool
}

func newSCRAMClient(password string, sec LoginSecret, cbData []byte, plusOffered bool) (*scramClient, error) {
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	nonce := base64.StdEncoding.EncodeToString(b[:])
	c := &scramClient{password: password, sec: sec, mech: scramMech, gs2: "n,,", nonce: nonce, clientFirst: "n=,r=" + nonce}
	switch {
	case cbData != nil && plusOffered:
		c.mech, c.gs2, c.cbData = scramPlusMech, "p=tls-server-end-point,,", cbData
	case cbData != nil:
		c.gs2 = "y,," // we could bind, the server did not offer it
	}
	return c, nil
}

// first is the client-first-message: the GS2 header and an empty user name
// (the server uses the startup user), as libpq sends.
func (c *scramClient) first() string { return c.gs2 + c.clientFirst }

// final answers the server-first-message with the client-final-message.
func (c *scramClient) final(serverFirst string) (string, error) {
	var nonce, saltText, iterText string
	for _, f := range strings.Split(serverFirst, ",") {
		switch {
		case strings.HasPrefix(f, "r="):
			nonce = f[2:]
		case strings.HasPrefix(f, "s="):
			saltText = f[2:]
		case strings.HasPrefix(f, "i="):
			iterText = f[2:]
		}
	}
	salt, err := base64.StdEncoding.DecodeString(saltText)
	iter, ierr := strconv.Atoi(iterText)
	if !strings.HasPrefix(nonce, c.nonce) || len(nonce) == len(c.nonce) || err != nil || len(salt) == 0 || ierr != nil || iter < 1 {
		return "", errors.New("server: malformed SCRAM server-first-message")
	}
	var clientKey []byte
	switch {
	case c.password != "":
		salted, err := pbkdf2.Key(sha256.New, saslPrep(c.password), salt, iter, sha256.Size)
		if err != nil {
			return "", err
		}
		clientKey = hmacSum(salted, "Client Key")
		c.serverKey = hmacSum(salted, "Server Key")
	default:
		if (len(c.sec.Salt) > 0 && !bytes.Equal(salt, c.sec.Salt)) || (c.sec.Iter > 0 && iter != c.sec.Iter) {
			return "", ErrVerifierMismatch
		}
		clientKey = c.sec.ClientKey
		c.serverKey = c.sec.ServerKey
	}
	c.wantSignature = len(c.serverKey) > 0
	cbind := base64.StdEncoding.EncodeToString(append([]byte(c.gs2), c.cbData...))
	withoutProof := "c=" + cbind + ",r=" + nonce
	c.authMessage = c.clientFirst + "," + serverFirst + "," + withoutProof
	storedKey := sha256.Sum256(clientKey)
	proof := hmacSum(storedKey[:], c.authMessage)
	for i := range proof {
		proof[i] ^= clientKey[i]
	}
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

// verify checks the server-final-message's signature when ServerKey is known.
func (c *scramClient) verify(serverFinal string) error {
	if c.authMessage == "" {
		return errors.New("server: SASLFinal before SASLContinue")
	}
	if e, ok := strings.CutPrefix(serverFinal, "e="); ok {
		return fmt.Errorf("server: SCRAM error %.64q", e)
	}
	v, ok := strings.CutPrefix(serverFinal, "v=")
	if !ok {
		return errors.New("server: malformed SCRAM server-final-message")
	}
	if c.wantSignature {
		sig, err := base64.StdEncoding.DecodeString(strings.SplitN(v, ",", 2)[0])
		if err != nil || subtle.ConstantTimeCompare(sig, hmacSum(c.serverKey, c.authMessage)) != 1 {
			return &AuthError{"invalid SCRAM server signature (the server does not know the user's verifier)"}
		}
	}
	c.done = true
	return nil
}

func hmacSum(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// saslPrep normalizes a password as libpq does: ASCII as is, else SASLprep
// (RFC 4013), falling back to the raw password where that fails.
func saslPrep(password string) string {
	for i := 0; i < len(password); i++ {
		if password[i] >= 0x80 {
			if p, err := stringprep.SASLprep.Prepare(password); err == nil && p != "" {
				return p
			}
			return password
		}
	}
	return password
}
