package pool

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
)

// tlsConnString renders the TLS settings as conninfo keywords.
func (dc DialConfig) tlsConnString() string {
	mode := dc.SSLMode
	if mode == "" {
		mode = "disable"
	}
	var b strings.Builder
	b.WriteString(" sslmode=" + mode)
	for _, kv := range [][2]string{{"sslrootcert", dc.SSLRootCert}, {"sslcert", dc.SSLCert}, {"sslkey", dc.SSLKey}} {
		if kv[1] != "" {
			b.WriteString(" " + kv[0] + "=" + quoteConnValue(kv[1]))
		}
	}
	return b.String()
}

// tlsFallback reports whether pgconn's second attempt (without TLS for
// prefer, with it for allow) must be kept.
func (dc DialConfig) tlsFallback() bool { return dc.SSLMode == "allow" || dc.SSLMode == "prefer" }

// rawConn returns the socket under a TLS connection (or c itself).
func rawConn(c net.Conn) net.Conn {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return c
}

// cancelTLS encrypts a cancel connection the way the canceled connection
// was (PostgreSQL accepts a CancelRequest after an SSLRequest): SSLRequest,
// 'S', handshake. A server that answers 'N' gets the cancel in the clear.
func cancelTLS(nc net.Conn, conf *tls.Config) (net.Conn, error) {
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:], 8)
	binary.BigEndian.PutUint32(req[4:], 80877103)
	if _, err := nc.Write(req[:]); err != nil {
		return nil, err
	}
	var resp [1]byte
	if _, err := io.ReadFull(nc, resp[:]); err != nil {
		return nil, err
	}
	switch resp[0] {
	case 'N':
		return nc, nil
	case 'S':
		tc := tls.Client(nc, conf)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("cancel: TLS handshake: %w", err)
		}
		return tc, nil
	}
	return nil, fmt.Errorf("cancel: unexpected reply %q to SSLRequest", resp[0])
}
