package config

import (
	"reflect"
	"strings"
	"testing"
)

// A host list with one port, a port per host, unix socket directories among
// the entries, and load_balance_hosts globally and per database.
func TestHostLists(t *testing.T) {
	c := mustParse(t, `
load_balance_hosts = "disable"

[databases.one]
host = "db1"
port = 6000

[databases.same]
host = "10.0.0.5, 10.0.0.6,/var/run/postgresql"
load_balance_hosts = "round-robin"

[databases.each]
host = "a,b"
port = [5433, 5434]

[databases.single]
host = "a"
port = [5499]
`)
	if c.LoadBalanceHosts != LoadBalanceDisable {
		t.Errorf("load_balance_hosts = %q", c.LoadBalanceHosts)
	}
	tests := []struct {
		db   string
		want []Target
		lb   string
	}{
		{"one", []Target{{"db1", 6000}}, "disable"},
		{"same", []Target{{"10.0.0.5", 5432}, {"10.0.0.6", 5432}, {"/var/run/postgresql", 5432}}, "round-robin"},
		{"each", []Target{{"a", 5433}, {"b", 5434}}, "disable"},
		{"single", []Target{{"a", 5499}}, "disable"},
	}
	for _, tt := range tests {
		db, ok := c.ResolveDatabase(tt.db)
		if !ok {
			t.Fatalf("%s: not found", tt.db)
		}
		if got := db.Targets(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: Targets() = %v, want %v", tt.db, got, tt.want)
		}
		if got := c.EffectiveLoadBalanceHosts(db); got != tt.lb {
			t.Errorf("%s: load_balance_hosts in effect = %q, want %q", tt.db, got, tt.lb)
		}
	}
	if db := c.Databases["each"]; db.Port != 5433 {
		t.Errorf("each: Port = %d, want the first port, 5433", db.Port)
	}
	if db := c.Databases["single"]; db.Port != 5499 || db.Ports != nil {
		t.Errorf("single: a one-port array is the same as the integer: Port %d Ports %v", db.Port, db.Ports)
	}
	// The default, and the strings written in logs.
	if got := mustParse(t, "").LoadBalanceHosts; got != "round-robin" {
		t.Errorf("default load_balance_hosts = %q", got)
	}
	for tg, want := range map[Target]string{{"db1", 5432}: "db1:5432", {"::1", 5433}: "[::1]:5433", {"/tmp", 5432}: "/tmp:5432"} {
		if tg.String() != want {
			t.Errorf("%#v.String() = %q, want %q", tg, tg.String(), want)
		}
	}
}

func TestHostListErrors(t *testing.T) {
	tests := []struct {
		name, src, key string
		line           int
		reason         string
	}{
		{"port count", "[databases.a]\nhost = \"x,y,z\"\nport = [5432, 5433]", "databases.a.port", 3, "lists 2 ports for 3 hosts"},
		{"port count one host", "[databases.a]\nport = [5432, 5433]", "databases.a.port", 2, "lists 2 ports for 1 host (host = \"127.0.0.1\")"},
		{"port out of range", "[databases.a]\nhost = \"x,y\"\nport = [5432, 70000]", "databases.a.port[1]", 3, "between 1 and 65535"},
		{"port not an integer", "[databases.a]\nhost = \"x,y\"\nport = [5432, \"5433\"]", "databases.a.port[1]", 3, "expected an integer"},
		{"port empty array", "[databases.a]\nport = []", "databases.a.port", 2, "empty array"},
		{"port as PgBouncer writes it", "[databases.a]\nhost = \"x,y\"\nport = \"5432,5433\"", "databases.a.port", 3, "port = [5432, 5433]"},
		{"port zero", "[databases.a]\nport = 0", "databases.a.port", 2, "between 1 and 65535"},
		{"empty host entry", "[databases.a]\nhost = \"x,,y\"", "databases.a.host", 2, "entry 2 of the host list"},
		{"trailing comma", "[databases.a]\nhost = \"x,\"", "databases.a.host", 2, "entry 2 of the host list"},
		{"global load_balance_hosts", `load_balance_hosts = "random"`, "load_balance_hosts", 1, `expected one of "round-robin", "disable"`},
		{"database load_balance_hosts", "[databases.a]\nload_balance_hosts = \"disabled\"", "databases.a.load_balance_hosts", 2, `did you mean "disable"?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fes := fieldErrors(t, parseErrors(t, tt.src))
			if len(fes) != 1 {
				t.Fatalf("want 1 error, got %d: %v", len(fes), fes)
			}
			fe := fes[0]
			if fe.Key != tt.key || (tt.line != 0 && fe.Line != tt.line) || !strings.Contains(fe.Reason, tt.reason) {
				t.Errorf("got %s (line %d), want key %s line %d with %q", fe, fe.Line, tt.key, tt.line, tt.reason)
			}
		})
	}
}
