package auth

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// startServer accepts one connection on a fresh listener and runs Authenticate
// on it, answering as a PostgreSQL server would. The returned channel carries
// Authenticate's error.
func startServer(t *testing.T, m Method, s Secret) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			ch <- fmt.Errorf("accept: %w", err)
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		be := pgproto3.NewBackend(conn, conn)
		be.SetMaxBodyLen(1 << 16)
		sm, err := be.ReceiveStartupMessage()
		if err != nil {
			ch <- fmt.Errorf("startup: %w", err)
			return
		}
		startup, ok := sm.(*pgproto3.StartupMessage)
		if !ok {
			ch <- fmt.Errorf("startup: got %T", sm)
			return
		}
		authErr := Authenticate(be, m, startup.Parameters["user"], s)
		switch {
		case authErr == nil:
			be.Send(&pgproto3.AuthenticationOk{})
			for _, p := range [][2]string{
				{"server_version", "15.0"},
				{"client_encoding", "UTF8"},
				{"standard_conforming_strings", "on"},
				{"integer_datetimes", "on"},
				{"DateStyle", "ISO, MDY"},
			} {
				be.Send(&pgproto3.ParameterStatus{Name: p[0], Value: p[1]})
			}
			be.Send(&pgproto3.BackendKeyData{ProcessID: 42, SecretKey: []byte{1, 2, 3, 4}})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if err := be.Flush(); err != nil {
				ch <- fmt.Errorf("flush: %w", err)
				return
			}
			// Wait for the client's Terminate (or EOF).
			for {
				msg, err := be.Receive()
				if err != nil {
					break
				}
				if _, ok := msg.(*pgproto3.Terminate); ok {
					break
				}
			}
		case errors.Is(authErr, ErrPasswordMismatch):
			be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01",
				Message: `password authentication failed for user "u"`})
			_ = be.Flush()
		case errors.Is(authErr, ErrProtocol):
			be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "08P01", Message: "protocol violation"})
			_ = be.Flush()
		}
		ch <- authErr
	}()
	return ln.Addr().String(), ch
}

func serverErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("server goroutine did not finish")
		return nil
	}
}

func connect(t *testing.T, addr, password string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	u := url.URL{Scheme: "postgres", User: url.UserPassword("u", password), Host: addr, Path: "/db",
		RawQuery: "sslmode=disable"}
	conn, err := pgconn.Connect(ctx, u.String())
	if err != nil {
		return err
	}
	if pid := conn.PID(); pid != 42 {
		t.Errorf("PID = %d, want 42", pid)
	}
	return conn.Close(ctx)
}

func mustSecret(t *testing.T, s string) Secret {
	t.Helper()
	sec, err := ParseSecret(s)
	if err != nil {
		t.Fatalf("ParseSecret: %v", err)
	}
	return sec
}

const (
	goodPW    = "pw"
	nonASCIIP = "p\u00e4ss\u00a0w\u00f6rd" // NBSP: SASLprep (and pgconn) map it to ' '
)

