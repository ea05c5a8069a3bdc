// Package auth is the server side of PostgreSQL client authentication: it
// checks a connecting client's password against a stored secret with trust,
// cleartext password, MD5 or SCRAM-SHA-256, over a Conn (a pgproto3.Backend is
// one).
//
// Nothing here logs, and no error string contains a password or any part of a
// stored secret.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"
)

// Method is a client authentication method.
type Method int

const (
	Trust     Method = iota // no password
	Cleartext               // AuthenticationCleartextPassword
	MD5                     // AuthenticationMD5Password
	SCRAM                   // AuthenticationSASL SCRAM-SHA-256
)

// String returns the configuration name of m ("trust", "password", "md5", "scram-sha-256").
func (m Method) String() string {
	switch m {
	case Trust:
		return "trust"
	case Cleartext:
		return "password"
	case MD5:
		return "md5"
	case SCRAM:
		return "scram-sha-256"
	}
	return "Method(" + strconv.Itoa(int(m)) + ")"
}

// ParseMethod parses a configured method name: "trust", "password", "md5" or "scram-sha-256".
func ParseMethod(s string) (Method, error) {
	switch s {
	case "trust":
		return Trust, nil
	case "password":
		return Cleartext, nil
	case "md5":
		return MD5, nil
	case "scram-sha-256":
		return SCRAM, nil
	}
	return 0, fmt.Errorf("auth: unknown auth method %q (want trust, password, md5 or scram-sha-256)", s)
}

// ChooseMethod applies PostgreSQL's rules for which exchange to run with a
// client, given the configured method and the user's stored secret: md5
// with a SCRAM secret uses SCRAM; scram-sha-256 is SCRAM whatever the
// secret (an md5 secret cannot pass it: AuthenticateKeys refuses it after a
// full exchange, as PostgreSQL does); password uses Cleartext whatever the
// secret; trust is Trust.
func ChooseMethod(configured Method, s Secret) Method {
	switch configured {
	case MD5:
		if s.Kind == SecretSCRAM {
			return SCRAM
		}
		return MD5
	}
	return configured
}

// ErrPasswordMismatch means the client gave a wrong password (caller answers SQLSTATE 28P01).
var ErrPasswordMismatch = errors.New("password authentication failed")

// ErrNoSCRAMSecret is wrapped, with ErrPasswordMismatch, when a SCRAM
// exchange was asked of a user whose stored secret is an md5 hash: no
// password can pass it. PostgreSQL logs it as the detail "User "NAME" does
// not have a valid SCRAM secret." and tells the client only that the
// password failed.
var ErrNoSCRAMSecret = errors.New("user does not have a valid SCRAM secret")

// Conn is the client's side of the exchange, as a *pgproto3.Backend offers
// it: Send buffers a message, Flush writes what is buffered, SetAuthType
// says how the next 'p' message decodes, and Receive reads one message,
// valid until the next Receive.
type Conn interface {
	Send(msg pgproto3.BackendMessage)
	Flush() error
	SetAuthType(authType uint32) error
	Receive() (pgproto3.FrontendMessage, error)
}

// ErrProtocol means the client sent a message that has no place in the
// authentication exchange, or a malformed one (caller answers SQLSTATE 08P01).
var ErrProtocol = errors.New("protocol violation")

// UnsupportedError is a SCRAM feature the client asks for that PostgreSQL
// does not support either (caller answers SQLSTATE 0A000 with its text).
type UnsupportedError struct{ Msg string }

func (e *UnsupportedError) Error() string { return e.Msg }

// The two SCRAM features PostgreSQL refuses, in its words.
var (
	ErrAuthzID        = &UnsupportedError{"client uses authorization identity, but it is not supported"}
	ErrSCRAMExtension = &UnsupportedError{"client requires an unsupported SCRAM extension"}
)

