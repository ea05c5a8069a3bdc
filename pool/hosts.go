package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Several hosts per database (load_balance_hosts).
//
// A DialConfig's Host may list several hosts, comma-separated as libpq and
// PgBouncer write them, each with the one Port or with its own from Ports.
// One dial (Login) tries them in turn, starting at the host First names and
// wrapping around, until one logs in: a host that refuses the connection,
// does not answer, or answers with anything but a refusal of the login
// itself is skipped, so one dead host never fails a login another could
// serve. The dial's timeout (server_connect_timeout) is shared: each attempt
// gets an equal part of what is left, the last one all of it. A refusal that
// another host of the same database would repeat (a wrong password, no such
// database or role, no permission: finalForHosts) ends the dial at once.
//
// Each connection remembers the address it reached (Conn.Addr): cancel
// requests, the admin console and logs use it, never the list.

// Target is one address of a DialConfig: a host name, an IP address or a
// unix socket directory, and a port.
type Target struct {
	Host string
	Port int
}

// String writes t as "host:port" ("[::1]:5432"; a unix socket directory as
// "/dir:5432").
func (t Target) String() string {
	if strings.HasPrefix(t.Host, "/") {
		return t.Host + ":" + strconv.Itoa(t.Port)
	}
	return net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
}

// Targets lists dc's hosts with their ports, in the order written.
func (dc DialConfig) Targets() ([]Target, error) {
	hosts := strings.Split(dc.Host, ",")
	var ports []string
	if dc.Ports != "" {
		ports = strings.Split(dc.Ports, ",")
		if len(ports) != len(hosts) {
			return nil, fmt.Errorf("server config: %d ports for %d hosts", len(ports), len(hosts))
		}
	}
	out := make([]Target, len(hosts))
	for i, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			return nil, fmt.Errorf("server config: host list %q has an empty entry", dc.Host)
		}
		port := dc.Port
		if ports != nil {
			n, err := strconv.Atoi(strings.TrimSpace(ports[i]))
			if err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("server config: invalid port %q", ports[i])
			}
			port = n
		}
		out[i] = Target{h, port}
	}
	return out, nil
}

// PortList writes one port per target as DialConfig.Ports wants them, or ""
// when they all share one port (then DialConfig.Port is that port).
func PortList(ports []int) string {
	if len(ports) <= 1 {
		return ""
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// Balancer chooses the host a new server connection tries first
// (load_balance_hosts): with round robin each dial starts at the next host of
// the list, else every dial starts at the first. One Balancer is shared by
// the pools of a database, so that their connections together go round the
// list. Safe for concurrent use; the mode may change at any time (reload).
type Balancer struct {
	roundRobin atomic.Bool
	next       atomic.Uint32
}

// NewBalancer returns a Balancer in round-robin mode or not.
func NewBalancer(roundRobin bool) *Balancer {
	b := &Balancer{}
	b.roundRobin.Store(roundRobin)
	return b
}

// SetRoundRobin switches round robin on or off for the dials that follow.
func (b *Balancer) SetRoundRobin(on bool) { b.roundRobin.Store(on) }

// RoundRobin reports the mode.
func (b *Balancer) RoundRobin() bool { return b.roundRobin.Load() }

// First is the DialConfig.First of the next dial: a number that goes up by
// one per call in round-robin mode (Login takes it modulo the host count),
// 0 otherwise. A nil Balancer always gives 0.
func (b *Balancer) First() int {
	if b == nil || !b.roundRobin.Load() {
		return 0
	}
	return int((b.next.Add(1) - 1) & (1<<31 - 1))
}

// loginHosts is Login over every target, from the one dc.First names.
func loginHosts(ctx context.Context, dc DialConfig, sec LoginSecret, targets []Target) (*Conn, error) {
	n := len(targets)
	start := dc.First % n
	if start < 0 {
		start += n
	}
	errs := make([]error, 0, n)
	for i := range n {
		tg := targets[(start+i)%n]
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok && i < n-1 {
			// An equal part of what is left; the last host gets the rest.
			actx, cancel = context.WithTimeout(ctx, time.Until(dl)/time.Duration(n-i))
		}
		c, err := loginTarget(actx, dc, sec, tg)
		cancel()
		if err == nil {
			return c, nil
		}
		errs = append(errs, &HostError{Target: tg, Err: err})
		if finalForHosts(err) || ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// HostError is a failed attempt at one host of a list. Its text names the
// address (for pgtide's log); errors.Is/As see the attempt's own error.
type HostError struct {
	Target Target
	Err    error
}

func (e *HostError) Error() string { return e.Target.String() + ": " + e.Err.Error() }
func (e *HostError) Unwrap() error { return e.Err }

// finalForHosts reports whether a failed attempt would fail the same way at
// every other host of the list: the server refused this login (class 28:
// wrong password, no pg_hba.conf entry), the database does not exist, the
// role may not connect, or pgtide itself refused or could not answer the
// authentication request (final). Anything else (refused, timed out, reset,
// starting up, too many connections, a TLS failure) moves to the next host.
func finalForHosts(err error) bool {
	if final(err) {
		return true
	}
	var se *ServerError
	return errors.As(err, &se) && strings.HasPrefix(se.Code, "28")
}
