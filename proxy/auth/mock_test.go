package auth

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// serverFirst starts a SCRAM exchange as user against a server holding s
// and returns the salt and iteration count it shows, then hangs up.
func serverFirst(t *testing.T, user string, s Secret) ([]byte, int) {
	t.Helper()
	addr, ch := startServer(t, SCRAM, s)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	sendFE(t, fe, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": user, "database": "db"}})
	if _, ok := receiveFE(t, fe).(*pgproto3.AuthenticationSASL); !ok {
		t.Fatal("want AuthenticationSASL")
	}
	sendFE(t, fe, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=clientnonce")})
	cont, ok := receiveFE(t, fe).(*pgproto3.AuthenticationSASLContinue)
	if !ok {
		t.Fatal("want AuthenticationSASLContinue")
	}
	var salt []byte
	iter := 0
	for _, f := range strings.Split(string(cont.Data), ",") {
		switch {
		case strings.HasPrefix(f, "s="):
			salt, err = base64.StdEncoding.DecodeString(f[2:])
			if err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(f, "i="):
			iter, _ = strconv.Atoi(f[2:])
		}
	}
	conn.Close()
	<-ch
	return salt, iter
}

// TestMockSaltStablePerUser (issue 13, item 2): a user with no verifier
// (what pgtide gives an unknown user) sees the same salt on every attempt,
// a different one from another name, as long as a real salt, and the
// default iteration count, as PostgreSQL's mock authentication shows; and
// the mock derives and caches nothing.
func TestMockSaltStablePerUser(t *testing.T) {
	before := len(plainCache)
	none := Secret{Kind: SecretNone}
	a1, iter := serverFirst(t, "ghost", none)
	a2, _ := serverFirst(t, "ghost", none)
	b, _ := serverFirst(t, "phantom", none)
	if !bytes.Equal(a1, a2) {
		t.Errorf("unknown user got salts %x and %x on two attempts; want one stable salt", a1, a2)
	}
	if bytes.Equal(a1, b) {
		t.Errorf("two unknown users got the same salt %x", a1)
	}
	if !bytes.Equal(a1, MockSalt("ghost")) || len(a1) != scramSaltLen || iter != DefaultSCRAMIterations {
		t.Errorf("salt %x (len %d), iterations %d: want MockSalt, %d bytes, %d", a1, len(a1), iter, scramSaltLen, DefaultSCRAMIterations)
	}
	if len(plainCache) != before {
		t.Errorf("a mock exchange touched the verifier cache (%d -> %d entries)", before, len(plainCache))
	}
	// A real user's salt is just as stable.
	v := mustSecret(t, mustVerifier(t, "pw"))
	r1, _ := serverFirst(t, "real", v)
	r2, _ := serverFirst(t, "real", v)
	if !bytes.Equal(r1, r2) || len(r1) != len(a1) {
		t.Errorf("real user's salts %x, %x", r1, r2)
	}
}

// TestSCRAMRefusesMD5Secret (issue 13, item 7): scram-sha-256 with an md5
// secret is refused after a full exchange, even with the right password,
// with PostgreSQL's 28P01, and the caller learns why (ErrNoSCRAMSecret).
func TestSCRAMRefusesMD5Secret(t *testing.T) {
	md := mustSecret(t, "md5"+md5Inner(goodPW, "u"))
	if m := ChooseMethod(SCRAM, md); m != SCRAM {
		t.Fatalf("ChooseMethod(scram-sha-256, md5 secret) = %v, want scram-sha-256 (no md5 fallback)", m)
	}
	addr, ch := startServer(t, SCRAM, md)
	err := connect(t, addr, goodPW)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("connect error = %v, want PgError 28P01", err)
	}
	serr := serverErr(t, ch)
	if !errors.Is(serr, ErrPasswordMismatch) || !errors.Is(serr, ErrNoSCRAMSecret) {
		t.Fatalf("Authenticate = %v, want ErrPasswordMismatch and ErrNoSCRAMSecret", serr)
	}
}
