package config

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

const scramPrefix = "SCRAM-SHA-256$"

// ParseSCRAMVerifier parses a SCRAM-SHA-256 verifier as PostgreSQL stores it
// in pg_authid.rolpassword:
//
//	SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>
//
// The iteration count must be positive, the salt non-empty and both keys 32
// bytes (SHA-256). Errors describe what is wrong without repeating any part
// of s.
func ParseSCRAMVerifier(s string) (iter int, salt, storedKey, serverKey []byte, err error) {
	const form = "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
	rest, ok := strings.CutPrefix(s, scramPrefix)
	if !ok {
		return 0, nil, nil, nil, errors.New(form)
	}
	iterSalt, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return 0, nil, nil, nil, errors.New(form)
	}
	iterStr, saltStr, ok := strings.Cut(iterSalt, ":")
	if !ok {
		return 0, nil, nil, nil, errors.New(form)
	}
	storedStr, serverStr, ok := strings.Cut(keys, ":")
	if !ok {
		return 0, nil, nil, nil, errors.New(form)
	}
	iter, err = strconv.Atoi(iterStr)
	if err != nil || iter <= 0 {
		return 0, nil, nil, nil, errors.New("iteration count must be a positive integer")
	}
	salt, err = base64.StdEncoding.Strict().DecodeString(saltStr)
	if err != nil || len(salt) == 0 {
		return 0, nil, nil, nil, errors.New("salt must be non-empty base64")
	}
	storedKey, err = base64.StdEncoding.Strict().DecodeString(storedStr)
	if err != nil || len(storedKey) != 32 {
		return 0, nil, nil, nil, errors.New("StoredKey must be 32 bytes, base64-encoded")
	}
	serverKey, err = base64.StdEncoding.Strict().DecodeString(serverStr)
	if err != nil || len(serverKey) != 32 {
		return 0, nil, nil, nil, errors.New("ServerKey must be 32 bytes, base64-encoded")
	}
	return iter, salt, storedKey, serverKey, nil
}
