package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"
)

// scramExchange runs AuthenticateKeys on one end of a pipe and an xdg-go
// SCRAM client (or a cleartext one) with password pw on the other.
func scramExchange(t *testing.T, m Method, s Secret, pw string) (Keys, error) {
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
		k, err := AuthenticateKeys(be, m, "u", s, Options{})
		if err == nil {
			be.Send(&pgproto3.AuthenticationOk{})
			_ = be.Flush()
		}
		_ = ss.Close()
		ch <- result{k, err}
	}()
	fe := pgproto3.NewFrontend(cs, cs)
	clientErr := func() error {
		msg, err := fe.Receive()
		if err != nil {
			return err
		}
		switch msg.(type) {
		case *pgproto3.AuthenticationCleartextPassword:
			fe.Send(&pgproto3.PasswordMessage{Password: pw})
			if err := fe.Flush(); err != nil {
				return err
			}
			_, err = fe.Receive()
			return err
		case *pgproto3.AuthenticationSASL:
		default:
			return fmt.Errorf("got %T", msg)
		}
		client, err := scram.SHA256.NewClient("", pw, "")
		if err != nil {
			return err
		}
		conv := client.NewConversation()
		first, err := conv.Step("")
		if err != nil {
			return err
		}
		fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(first)})
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
	return r.k, r.err
}

func wantClientKey(t *testing.T, pw string, s Secret) []byte {
	t.Helper()
	salted, err := pbkdf2.Key(sha256.New, pw, s.Salt, s.Iter, 32)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, salted)
	m.Write([]byte("Client Key"))
	return m.Sum(nil)
}

// TestPassthroughClientKeyRecovery: a SCRAM exchange against a stored verifier yields
// the ClientKey (H(ClientKey) == StoredKey), the one PBKDF2 gives for the
// password; a wrong password yields nothing.
func TestPassthroughClientKeyRecovery(t *testing.T) {
	const pw = "correct horse"
	v, err := SCRAMVerifier(pw, 4096)
	if err != nil {
		t.Fatal(err)
	}
	sec := mustSecret(t, v)
	for _, m := range []Method{SCRAM, MD5, Cleartext} { // MD5 with a verifier runs SCRAM (ChooseMethod)
		t.Run(m.String(), func(t *testing.T) {
			keys, err := scramExchange(t, ChooseMethod(m, sec), sec, pw)
			if err != nil {
				t.Fatalf("AuthenticateKeys: %v", err)
			}
			sum := sha256.Sum256(keys.ClientKey)
			if !bytes.Equal(sum[:], sec.StoredKey) {
				t.Fatal("H(ClientKey) != StoredKey")
			}
			if !bytes.Equal(keys.ClientKey, wantClientKey(t, pw, sec)) {
				t.Fatal("ClientKey differs from HMAC(SaltedPassword, \"Client Key\")")
			}
			if got := fmt.Sprintf("%v %+v %#v %s", keys, keys, keys, keys); bytes.Contains([]byte(got), keys.ClientKey) || got != "[secret] [secret] [secret] [secret]" {
				t.Fatalf("Keys printed as %q", got)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		keys, err := scramExchange(t, SCRAM, sec, "wrong")
		if !errors.Is(err, ErrPasswordMismatch) || keys.ClientKey != nil {
			t.Fatalf("err = %v, key returned: %v", err, keys.ClientKey != nil)
		}
	})
	t.Run("plaintext secret gives no key", func(t *testing.T) {
		keys, err := scramExchange(t, SCRAM, mustSecret(t, pw), pw)
		if err != nil || keys.ClientKey != nil {
			t.Fatalf("err = %v, key returned: %v", err, keys.ClientKey != nil)
		}
	})
}

func TestPassthroughRecoverClientKeyMalformed(t *testing.T) {
	stored := make([]byte, 32)
	for _, tc := range []struct{ first, final string }{
		{"n,,n=,r=abc", "c=biws,r=abcdef"},                    // no proof
		{"n,,n=,r=abc", "c=biws,r=abcdef,p=!!"},               // bad base64
		{"n,,n=,r=abc", "c=biws,r=abcdef,p=AAAA"},             // short proof
		{"n", "c=biws,r=abcdef,p=" + string(make([]byte, 0))}, // no GS2 header
	} {
		if _, err := recoverClientKey(tc.first, "r=abcdef,s=AAAA,i=4096", tc.final, stored); !errors.Is(err, ErrProtocol) {
			t.Errorf("%q/%q: err = %v, want ErrProtocol", tc.first, tc.final, err)
		}
	}
}
