package proxy

import (
	"net"
	"strings"
	"testing"
)

func TestParseHBAErrors(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"hots all all all trust", `invalid connection type "hots"`},
		{"host all", "end-of-line before user specification"},
		{"host all all", "end-of-line before IP address specification"},
		{"host all all 10.0.0.0/8", "end-of-line before authentication method"},
		{"host all all 10.0.0.0/33 trust", `invalid CIDR address "10.0.0.0/33"`},
		{"host all all db.example.com trust", "host names are not supported"},
		{"host all all 10.0.0.1 trust", `invalid IP mask "trust"`},
		{"host all all 10.0.0.1 255.0.255.0 trust", `invalid IP mask "255.0.255.0"`},
		{"host all all 10.0.0.1 255.255.255.0", "end-of-line before authentication method"},
		{"host all all samenet trust", `address "samenet" is not supported`},
		{"host all all all peer", `authentication method "peer" is not supported`},
		{"host all all all cert", "only supported on hostssl"},
		{"host all all all md5 clientcert=verify-full", `option "clientcert=verify-full" is not supported`},
		{"host all +admins all md5", "group membership"},
		{"host @dbs all all md5", "@file"},
		{"host a,,b all all md5", "empty element"},
		{`host "unterminated all all md5`, "unterminated quoted string"},
		{"host a,b, # x", "list ends with a comma"},
		{"local all all 127.0.0.1/32 trust", `authentication method "127.0.0.1/32" is not supported`},
	} {
		_, err := parseHBA("f", "# header\n\n"+tc.line+"\n")
		if tc.want == "" {
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.line, err, tc.want)
			continue
		}
		if !strings.HasPrefix(err.Error(), "auth_hba_file f:3: ") {
			t.Errorf("%q: error %q does not name file and line", tc.line, err)
		}
	}
}