// Authenticate runs the exchange with a client whose StartupMessage has been
// received on be, for user (the startup "user"). It sends the Authentication*
// requests, calls be.SetAuthType before each read, flushes be before each read,
// and reads PasswordMessage / SASLInitialResponse / SASLResponse.
//
// On success it returns nil without sending AuthenticationOk: the caller sends
// that with the rest of the startup reply and flushes. For SCRAM the
// AuthenticationSASLFinal message is left buffered in be for that flush.
//
// A wrong password returns an error wrapping ErrPasswordMismatch, and so does a
// user with no stored secret (SecretNone) under any method but Trust, after a
// full exchange. A client that sends an unexpected or malformed message returns
// an error wrapping ErrProtocol. I/O errors are returned wrapped; a client that
// sends Terminate mid-exchange yields an error wrapping io.EOF (psql does this
// before prompting for a password). Any other error (an unknown method, an md5
// secret asked to do MD5) is the caller's configuration problem. An md5
// secret asked to do SCRAM runs the exchange with a mock verifier and fails
// with ErrPasswordMismatch and ErrNoSCRAMSecret.
//
// A user with no secret (SecretNone, also what an unknown user is given)
// gets a mock SCRAM verifier whose salt is derived from user and a secret
// of this process (MockSalt), as PostgreSQL's scram_mock_salt: the same
// salt on every attempt and the same cost as a real user, so that the
// exchange does not tell whether the user exists.
//
// Authenticate does not close or set deadlines on the connection; the caller
// bounds it with a deadline on the underlying net.Conn.
func Authenticate(be Conn, m Method, user string, s Secret) error {
	_, err := AuthenticateKeys(be, m, user, s, Options{})
	return err
}

// AuthenticateKeys is Authenticate, and on success it also returns the key
// material the exchange revealed (keys.go): the SCRAM ClientKey recovered
// from the client's proof when s is a SCRAM verifier, which lets pgtide log
// into the server as the client with SCRAM (passthrough). Keys is empty for
// every other method and secret.
//
// opts carries what the connection adds (cbind.go): on TLS, the channel
// binding data that makes SCRAM offer SCRAM-SHA-256-PLUS. A SCRAM exchange
// refused for channel binding returns an error wrapping
// ErrChannelBindingNegotiation or ErrChannelBindingCheck (SQLSTATE 28000).
func AuthenticateKeys(be Conn, m Method, user string, s Secret, opts Options) (Keys, error) {
	if s.Kind == SecretPlain && s.Plain == "" {
		// PostgreSQL never accepts an empty password.
		s.Kind = SecretNone
	}
	switch m {
	case Trust:
		return Keys{}, nil
	case Cleartext:
		return authCleartext(be, user, s)
	case MD5:
		return Keys{}, authMD5(be, user, s)
	case SCRAM:
		return authSCRAM(be, user, s, opts)
	}
	return Keys{}, fmt.Errorf("auth: unknown auth method %d", int(m))
}

func authCleartext(be Conn, user string, s Secret) (Keys, error) {
	pw, err := askPassword(be, &pgproto3.AuthenticationCleartextPassword{}, pgproto3.AuthTypeCleartextPassword)
	if err != nil {
		return Keys{}, err
	}
	if pw == "" {
		// PostgreSQL rejects an empty password whatever is stored.
		return Keys{}, fmt.Errorf("auth: cleartext: empty password: %w", ErrPasswordMismatch)
	}
	var ok bool
	var keys Keys
	switch s.Kind {
	case SecretPlain:
		ok = constEq(pw, s.Plain)
	case SecretMD5:
		ok = constEq("md5"+md5Inner(pw, user), s.MD5)
	case SecretSCRAM:
		var err error
		keys.ClientKey, err = scramClientKeyFromPassword(pw, s.Salt, s.Iter)
		if err != nil {
			return Keys{}, err
		}
		stored := sha256.Sum256(keys.ClientKey)
		ok = subtle.ConstantTimeCompare(stored[:], s.StoredKey) == 1
	case SecretNone:
		ok = false
	default:
		return Keys{}, fmt.Errorf("auth: unknown secret kind %d", int(s.Kind))
	}
	if !ok {
		return Keys{}, fmt.Errorf("auth: cleartext: %w", ErrPasswordMismatch)
	}
	return keys, nil
}