func TestRoundTrip(t *testing.T) {
	verifier, err := SCRAMVerifier(goodPW, 4096)
	if err != nil {
		t.Fatal(err)
	}
	verifierNonASCII, err := SCRAMVerifier(nonASCIIP, 4096)
	if err != nil {
		t.Fatal(err)
	}
	md5Secret := "md5" + md5Inner(goodPW, "u")
	cases := []struct {
		name       string
		configured Method
		want       Method // what ChooseMethod must pick
		secret     string
		password   string
	}{
		{"scram/plain", SCRAM, SCRAM, goodPW, goodPW},
		{"scram/verifier", SCRAM, SCRAM, verifier, goodPW},
		{"scram/verifier-nonascii", SCRAM, SCRAM, verifierNonASCII, nonASCIIP},
		{"scram/plain-nonascii", SCRAM, SCRAM, nonASCIIP, nonASCIIP},
		{"md5/plain", MD5, MD5, goodPW, goodPW},
		{"md5/md5", MD5, MD5, md5Secret, goodPW},
		{"md5/verifier-uses-scram", MD5, SCRAM, verifier, goodPW},
		{"password/plain", Cleartext, Cleartext, goodPW, goodPW},
		{"password/md5", Cleartext, Cleartext, md5Secret, goodPW},
		{"password/verifier", Cleartext, Cleartext, verifier, goodPW},
		{"password/verifier-nonascii", Cleartext, Cleartext, verifierNonASCII, nonASCIIP},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sec := mustSecret(t, tc.secret)
			m := ChooseMethod(tc.configured, sec)
			if m != tc.want {
				t.Fatalf("ChooseMethod = %v, want %v", m, tc.want)
			}
			t.Run("right", func(t *testing.T) {
				addr, ch := startServer(t, m, sec)
				if err := connect(t, addr, tc.password); err != nil {
					t.Fatalf("connect: %v", err)
				}
				if err := serverErr(t, ch); err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
			})
			t.Run("wrong", func(t *testing.T) {
				addr, ch := startServer(t, m, sec)
				err := connect(t, addr, tc.password+"x")
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
					t.Fatalf("connect error = %v, want PgError 28P01", err)
				}
				serr := serverErr(t, ch)
				if !errors.Is(serr, ErrPasswordMismatch) {
					t.Fatalf("Authenticate = %v, want ErrPasswordMismatch", serr)
				}
				if strings.Contains(serr.Error(), tc.password) {
					t.Fatalf("error %q contains the password", serr)
				}
			})
		})
	}
}

func TestTrust(t *testing.T) {
	for _, secret := range []string{"", goodPW} {
		addr, ch := startServer(t, ChooseMethod(Trust, mustSecret(t, secret)), mustSecret(t, secret))
		if err := connect(t, addr, "anything"); err != nil {
			t.Fatalf("connect: %v", err)
		}
		if err := serverErr(t, ch); err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
	}
}

// A user with no stored secret fails every method but trust, after a full exchange.
func TestNoSecret(t *testing.T) {
	for _, m := range []Method{Cleartext, MD5, SCRAM} {
		t.Run(m.String(), func(t *testing.T) {
			addr, ch := startServer(t, m, Secret{Kind: SecretNone})
			err := connect(t, addr, "")
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
				t.Fatalf("connect error = %v, want PgError 28P01", err)
			}
			if serr := serverErr(t, ch); !errors.Is(serr, ErrPasswordMismatch) {
				t.Fatalf("Authenticate = %v, want ErrPasswordMismatch", serr)
			}
		})
	}
}

// rawClient dials addr and sends a StartupMessage for user "u".
func rawClient(t *testing.T, addr string) (*pgproto3.Frontend, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": "u", "database": "db"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	return fe, conn
}

func receiveFE(t *testing.T, fe *pgproto3.Frontend) pgproto3.BackendMessage {
	t.Helper()
	msg, err := fe.Receive()
	if err != nil {
		t.Fatalf("client receive: %v", err)
	}
	return msg
}

func sendFE(t *testing.T, fe *pgproto3.Frontend, msgs ...pgproto3.FrontendMessage) {
	t.Helper()
	for _, m := range msgs {
		fe.Send(m)
	}
	if err := fe.Flush(); err != nil {
		t.Fatalf("client send: %v", err)
	}
}