func TestParseHBAFields(t *testing.T) {
	rs, err := parseHBA("f", `
# comment
local   all            all                       trust
host    "all",db2      alice,"all"  10.0.0.0/8   scram-sha-256   # trailing comment
hostssl db1, db2       all          ::1/128      cert
hostnossl sameuser     bob          192.168.1.7 255.255.255.0 \
        md5
host    all            all          all          reject
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.rules) != 5 {
		t.Fatalf("%d rules, want 5", len(rs.rules))
	}
	r := rs.rules[1]
	if r.line != 4 || r.method != hbaSCRAM || len(r.databases) != 2 || r.databases[0].keyword || !r.databases[1].keyword && r.databases[1].name != "db2" {
		t.Errorf("rule 2: %+v", r)
	}
	if r.users[1].keyword || r.users[1].name != "all" {
		t.Errorf("quoted \"all\" must be a name, not the keyword: %+v", r.users)
	}
	if r := rs.rules[2]; r.typ != hbaHostSSL || len(r.databases) != 2 || r.databases[1].name != "db2" || r.method != hbaCert {
		t.Errorf("rule 3: %+v", r)
	}
	if r := rs.rules[3]; r.line != 6 || r.addr.String() != "192.168.1.0/24" || r.method != hbaMD5 {
		t.Errorf("rule 4 (continued line): line %d addr %v method %v", r.line, r.addr, r.method)
	}
}

func TestHBAMatch(t *testing.T) {
	rs, err := parseHBA("f", `
local      all        all                    trust
hostssl    certdb     all       all          cert
hostnossl  secure     all       all          reject
host       app,other  alice     10.1.0.0/16  password
host       sameuser   all       10.0.0.0/8   md5
host       "all"      all       all          scram-sha-256
host       all        "all"     ::1/128      trust
hostgssenc all        all       all          trust
host       all        carol     0.0.0.0/0    reject
`)
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP
	for _, tc := range []struct {
		name string
		c    hbaConn
		line int // 0 = no match
	}{
		{"local", hbaConn{local: true, user: "x", db: "y"}, 2},
		{"cert needs ssl", hbaConn{ip: ip("1.2.3.4"), ssl: true, user: "u", db: "certdb"}, 3},
		{"cert without ssl falls through", hbaConn{ip: ip("1.2.3.4"), user: "u", db: "certdb"}, 0},
		{"hostnossl reject", hbaConn{ip: ip("1.2.3.4"), user: "u", db: "secure"}, 4},
		{"hostnossl skips ssl", hbaConn{ip: ip("1.2.3.4"), ssl: true, user: "u", db: "secure"}, 0},
		{"list + cidr", hbaConn{ip: ip("10.1.2.3"), user: "alice", db: "other"}, 5},
		{"cidr miss", hbaConn{ip: ip("10.2.2.3"), user: "alice", db: "other"}, 0},
		{"sameuser", hbaConn{ip: ip("10.2.2.3"), user: "bob", db: "bob"}, 6},
		{"sameuser miss", hbaConn{ip: ip("10.2.2.3"), user: "bob", db: "app"}, 0},
		{"quoted all is a database name", hbaConn{ip: ip("172.16.0.1"), user: "u", db: "all"}, 7},
		{"quoted all is a user name", hbaConn{ip: ip("::1"), user: "all", db: "d"}, 8},
		{"ipv4-mapped", hbaConn{ip: ip("::ffff:10.1.0.9"), user: "alice", db: "app"}, 5},
		{"gss never", hbaConn{ip: ip("172.16.0.1"), user: "dave", db: "d"}, 0},
		{"reject by user", hbaConn{ip: ip("172.16.0.1"), user: "carol", db: "d"}, 10},
	} {
		r := rs.match(tc.c)
		got := 0
		if r != nil {
			got = r.line
		}
		if got != tc.line {
			t.Errorf("%s: matched line %d, want %d", tc.name, got, tc.line)
		}
	}
	var none *hbaRules
	if none.match(hbaConn{local: true}) != nil {
		t.Error("nil rules matched")
	}
}

// TestHBARegexRefused: PostgreSQL 16 reads a database or user name that
// starts with a slash, quoted or not, as a regular expression
// (regcomp_auth_token). pgtide took it as a literal name that no client
// has, so a reject rule copied from a PostgreSQL 16 pg_hba.conf never
// matched and the next rule (trust, say) let those users in. Such a file
// must fail to load, as other syntax pgtide does not support does.
func TestHBARegexRefused(t *testing.T) {
	for _, text := range []string{
		"host all /^guest all reject\nhost all all all trust\n",
		"host /^tmp_ all all reject\nhost all all all trust\n",
		"host all \"/^guest\" all reject\nhost all all all trust\n",
		"local all alice,/guest$ reject\nlocal all all trust\n",
	} {
		rs, err := parseHBA("f", text)
		if err == nil {
			r := rs.match(hbaConn{ip: net.ParseIP("127.0.0.1"), local: strings.HasPrefix(text, "local"), user: "guest", db: "tmp_x"})
			t.Errorf("%q loaded; guest gets rule on line %d (%v)", text, r.line, r.method)
			continue
		}
		if !strings.Contains(err.Error(), "regular expressions are not supported") || !strings.HasPrefix(err.Error(), "auth_hba_file f:1: ") {
			t.Errorf("%q: error %q, want it to name line 1 and regular expressions", text, err)
		}
	}
}

// TestHBAMatchAlias: a database's other name (the admin console's, set by
// clientAuthMethod) matches a rule as its own name does.
func TestHBAMatchAlias(t *testing.T) {
	rs, err := parseHBA("f", "host pgtide all all reject\nhost all all all md5\n")
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP("10.0.0.1")
	if r := rs.match(hbaConn{ip: ip, user: "adm", db: "pgbouncer", alias: "pgtide"}); r == nil || r.line != 1 {
		t.Errorf("pgbouncer with alias pgtide: %+v, want line 1", r)
	}
	if r := rs.match(hbaConn{ip: ip, user: "adm", db: "pgbouncer"}); r == nil || r.line != 2 {
		t.Errorf("pgbouncer without alias: %+v, want line 2", r)
	}
}
