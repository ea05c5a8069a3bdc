package config

import (
	"strings"
	"testing"
	"time"
)

// [users.NAME] timeouts override the global ones for that user; unset (or
// "") inherits, "0" turns the timeout off for the user.
func TestUserTimeouts(t *testing.T) {
	c := mustParse(t, `
query_timeout = "10s"
idle_transaction_timeout = "20s"
client_idle_timeout = "30s"

[users.fast]
query_timeout = "300ms"
client_idle_timeout = "0"
transaction_timeout = "2s"
reserve_pool_size = 3

[users.blank]
query_timeout = ""

[users.plain]
pool_size = 2
`)
	want := map[string]ClientTimeouts{
		"fast":    {Query: 300 * time.Millisecond, Wait: 120 * time.Second, IdleTransaction: 20 * time.Second, ClientIdle: 0, Transaction: 2 * time.Second},
		"blank":   {Query: 10 * time.Second, Wait: 120 * time.Second, IdleTransaction: 20 * time.Second, ClientIdle: 30 * time.Second},
		"plain":   {Query: 10 * time.Second, Wait: 120 * time.Second, IdleTransaction: 20 * time.Second, ClientIdle: 30 * time.Second},
		"unknown": {Query: 10 * time.Second, Wait: 120 * time.Second, IdleTransaction: 20 * time.Second, ClientIdle: 30 * time.Second},
	}
	for user, w := range want {
		if got := c.TimeoutsFor(user); got != w {
			t.Errorf("TimeoutsFor(%q) = %+v, want %+v", user, got, w)
		}
	}
	if c.Users["fast"].ReservePoolSize != 3 {
		t.Errorf("reserve_pool_size = %d", c.Users["fast"].ReservePoolSize)
	}

	errs := parseErrors(t, `
[users.bad]
query_wait_timeout = "-1s"
reserve_pool_size = -1
idle_transaction_timeout = "soon"
`)
	msg := errs.Error()
	for _, k := range []string{"users.bad.query_wait_timeout", "users.bad.reserve_pool_size", "users.bad.idle_transaction_timeout"} {
		if !strings.Contains(msg, k) {
			t.Errorf("errors do not name %s:\n%s", k, msg)
		}
	}
}
