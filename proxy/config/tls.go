package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"syscall"

	"github.com/BurntSushi/toml"
)

// SSL modes, as libpq and PgBouncer name them. On the client side "allow"
// and "prefer" behave the same (TLS when the client asks for it).
var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// TLS versions accepted by client_tls_min_version.
var tlsVersions = map[string]uint16{"TLSv1.2": tls.VersionTLS12, "TLSv1.3": tls.VersionTLS13}

// SSLModeRank orders the modes: disable 0, allow 1, prefer 2, require 3,
// verify-ca 4, verify-full 5; -1 for anything else.
func SSLModeRank(mode string) int {
	for i, m := range sslModes {
		if m == mode {
			return i
		}
	}
	return -1
}

// EffectiveClientTLSSSLMode is client_tls_sslmode with its default applied:
// "prefer" when a certificate is configured, else "disable".
func (c *Config) EffectiveClientTLSSSLMode() string {
	switch {
	case c.ClientTLSSSLMode != "":
		return c.ClientTLSSSLMode
	case c.ClientTLSCertFile != "":
		return "prefer"
	}
	return "disable"
}

// ClientTLSVersion is the minimum TLS version of client connections.
func (c *Config) ClientTLSVersion() uint16 {
	if v, ok := tlsVersions[c.ClientTLSMinVersion]; ok {
		return v
	}
	return tls.VersionTLS12
}

// ClientTLSCipherSuites maps client_tls_ciphers to crypto/tls IDs (nil = Go's defaults).
func (c *Config) ClientTLSCipherSuites() []uint16 {
	var ids []uint16
	for _, name := range c.ClientTLSCiphers {
		if id, ok := cipherID(name); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// EffectiveServerTLSSSLMode is server_tls_sslmode with its default ("prefer").
func (db Database) EffectiveServerTLSSSLMode() string {
	if db.ServerTLSSSLMode == "" {
		return "prefer"
	}
	return db.ServerTLSSSLMode
}

func cipherID(name string) (uint16, bool) {
	for _, cs := range tls.CipherSuites() {
		if cs.Name == name {
			return cs.ID, true
		}
	}
	return 0, false
}

func (d *decoder) validateClientTLS(c *Config) {
	if c.ClientTLSSSLMode != "" {
		d.checkEnum(k("client_tls_sslmode"), c.ClientTLSSSLMode, sslModes)
	}
	mode := c.EffectiveClientTLSSSLMode()
	d.checkKeyPair(k("client_tls_cert_file"), k("client_tls_key_file"), c.ClientTLSCertFile, c.ClientTLSKeyFile)
	if SSLModeRank(mode) >= SSLModeRank("allow") && c.ClientTLSCertFile == "" {
		d.fail(k("client_tls_sslmode"), "", fmt.Sprintf("%q needs client_tls_cert_file and client_tls_key_file", mode))
	}
	if c.ClientTLSCAFile != "" {
		d.checkCAFile(k("client_tls_ca_file"), c.ClientTLSCAFile)
	} else if SSLModeRank(mode) >= SSLModeRank("verify-ca") {
		d.fail(k("client_tls_ca_file"), "", fmt.Sprintf("must be set when client_tls_sslmode is %q (client certificates are verified against it)", mode))
	}
	if c.ClientTLSMinVersion != "" {
		d.checkEnum(k("client_tls_min_version"), c.ClientTLSMinVersion, []string{"TLSv1.2", "TLSv1.3"})
	}
	for i, name := range c.ClientTLSCiphers {
		if _, ok := cipherID(name); !ok {
			d.fail(k("client_tls_ciphers"), fmt.Sprintf("[%d]", i), fmt.Sprintf("unknown or insecure cipher suite %q (use Go/IANA names such as \"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"; TLS 1.3 suites are not configurable)", name))
		}
	}
	if c.AuthType == "hba" && c.AuthHBAFile == "" {
		d.fail(k("auth_hba_file"), "", `must be set when auth_type is "hba"`)
	}
	if c.AuthHBAFile != "" {
		if _, err := os.Stat(c.AuthHBAFile); err != nil {
			d.fail(k("auth_hba_file"), "", err.Error())
		}
	}
}

func (d *decoder) validateServerTLS(name string, db Database) {
	key := func(f string) toml.Key { return k("databases", name, f) }
	if db.ServerTLSSSLMode != "" {
		d.checkEnum(key("server_tls_sslmode"), db.ServerTLSSSLMode, sslModes)
	}
	d.checkKeyPair(key("server_tls_cert_file"), key("server_tls_key_file"), db.ServerTLSCertFile, db.ServerTLSKeyFile)
	if db.ServerTLSCAFile != "" {
		d.checkCAFile(key("server_tls_ca_file"), db.ServerTLSCAFile)
	} else if SSLModeRank(db.ServerTLSSSLMode) >= SSLModeRank("verify-ca") {
		d.fail(key("server_tls_ca_file"), "", fmt.Sprintf("must be set when server_tls_sslmode is %q", db.ServerTLSSSLMode))
	}
}

// checkKeyPair checks that a certificate and its key are set together and load.
func (d *decoder) checkKeyPair(certKey, keyKey toml.Key, cert, key string) {
	switch {
	case cert == "" && key == "":
	case cert == "":
		d.fail(certKey, "", fmt.Sprintf("must be set when %s is", keyKey[len(keyKey)-1]))
	case key == "":
		d.fail(keyKey, "", fmt.Sprintf("must be set when %s is", certKey[len(certKey)-1]))
	default:
		if err := CheckKeyFile(key); err != nil {
			d.fail(keyKey, "", err.Error())
		} else if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
			d.fail(certKey, "", "cannot load the certificate and key: "+err.Error())
		}
	}
}

// CheckKeyFile refuses a private key file others could read, with
// PostgreSQL's rule and words (be-secure-common.c, and libpq's for its
// client key): it must belong to the user pgtide runs as or to root, and
// have no group or world access (0600), except that a root-owned key may
// be readable by its group (0640), the usual way to share a system key.
func CheckKeyFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return nil // loading the key reports it
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil // no Unix ownership to check
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("private key file %q is not a regular file", path)
	}
	euid := uint32(os.Geteuid())
	if st.Uid != euid && st.Uid != 0 {
		return fmt.Errorf("private key file %q must be owned by the user pgtide runs as or root", path)
	}
	perm := fi.Mode().Perm()
	group := perm&0o077 != 0
	if st.Uid == 0 {
		group = perm&0o037 != 0 // g=r is allowed
	}
	if group {
		return fmt.Errorf("private key file %q has group or world access (mode %04o): it must have permissions u=rw (0600) or less if owned by the user pgtide runs as, or permissions u=rw,g=r (0640) or less if owned by root", path, perm)
	}
	return nil
}

func (d *decoder) checkCAFile(key toml.Key, path string) {
	if _, err := LoadCAFile(path); err != nil {
		d.fail(key, "", err.Error())
	}
}

// LoadCAFile reads a PEM bundle of CA certificates.
func LoadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}
