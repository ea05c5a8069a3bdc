package pool

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// TestCancelOverTLS: a Conn that was dialed with TLS sends its cancel
// request after an SSLRequest and a handshake, never in the clear.
func TestCancelOverTLS(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		var req [8]byte
		if _, err := io.ReadFull(nc, req[:]); err != nil || binary.BigEndian.Uint32(req[4:]) != 80877103 {
			got <- nil
			return
		}
		_, _ = nc.Write([]byte{'S'})
		tc := tls.Server(nc, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
		buf := make([]byte, 16)
		if _, err := io.ReadFull(tc, buf); err != nil {
			got <- nil
			return
		}
		got <- buf
		_ = tc.Close()
	}()
	c := &Conn{Addr: ln.Addr(), PID: 4242, Secret: []byte{1, 2, 3, 4}, tlsConf: &tls.Config{InsecureSkipVerify: true}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	buf := <-got
	if buf == nil || binary.BigEndian.Uint32(buf[4:]) != 80877102 || binary.BigEndian.Uint32(buf[8:]) != 4242 {
		t.Fatalf("server got %v, want a CancelRequest for pid 4242 over TLS", buf)
	}
}
