package auth

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Keys is key material a successful exchange revealed. Never log it: every
// fmt verb prints "[secret]".
type Keys struct {
	// ClientKey is the SCRAM-SHA-256 ClientKey of the user's verifier
	// (H(ClientKey) == StoredKey). With it, and the verifier's salt and
	// iteration count, pgtide can answer a server's SCRAM challenge for that
	// user without knowing the password (SCRAM passthrough, as PgBouncer's).
	ClientKey []byte
}

// String hides the keys.
func (Keys) String() string { return "[secret]" }

// GoString hides the keys from %#v.
func (Keys) GoString() string { return "[secret]" }

// Format hides the keys from every fmt verb.
func (Keys) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, "[secret]") }

// MarshalText hides the keys from encoders (JSON, loggers).
func (Keys) MarshalText() ([]byte, error) { return []byte("[secret]"), nil }

// recoverClientKey returns the ClientKey a client proved it knows in a
// SCRAM-SHA-256 exchange (RFC 5802 section 3):
//
//	AuthMessage     = client-first-message-bare "," server-first-message "," client-final-message-without-proof
//	ClientSignature = HMAC(StoredKey, AuthMessage)
//	ClientKey       = ClientProof XOR ClientSignature
//
// and checks H(ClientKey) == StoredKey (the proof check itself). clientFirst
// is the whole client-first-message (with its GS2 header) and clientFinal the
// whole client-final-message (ending in ",p=<proof>").
func recoverClientKey(clientFirst, serverFirst, clientFinal string, storedKey []byte) ([]byte, error) {
	bare, ok := clientFirstBare(clientFirst)
	if !ok {
		return nil, fmt.Errorf("auth: malformed SCRAM client-first-message: %w", ErrProtocol)
	}
	i := strings.LastIndex(clientFinal, ",p=")
	if i < 0 {
		return nil, fmt.Errorf("auth: SCRAM client-final-message has no proof: %w", ErrProtocol)
	}
	proof, err := base64.StdEncoding.DecodeString(clientFinal[i+len(",p="):])
	if err != nil || len(proof) != sha256.Size {
		return nil, fmt.Errorf("auth: malformed SCRAM client proof: %w", ErrProtocol)
	}
	authMessage := bare + "," + serverFirst + "," + clientFinal[:i]
	m := hmac.New(sha256.New, storedKey)
	m.Write([]byte(authMessage))
	key := m.Sum(nil)
	for j := range key {
		key[j] ^= proof[j]
	}
	sum := sha256.Sum256(key)
	if subtle.ConstantTimeCompare(sum[:], storedKey) != 1 {
		return nil, fmt.Errorf("auth: scram: %w", ErrPasswordMismatch)
	}
	return key, nil
}

// clientFirstBare strips the GS2 header (cbind-flag "," [authzid] ",") from a
// client-first-message.
func clientFirstBare(clientFirst string) (string, bool) {
	_, rest, ok := strings.Cut(clientFirst, ",")
	if !ok {
		return "", false
	}
	_, bare, ok := strings.Cut(rest, ",")
	return bare, ok
}

// scramClientKeyFromPassword derives the ClientKey of password for a
// verifier with the given salt and iterations:
// HMAC(PBKDF2(SASLprep(password), salt, iter), "Client Key").
func scramClientKeyFromPassword(password string, salt []byte, iter int) ([]byte, error) {
	if iter < 1 || len(salt) == 0 {
		return nil, errors.New("auth: SCRAM verifier without salt or iterations")
	}
	salted, err := pbkdf2.Key(sha256.New, saslPrep(password), salt, iter, scramKeyLen)
	if err != nil {
		return nil, fmt.Errorf("auth: deriving SCRAM keys: %w", err)
	}
	return hmacSHA256(salted, "Client Key"), nil
}
