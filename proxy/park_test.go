package proxy

import (
	"testing"
	"time"
	"unsafe"
)

// The trim runs once a wave of trimMin or more parked clients has settled,
// never while clients keep parking, never for a few, and again only for a
// new wave.
func TestTrimAfterASettledWave(t *testing.T) {
	var tr trimState
	now := time.Unix(1000, 0)
	step := func(n int64, parks uint64, d time.Duration) bool {
		now = now.Add(d)
		return tr.check(n, parks, now)
	}
	for range 3 {
		if step(10, 10, time.Second) {
			t.Fatal("trimmed for a few clients")
		}
	}
	// A wave: parks keep coming, no trim while they do.
	for i := uint64(1); i <= 20; i++ {
		if step(int64(10+i*100), 10+i*100, 100*time.Millisecond) {
			t.Fatalf("trimmed while clients were parking (step %d)", i)
		}
	}
	if !tr.pending {
		t.Fatal("a wave of 2,000 is not pending")
	}
	if step(2010, 2010, trimSettle/2) {
		t.Fatal("trimmed before the wave settled")
	}
	if !step(2010, 2010, trimSettle) {
		t.Fatal("no trim once the wave settled")
	}
	tr.running.Store(false) // trimNow's end
	if step(2010, 2010, time.Second) || step(2500, 2600, time.Second) || step(2500, 2600, time.Second) {
		t.Fatal("trimmed again without a new wave of trimMin")
	}
	// Clients leave and a new wave comes: measured from the low point.
	step(500, 2600, time.Second)
	step(1600, 3700, time.Second)
	if !step(1600, 3700, time.Second) {
		t.Fatal("no trim for a second wave")
	}
	// One trim at a time.
	step(100, 3700, time.Second)
	step(1200, 4800, time.Second)
	if step(1200, 4800, time.Second) {
		t.Fatal("trimmed while the last trim still runs")
	}
}

// Memory per idle client is a budget (DESIGN.md): a session record is
// allocated with an 8-byte header (objects over 512 bytes with pointers)
// and must fit the 640-byte size class, not the next one (704). A field
// that does not fit in padding needs another to go, or a smaller layout.
func TestSessionRecordSize(t *testing.T) {
	if n := unsafe.Sizeof(session{}) + 8; n > 640 {
		t.Fatalf("session record is %d bytes with its malloc header: over the 640-byte size class (each idle client would cost 64 bytes more)", n)
	}
}
