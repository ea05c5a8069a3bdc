package pool

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// hostFake is one server of a host list: it accepts any number of
// connections and answers each login as told.
type hostFake struct {
	port     int
	accepted atomic.Int32
}

// newHostFake starts a fake server. code "" logs every client in (trust);
// "silent" accepts and never answers; anything else is the SQLSTATE of a
// FATAL sent after the StartupMessage.
func newHostFake(t *testing.T, code string) *hostFake {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &hostFake{port: ln.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			f.accepted.Add(1)
			go func() {
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
				be := pgproto3.NewBackend(nc, nc)
				be.SetMaxBodyLen(1 << 16)
				if _, err := be.ReceiveStartupMessage(); err != nil {
					return
				}
				switch code {
				case "silent":
					var b [1]byte
					_, _ = nc.Read(b[:]) // until the client gives up
					return
				case "":
					be.Send(&pgproto3.AuthenticationOk{})
					be.Send(&pgproto3.BackendKeyData{ProcessID: uint32(f.port), SecretKey: []byte{1, 2, 3, 4}})
					be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				default:
					be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: code, Message: "refused with " + code})
				}
				if be.Flush() == nil {
					_, _ = be.Receive() // Terminate, or the client's close
				}
			}()
		}
	}()
	return f
}

// refusingPort returns a port nothing listens on (connections are refused).
func refusingPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// hostList is a DialConfig naming 127.0.0.1 once per port.
func hostList(ports ...int) DialConfig {
	hosts := make([]string, len(ports))
	ps := make([]string, len(ports))
	for i, p := range ports {
		hosts[i], ps[i] = "127.0.0.1", strconv.Itoa(p)
	}
	return DialConfig{Host: strings.Join(hosts, ","), Ports: strings.Join(ps, ","), Database: "db", User: "u", Timeout: 5 * time.Second}
}

func remotePort(c *Conn) int { return c.Addr.(*net.TCPAddr).Port }

// A host that refuses, or that accepts and never answers, is skipped within
// the same dial; the connection remembers the host it reached.
func TestLoginHostsSkipsDeadHosts(t *testing.T) {
	good := newHostFake(t, "")
	silent := newHostFake(t, "silent")
	for _, tc := range []struct {
		name  string
		first int // port of the dead host
	}{{"refused", refusingPort(t)}, {"no answer", silent.port}} {
		t.Run(tc.name, func(t *testing.T) {
			dc := hostList(tc.first, good.port)
			dc.Timeout = 2 * time.Second // the silent host gets half of it
			c, err := Dial(context.Background(), dc)
			if err != nil {
				t.Fatalf("dial with one live host failed: %v", err)
			}
			defer c.Close()
			if remotePort(c) != good.port || c.PID != uint32(good.port) {
				t.Errorf("connected to port %d (pid %d), want the live host %d", remotePort(c), c.PID, good.port)
			}
		})
	}
	if silent.accepted.Load() != 1 {
		t.Errorf("the silent host saw %d connections, want 1 (it is tried first)", silent.accepted.Load())
	}
}

// Round robin starts each dial at the next host; without it (or without a
// Balancer) every dial starts at the first. A host that just failed is
// tried after the others until it works again.
func TestLoginHostsOrder(t *testing.T) {
	a, b, c := newHostFake(t, ""), newHostFake(t, ""), newHostFake(t, "")
	dial := func(dc DialConfig) int {
		t.Helper()
		conn, err := Dial(context.Background(), dc)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		return remotePort(conn)
	}
	dc := hostList(a.port, b.port, c.port)
	if got := dial(dc); got != a.port {
		t.Errorf("no Balancer: connected to %d, want the first host %d", got, a.port)
	}
	dc.Balancer = NewBalancer(true)
	for i, want := range []int{a.port, b.port, c.port, a.port, b.port} {
		if got := dial(dc); got != want {
			t.Errorf("round robin dial %d: connected to %d, want %d", i, got, want)
		}
	}
	dc.Balancer.SetRoundRobin(false)
	for i := range 3 {
		if got := dial(dc); got != a.port {
			t.Errorf("disable dial %d: connected to %d, want the first host %d", i, got, a.port)
		}
	}

	// A silent first host costs the first dial its part of the timeout,
	// then goes last: the next dials do not wait for it.
	silent := newHostFake(t, "silent")
	dc = hostList(silent.port, b.port)
	dc.Timeout = 2 * time.Second
	dc.Balancer = NewBalancer(false)
	for i := range 3 {
		if got := dial(dc); got != b.port {
			t.Errorf("dial %d: connected to %d, want %d", i, got, b.port)
		}
	}
	if n := silent.accepted.Load(); n != 1 {
		t.Errorf("the silent host was tried %d times, want once (then last)", n)
	}
	// Round robin skips it too, and a host that failed is back in its place
	// once it works.
	dead := refusingPort(t)
	dc = hostList(a.port, dead, c.port)
	dc.Balancer = NewBalancer(true)
	var skipped []Target
	dc.Balancer.OnSkip(func(tg Target, err error) { skipped = append(skipped, tg) })
	for i, want := range []int{a.port, c.port, c.port, a.port} { // start at a, at dead (-> c), at c, at a
		if got := dial(dc); got != want {
			t.Errorf("round robin with a dead host, dial %d: connected to %d, want %d", i, got, want)
		}
	}
	if len(skipped) != 1 || skipped[0].Port != dead {
		t.Errorf("hosts reported skipped: %v, want the dead one once", skipped)
	}
	dc.Balancer.SetRoundRobin(false)
	if got := dc.Balancer.order(dc.mustTargets(t)); got[1].Port != c.port || got[2].Port != dead {
		t.Errorf("order %v: the dead host is not last", got)
	}
	dc.Balancer.ok(Target{"127.0.0.1", dead})
	if got := dc.Balancer.order(dc.mustTargets(t)); got[1].Port != dead {
		t.Errorf("order %v: the host is not back in its place after it worked", got)
	}
}

