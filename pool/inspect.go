package pool

import (
	"net"
	"sync/atomic"
	"time"
)

// connSeq numbers server connections process-wide, so an ID names one
// connection among every pool's (the admin console's ptr column) and is
// never reused.
var connSeq atomic.Uint64

// ConnInfo describes one server connection for the admin console.
type ConnInfo struct {
	ID          uint64
	PID         uint32
	Created     time.Time
	LastUsed    time.Time // zero for a lent connection (its borrower owns that field)
	Addr, Local net.Addr
	CloseNeeded bool // RECONNECT: closed when next released
}

// Info describes c. Safe for any caller: it reads only fields that do not
// change after the connection is dialed (and the pool's reconnect mark).
func (c *Conn) Info() ConnInfo {
	ci := ConnInfo{ID: c.ID, PID: c.PID, Created: c.created, Addr: c.Addr}
	if c.Net != nil {
		ci.Local = c.Net.LocalAddr()
	}
	if c.pool != nil {
		ci.CloseNeeded = c.pool.closeNeeded(c)
	}
	return ci
}

// IdleConns returns a snapshot of the idle connections.
func (p *Pool) IdleConns() []ConnInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ConnInfo, 0, len(p.idle))
	for _, c := range p.idle {
		ci := c.Info()
		ci.LastUsed = c.lastUsed
		out = append(out, ci)
	}
	return out
}

// Reconnect marks every connection open now to be closed instead of reused:
// idle ones are closed at once, lent ones when they are released
// (PgBouncer's RECONNECT). New connections are dialed as needed.
func (p *Pool) Reconnect() {
	p.closeBefore.Store(time.Now().UnixNano())
	p.CloseIdle()
}

// MarkedOpen counts the connections that the last Reconnect marked and
// that are still open, idle or lent.
func (p *Pool) MarkedOpen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		if p.closeNeeded(c) {
			n++
		}
	}
	return n
}

// Retired reports whether c, one of this pool's connections, is to be
// closed when it is released rather than reused: it predates the last
// Reconnect, or the pool is closed (a reload replaced it).
func (p *Pool) Retired(c *Conn) bool {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	return closed || p.closeNeeded(c)
}

// closeNeeded reports whether c predates the last Reconnect.
func (p *Pool) closeNeeded(c *Conn) bool {
	cb := p.closeBefore.Load()
	return cb != 0 && c.created.UnixNano() <= cb
}
