package integration

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestConsoleReserveNotFilledByConsoleLogins: 16 connections that name the
// console database and sit at the password prompt do not lock the operator
// out: console logins take ordinary max_client_conn places first, and only
// past max_client_conn the 16 kept for the console. An earlier version of
// that reserve counted every console login against the 16, so these 16
// filled it (53300 for the operator).
func TestConsoleReserveNotFilledByConsoleLogins(t *testing.T) {
	stamp := fmt.Sprint(time.Now().UnixNano())
	admPass := "Adm-" + stamp
	e := newEnv(t, func(c *tideConf, db *dbConf) {
		c.Extra = "admin_users = [\"adm\"]\n"
		c.Users["adm"] = admPass
	})
	e.secrets = append(e.secrets, admPass)
	for i := 0; i < 16; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", e.tide.Port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write(startupPacket("whoever", "pgtide")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := pgproto3.NewFrontend(c, c).Receive(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, e.tide.ConnString("pgtide", "adm", admPass))
	if err != nil {
		t.Fatalf("admin console refused while 16 unauthenticated console logins wait: %v", err)
	}
	pc.Close(ctx)
}