func TestProtocolViolation(t *testing.T) {
	query := &pgproto3.Query{String: "select 1"}
	cases := []struct {
		name   string
		method Method
		steps  func(t *testing.T, fe *pgproto3.Frontend)
	}{
		{"password/query", Cleartext, func(t *testing.T, fe *pgproto3.Frontend) {
			if _, ok := receiveFE(t, fe).(*pgproto3.AuthenticationCleartextPassword); !ok {
				t.Fatal("want AuthenticationCleartextPassword")
			}
			sendFE(t, fe, query)
		}},
		{"md5/query", MD5, func(t *testing.T, fe *pgproto3.Frontend) {
			if _, ok := receiveFE(t, fe).(*pgproto3.AuthenticationMD5Password); !ok {
				t.Fatal("want AuthenticationMD5Password")
			}
			sendFE(t, fe, query)
		}},
		{"scram/query", SCRAM, func(t *testing.T, fe *pgproto3.Frontend) {
			receiveFE(t, fe)
			sendFE(t, fe, query)
		}},
		{"scram/plus-mechanism", SCRAM, func(t *testing.T, fe *pgproto3.Frontend) {
			sasl, ok := receiveFE(t, fe).(*pgproto3.AuthenticationSASL)
			if !ok || len(sasl.AuthMechanisms) != 1 || sasl.AuthMechanisms[0] != "SCRAM-SHA-256" {
				t.Fatalf("want AuthenticationSASL [SCRAM-SHA-256], got %#v", sasl)
			}
			sendFE(t, fe, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256-PLUS",
				Data: []byte("p=tls-server-end-point,,n=,r=abc")})
		}},
		{"scram/garbage-first", SCRAM, func(t *testing.T, fe *pgproto3.Frontend) {
			receiveFE(t, fe)
			sendFE(t, fe, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("hello")})
		}},
		{"scram/channel-binding-not-offered", SCRAM, func(t *testing.T, fe *pgproto3.Frontend) {
			receiveFE(t, fe)
			sendFE(t, fe, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256",
				Data: []byte("p=tls-server-end-point,,n=,r=abc")})
		}},
		{"scram/wrong-nonce", SCRAM, func(t *testing.T, fe *pgproto3.Frontend) {
			receiveFE(t, fe)
			sendFE(t, fe, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=abc")})
			if _, ok := receiveFE(t, fe).(*pgproto3.AuthenticationSASLContinue); !ok {
				t.Fatal("want AuthenticationSASLContinue")
			}
			sendFE(t, fe, &pgproto3.SASLResponse{Data: []byte("c=biws,r=abcdef,p=" +
				base64.StdEncoding.EncodeToString(make([]byte, 32)))})
		}},
		{"scram/query-second", SCRAM, func(t *testing.T, fe *pgproto3.Frontend) {
			receiveFE(t, fe)
			sendFE(t, fe, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=abc")})
			receiveFE(t, fe)
			sendFE(t, fe, query)
		}},
		{"md5/too-long", MD5, func(t *testing.T, fe *pgproto3.Frontend) {
			receiveFE(t, fe)
			sendFE(t, fe, &pgproto3.PasswordMessage{Password: strings.Repeat("x", 1<<17)})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, ch := startServer(t, tc.method, Secret{Kind: SecretPlain, Plain: goodPW})
			fe, _ := rawClient(t, addr)
			tc.steps(t, fe)
			serr := serverErr(t, ch)
			if !errors.Is(serr, ErrProtocol) {
				t.Fatalf("Authenticate = %v, want ErrProtocol", serr)
			}
			if errors.Is(serr, ErrPasswordMismatch) {
				t.Fatalf("Authenticate = %v, must not be ErrPasswordMismatch", serr)
			}
			if e, ok := receiveFE(t, fe).(*pgproto3.ErrorResponse); !ok || e.Code != "08P01" {
				t.Fatalf("want ErrorResponse 08P01")
			}
		})
	}
}

func TestClientGoesAway(t *testing.T) {
	t.Run("terminate", func(t *testing.T) {
		addr, ch := startServer(t, MD5, Secret{Kind: SecretPlain, Plain: goodPW})
		fe, _ := rawClient(t, addr)
		receiveFE(t, fe)
		sendFE(t, fe, &pgproto3.Terminate{})
		serr := serverErr(t, ch)
		if !errors.Is(serr, io.EOF) || errors.Is(serr, ErrProtocol) || errors.Is(serr, ErrPasswordMismatch) {
			t.Fatalf("Authenticate = %v, want io.EOF", serr)
		}
	})
	t.Run("close", func(t *testing.T) {
		addr, ch := startServer(t, SCRAM, Secret{Kind: SecretPlain, Plain: goodPW})
		fe, conn := rawClient(t, addr)
		receiveFE(t, fe)
		conn.Close()
		serr := serverErr(t, ch)
		if !errors.Is(serr, io.ErrUnexpectedEOF) || errors.Is(serr, ErrProtocol) {
			t.Fatalf("Authenticate = %v, want io.ErrUnexpectedEOF", serr)
		}
	})
}

