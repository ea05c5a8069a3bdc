package config

import (
	"strings"
	"testing"
)

func TestValidateTLSKeys(t *testing.T) {
	for _, tc := range []struct{ src, key, reason string }{
		{`client_tls_sslmode = "requir"`, "client_tls_sslmode", `did you mean "require"?`},
		{`client_tls_sslmode = "require"`, "client_tls_sslmode", `"require" needs client_tls_cert_file and client_tls_key_file`},
		{`client_tls_cert_file = "/nonexistent.crt"`, "client_tls_key_file", "must be set when client_tls_cert_file is"},
		{"client_tls_cert_file = \"/nonexistent.crt\"\nclient_tls_key_file = \"/nonexistent.key\"", "client_tls_cert_file", "cannot load the certificate and key"},
		{`client_tls_ca_file = "/nonexistent.pem"`, "client_tls_ca_file", "no such file"},
		{`client_tls_min_version = "TLSv1.1"`, "client_tls_min_version", "invalid value"},
		{`client_tls_ciphers = ["TLS_RSA_WITH_RC4_128_SHA"]`, "client_tls_ciphers[0]", "unknown or insecure cipher suite"},
		{`auth_type = "hba"`, "auth_hba_file", `must be set when auth_type is "hba"`},
		{`auth_hba_file = "/nonexistent/pg_hba.conf"`, "auth_hba_file", "no such file"},
		{"[databases.a]\nserver_tls_sslmode = \"verify-full\"", "databases.a.server_tls_ca_file", "must be set"},
		{"[databases.a]\nserver_tls_sslmode = \"on\"", "databases.a.server_tls_sslmode", "invalid value"},
		{"[databases.a]\nserver_tls_key_file = \"/k\"", "databases.a.server_tls_cert_file", "must be set when server_tls_key_file is"},
	} {
		errs := parseErrors(t, tc.src)
		found := false
		for _, fe := range fieldErrors(t, errs) {
			if fe.Key == tc.key && strings.Contains(fe.Reason, tc.reason) {
				found = true
			}
		}
		if !found {
			t.Errorf("%q: got %v, want %s: ...%s...", tc.src, errs, tc.key, tc.reason)
		}
	}
	c, err := Parse("x.toml", []byte(`client_tls_ciphers = ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]`))
	if err != nil {
		t.Fatal(err)
	}
	if c.EffectiveClientTLSSSLMode() != "disable" || len(c.ClientTLSCipherSuites()) != 1 {
		t.Errorf("mode %q, suites %v", c.EffectiveClientTLSSSLMode(), c.ClientTLSCipherSuites())
	}
	if (Database{}).EffectiveServerTLSSSLMode() != "prefer" {
		t.Error("server_tls_sslmode default is not prefer")
	}
}
