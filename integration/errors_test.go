package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// connectErr tries a pgconn connection and returns the error (closing the
// connection if it unexpectedly succeeds).
func connectErr(t testing.TB, url string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, url)
	if err == nil {
		c.Close(context.Background())
	}
	return err
}

func TestAuthAndLimitErrors(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) { c.MaxClientConn = 3 })
	const wrong = "definitely-Wrong-Password-4711"
	e.secrets = append(e.secrets, wrong)

	t.Run("WrongPassword", func(t *testing.T) {
		err := connectErr(t, e.tide.ConnString(e.DB, e.User, wrong))
		if code := sqlState(err); code != "28P01" {
			t.Fatalf("wrong password: err = %v (SQLSTATE %q), want SQLSTATE 28P01", err, code)
		}
		// PostgreSQL says the same.
		if code := sqlState(connectErr(t, e.pg.ConnString(e.DB, e.User, wrong))); code != "28P01" {
			t.Fatalf("direct: SQLSTATE %q", code)
		}
	})

	t.Run("UnknownUser", func(t *testing.T) {
		err := connectErr(t, e.tide.ConnString(e.DB, "no_such_user_x", e.Pass))
		if code := sqlState(err); code != "28P01" {
			t.Fatalf("unknown user: err = %v (SQLSTATE %q), want SQLSTATE 28P01 as PostgreSQL sends", err, code)
		}
	})

	t.Run("UnknownDatabase", func(t *testing.T) {
		err := connectErr(t, e.tide.ConnString("no_such_database_x", e.User, e.Pass))
		if code := sqlState(err); code != "3D000" {
			t.Fatalf("unknown database: err = %v (SQLSTATE %q), want SQLSTATE 3D000", err, code)
		}
	})

	t.Run("RightPasswordStillWorks", func(t *testing.T) {
		if err := connectErr(t, e.URL()); err != nil {
			t.Fatalf("connect after failed attempts: %v", err)
		}
	})

	t.Run("MaxClientConn", func(t *testing.T) {
		ctx := ctxT(t, 30*time.Second)
		var held []*pgconn.PgConn
		defer func() {
			for _, c := range held {
				c.Close(context.Background())
			}
		}()
		// The earlier subtests' clients leave pgtide after they closed
		// (a client parked at login is seen leaving a little later):
		// wait until three fit.
		var fitErr error
		if !pgtest.Eventually(5*time.Second, func() bool {
			for _, c := range held {
				c.Close(ctx)
			}
			held = held[:0]
			for i := 0; i < 3; i++ {
				c, err := pgconn.Connect(ctx, e.URL())
				if err != nil {
					fitErr = fmt.Errorf("client %d of max_client_conn=3: %w", i+1, err)
					return false
				}
				held = append(held, c)
			}
			return true
		}) {
			t.Fatal(fitErr)
		}
		for i := 0; i < 2; i++ {
			err := connectErr(t, e.URL())
			if code := sqlState(err); code != "53300" {
				t.Fatalf("client %d with max_client_conn=3: err = %v (SQLSTATE %q), want SQLSTATE 53300", 4+i, err, code)
			}
		}
		// The held clients are unaffected.
		for i, c := range held {
			if _, err := c.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
				t.Fatalf("held client %d: %v", i+1, err)
			}
		}
		// When one leaves, a new one gets in.
		held[0].Close(ctx)
		held = held[1:]
		var lastErr error
		if !pgtest.Eventually(5*time.Second, func() bool {
			c, err := pgconn.Connect(ctx, e.URL())
			lastErr = err
			if err == nil {
				held = append(held, c)
			}
			return err == nil
		}) {
			t.Fatalf("no new client admitted after one of 3 left: %v", lastErr)
		}
	})
}

// TestAuthTypeMD5 covers auth_type = "md5" with a plaintext password in [users]
// (the SCRAM default is what every other test uses).
func TestAuthTypeMD5(t *testing.T) {
	e := newEnv(t, func(c *tideConf, db *dbConf) { c.Extra = "auth_type = \"md5\"\n" })
	c := connect(t, e.URL())
	if got := queryString(t, c, "SELECT current_user"); got != e.User {
		t.Fatalf("current_user = %q", got)
	}
	err := connectErr(t, e.tide.ConnString(e.DB, e.User, "wrong-md5-password"))
	if code := sqlState(err); code != "28P01" {
		t.Fatalf("wrong password with md5: err = %v (SQLSTATE %q), want 28P01", err, code)
	}
}

// TestSCRAMAuth: with the default auth_type (scram-sha-256) a client must get
// the full RFC 5802 exchange, AuthenticationSASLFinal with the server
// signature included, before AuthenticationOk; pgx checks the signature.
func TestSCRAMAuth(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t, 15*time.Second)
	c, err := pgconn.Connect(ctx, e.URL())
	if err != nil {
		t.Fatalf("SCRAM-SHA-256 login through pgtide: %v", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		t.Fatal(err)
	}
}
