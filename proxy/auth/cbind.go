package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/xdg-go/scram"
)

// Options are the per-connection inputs of AuthenticateKeys beyond the
// method and secret. The zero value is a connection without TLS.
type Options struct {
	// TLSServerEndPoint is the tls-server-end-point channel binding data
	// (TLSServerEndPoint) of the certificate pgtide presented on the
	// client's TLS connection; empty when the client is not on TLS (or the
	// certificate's hash cannot be determined). When it is set, a SCRAM
	// exchange offers SCRAM-SHA-256-PLUS before SCRAM-SHA-256, as
	// PostgreSQL does over TLS, and refuses a client that says it supports
	// channel binding but did not see it offered ("y" GS2 flag).
	TLSServerEndPoint []byte
}

// ErrChannelBindingNegotiation means a client on a TLS connection said it
// supports channel binding but believes the server does not (GS2 flag "y")
// although SCRAM-SHA-256-PLUS was offered: someone may have stripped it from
// the mechanism list (a downgrade). PostgreSQL answers SQLSTATE 28000 with
// this text.
var ErrChannelBindingNegotiation = errors.New("SCRAM channel binding negotiation error")

// ErrChannelBindingCheck means a SCRAM-SHA-256-PLUS client's channel
// binding data does not match the certificate this connection presented:
// the client's TLS session ends somewhere else (a man in the middle).
// PostgreSQL answers SQLSTATE 28000 with this text.
var ErrChannelBindingCheck = errors.New("SCRAM channel binding check failed")

// TLSServerEndPoint returns the tls-server-end-point channel binding data
// of a server certificate (RFC 5929 section 4.1): its DER encoding hashed
// with its signature's hash, SHA-256 where that is MD5 or SHA-1. It fails
// for signatures with no separate hash (Ed25519), as PostgreSQL's does.
func TLSServerEndPoint(cert *x509.Certificate) ([]byte, error) {
	if cert == nil {
		return nil, errors.New("auth: no server certificate")
	}
	// xdg-go/scram computes it from the certificate a client was shown.
	cb, err := scram.NewTLSServerEndpointBinding(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}})
	if err != nil {
		return nil, fmt.Errorf("auth: tls-server-end-point: %w", err)
	}
	return cb.Data, nil
}

// scramPlusMech is SCRAM-SHA-256 with channel binding.
const scramPlusMech = "SCRAM-SHA-256-PLUS"
