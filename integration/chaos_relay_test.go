package integration

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// chaosRelay forwards TCP connections to target (PostgreSQL) and keeps
// every live pair, so that a test can hit one that is in use with a
// network fault: a reset of both ends, a half-close towards pgtide (pgtide
// reads EOF while the backend stays connected until pgtide closes), or a
// stall (nothing forwarded either way for a while, no FIN), optionally
// ended by a reset. Cancel requests go through it too.
type chaosRelay struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	pairs map[*chaosPair]struct{}
}

type chaosPair struct {
	c, s       *net.TCPConn // c: pgtide's side, s: PostgreSQL's
	stallUntil atomic.Int64 // unix ns: hold bytes both ways until then
	noReply    atomic.Bool  // half-closed towards pgtide: server bytes dropped
	once       sync.Once
}

func startChaosRelay(t *testing.T, target string) *chaosRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &chaosRelay{ln: ln, target: target, pairs: map[*chaosPair]struct{}{}}
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for p := range r.pairs {
			p.close(false)
		}
		r.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c.(*net.TCPConn))
		}
	}()
	return r
}

func (r *chaosRelay) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *chaosRelay) serve(c *net.TCPConn) {
	sc, err := net.Dial("tcp", r.target)
	if err != nil {
		c.Close()
		return
	}
	p := &chaosPair{c: c, s: sc.(*net.TCPConn)}
	r.mu.Lock()
	r.pairs[p] = struct{}{}
	r.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.copy(p.s, p.c, false) }()
	go func() { defer wg.Done(); p.copy(p.c, p.s, true) }()
	wg.Wait()
	p.close(false)
	r.mu.Lock()
	delete(r.pairs, p)
	r.mu.Unlock()
}

// copy forwards src to dst; fromServer says src is PostgreSQL's side.
func (p *chaosPair) copy(dst, src *net.TCPConn, fromServer bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for {
				until := p.stallUntil.Load()
				d := time.Until(time.Unix(0, until))
				if until == 0 || d <= 0 {
					break
				}
				time.Sleep(min(d, 20*time.Millisecond)) // re-read: the stall may be cut short or made longer
			}
			if fromServer && p.noReply.Load() {
				continue
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if fromServer && p.noReply.Load() {
				return // pgtide's side was closed for writing already
			}
			_ = dst.CloseWrite() // pass the FIN on
			return
		}
	}
}

func (p *chaosPair) close(rst bool) {
	p.once.Do(func() {
		p.stallUntil.Store(0)
		if rst {
			_ = p.c.SetLinger(0)
			_ = p.s.SetLinger(0)
		}
		p.c.Close()
		p.s.Close()
	})
}

// pickBackend returns the live pair whose PostgreSQL side is the backend
// connected from local port port (pg_stat_activity.client_port), or nil.
func (r *chaosRelay) pickBackend(port int) *chaosPair {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range r.pairs {
		if a, ok := p.s.LocalAddr().(*net.TCPAddr); ok && a.Port == port {
			return p
		}
	}
	return nil
}

// pick returns a random live pair (any one when rng is nil), or nil.
func (r *chaosRelay) pick(rng *rand.Rand) *chaosPair {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pairs) == 0 {
		return nil
	}
	i := 0
	if rng != nil {
		i = rng.IntN(len(r.pairs))
	}
	for p := range r.pairs {
		if i == 0 {
			return p
		}
		i--
	}
	return nil
}

// reset resets both ends of a pair.
func (p *chaosPair) reset() { p.close(true) }

// halfClose sends pgtide a FIN and drops what the server sends from now
// on; the server's side stays open until pgtide closes its own.
func (p *chaosPair) halfClose() {
	p.noReply.Store(true)
	_ = p.c.CloseWrite()
}

// stall holds every byte both ways for d.
func (p *chaosPair) stall(d time.Duration) { p.stallUntil.Store(time.Now().Add(d).UnixNano()) }

// unstallAll ends every stall now.
func (r *chaosRelay) unstallAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range r.pairs {
		p.stallUntil.Store(0)
	}
}