func authMD5(be Conn, user string, s Secret) error {
	var inner string
	switch s.Kind {
	case SecretPlain:
		inner = md5Inner(s.Plain, user)
	case SecretMD5:
		inner = s.MD5[len("md5"):]
	case SecretNone:
		// No password: run the exchange anyway, then fail.
	case SecretSCRAM:
		return errors.New("auth: a SCRAM secret cannot verify an MD5 exchange (use ChooseMethod)")
	default:
		return fmt.Errorf("auth: unknown secret kind %d", int(s.Kind))
	}
	var salt [4]byte
	b, err := randomBytes(len(salt))
	if err != nil {
		return err
	}
	copy(salt[:], b)
	pw, err := askPassword(be, &pgproto3.AuthenticationMD5Password{Salt: salt}, pgproto3.AuthTypeMD5Password)
	if err != nil {
		return err
	}
	if s.Kind == SecretNone || !constEq(pw, md5Salted(inner, salt)) {
		return fmt.Errorf("auth: md5: %w", ErrPasswordMismatch)
	}
	return nil
}

// askPassword sends req, and reads the client's PasswordMessage.
func askPassword(be Conn, req pgproto3.BackendMessage, authType uint32) (string, error) {
	be.Send(req)
	msg, err := receive(be, authType)
	if err != nil {
		return "", err
	}
	pm, ok := msg.(*pgproto3.PasswordMessage)
	if !ok {
		return "", unexpected(msg, "PasswordMessage")
	}
	return pm.Password, nil
}

func authSCRAM(be Conn, user string, s Secret, opts Options) (Keys, error) {
	var cred scram.StoredCredentials
	switch s.Kind {
	case SecretSCRAM:
		cred = scram.StoredCredentials{
			KeyFactors: scram.KeyFactors{Salt: string(s.Salt), Iters: s.Iter},
			StoredKey:  s.StoredKey,
			ServerKey:  s.ServerKey,
		}
	case SecretPlain:
		// A plaintext secret gets a verifier derived once and cached.
		var err error
		if cred, err = plainCredentials(user, s.Plain); err != nil {
			return Keys{}, err
		}
	case SecretNone, SecretMD5:
		// No verifier: random keys make every proof fail after a
		// normal-looking exchange, as PostgreSQL's mock authentication does.
		var err error
		if cred, err = mockCredentials(user); err != nil {
			return Keys{}, err
		}
	default:
		return Keys{}, fmt.Errorf("auth: unknown secret kind %d", int(s.Kind))
	}
	mismatch := ErrPasswordMismatch
	if s.Kind == SecretMD5 {
		mismatch = fmt.Errorf("%w: %w", ErrPasswordMismatch, ErrNoSCRAMSecret)
	}

	// PostgreSQL clients send an empty name in client-first-message ("n=");
	// the server authenticates the startup user whatever name is given, so the
	// lookup ignores its argument.
	server, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return cred, nil })
	if err != nil {
		return Keys{}, fmt.Errorf("auth: scram: %w", err)
	}
	// On TLS, SCRAM-SHA-256-PLUS is offered first, as PostgreSQL does. The
	// conversation knows the binding either way, so xdg-go refuses a "y"
	// flag and checks the c= attribute of a bound client-final-message.
	cb := scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: opts.TLSServerEndPoint}
	offerPlus := cb.IsSupported()
	mechs := []string{scramMech}
	conv := server.NewConversation()
	if offerPlus {
		mechs = []string{scramPlusMech, scramMech}
		conv = server.NewConversationWithChannelBinding(cb)
	}

	be.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: mechs})
	msg, err := receive(be, pgproto3.AuthTypeSASL)
	if err != nil {
		return Keys{}, err
	}
	first, ok := msg.(*pgproto3.SASLInitialResponse)
	if !ok {
		return Keys{}, unexpected(msg, "SASLInitialResponse")
	}
	bound := first.AuthMechanism == scramPlusMech && offerPlus
	if first.AuthMechanism != scramMech && !bound {
		return Keys{}, fmt.Errorf("auth: client selected SASL mechanism %.64q, want one of %v: %w", first.AuthMechanism, mechs, ErrProtocol)
	}
	// The client-first-message contains no secret (GS2 header, name, nonce).
	// Copied: the next Receive reuses first's buffer.
	clientFirst := string(first.Data)
	// PostgreSQL's rules for the GS2 flag: -PLUS goes with "p=<type>" and
	// plain SCRAM-SHA-256 with "n" or "y"; "y" where -PLUS was offered
	// means the client did not see the offer (a downgrade).
	if bound != strings.HasPrefix(clientFirst, "p=") {
		return Keys{}, fmt.Errorf("auth: SCRAM channel binding flag does not match mechanism %s: %w", first.AuthMechanism, ErrProtocol)
	}
	if offerPlus && strings.HasPrefix(clientFirst, "y,") {
		return Keys{}, fmt.Errorf("auth: %w: the client supports channel binding but did not see SCRAM-SHA-256-PLUS offered", ErrChannelBindingNegotiation)
	}
	// After the GS2 header ("n,," / "y,," / "p=type,"): an authorization
	// identity ("a=...") or a mandatory extension ("m=...") at the start of
	// the bare message, which PostgreSQL refuses with 0A000.
	if _, rest, ok := strings.Cut(clientFirst, ","); ok {
		authz, bare, _ := strings.Cut(rest, ",")
		switch {
		case strings.HasPrefix(authz, "a="):
			return Keys{}, fmt.Errorf("auth: %w", ErrAuthzID)
		case strings.HasPrefix(bare, "m="):
			return Keys{}, fmt.Errorf("auth: %w", ErrSCRAMExtension)
		}
	}
	serverFirst, err := conv.Step(clientFirst)
	if err != nil {
		return Keys{}, fmt.Errorf("auth: malformed SCRAM client-first-message: %w: %.120s", ErrProtocol, err.Error())
	}
	if conv.AuthzID() != "" {
		return Keys{}, fmt.Errorf("auth: SCRAM authorization identity is not supported: %w", ErrProtocol)
	}

	be.Send(&pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)})
	msg, err = receive(be, pgproto3.AuthTypeSASLContinue)
	if err != nil {
		return Keys{}, err
	}
	resp, ok := msg.(*pgproto3.SASLResponse)
	if !ok {
		return Keys{}, unexpected(msg, "SASLResponse")
	}
	serverFinal, err := conv.Step(string(resp.Data))
	if err != nil {
		if serverFinal == scram.ErrInvalidProof {
			return Keys{}, fmt.Errorf("auth: scram: %w", mismatch)
		}
		if serverFinal == scram.ErrChannelBindingsDontMatch && bound {
			return Keys{}, fmt.Errorf("auth: %w", ErrChannelBindingCheck)
		}
		// Nonce or channel-binding mismatch, bad proof length, bad syntax.
		// xdg-go's own error text can hold the channel-binding bytes (not
		// secret) but is dropped here to keep errors short and predictable.
		return Keys{}, fmt.Errorf("auth: invalid SCRAM client-final-message (%s): %w", scramReason(serverFinal), ErrProtocol)
	}
	if !conv.Valid() {
		return Keys{}, fmt.Errorf("auth: scram: %w", mismatch)
	}
	var keys Keys
	if s.Kind == SecretSCRAM {
		// Only a stored verifier needs passthrough; a plaintext secret is
		// given to the server as is.
		keys.ClientKey, err = recoverClientKey(clientFirst, serverFirst, string(resp.Data), s.StoredKey)
		if err != nil {
			return Keys{}, err
		}
	}
	be.Send(&pgproto3.AuthenticationSASLFinal{Data: []byte(serverFinal)})
	return keys, nil
}

