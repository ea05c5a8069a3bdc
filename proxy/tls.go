package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/auth"
	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// alpnPostgres is the ALPN protocol of PostgreSQL (required for direct TLS).
const alpnPostgres = "postgresql"

// tlsRecordHandshake is the first byte of a TLS ClientHello record: a client
// that starts with it uses direct TLS (PostgreSQL 17 sslnegotiation=direct)
// instead of an SSLRequest.
const tlsRecordHandshake = 0x16

// security is the client-facing TLS configuration and the HBA rules in
// force. A new one is built from the files at startup and on each reload
// and swapped in whole (Server.sec), so certificates, CAs and rules change
// for new connections without touching connected clients.
type security struct {
	tls  *tls.Config // nil: TLS is not offered (SSLRequest answered 'N')
	mode string      // effective client_tls_sslmode
	hba  *hbaRules   // nil unless auth_hba_file is set
	// endPoint is the tls-server-end-point channel binding data of the
	// certificate in tls (auth.TLSServerEndPoint): SCRAM on a TLS
	// connection offers SCRAM-SHA-256-PLUS with it. nil when the hash is
	// undefined (an Ed25519 certificate): then only SCRAM-SHA-256.
	endPoint []byte
}

// buildSecurity reads the certificate, key, CA and HBA files of cfg.
func buildSecurity(cfg *config.Config) (*security, error) {
	sec := &security{mode: cfg.EffectiveClientTLSSSLMode()}
	if cfg.ClientTLSCertFile != "" && sec.mode != "disable" {
		// Checked again here, not only at load: the file is re-read on
		// each reload and its mode may have changed since.
		if err := config.CheckKeyFile(cfg.ClientTLSKeyFile); err != nil {
			return nil, fmt.Errorf("client_tls_key_file: %w", err)
		}
		cert, err := tls.LoadX509KeyPair(cfg.ClientTLSCertFile, cfg.ClientTLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("client_tls_cert_file: %w", err)
		}
		tc := &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   cfg.ClientTLSVersion(),
			CipherSuites: cfg.ClientTLSCipherSuites(),
			NextProtos:   []string{alpnPostgres},
			// As PostgreSQL: no resumption, so every connection's client
			// certificate is checked against the CA in force.
			SessionTicketsDisabled: true,
		}
		if cfg.ClientTLSCAFile != "" {
			cas, err := config.LoadCAFile(cfg.ClientTLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("client_tls_ca_file: %w", err)
			}
			tc.ClientCAs = cas
			tc.ClientAuth = tls.VerifyClientCertIfGiven
			if config.SSLModeRank(sec.mode) >= config.SSLModeRank("verify-ca") {
				tc.ClientAuth = tls.RequireAndVerifyClientCert
			}
		}
		sec.tls = tc
		leaf := cert.Leaf
		if leaf == nil {
			leaf, _ = x509.ParseCertificate(cert.Certificate[0])
		}
		sec.endPoint, _ = auth.TLSServerEndPoint(leaf)
	}
	if cfg.AuthHBAFile != "" {
		rules, err := loadHBA(cfg.AuthHBAFile)
		if err != nil {
			return nil, err
		}
		sec.hba = rules
	}
	return sec, nil
}

// loadSecurity builds and installs the TLS and HBA state for cfg.
func (s *Server) loadSecurity(cfg *config.Config) error {
	sec, err := buildSecurity(cfg)
	if err != nil {
		return err
	}
	s.sec.Store(sec)
	return nil
}

// CheckSecurity reads the TLS and HBA files of cfg without installing
// them: the reload path calls it first so that a bad file fails the whole
// reload and the reason reaches the caller (the admin console's RELOAD).
func (s *Server) CheckSecurity(cfg *config.Config) error {
	_, err := buildSecurity(cfg)
	return err
}

var noSecurity = &security{mode: "disable"}

func (s *Server) security() *security {
	if sec := s.sec.Load(); sec != nil {
		return sec
	}
	return noSecurity
}

// acceptTLS answers an SSLRequest: 'N' when TLS is not offered (or on a
// unix socket, as PostgreSQL does), else 'S' and the handshake on the raw
// connection. It returns the TLS connection and the channel binding data of
// the certificate it presented (security.endPoint), or nil after 'N'. The
// caller has checked that nothing was buffered after the request.
func (s *Server) acceptTLS(nc net.Conn) (*tls.Conn, []byte, error) {
	sec := s.security()
	_, unix := nc.RemoteAddr().(*net.UnixAddr)
	if sec.tls == nil || unix {
		if _, err := nc.Write([]byte{'N'}); err != nil {
			return nil, nil, errClientGone
		}
		return nil, nil, nil
	}
	if _, err := nc.Write([]byte{'S'}); err != nil {
		return nil, nil, errClientGone
	}
	tc := tls.Server(nc, sec.tls)
	if err := tc.Handshake(); err != nil {
		return nil, nil, fmt.Errorf("%w: TLS handshake failed: %w", errClientGone, err)
	}
	return tc, sec.endPoint, nil
}

// acceptDirectTLS runs the handshake of a client that opened with a TLS
// record (direct TLS); the bytes rd has buffered are the start of it. The
// client must negotiate ALPN "postgresql", as PostgreSQL 17 requires. It
// returns what acceptTLS does.
func (s *Server) acceptDirectTLS(nc net.Conn, rd *wire.Reader) (*tls.Conn, []byte, error) {
	sec := s.security()
	if sec.tls == nil {
		return nil, nil, fmt.Errorf("%w: direct TLS connection attempted, but TLS is not configured", errClientGone)
	}
	pre := append([]byte(nil), rd.Buffered()...)
	rd.Discard(len(pre))
	tc := tls.Server(&prefixConn{Conn: nc, pre: pre}, sec.tls)
	if err := tc.Handshake(); err != nil {
		return nil, nil, fmt.Errorf("%w: direct TLS handshake failed: %w", errClientGone, err)
	}
	if tc.ConnectionState().NegotiatedProtocol != alpnPostgres {
		_ = tc.Close()
		return nil, nil, fmt.Errorf("%w: received direct SSL connection request without ALPN protocol negotiation extension", errClientGone)
	}
	return tc, sec.endPoint, nil
}

// prefixConn replays bytes already read from Conn before reading more.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// setServerTLS copies a database's server_tls_* settings (and
// server_require_auth, which guards the same link) into a dial config.
func setServerTLS(dc *pool.DialConfig, db config.Database) {
	dc.SSLMode = db.EffectiveServerTLSSSLMode()
	dc.SSLRootCert = db.ServerTLSCAFile
	dc.SSLCert = db.ServerTLSCertFile
	dc.SSLKey = db.ServerTLSKeyFile
	dc.RequireAuth = db.EffectiveServerRequireAuth()
}