// scramProof computes a client's proof and the server signature it should get
// back, independently of the package's code paths (except PBKDF2).
func scramProof(password string, salt []byte, iter int, authMsg string) (proof, serverSig []byte) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, 32)
	if err != nil {
		panic(err)
	}
	mac := func(key []byte, s string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(s))
		return m.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	sig := mac(storedKey[:], authMsg)
	proof = make([]byte, len(clientKey))
	for i := range clientKey {
		proof[i] = clientKey[i] ^ sig[i]
	}
	return proof, mac(mac(salted, "Server Key"), authMsg)
}

// RFC 7677 section 3 test vector.
func TestSCRAMKnownAnswer(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	c1bare := "n=user,r=rOprNGfwEbeRWgbNEkqO"
	s1 := "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	c2wop := "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	authMsg := c1bare + "," + s1 + "," + c2wop
	proof, sig := scramProof("pencil", salt, 4096, authMsg)
	if got := base64.StdEncoding.EncodeToString(proof); got != "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=" {
		t.Fatalf("test client proof = %s", got)
	}
	if got := base64.StdEncoding.EncodeToString(sig); got != "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=" {
		t.Fatalf("test client server signature = %s", got)
	}
	_, serverKey, err := scramKeys("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.StdEncoding.EncodeToString(hmacSHA256(serverKey, authMsg)); got != "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=" {
		t.Fatalf("server signature from scramKeys = %s", got)
	}
}

// TestSCRAMRaw drives the exchange by hand: GS2 header "y,," (a TLS client that
// saw no -PLUS offer), a non-empty SCRAM user name (ignored, as PostgreSQL does),
// and the server signature check.
func TestSCRAMRaw(t *testing.T) {
	verifier, err := SCRAMVerifier(goodPW, 4096)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, gs2, scramUser, password string
		secret                         string
		wantOK                         bool
	}{
		{"n-empty-user", "n,,", "", goodPW, verifier, true},
		{"y-header", "y,,", "", goodPW, verifier, true},
		{"y-header-plain", "y,,", "", goodPW, goodPW, true},
		{"other-user-name-ignored", "n,,", "someone=2Celse", goodPW, verifier, true},
		{"wrong", "y,,", "", "nope", verifier, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, ch := startServer(t, SCRAM, mustSecret(t, tc.secret))
			fe, _ := rawClient(t, addr)
			if _, ok := receiveFE(t, fe).(*pgproto3.AuthenticationSASL); !ok {
				t.Fatal("want AuthenticationSASL")
			}
			c1bare := "n=" + tc.scramUser + ",r=clientnonce123"
			sendFE(t, fe, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(tc.gs2 + c1bare)})
			cont, ok := receiveFE(t, fe).(*pgproto3.AuthenticationSASLContinue)
			if !ok {
				t.Fatal("want AuthenticationSASLContinue")
			}
			s1 := string(cont.Data)
			var nonce, saltB64 string
			var iter int
			for _, f := range strings.Split(s1, ",") {
				switch {
				case strings.HasPrefix(f, "r="):
					nonce = f[2:]
				case strings.HasPrefix(f, "s="):
					saltB64 = f[2:]
				case strings.HasPrefix(f, "i="):
					iter, _ = strconv.Atoi(f[2:])
				}
			}
			if !strings.HasPrefix(nonce, "clientnonce123") || len(nonce) <= len("clientnonce123") {
				t.Fatalf("server nonce %q does not extend the client's", nonce)
			}
			salt, err := base64.StdEncoding.DecodeString(saltB64)
			if err != nil || len(salt) == 0 || iter != 4096 {
				t.Fatalf("server-first %q: bad salt or iterations", s1)
			}
			c2wop := "c=" + base64.StdEncoding.EncodeToString([]byte(tc.gs2)) + ",r=" + nonce
			authMsg := c1bare + "," + s1 + "," + c2wop
			proof, sig := scramProof(tc.password, salt, iter, authMsg)
			sendFE(t, fe, &pgproto3.SASLResponse{Data: []byte(c2wop + ",p=" + base64.StdEncoding.EncodeToString(proof))})
			msg := receiveFE(t, fe)
			if !tc.wantOK {
				serr := serverErr(t, ch)
				if e, ok := msg.(*pgproto3.ErrorResponse); !ok || e.Code != "28P01" {
					t.Fatalf("got %T, want ErrorResponse 28P01", msg)
				}
				if !errors.Is(serr, ErrPasswordMismatch) {
					t.Fatalf("Authenticate = %v, want ErrPasswordMismatch", serr)
				}
				return
			}
			final, ok := msg.(*pgproto3.AuthenticationSASLFinal)
			if !ok {
				t.Fatalf("got %T, want AuthenticationSASLFinal", msg)
			}
			if want := "v=" + base64.StdEncoding.EncodeToString(sig); string(final.Data) != want {
				t.Fatalf("server-final %q, want %q", final.Data, want)
			}
			if _, ok := receiveFE(t, fe).(*pgproto3.AuthenticationOk); !ok {
				t.Fatal("want AuthenticationOk after SASLFinal")
			}
			sendFE(t, fe, &pgproto3.Terminate{})
			if serr := serverErr(t, ch); serr != nil {
				t.Fatalf("Authenticate: %v", serr)
			}
		})
	}
}