func (dc DialConfig) mustTargets(t *testing.T) []Target {
	t.Helper()
	ts, err := dc.Targets()
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// A refusal the next host would repeat ends the dial at once; one that is
// the host's own state (starting up, too many connections) moves on.
func TestLoginHostsRefusals(t *testing.T) {
	for _, tc := range []struct {
		code  string
		retry bool
	}{{"28P01", false}, {"28000", false}, {"3D000", false}, {"42501", false}, {"57P03", true}, {"53300", true}} {
		t.Run(tc.code, func(t *testing.T) {
			bad, good := newHostFake(t, tc.code), newHostFake(t, "")
			c, err := Dial(context.Background(), hostList(bad.port, good.port))
			if !tc.retry {
				var se *ServerError
				if err == nil || !errors.As(err, &se) || se.Code != tc.code {
					t.Fatalf("err = %v, want the server's %s", err, tc.code)
				}
				if n := good.accepted.Load(); n != 0 {
					t.Errorf("the second host saw %d connections after a %s, want none", n, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s from the first host: dial failed: %v", tc.code, err)
			}
			c.Close()
			if remotePort(c) != good.port {
				t.Errorf("connected to %d, want %d", remotePort(c), good.port)
			}
		})
	}
}

// When every host fails, the error names each attempt (for the log) and
// still answers errors.Is for the cause.
func TestLoginHostsAllFail(t *testing.T) {
	p1, p2 := refusingPort(t), refusingPort(t)
	_, err := Dial(context.Background(), hostList(p1, p2))
	if err == nil {
		t.Fatal("dial succeeded")
	}
	for _, p := range []int{p1, p2} {
		if !strings.Contains(err.Error(), "127.0.0.1:"+strconv.Itoa(p)+": ") {
			t.Errorf("error does not name port %d: %v", p, err)
		}
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("errors.Is(ECONNREFUSED) = false for %v", err)
	}
	// The whole dial stays within its timeout when every host is silent.
	s1, s2 := newHostFake(t, "silent"), newHostFake(t, "silent")
	dc := hostList(s1.port, s2.port)
	dc.Timeout = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Dial(ctx, dc); err == nil || ctx.Err() != nil {
		t.Fatalf("err %v, outer context %v: want the dial's own timeout", err, ctx.Err())
	}
	if s1.accepted.Load() != 1 || s2.accepted.Load() != 1 {
		t.Errorf("silent hosts saw %d and %d connections, want 1 each", s1.accepted.Load(), s2.accepted.Load())
	}
}

func TestTargets(t *testing.T) {
	for _, tc := range []struct {
		dc   DialConfig
		want string
	}{
		{DialConfig{Host: "db", Port: 5432}, "[db:5432]"},
		{DialConfig{Host: "a, b,/run/pg", Port: 6000}, "[a:6000 b:6000 /run/pg:6000]"},
		{DialConfig{Host: "a,::1", Ports: "5433,5434"}, "[a:5433 [::1]:5434]"},
	} {
		got, err := tc.dc.Targets()
		if err != nil {
			t.Fatalf("%+v: %v", tc.dc, err)
		}
		var s []string
		for _, tg := range got {
			s = append(s, tg.String())
		}
		if "["+strings.Join(s, " ")+"]" != tc.want {
			t.Errorf("%+v: %v, want %s", tc.dc, s, tc.want)
		}
	}
	for _, dc := range []DialConfig{{Host: "a,b", Ports: "1"}, {Host: "a,,b", Port: 1}, {Host: "a", Ports: "x"}} {
		if _, err := dc.Targets(); err == nil {
			t.Errorf("%+v: no error", dc)
		}
	}
	if PortList([]int{5432}) != "" || PortList([]int{1, 2}) != "1,2" {
		t.Errorf("PortList")
	}
}

func TestBalancer(t *testing.T) {
	ts := []Target{{"a", 1}, {"b", 1}, {"c", 1}}
	b := NewBalancer(true)
	for i := range 4 {
		if got := b.order(ts)[0]; got != ts[i%3] {
			t.Errorf("round robin call %d starts at %v", i, got)
		}
	}
	b.SetRoundRobin(false)
	b.failed(ts[0])
	if got := b.order(ts); got[0] != ts[1] || got[2] != ts[0] {
		t.Errorf("disable with the first host down: %v", got)
	}
	b.ok(ts[0])
	if got := b.order(ts); got[0] != ts[0] {
		t.Errorf("disable: %v", got)
	}
	if got := (*Balancer)(nil).order(ts); got[0] != ts[0] {
		t.Errorf("nil Balancer: %v", got)
	}
}
