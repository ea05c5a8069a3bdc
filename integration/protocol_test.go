package integration

// The startup exchange byte for byte against PostgreSQL: protocol version
// negotiation and repeated encryption requests.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// startupBytes is a startup packet with the given version code and
// parameters (none at all, not even the terminator, for nil: a request).
func startupBytes(code uint32, params [][2]string) []byte {
	b := binary.BigEndian.AppendUint32([]byte{0, 0, 0, 0}, code)
	for _, p := range params {
		b = append(append(append(append(b, p[0]...), 0), p[1]...), 0)
	}
	if params != nil {
		b = append(b, 0)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// firstReply sends pkt on a new connection to addr and returns the first
// message of the reply (a whole typed message, or the one-byte answer to an
// encryption request).
func firstReply(t *testing.T, addr string, pkt []byte) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(c, c)
	m, err := fe.Receive()
	if err != nil {
		return []byte("error: " + err.Error())
	}
	out, _ := m.Encode(nil)
	return out
}

// hostPort is the address of a postgres:// URL.
func hostPort(url string) string { return strings.Split(strings.Split(url, "@")[1], "/")[0] }

// TestProtocolNegotiationAsPostgreSQL: a client asking for a newer minor
// version (3.2 of PostgreSQL 18, 3.9999 of libpq's "grease") or for _pq_
// options gets NegotiateProtocolVersion naming the version it is downgraded
// to, 3.0, whole (0x00030000), as PostgreSQL's FrontendProtocol. Before the
// fix pgtide sent 0, which libpq, comparing it with the whole version it
// asked for, takes as a server that supports nothing.
func TestProtocolNegotiationAsPostgreSQL(t *testing.T) {
	r := newRelEnv(t, nil)
	user := [][2]string{{"user", r.User}, {"database", r.DB}}
	cases := []struct {
		name  string
		code  uint32
		extra [][2]string
	}{
		{"3.2", 3<<16 | 2, nil},
		{"3.9999_grease", 3<<16 | 9999, [][2]string{{"_pq_.test_protocol_negotiation", ""}}},
		{"3.0_pq_option", 3 << 16, [][2]string{{"_pq_.foo", "1"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pkt := startupBytes(tc.code, append(append([][2]string{}, user...), tc.extra...))
			direct, through := firstReply(t, hostPort(r.DirectURL()), pkt), firstReply(t, hostPort(r.URL()), pkt)
			if direct[0] != 'v' {
				t.Fatalf("PostgreSQL answered %q, not NegotiateProtocolVersion", direct)
			}
			if !bytes.Equal(direct, through) {
				t.Errorf("NegotiateProtocolVersion\nthrough pgtide: % x\ndirect:         % x", through, direct)
			}
		})
	}
}

// exchangeAll sends each packet in turn on one connection and describes
// each reply: a one-byte answer, an error's code and message, or EOF.
func exchangeAll(t *testing.T, addr string, pkts ...[]byte) []string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []string
	for _, p := range pkts {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(p); err != nil {
			out = append(out, "write: "+err.Error())
			break
		}
		var one [1]byte
		if _, err := c.Read(one[:]); err != nil {
			out = append(out, "EOF")
			break
		}
		if one[0] != 'E' {
			out = append(out, string(one[:]))
			continue
		}
		var hdr [4]byte
		if _, err := c.Read(hdr[:]); err != nil {
			out = append(out, "E?")
			break
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[:])-4)
		_, _ = c.Read(body)
		var e pgproto3.ErrorResponse
		_ = e.Decode(body)
		out = append(out, fmt.Sprintf("E %s %s: %s", e.Severity, e.Code, e.Message))
		break
	}
	return out
}

// TestRepeatedEncryptionRequestsAsPostgreSQL: PostgreSQL answers one
// SSLRequest and one GSSENCRequest per connection, in either order
// (ProcessStartupPacket's ssl_done and gss_done); one more is read as a
// startup packet of protocol 1234.5679 (or 1234.5680) and refused with
// FATAL 0A000. Before the fix pgtide answered 'N' to every one, for as long
// as the client sent them. The harness's PostgreSQL accepts GSSAPI
// encryption, so the cases with a GSSENCRequest are checked against the
// replies PostgreSQL gives when it declines one ('N', as pgtide does).
func TestRepeatedEncryptionRequestsAsPostgreSQL(t *testing.T) {
	r := newRelEnv(t, nil)
	ssl, gss := startupBytes(80877103, nil), startupBytes(80877104, nil)
	refused := func(minor int) string {
		return fmt.Sprintf("E FATAL 0A000: unsupported frontend protocol 1234.%d: server supports 3.0 to 3.0", minor)
	}
	direct := exchangeAll(t, hostPort(r.DirectURL()), ssl, ssl)
	if want := []string{"N", refused(5679)}; fmt.Sprint(direct) != fmt.Sprint(want) {
		t.Fatalf("PostgreSQL: %q, want %q", direct, want)
	}
	cases := []struct {
		name string
		pkts [][]byte
		want []string
	}{
		{"ssl_ssl", [][]byte{ssl, ssl}, direct},
		{"gss_gss", [][]byte{gss, gss}, []string{"N", refused(5680)}},
		{"ssl_gss_gss", [][]byte{ssl, gss, gss}, []string{"N", "N", refused(5680)}},
		{"gss_ssl_ssl", [][]byte{gss, ssl, ssl}, []string{"N", "N", refused(5679)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := exchangeAll(t, hostPort(r.URL()), tc.pkts...); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("through pgtide: %q\nwant:           %q", got, tc.want)
			}
		})
	}
	// After one of each, declined, the startup packet is answered.
	startup := startupBytes(3<<16, [][2]string{{"user", r.User}, {"database", r.DB}})
	if got, want := exchangeAll(t, hostPort(r.URL()), gss, ssl, startup), []string{"N", "N", "R"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GSSENCRequest, SSLRequest, StartupMessage: %q, want %q", got, want)
	}
}
