package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"
)

// cbindExchange runs AuthenticateKeys with opts on one end of a pipe and, on
// the other, an xdg-go SCRAM client conversation that selects mech. It
// returns the mechanisms the server offered, the keys and the server's
// error. rawFirst, when set, replaces the client-first-message the
// conversation made (its nonce kept).
func cbindExchange(t *testing.T, s Secret, opts Options, mech string, conv *scram.ClientConversation, rawFirst func(string) string) ([]string, Keys, error) {
	t.Helper()
	cs, ss := net.Pipe()
	defer cs.Close()
	defer ss.Close()
	_ = cs.SetDeadline(time.Now().Add(10 * time.Second))
	_ = ss.SetDeadline(time.Now().Add(10 * time.Second))
	type result struct {
		k   Keys
		err error
	}
	ch := make(chan result, 1)
	go func() {
		be := pgproto3.NewBackend(ss, ss)
		be.SetMaxBodyLen(1 << 16)
		k, err := AuthenticateKeys(be, SCRAM, "u", s, opts)
		if err == nil {
			be.Send(&pgproto3.AuthenticationOk{})
			_ = be.Flush()
		}
		_ = ss.Close()
		ch <- result{k, err}
	}()
	fe := pgproto3.NewFrontend(cs, cs)
	var offered []string
	clientErr := func() error {
		msg, err := fe.Receive()
		if err != nil {
			return err
		}
		sasl, ok := msg.(*pgproto3.AuthenticationSASL)
		if !ok {
			return fmt.Errorf("got %T", msg)
		}
		offered = slices.Clone(sasl.AuthMechanisms)
		first, err := conv.Step("")
		if err != nil {
			return err
		}
		if rawFirst != nil {
			first = rawFirst(first)
		}
		fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: mech, Data: []byte(first)})
		if err := fe.Flush(); err != nil {
			return err
		}
		msg, err = fe.Receive()
		if err != nil {
			return err
		}
		cont, ok := msg.(*pgproto3.AuthenticationSASLContinue)
		if !ok {
			return fmt.Errorf("got %T", msg)
		}
		final, err := conv.Step(string(cont.Data))
		if err != nil {
			return err
		}
		fe.Send(&pgproto3.SASLResponse{Data: []byte(final)})
		if err := fe.Flush(); err != nil {
			return err
		}
		msg, err = fe.Receive()
		if err != nil {
			return err
		}
		fin, ok := msg.(*pgproto3.AuthenticationSASLFinal)
		if !ok {
			return fmt.Errorf("got %T", msg)
		}
		if _, err := conv.Step(string(fin.Data)); err != nil {
			return fmt.Errorf("server signature: %w", err)
		}
		return nil
	}()
	r := <-ch
	if r.err == nil && clientErr != nil {
		t.Fatalf("client: %v", clientErr)
	}
	return offered, r.k, r.err
}