func TestChooseMethod(t *testing.T) {
	none := Secret{Kind: SecretNone}
	plain := Secret{Kind: SecretPlain, Plain: "x"}
	md := Secret{Kind: SecretMD5, MD5: "md5" + md5Inner("x", "u")}
	sc := mustSecret(t, mustVerifier(t, "x"))
	cases := []struct {
		configured Method
		s          Secret
		want       Method
	}{
		{Trust, none, Trust}, {Trust, plain, Trust}, {Trust, md, Trust}, {Trust, sc, Trust},
		{Cleartext, none, Cleartext}, {Cleartext, plain, Cleartext}, {Cleartext, md, Cleartext}, {Cleartext, sc, Cleartext},
		{MD5, none, MD5}, {MD5, plain, MD5}, {MD5, md, MD5}, {MD5, sc, SCRAM},
		{SCRAM, none, SCRAM}, {SCRAM, plain, SCRAM}, {SCRAM, md, SCRAM}, {SCRAM, sc, SCRAM},
	}
	for _, tc := range cases {
		if got := ChooseMethod(tc.configured, tc.s); got != tc.want {
			t.Errorf("ChooseMethod(%v, %v secret) = %v, want %v", tc.configured, tc.s.Kind, got, tc.want)
		}
	}
}

func mustVerifier(t *testing.T, pw string) string {
	t.Helper()
	v, err := SCRAMVerifier(pw, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParseMethod(t *testing.T) {
	for s, want := range map[string]Method{"trust": Trust, "password": Cleartext, "md5": MD5, "scram-sha-256": SCRAM} {
		got, err := ParseMethod(s)
		if err != nil || got != want {
			t.Errorf("ParseMethod(%q) = %v, %v; want %v", s, got, err, want)
		}
		if got.String() != s {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), s)
		}
	}
	for _, s := range []string{"", "MD5", "scram", "cert", "plain"} {
		if _, err := ParseMethod(s); err == nil {
			t.Errorf("ParseMethod(%q) succeeded", s)
		}
	}
}

