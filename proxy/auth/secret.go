package auth

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/xdg-go/stringprep"
)

// SecretKind says which form a stored credential has.
type SecretKind int

const (
	// SecretNone: no password is configured. Only Trust lets such a user in;
	// every other method runs the exchange and then fails with ErrPasswordMismatch.
	SecretNone SecretKind = iota
	// SecretPlain: the password itself.
	SecretPlain
	// SecretMD5: "md5" + hex(md5(password + user)).
	SecretMD5
	// SecretSCRAM: a SCRAM-SHA-256 verifier (iterations, salt, StoredKey, ServerKey).
	SecretSCRAM
)

// String names the kind (never the secret).
func (k SecretKind) String() string {
	switch k {
	case SecretNone:
		return "none"
	case SecretPlain:
		return "plain"
	case SecretMD5:
		return "md5"
	case SecretSCRAM:
		return "scram-sha-256"
	}
	return "SecretKind(" + strconv.Itoa(int(k)) + ")"
}

// Secret is a user's stored credential. Never log it; String() returns "[secret]",
// and every fmt verb (including %#v and %+v) prints "[secret]".
type Secret struct {
	Kind  SecretKind
	Plain string // SecretPlain: the password
	MD5   string // SecretMD5: "md5" + 32 lowercase hex digits

	// SecretSCRAM:
	Iter      int
	Salt      []byte
	StoredKey []byte
	ServerKey []byte
}

// String hides the secret.
func (Secret) String() string { return "[secret]" }

// GoString hides the secret from %#v.
func (Secret) GoString() string { return "[secret]" }

// Format hides the secret from every fmt verb.
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, "[secret]") }

// MarshalText hides the secret from encoders (JSON, loggers).
func (Secret) MarshalText() ([]byte, error) { return []byte("[secret]"), nil }

const (
	scramPrefix = "SCRAM-SHA-256$"
	scramMech   = "SCRAM-SHA-256"
	// DefaultSCRAMIterations is the PBKDF2 iteration count used for verifiers made
	// on the fly from plaintext secrets (PostgreSQL's default scram_iterations).
	DefaultSCRAMIterations = 4096
	scramSaltLen           = 16
	scramKeyLen            = sha256.Size
)

// ParseSecret parses a stored credential:
//
//   - ""                                        → SecretNone
//   - "md5" + 32 hex digits                     → SecretMD5
//   - "SCRAM-SHA-256$iter:salt$stored:server"   → SecretSCRAM (base64 salt and keys)
//   - anything else                             → SecretPlain
//
// Text that looks like an md5 or SCRAM secret but is malformed is rejected rather
// than silently taken as a plaintext password. Errors never contain the input.
func ParseSecret(s string) (Secret, error) {
	switch {
	case s == "":
		return Secret{Kind: SecretNone}, nil
	case strings.HasPrefix(s, scramPrefix):
		return parseSCRAMSecret(s[len(scramPrefix):])
	case strings.HasPrefix(s, "md5") && len(s) == 35:
		h := strings.ToLower(s[3:])
		if _, err := hex.DecodeString(h); err != nil {
			return Secret{}, errors.New("auth: malformed md5 secret: want \"md5\" followed by 32 hex digits")
		}
		return Secret{Kind: SecretMD5, MD5: "md5" + h}, nil
	}
	return Secret{Kind: SecretPlain, Plain: s}, nil
}

func parseSCRAMSecret(rest string) (Secret, error) {
	bad := func(why string) (Secret, error) {
		return Secret{}, errors.New("auth: malformed SCRAM-SHA-256 secret: " + why +
			" (want SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)")
	}
	factors, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return bad("missing '$' before the keys")
	}
	iterText, saltText, ok := strings.Cut(factors, ":")
	if !ok {
		return bad("missing ':' between iterations and salt")
	}
	iter, err := strconv.Atoi(iterText)
	if err != nil || iter < 1 {
		return bad("iterations must be a positive integer")
	}
	salt, err := base64.StdEncoding.DecodeString(saltText)
	if err != nil || len(salt) == 0 {
		return bad("salt must be non-empty base64")
	}
	storedText, serverText, ok := strings.Cut(keys, ":")
	if !ok {
		return bad("missing ':' between StoredKey and ServerKey")
	}
	stored, err := base64.StdEncoding.DecodeString(storedText)
	if err != nil || len(stored) != scramKeyLen {
		return bad("StoredKey must be base64 of 32 bytes")
	}
	server, err := base64.StdEncoding.DecodeString(serverText)
	if err != nil || len(server) != scramKeyLen {
		return bad("ServerKey must be base64 of 32 bytes")
	}
	return Secret{Kind: SecretSCRAM, Iter: iter, Salt: salt, StoredKey: stored, ServerKey: server}, nil
}

// SCRAMVerifier derives a SCRAM-SHA-256 verifier for password with a random
// 16-byte salt and iter PBKDF2 iterations, in PostgreSQL's text form
// "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>".
func SCRAMVerifier(password string, iter int) (string, error) {
	if iter < 1 {
		return "", errors.New("auth: SCRAM iterations must be positive")
	}
	salt, err := randomBytes(scramSaltLen)
	if err != nil {
		return "", err
	}
	stored, server, err := scramKeys(password, salt, iter)
	if err != nil {
		return "", err
	}
	enc := base64.StdEncoding
	return scramPrefix + strconv.Itoa(iter) + ":" + enc.EncodeToString(salt) + "$" +
		enc.EncodeToString(stored) + ":" + enc.EncodeToString(server), nil
}

// scramKeys computes StoredKey and ServerKey for password (SASLprepped the way
// PostgreSQL does) with the given salt and iteration count.
func scramKeys(password string, salt []byte, iter int) (storedKey, serverKey []byte, err error) {
	salted, err := pbkdf2.Key(sha256.New, saslPrep(password), salt, iter, scramKeyLen)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: deriving SCRAM keys: %w", err)
	}
	clientKey := hmacSHA256(salted, "Client Key")
	sum := sha256.Sum256(clientKey)
	return sum[:], hmacSHA256(salted, "Server Key"), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// saslPrep normalizes a password as PostgreSQL's pg_saslprep does (and libpq on
// the client side): pure ASCII is used unchanged; otherwise SASLprep (RFC 4013)
// is applied, and if that fails (invalid UTF-8, prohibited or unassigned code
// points) the raw password is used, so that such passwords still work.
func saslPrep(password string) string {
	ascii := true
	for i := 0; i < len(password); i++ {
		if password[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return password
	}
	prepped, err := stringprep.SASLprep.Prepare(password)
	if err != nil || prepped == "" {
		return password
	}
	return prepped
}

// md5Inner returns hex(md5(password + user)) — the part of an md5 secret after "md5".
func md5Inner(password, user string) string {
	sum := md5.Sum([]byte(password + user))
	return hex.EncodeToString(sum[:])
}

// md5Salted returns "md5" + hex(md5(inner + salt)), what a client sends for AuthenticationMD5Password.
func md5Salted(inner string, salt [4]byte) string {
	buf := make([]byte, 0, len(inner)+4)
	buf = append(buf, inner...)
	buf = append(buf, salt[:]...)
	sum := md5.Sum(buf)
	return "md5" + hex.EncodeToString(sum[:])
}

func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("auth: reading random bytes: %w", err)
	}
	return b, nil
}
