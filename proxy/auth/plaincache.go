package auth

import (
	"crypto/sha256"
	"sync"

	"github.com/xdg-go/scram"
)

// SCRAM against a plaintext password needs a verifier, and deriving one is
// 4,096 rounds of PBKDF2 (about a millisecond): per login, that made
// connect-per-transaction workloads slow. The verifier for a password is
// derived once and kept, under a key that is a hash of the password (the
// map never holds plaintext). A verifier with a fixed salt is what
// PostgreSQL stores too. Random secrets (unknown users) are not cached:
// their keys are random bytes, no PBKDF2 needed, so a wrong user costs the
// same as a known one.
var (
	plainMu    sync.Mutex
	plainCache = map[[32]byte]scram.StoredCredentials{}
)

const plainCacheMax = 10000

func plainCredentials(pw string, cache bool) (scram.StoredCredentials, error) {
	if !cache {
		stored, err := randomBytes(32)
		if err != nil {
			return scram.StoredCredentials{}, err
		}
		server, err := randomBytes(32)
		if err != nil {
			return scram.StoredCredentials{}, err
		}
		salt, err := randomBytes(scramSaltLen)
		if err != nil {
			return scram.StoredCredentials{}, err
		}
		return scram.StoredCredentials{
			KeyFactors: scram.KeyFactors{Salt: string(salt), Iters: DefaultSCRAMIterations},
			StoredKey:  stored, ServerKey: server,
		}, nil
	}
	key := sha256.Sum256([]byte("pgtide scram verifier\x00" + pw))
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