func TestParseSecret(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	short := base64.StdEncoding.EncodeToString(make([]byte, 31))
	salt := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	hex32 := "0123456789abcdef0123456789abcdef"
	good := []struct {
		in   string
		kind SecretKind
	}{
		{"", SecretNone},
		{"hunter2", SecretPlain},
		{"md5", SecretPlain},
		{"md5short", SecretPlain},
		{"scram-sha-256$lowercase-is-a-password", SecretPlain},
		{"md5" + hex32, SecretMD5},
		{"md5" + strings.ToUpper(hex32), SecretMD5},
		{"SCRAM-SHA-256$4096:" + salt + "$" + key + ":" + key, SecretSCRAM},
		{mustVerifier(t, "x"), SecretSCRAM},
	}
	for _, tc := range good {
		s, err := ParseSecret(tc.in)
		if err != nil || s.Kind != tc.kind {
			t.Errorf("ParseSecret(%q) = kind %v, err %v; want kind %v", tc.in, s.Kind, err, tc.kind)
		}
	}
	if s := mustSecret(t, "md5"+strings.ToUpper(hex32)); s.MD5 != "md5"+hex32 {
		t.Errorf("md5 secret not lower-cased")
	}
	if s := mustSecret(t, "SCRAM-SHA-256$4096:"+salt+"$"+key+":"+key); s.Iter != 4096 ||
		string(s.Salt) != "0123456789abcdef" || len(s.StoredKey) != 32 || len(s.ServerKey) != 32 {
		t.Errorf("SCRAM secret fields wrong")
	}
	bad := []string{
		"md5" + strings.Repeat("g", 32),
		"md5" + hex32[:31] + "z",
		"SCRAM-SHA-256$",
		"SCRAM-SHA-256$4096",
		"SCRAM-SHA-256$4096:" + salt,
		"SCRAM-SHA-256$4096:" + salt + "$" + key,
		"SCRAM-SHA-256$0:" + salt + "$" + key + ":" + key,
		"SCRAM-SHA-256$-1:" + salt + "$" + key + ":" + key,
		"SCRAM-SHA-256$x:" + salt + "$" + key + ":" + key,
		"SCRAM-SHA-256$4096:$" + key + ":" + key,
		"SCRAM-SHA-256$4096:!!!$" + key + ":" + key,
		"SCRAM-SHA-256$4096:" + salt + "$" + short + ":" + key,
		"SCRAM-SHA-256$4096:" + salt + "$" + key + ":" + short,
		"SCRAM-SHA-256$4096:" + salt + "$" + key + ":" + key + "x",
	}
	for _, in := range bad {
		_, err := ParseSecret(in)
		if err == nil {
			t.Errorf("ParseSecret(%q) succeeded", in)
			continue
		}
		if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), salt) || strings.Contains(err.Error(), "ggg") {
			t.Errorf("ParseSecret error %q echoes the secret", err)
		}
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	s := mustSecret(t, mustVerifier(t, "hunter2"))
	p := Secret{Kind: SecretPlain, Plain: "hunter2"}
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		for _, sec := range []Secret{s, p} {
			if got := fmt.Sprintf(f, sec); got != "[secret]" {
				t.Errorf("Sprintf(%q) = %q", f, got)
			}
		}
	}
	if got := fmt.Sprintf("%+v", struct{ S Secret }{p}); strings.Contains(got, "hunter2") {
		t.Errorf("nested secret printed: %q", got)
	}
	if p.String() != "[secret]" {
		t.Errorf("String() = %q", p.String())
	}
}

func TestSCRAMVerifier(t *testing.T) {
	a, err := SCRAMVerifier("pw", 4096)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := SCRAMVerifier("pw", 4096)
	if a == b {
		t.Error("two verifiers share a salt")
	}
	s := mustSecret(t, a)
	if s.Kind != SecretSCRAM || s.Iter != 4096 || len(s.Salt) != 16 {
		t.Errorf("verifier fields wrong: kind %v iter %d salt %d bytes", s.Kind, s.Iter, len(s.Salt))
	}
	if _, err := SCRAMVerifier("pw", 0); err == nil {
		t.Error("SCRAMVerifier with 0 iterations succeeded")
	}
}