func scramReason(serverErr string) string {
	if serverErr == "" {
		return "malformed"
	}
	return serverErr
}

// receive flushes be, sets the auth type that decides how a 'p' message is
// decoded, and reads one message, classifying errors.
func receive(be Conn, authType uint32) (pgproto3.FrontendMessage, error) {
	if err := be.Flush(); err != nil {
		return nil, fmt.Errorf("auth: writing to client: %w", err)
	}
	if err := be.SetAuthType(authType); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	msg, err := be.Receive()
	if err != nil {
		if isIOError(err) {
			return nil, fmt.Errorf("auth: reading from client: %w", err)
		}
		// Too long, unknown message type, or a body that does not decode.
		return nil, fmt.Errorf("auth: %w: %v", ErrProtocol, err)
	}
	if _, ok := msg.(*pgproto3.Terminate); ok {
		return nil, fmt.Errorf("auth: client terminated during authentication: %w", io.EOF)
	}
	return msg, nil
}

func isIOError(err error) bool {
	var ne net.Error
	var errno syscall.Errno
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.As(err, &ne) || errors.As(err, &errno)
}

func unexpected(msg pgproto3.FrontendMessage, want string) error {
	return fmt.Errorf("auth: expected %s, got %T: %w", want, msg, ErrProtocol)
}

func constEq(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