func scramClient(t *testing.T, pw string) *scram.Client {
	t.Helper()
	c, err := scram.SHA256.NewClient("", pw, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCBindSCRAMPlus covers SCRAM-SHA-256-PLUS with tls-server-end-point
// binding against PostgreSQL's rules.
func TestCBindSCRAMPlus(t *testing.T) {
	const pw = "correct horse"
	verifier := mustSecret(t, mustVerifier(t, pw))
	endPoint := bytes.Repeat([]byte{0xab}, sha256.Size)
	onTLS := Options{TLSServerEndPoint: endPoint}
	rightCB := scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: endPoint}
	wrongCB := scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: bytes.Repeat([]byte{0xcd}, sha256.Size)}
	plusOffer := []string{scramPlusMech, scramMech}

	t.Run("right binding", func(t *testing.T) {
		for name, s := range map[string]Secret{"verifier": verifier, "plaintext": mustSecret(t, pw)} {
			t.Run(name, func(t *testing.T) {
				offered, keys, err := cbindExchange(t, s, onTLS, scramPlusMech, scramClient(t, pw).NewConversationWithChannelBinding(rightCB), nil)
				if err != nil {
					t.Fatalf("AuthenticateKeys: %v", err)
				}
				if !slices.Equal(offered, plusOffer) {
					t.Fatalf("offered %v, want %v", offered, plusOffer)
				}
				if s.Kind == SecretSCRAM && !bytes.Equal(keys.ClientKey, wantClientKey(t, pw, s)) {
					// The AuthMessage of a bound exchange holds c=<gs2 header + binding data>.
					t.Fatal("ClientKey not recovered from a SCRAM-SHA-256-PLUS exchange")
				}
			})
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		_, _, err := cbindExchange(t, verifier, onTLS, scramPlusMech, scramClient(t, "wrong").NewConversationWithChannelBinding(rightCB), nil)
		if !errors.Is(err, ErrPasswordMismatch) {
			t.Fatalf("err = %v, want ErrPasswordMismatch", err)
		}
	})
	t.Run("wrong binding data", func(t *testing.T) {
		_, keys, err := cbindExchange(t, verifier, onTLS, scramPlusMech, scramClient(t, pw).NewConversationWithChannelBinding(wrongCB), nil)
		if !errors.Is(err, ErrChannelBindingCheck) || keys.ClientKey != nil {
			t.Fatalf("err = %v, want ErrChannelBindingCheck", err)
		}
	})
	t.Run("y when PLUS offered", func(t *testing.T) {
		// A client that supports binding but was shown only SCRAM-SHA-256:
		// the list was tampered with (PostgreSQL: 28000).
		_, _, err := cbindExchange(t, verifier, onTLS, scramMech, scramClient(t, pw).NewConversationAdvertisingChannelBinding(), nil)
		if !errors.Is(err, ErrChannelBindingNegotiation) {
			t.Fatalf("err = %v, want ErrChannelBindingNegotiation", err)
		}
	})
	t.Run("n with SCRAM-SHA-256 on TLS", func(t *testing.T) {
		offered, keys, err := cbindExchange(t, verifier, onTLS, scramMech, scramClient(t, pw).NewConversation(), nil)
		if err != nil || !slices.Equal(offered, plusOffer) {
			t.Fatalf("err = %v, offered %v", err, offered)
		}
		if !bytes.Equal(keys.ClientKey, wantClientKey(t, pw, verifier)) {
			t.Fatal("ClientKey not recovered")
		}
	})
	t.Run("plain connection", func(t *testing.T) {
		offered, _, err := cbindExchange(t, verifier, Options{}, scramMech, scramClient(t, pw).NewConversationAdvertisingChannelBinding(), nil)
		if err != nil || !slices.Equal(offered, []string{scramMech}) {
			t.Fatalf("y without TLS: err = %v, offered %v", err, offered)
		}
		_, _, err = cbindExchange(t, verifier, Options{}, scramPlusMech, scramClient(t, pw).NewConversationWithChannelBinding(rightCB), nil)
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("PLUS without TLS: err = %v, want ErrProtocol", err)
		}
		_, _, err = cbindExchange(t, verifier, Options{}, scramMech, scramClient(t, pw).NewConversationWithChannelBinding(rightCB), nil)
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("p= without TLS: err = %v, want ErrProtocol", err)
		}
	})
	t.Run("flag and mechanism disagree", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			mech string
			conv *scram.ClientConversation
			raw  func(string) string
		}{
			{"PLUS with n", scramPlusMech, scramClient(t, pw).NewConversation(), nil},
			{"PLUS with y", scramPlusMech, scramClient(t, pw).NewConversationAdvertisingChannelBinding(), nil},
			{"plain with p", scramMech, scramClient(t, pw).NewConversationWithChannelBinding(rightCB), nil},
			{"PLUS with tls-exporter", scramPlusMech, scramClient(t, pw).NewConversationWithChannelBinding(rightCB),
				func(s string) string { return strings.Replace(s, "p=tls-server-end-point", "p=tls-exporter", 1) }},
			{"PLUS with unknown type", scramPlusMech, scramClient(t, pw).NewConversationWithChannelBinding(rightCB),
				func(s string) string { return strings.Replace(s, "p=tls-server-end-point", "p=tls-bogus", 1) }},
			{"unknown mechanism", "SCRAM-SHA-512-PLUS", scramClient(t, pw).NewConversationWithChannelBinding(rightCB), nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, _, err := cbindExchange(t, verifier, onTLS, tc.mech, tc.conv, tc.raw)
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("err = %v, want ErrProtocol", err)
				}
			})
		}
	})
}

func testCert(t *testing.T, alg x509.SignatureAlgorithm, ed bool) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(1),
		Subject:            pkix.Name{CommonName: "cbind"},
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(time.Hour),
		SignatureAlgorithm: alg,
	}
	var der []byte
	var err error
	if ed {
		pub, priv, kerr := ed25519.GenerateKey(rand.Reader)
		if kerr != nil {
			t.Fatal(kerr)
		}
		der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	} else {
		key, kerr := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if kerr != nil {
			t.Fatal(kerr)
		}
		der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	}
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestCBindTLSServerEndPoint: RFC 5929's hash choice (SHA-256 up to
// SHA-256, else the signature's hash); Ed25519 has none.
func TestCBindTLSServerEndPoint(t *testing.T) {
	c256 := testCert(t, x509.ECDSAWithSHA256, false)
	s256 := sha256.Sum256(c256.Raw)
	c384 := testCert(t, x509.ECDSAWithSHA384, false)
	s384 := sha512.Sum384(c384.Raw)
	c512 := testCert(t, x509.ECDSAWithSHA512, false)
	s512 := sha512.Sum512(c512.Raw)
	for _, tc := range []struct {
		cert *x509.Certificate
		want []byte
	}{{c256, s256[:]}, {c384, s384[:]}, {c512, s512[:]}} {
		got, err := TLSServerEndPoint(tc.cert)
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%v: got %x, %v; want %x", tc.cert.SignatureAlgorithm, got, err, tc.want)
		}
	}
	if got, err := TLSServerEndPoint(testCert(t, x509.PureEd25519, true)); err == nil {
		t.Errorf("Ed25519: got %x, want an error", got)
	}
	if _, err := TLSServerEndPoint(nil); err == nil {
		t.Error("nil certificate: no error")
	}
}
