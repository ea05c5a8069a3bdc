package pgtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Certs is a throwaway PKI written to a temp dir: a CA, a server
// certificate for 127.0.0.1/localhost, and client certificates by CN.
type Certs struct {
	Dir        string
	CAFile     string // CA certificate (PEM)
	ServerCert string // server certificate signed by the CA
	ServerKey  string // its key (mode 0600)

	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	t      testing.TB
}

// NewCerts generates a CA and a server certificate in a temp dir.
func NewCerts(t testing.TB) *Certs {
	t.Helper()
	c := &Certs{Dir: t.TempDir(), t: t}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pgtide test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("pgtest: CA certificate: %v", err)
	}
	c.caCert, _ = x509.ParseCertificate(der)
	c.caKey = key
	c.CAFile = filepath.Join(c.Dir, "ca.crt")
	writePEM(t, c.CAFile, "CERTIFICATE", der, 0o644)
	c.ServerCert, c.ServerKey = c.issue("server", "localhost", true)
	return c
}

// Client issues a client certificate with CN=cn and returns its files.
func (c *Certs) Client(cn string) (certFile, keyFile string) {
	return c.issue("client-"+cn, cn, false)
}

var serial int64 = 100

func (c *Certs) issue(name, cn string, server bool) (string, string) {
	t := c.t
	key := newKey(t)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.caCert, &key.PublicKey, c.caKey)
	if err != nil {
		t.Fatalf("pgtest: certificate %s: %v", name, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("pgtest: key %s: %v", name, err)
	}
	certFile := filepath.Join(c.Dir, name+".crt")
	keyFile := filepath.Join(c.Dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der, 0o644)
	writePEM(t, keyFile, "PRIVATE KEY", kder, 0o600)
	return certFile, keyFile
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("pgtest: key: %v", err)
	}
	return key
}

func writePEM(t testing.TB, path, typ string, der []byte, mode os.FileMode) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		t.Fatalf("pgtest: write %s: %v", path, err)
	}
}

// WithServerTLS turns on ssl for a StartPostgres server with the server
// certificate of c. PostgreSQL wants its key owned by the server user (it
// runs as postgres or nobody when the tests run as root) with mode 0600, so
// the pair is copied to a world-traversable directory of their own.
func WithServerTLS(c *Certs) Option {
	t := c.t
	dir, err := os.MkdirTemp("", "pgtide-pgtls-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	for _, f := range [][3]any{{c.ServerCert, certFile, os.FileMode(0o644)}, {c.ServerKey, keyFile, os.FileMode(0o600)}} {
		b, err := os.ReadFile(f[0].(string))
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		if err := os.WriteFile(f[1].(string), b, f[2].(os.FileMode)); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	if os.Geteuid() == 0 {
		for _, name := range []string{"postgres", "nobody"} {
			if u, err := user.Lookup(name); err == nil {
				uid, _ := strconv.Atoi(u.Uid)
				gid, _ := strconv.Atoi(u.Gid)
				if err := os.Chown(keyFile, uid, gid); err != nil {
					t.Fatalf("pgtest: chown server key: %v", err)
				}
				break
			}
		}
	}
	return func(o *options) {
		o.settings = append(o.settings, [2]string{"ssl", "on"},
			[2]string{"ssl_cert_file", certFile}, [2]string{"ssl_key_file", keyFile})
	}
}
