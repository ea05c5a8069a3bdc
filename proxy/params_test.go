package proxy

import (
	"testing"

	"github.com/pgtide/pgtide/pool"
)

// TestServerValuesAppName pins the replacement of an application_name's
// invalid UTF-8 bytes to what each PostgreSQL version's pg_clean_ascii
// makes of them (TestStartupAppNameNotUTF8 checks it against the
// harness's server); valid text, and other parameters, go as they came.
func TestServerValuesAppName(t *testing.T) {
	want := map[string]string{"application_name": "caf\xe9 \u00e9", "x.y": "\xff"}
	for _, tc := range []struct{ version, app string }{
		{"15.18 (Debian 15.18-0+deb12u1)", "caf? \u00e9"},
		{"16.4", `caf\xe9 ` + "\u00e9"},
		{"", "caf? \u00e9"}, // none reported: the older form
	} {
		sc := &pool.Conn{Params: map[string]string{"server_version": tc.version}}
		got := serverValues(sc, want)
		if got["application_name"] != tc.app || got["x.y"] != "\xff" {
			t.Errorf("server %q: %q", tc.version, got)
		}
	}
	if want["application_name"] != "caf\xe9 \u00e9" {
		t.Errorf("the client's own values were changed: %q", want)
	}
	ok := map[string]string{"application_name": "caf\u00e9"}
	if got := serverValues(&pool.Conn{}, ok); got["application_name"] != "caf\u00e9" {
		t.Errorf("valid UTF-8 changed: %q", got)
	}
}
