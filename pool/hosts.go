package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Several hosts per database (load_balance_hosts).
//
// A DialConfig's Host may list several hosts, comma-separated as libpq and
// PgBouncer write them, each with the one Port or with its own from Ports.
// One dial (Login) tries them in turn, in the order its Balancer gives
// (load_balance_hosts; hosts that just failed last), until one logs in: a
// host that refuses the connection, does not answer, or answers with
// anything but a refusal of the login itself is skipped, so one dead host
// never fails a login another could serve. The dial's timeout (server_connect_timeout) is shared: each attempt
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

// Balancer chooses the order in which a new server connection tries the
// hosts of a list (load_balance_hosts): with round robin each dial starts at
// the next host of the list, else every dial starts at the first. A host
// that just failed (refused, timed out) goes to the back of the order for
// HostDownFor, so that a dead host, above all one that never answers, does
// not cost every new connection its part of the timeout; it is still tried,
// last, and is back in its place once it logs a connection in. One Balancer
// is shared by the pools of a database, so that their connections together
// go round the list. Safe for concurrent use; the mode may change at any
// time (reload).
type Balancer struct {
	roundRobin atomic.Bool
	next       atomic.Uint32

	mu   sync.Mutex
	down map[Target]time.Time // host -> until when it goes last

	// skipped, when set, is told of each host a dial gave up on before
	// trying the next one (for the log: a dial that succeeds at another
	// host returns no error). Set before the first dial.
	skipped func(Target, error)
}

// OnSkip sets the function told of each host a dial moves on from. Call
// it before the Balancer is used.
func (b *Balancer) OnSkip(f func(Target, error)) { b.skipped = f }

// HostDownFor is how long a host that failed a dial is tried after the
// others.
const HostDownFor = 10 * time.Second

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

// order returns the targets in the order the next dial tries them: from
// the next host in turn (round robin) or the first, then wrapping around;
// hosts that failed within HostDownFor after the others. A nil Balancer
// keeps the list's order.
func (b *Balancer) order(targets []Target) []Target {
	if b == nil {
		return targets
	}
	n := len(targets)
	start := 0
	if b.roundRobin.Load() {
		start = int(b.next.Add(1)-1) % n
	}
	out := make([]Target, 0, n)
	var last []Target
	now := time.Now()
	b.mu.Lock()
	for i := range n {
		tg := targets[(start+i)%n]
		if until, ok := b.down[tg]; ok {
			if now.Before(until) {
				last = append(last, tg)
				continue
			}
			delete(b.down, tg)
		}
		out = append(out, tg)
	}
	b.mu.Unlock()
	return append(out, last...)
}

// failed puts tg at the back of the order for HostDownFor.
func (b *Balancer) failed(tg Target) {
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.down == nil {
		b.down = map[Target]time.Time{}
	}
	b.down[tg] = time.Now().Add(HostDownFor)
	b.mu.Unlock()
}

// ok puts tg back in its place.
func (b *Balancer) ok(tg Target) {
	if b == nil {
		return
	}
	b.mu.Lock()
	delete(b.down, tg)
	b.mu.Unlock()
}

// loginHosts is Login over every target, in the order dc.Balancer gives.
func loginHosts(ctx context.Context, dc DialConfig, sec LoginSecret, targets []Target) (*Conn, error) {
	targets = dc.Balancer.order(targets)
	n := len(targets)
	errs := make([]error, 0, n)
	for i, tg := range targets {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok && i < n-1 {
			// An equal part of what is left; the last host gets the rest.
			actx, cancel = context.WithTimeout(ctx, time.Until(dl)/time.Duration(n-i))
		}
		c, err := loginTarget(actx, dc, sec, tg)
		cancel()
		if err == nil {
			dc.Balancer.ok(tg)
			return c, nil
		}
		errs = append(errs, &HostError{Target: tg, Err: err})
		if finalForHosts(err) {
			break // the host answered: it is not down
		}
		if ctx.Err() != nil {
			break // the dial's own time is up (or its caller left): no verdict on the host
		}
		dc.Balancer.failed(tg)
		if b := dc.Balancer; b != nil && b.skipped != nil && i < n-1 {
			b.skipped(tg, err)
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
