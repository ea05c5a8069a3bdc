package pool

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
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

// negotiateTLS sends an SSLRequest and runs the TLS handshake when the
// server answers 'S'. A server that answers 'N' gets the rest in the clear
// if plainOK (a cancel request: PostgreSQL accepts one after an SSLRequest),
// else it is refused.
func negotiateTLS(nc net.Conn, conf *tls.Config, plainOK bool) (net.Conn, error) {
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
	switch {
	case resp[0] == 'N' && plainOK:
		return nc, nil
	case resp[0] == 'N':
		return nil, errors.New("server refused TLS connection")
	case resp[0] != 'S':
		return nil, fmt.Errorf("unexpected reply %q to SSLRequest", resp[0])
	}
	tc := tls.Client(nc, conf)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}
