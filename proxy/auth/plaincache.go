package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"

	"github.com/xdg-go/scram"
)

// SCRAM against a plaintext password needs a verifier, and deriving one is
// 4,096 rounds of PBKDF2 (about a millisecond): per login, that made
// connect-per-transaction workloads slow. The verifier for a password is
// derived once and kept, under a key that is a hash of the user name and
// the password (the map never holds plaintext): keyed by the password
// alone, two users with the same password would show the same salt, which
// tells anyone who starts a login that their passwords are equal. A verifier with a fixed salt is what
// PostgreSQL stores too. Users with no verifier (unknown users) get mock
// credentials (mockCredentials): no PBKDF2 and nothing cached, so a wrong
// user costs the same as a known one and cannot evict real entries.
var (
	plainMu    sync.Mutex
	plainCache = map[[32]byte]scram.StoredCredentials{}
)

const plainCacheMax = 10000

func plainCredentials(user, pw string) (scram.StoredCredentials, error) {
	key := sha256.Sum256([]byte("pgtide scram verifier\x00" + user + "\x00" + pw))
	plainMu.Lock()
	c, ok := plainCache[key]
	plainMu.Unlock()
	if ok {
		return c, nil
	}
	salt, err := randomBytes(scramSaltLen)
	if err != nil {
		return scram.StoredCredentials{}, err
	}
	stored, server, err := scramKeys(pw, salt, DefaultSCRAMIterations)
	if err != nil {
		return scram.StoredCredentials{}, err
	}
	c = scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(salt), Iters: DefaultSCRAMIterations},
		StoredKey:  stored, ServerKey: server,
	}
	plainMu.Lock()
	if len(plainCache) >= plainCacheMax {
		clear(plainCache) // passwords change rarely; a full reset is enough
	}
	plainCache[key] = c
	plainMu.Unlock()
	return c, nil
}

// mockNonce is this process's secret for mock salts (PostgreSQL's
// mock_auth_nonce): without it, anyone could compute the salt of a name
// and tell a mock from a real one.
var mockNonce = func() [32]byte {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("auth: no random bytes for the mock salt secret: " + err.Error())
	}
	return b
}()

// MockSalt is the SCRAM salt shown to a user without a verifier: stable
// per user name for the life of the process, unpredictable without
// mockNonce, and as long as a real salt (PostgreSQL's scram_mock_salt).
func MockSalt(user string) []byte {
	m := hmac.New(sha256.New, mockNonce[:])
	m.Write([]byte(user))
	return m.Sum(nil)[:scramSaltLen]
}

// mockCredentials is a verifier no proof can match (random keys), with the
// mock salt and the default iteration count.
func mockCredentials(user string) (scram.StoredCredentials, error) {
	stored, err := randomBytes(scramKeyLen)
	if err != nil {
		return scram.StoredCredentials{}, err
	}
	server, err := randomBytes(scramKeyLen)
	if err != nil {
		return scram.StoredCredentials{}, err
	}
	return scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(MockSalt(user)), Iters: DefaultSCRAMIterations},
		StoredKey:  stored, ServerKey: server,
	}, nil
}
