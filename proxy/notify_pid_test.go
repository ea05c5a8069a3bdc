package proxy

import (
	"encoding/binary"
	"testing"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

func notificationBody(pid uint32) []byte {
	return append(binary.BigEndian.AppendUint32(nil, pid), "chan\x00payload\x00"...)
}

// TestUnitNotificationPID: the pump rewrites a NotificationResponse from
// the client's own server to the client's minted PID, in place, and leaves
// another server's PID in transaction mode (no pool to ask: sc has none).
// A notification always reaches the client, also while pgtide's own
// request is at the head of the queue (its replies are swallowed, a
// notification is none of them).
func TestUnitNotificationPID(t *testing.T) {
	for _, mode := range []config.PoolMode{config.PoolTransaction, config.PoolSession} {
		sc := &pool.Conn{PID: 100}
		ss := &session{mode: mode, keyPID: 7}
		body := notificationBody(100)
		if fwd, ev, repl := ss.routeLocked(sc, wire.BeNotification, body); !fwd || ev != evNone || repl != nil {
			t.Fatalf("%s: own server's notification: fwd %v ev %d repl %q", mode, fwd, ev, repl)
		}
		if got := binary.BigEndian.Uint32(body); got != 7 {
			t.Fatalf("%s: own server's notification has pid %d, want the minted 7", mode, got)
		}
		if string(body[4:]) != "chan\x00payload\x00" {
			t.Fatalf("%s: the rest changed: %q", mode, body[4:])
		}
		body = notificationBody(200)
		ss.routeLocked(sc, wire.BeNotification, body)
		if got := binary.BigEndian.Uint32(body); got != 200 {
			t.Fatalf("%s: another server's notification has pid %d, want its own 200", mode, got)
		}
		ss.q.push(entry{kind: wire.FeSync, act: actSkip})
		body = notificationBody(100)
		if fwd, _, _ := ss.routeLocked(sc, wire.BeNotification, body); !fwd {
			t.Fatalf("%s: a notification during pgtide's own request was swallowed", mode)
		}
		if got := binary.BigEndian.Uint32(body); got != 7 {
			t.Fatalf("%s: pid %d under pgtide's own request, want 7", mode, got)
		}
	}
	if !needsBody(wire.BeNotification) {
		t.Fatal("a NotificationResponse may be passed through in pieces: its PID could not be rewritten")
	}
}
