package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/proxy/auth"
	"github.com/pgtide/pgtide/proxy/wire"
)

// authOver runs authenticate against the client bytes in, and returns its
// keys' error and what it wrote.
func authOver(t *testing.T, m auth.Method, secret string, in []byte) (written []byte, final []byte, err error) {
	t.Helper()
	sec, perr := auth.ParseSecret(secret)
	if perr != nil {
		t.Fatal(perr)
	}
	var out bytes.Buffer
	rd := wire.NewReader(bytes.NewReader(in), 64)
	_, final, err = authenticate(writerConn{&out}, rd, m, "u", sec, auth.Options{})
	return out.Bytes(), final, err
}

// writerConn is a net.Conn that only writes (authenticate writes through it).
type writerConn struct{ w io.Writer }

func (c writerConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c writerConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c writerConn) Close() error                     { return nil }
func (c writerConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c writerConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c writerConn) SetDeadline(time.Time) error      { return nil }
func (c writerConn) SetReadDeadline(time.Time) error  { return nil }
func (c writerConn) SetWriteDeadline(time.Time) error { return nil }

func authFrame(typ byte, body []byte) []byte {
	return wire.AppendFrame(nil, typ, body)
}

func TestAuthConnCleartext(t *testing.T) {
	pw := func(s string) []byte { return authFrame('p', append([]byte(s), 0)) }
	w, final, err := authOver(t, auth.Cleartext, "secret", pw("secret"))
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	if len(final) != 0 {
		t.Fatalf("cleartext leaves nothing to send, got %q", final)
	}
	// AuthenticationCleartextPassword: R, length 8, code 3.
	if want := []byte{'R', 0, 0, 0, 8, 0, 0, 0, 3}; !bytes.Equal(w, want) {
		t.Fatalf("wrote %v, want %v", w, want)
	}
	if _, _, err := authOver(t, auth.Cleartext, "secret", pw("wrong")); !isCode(err, codeInvalidPassword) {
		t.Fatalf("wrong password: %v, want 28P01", err)
	}
}

func TestAuthConnBadMessages(t *testing.T) {
	huge := []byte{'p', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(huge[1:], 1<<30) // claims 1 GiB: refused before any read of it
	for name, in := range map[string][]byte{
		"query instead of password": authFrame('Q', []byte("SELECT 1\x00")),
		"oversized":                 huge,
		"negative length":           {'p', 0xff, 0xff, 0xff, 0xf0},
		"password without NUL":      authFrame('p', []byte("secret")),
	} {
		_, _, err := authOver(t, auth.Cleartext, "secret", in)
		if !isCode(err, codeProtocolViolation) {
			t.Errorf("%s: %v, want 08P01", name, err)
		}
	}
	// Terminate, or EOF, mid-exchange: the client went away.
	for name, in := range map[string][]byte{"terminate": authFrame('X', nil), "eof": nil} {
		_, _, err := authOver(t, auth.Cleartext, "secret", in)
		var ce *clientError
		if err == nil || errors.As(err, &ce) && ce.Code == codeProtocolViolation {
			t.Errorf("%s: %v, want the client gone", name, err)
		}
	}
}

// TestAuthConnSCRAM runs pgconn's own SCRAM client against authenticate
// over a socket pair: the AuthenticationSASLFinal comes back as final.
func TestAuthConnSCRAM(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sec, err := auth.ParseSecret("secret")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		rd := wire.NewReader(nc, 512)
		if _, err := readStartupPacket(rd); err != nil {
			done <- err
			return
		}
		_, final, err := authenticate(nc, rd, auth.SCRAM, "u", sec, auth.Options{})
		if err != nil {
			done <- err
			return
		}
		if len(final) == 0 || final[0] != 'R' {
			done <- errors.New("no AuthenticationSASLFinal held back")
			return
		}
		out, _ := (&pgproto3.AuthenticationOk{}).Encode(final)
		out, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(out)
		_, err = nc.Write(out)
		done <- err
	}()
	conn, err := pgconn.Connect(t.Context(), "postgres://u:secret@"+ln.Addr().String()+"/db?sslmode=disable")
	if err != nil {
		t.Fatalf("pgconn's SCRAM login: %v (server: %v)", err, <-done)
	}
	defer conn.Close(t.Context())
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func isCode(err error, code string) bool {
	var ce *clientError
	if errors.As(err, &ce) {
		return ce.Code == code
	}
	var lf *loginFailure
	return errors.As(err, &lf) && lf.clientError != nil && lf.clientError.Code == code
}