func TestSASLPrep(t *testing.T) {
	cases := map[string]string{
		"plain":            "plain",
		"tab\there":        "tab\there", // ASCII is used as is, controls included (as PostgreSQL)
		"a\u00a0b":         "a b",       // non-ASCII space → space
		"I\u00adX":         "IX",        // soft hyphen maps to nothing
		"\u2168":           "IX",        // NFKC
		"bad\xffutf8":      "bad\xffutf8",
		"prohibited\u0007": "prohibited\u0007",
		"ctl\u0080\u00e9":  "ctl\u0080\u00e9", // prohibited control: raw password kept
	}
	for in, want := range cases {
		if got := saslPrep(in); got != want {
			t.Errorf("saslPrep(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMisuse(t *testing.T) {
	sc := mustSecret(t, mustVerifier(t, "x"))
	be := pgproto3.NewBackend(strings.NewReader(""), io.Discard)
	if err := Authenticate(be, MD5, "u", sc); err == nil || errors.Is(err, ErrPasswordMismatch) || errors.Is(err, ErrProtocol) {
		t.Errorf("MD5 with SCRAM secret: %v", err)
	}
	if err := Authenticate(be, Method(99), "u", sc); err == nil {
		t.Error("unknown method accepted")
	}
}

// An empty stored plaintext password, or an empty password from the client, never authenticates.
func TestEmptyPassword(t *testing.T) {
	for _, m := range []Method{Cleartext, MD5, SCRAM} {
		t.Run(m.String(), func(t *testing.T) {
			addr, ch := startServer(t, m, Secret{Kind: SecretPlain, Plain: ""})
			err := connect(t, addr, "")
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
				t.Fatalf("connect error = %v, want PgError 28P01", err)
			}
			if serr := serverErr(t, ch); !errors.Is(serr, ErrPasswordMismatch) {
				t.Fatalf("Authenticate = %v, want ErrPasswordMismatch", serr)
			}
		})
	}
}

// TestPlainCredentialsSaltPerUser: two users with the same plaintext
// password get different SCRAM salts (the salt is shown to anyone who
// starts a login); the same user gets the same one each time (the cache).
// Keyed by the password alone, both users showed one salt.
func TestPlainCredentialsSaltPerUser(t *testing.T) {
	a1, err := plainCredentials("alice", "same-password")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := plainCredentials("alice", "same-password")
	if err != nil {
		t.Fatal(err)
	}
	b, err := plainCredentials("bob", "same-password")
	if err != nil {
		t.Fatal(err)
	}
	if a1.Salt != a2.Salt {
		t.Errorf("one user's salt changed between logins")
	}
	if a1.Salt == b.Salt {
		t.Errorf("two users with the same password show the same salt")
	}
}

// An authorization identity or a mandatory extension in the SCRAM first
// message is refused as unsupported (the caller answers 0A000, as
// PostgreSQL does), not as a malformed message.
func TestSCRAMUnsupportedFeatures(t *testing.T) {
	for first, want := range map[string]error{
		"n,a=admin,n=,r=abc": ErrAuthzID,
		"y,a=admin,n=,r=abc": ErrAuthzID,
		"n,,m=ext,n=,r=abc":  ErrSCRAMExtension,
	} {
		addr, ch := startServer(t, SCRAM, Secret{Kind: SecretPlain, Plain: goodPW})
		fe, _ := rawClient(t, addr)
		receiveFE(t, fe)
		sendFE(t, fe, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(first)})
		if err := serverErr(t, ch); !errors.Is(err, want) || errors.Is(err, ErrProtocol) {
			t.Errorf("%q: Authenticate = %v, want %v", first, err, want)
		}
	}
}
