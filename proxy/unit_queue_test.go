package proxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/wire"
)

func kinds(q *reqQueue) string {
	var b strings.Builder
	for _, e := range q.e {
		b.WriteByte(e.kind)
	}
	return b.String()
}

func queueOf(ks string) *reqQueue {
	q := &reqQueue{}
	for i := range len(ks) {
		q.push(entry{kind: ks[i]})
	}
	return q
}

func TestUnitQueueHeadSkipsCopyMarkers(t *testing.T) {
	q := queueOf("ccE")
	if h := q.head(); h == nil || h.kind != 'E' {
		t.Fatalf("head = %v, want E", h)
	}
	if e := q.popHead(); e.kind != 'E' || !q.empty() {
		t.Fatalf("popHead = %q, queue %q", e.kind, kinds(q))
	}
	q = queueOf("cc")
	if h := q.head(); h != nil {
		t.Fatalf("head of markers only = %q", h.kind)
	}
	if e := q.popHead(); e.kind != 0 || !q.empty() {
		t.Fatalf("popHead of markers only = %q, queue %q", e.kind, kinds(q))
	}
}

func TestUnitQueuePopReady(t *testing.T) {
	for _, tc := range []struct {
		in, left string
		ok       bool
	}{
		{"S", "", true},
		{"Q", "", true},
		{"F", "", true},
		{"PBDES", "", true}, // leftovers before the Sync go with it
		{"SS", "S", true},
		{"QS", "S", true},
		{"cS", "", true}, // a copy marker ahead of the Sync
		{"ccQ", "", true},
		{"cSQ", "Q", true},
		{"", "", false},
		{"PB", "", false},
	} {
		q := queueOf(tc.in)
		_, ok := q.popReady()
		if ok != tc.ok || kinds(q) != tc.left {
			t.Errorf("popReady on %q: ok=%v left %q; want ok=%v left %q", tc.in, ok, kinds(q), tc.ok, tc.left)
		}
	}
	q := &reqQueue{}
	q.push(entry{kind: 'Q', act: actSkip})
	q.push(entry{kind: 'S'})
	if skip, ok := q.popReady(); !skip || !ok {
		t.Fatalf("pgtide's own Query: skip=%v ok=%v", skip, ok)
	}
	if skip, ok := q.popReady(); skip || !ok || !q.empty() {
		t.Fatalf("client Sync: skip=%v ok=%v", skip, ok)
	}
}

func TestUnitQueueDropUntilSync(t *testing.T) {
	q := &reqQueue{}
	q.push(entry{kind: 'B'})
	q.push(entry{kind: 'P', act: actFake, fake: parseComplete})
	q.push(entry{kind: 'D'})
	q.push(entry{kind: 'E'})
	q.push(entry{kind: 'S'})
	q.push(entry{kind: 'P'})
	q.push(entry{kind: 'S'})
	dropped := q.dropUntilSync()
	var dk []byte
	for _, e := range dropped {
		dk = append(dk, e.kind)
	}
	if string(dk) != "BPDE" || kinds(q) != "SPS" {
		t.Fatalf("dropped %q, left %q; want BPDE, SPS", dk, kinds(q))
	}
	if dropped[1].act != actFake {
		t.Fatal("the fake reply was not among the dropped")
	}
	for _, in := range []string{"S", "SQ", ""} {
		q := queueOf(in)
		if d := q.dropUntilSync(); len(d) != 0 || kinds(q) != in {
			t.Errorf("dropUntilSync on %q dropped %d", in, len(d))
		}
	}
	// PostgreSQL discards every message until Sync after an extended-protocol
	// error, a simple Query or FunctionCall included (postgres.c: only Sync
	// clears ignore_till_sync), so they get no ReadyForQuery.
	q = queueOf("BEQFS")
	q.dropUntilSync()
	if kinds(q) != "S" {
		t.Fatalf("left %q, want S", kinds(q))
	}
}

// Extended-protocol COPY FROM STDIN: the client pipelines Execute and Sync
// before it knows a COPY starts; the server ignores that Sync in COPY IN
// (no ReadyForQuery for it), so the queue must drop it. The Sync after
// CopyDone does get a ReadyForQuery and stays.
func TestUnitQueueCopyStartedExtended(t *testing.T) {
	q := queueOf("PBES")
	q.popHead() // ParseComplete
	q.popHead() // BindComplete
	q.copyStarted()
	if kinds(q) != "E" {
		t.Fatalf("after CopyInResponse: %q, want E (the pipelined Sync dropped)", kinds(q))
	}
	q.push(entry{kind: reqCopyEnd}) // CopyDone
	q.push(entry{kind: 'S'})
	q.copyStarted() // a second CopyInResponse must not touch the post-copy Sync
	if kinds(q) != "EcS" {
		t.Fatalf("queue %q, want EcS", kinds(q))
	}
	q.popHead() // CommandComplete answers the Execute
	if _, ok := q.popReady(); !ok || !q.empty() {
		t.Fatalf("ReadyForQuery after CopyDone+Sync: ok=%v, left %q", ok, kinds(q))
	}
}

// Everything pipelined before the CopyInResponse arrives: Execute, Sync,
// CopyData..., CopyDone, Sync, then another query.
func TestUnitQueueCopyStartedExtendedFullyPipelined(t *testing.T) {
	q := queueOf("PBES")
	q.push(entry{kind: reqCopyEnd})
	q.push(entry{kind: 'S'})
	q.push(entry{kind: 'Q'})
	q.popHead()
	q.popHead()
	q.copyStarted()
	if kinds(q) != "EcSQ" {
		t.Fatalf("queue %q, want EcSQ", kinds(q))
	}
}

// Session mode queues no Execute: the pipelined Sync is the head.
func TestUnitQueueCopyStartedSessionExtended(t *testing.T) {
	q := queueOf("S")
	q.copyStarted()
	if !q.empty() {
		t.Fatalf("queue %q, want empty (pipelined Sync dropped)", kinds(q))
	}
	q.push(entry{kind: reqCopyEnd})
	q.push(entry{kind: 'S'})
	if _, ok := q.popReady(); !ok || !q.empty() {
		t.Fatalf("after CopyDone+Sync: ok=%v, left %q", ok, kinds(q))
	}
}

// Leftover markers from an earlier COPY ahead of the head are skipped when
// looking for the request that started this one.
func TestUnitQueueCopyStartedAfterOldMarkers(t *testing.T) {
	q := queueOf("ccES")
	q.copyStarted()
	if kinds(q) != "ccE" {
		t.Fatalf("queue %q, want ccE", kinds(q))
	}
}

// Simple-protocol COPY FROM STDIN: Query, CopyInResponse, CopyData...,
// CopyDone, CommandComplete, ReadyForQuery. After that ReadyForQuery the
// session is between transactions with nothing outstanding, so the queue
// must be empty (the release rule needs q.empty()). A CopyDone marker left
// behind keeps a transaction-mode server attached until the next query, and
// makes session.finish think a request is outstanding: it sends a cancel
// and waits 10s for a pump that will never get a reply, then closes the
// server.
func TestUnitQueueSimpleCopyLeavesQueueEmpty(t *testing.T) {
	q := queueOf("Q")
	q.copyStarted()
	if kinds(q) != "Q" {
		t.Fatalf("after CopyInResponse: %q, want Q", kinds(q))
	}
	q.push(entry{kind: reqCopyEnd}) // client's CopyDone
	if _, ok := q.popReady(); !ok {
		t.Fatal("ReadyForQuery matched nothing")
	}
	if !q.empty() {
		t.Fatalf("after the COPY's ReadyForQuery the queue holds %q, want empty "+
			"(popReady stops at the Query and leaves the CopyDone marker behind it)", kinds(q))
	}
}

// Two COPYs in one simple Query ("COPY a FROM STDIN; COPY b FROM STDIN").
func TestUnitQueueSimpleCopyTwoInOneQuery(t *testing.T) {
	q := queueOf("Q")
	q.copyStarted()
	q.push(entry{kind: reqCopyEnd})
	q.copyStarted()
	q.push(entry{kind: reqCopyEnd})
	if kinds(q) != "Qcc" {
		t.Fatalf("queue %q, want Qcc", kinds(q))
	}
	q.popReady()
	if !q.empty() {
		t.Fatalf("after ReadyForQuery: %q, want empty", kinds(q))
	}
}

func TestUnitQueuePopClearsEntries(t *testing.T) {
	q := &reqQueue{}
	st := &stmt{name: "x"}
	q.push(entry{kind: 'P', st: st, fake: []byte{1}})
	q.push(entry{kind: 'S'})
	back := q.e[:2]
	q.pop()
	if back[0].st != nil || back[0].fake != nil {
		t.Fatal("popped entry still referenced by the backing array")
	}
	q.pop()
	if !q.empty() || cap(q.e) != 0 {
		t.Fatalf("emptied queue keeps capacity %d", cap(q.e))
	}
}

func parseTypes(oids ...uint32) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(oids)))
	for _, o := range oids {
		b = binary.BigEndian.AppendUint32(b, o)
	}
	return b
}

func TestUnitStmtRegistryGet(t *testing.T) {
	r := newStmtRegistry()
	q := []byte("SELECT $1")
	a := r.get(q, parseTypes(23))
	b := r.get([]byte("SELECT $1"), parseTypes(23))
	if a != b || a.name != b.name {
		t.Fatalf("same text and types: %p %q vs %p %q", a, a.name, b, b.name)
	}
	c := r.get(q, parseTypes(25))
	d := r.get(q, parseTypes())
	e := r.get([]byte("SELECT $1 "), parseTypes(23))
	names := map[string]bool{}
	for _, st := range []*stmt{a, c, d, e} {
		if !strings.HasPrefix(st.name, "pgtide_") {
			t.Fatalf("name %q", st.name)
		}
		names[st.name] = true
	}
	if len(names) != 4 {
		t.Fatalf("distinct statements share names: %v", names)
	}
	// The stored Parse frame prepares the statement under its name.
	want := frame('P', append(append(append([]byte(a.name), 0), "SELECT $1\x00"...), parseTypes(23)...))
	if !bytes.Equal(a.parse, want) {
		t.Fatalf("parse frame\n%q\nwant\n%q", a.parse, want)
	}
	typ, n := a.parse[0], int(binary.BigEndian.Uint32(a.parse[1:5]))
	if typ != 'P' || n != len(a.parse)-1 {
		t.Fatalf("parse header %q len %d for %d bytes", typ, n, len(a.parse))
	}
	// The key must not alias: text "a\x00" + types vs text "a" + other types
	// cannot collide since Parse text has no NUL, but text ending where the
	// types begin must still differ.
	x := r.get([]byte("SELECT 1"), []byte{0, 0})
	y := r.get([]byte("SELECT 1"), nil)
	if x == y {
		t.Fatal("zero-parameter types and absent types share a statement")
	}
	// Callers' buffers are reused by the reader: get must not keep them.
	buf := []byte("SELECT 42")
	s1 := r.get(buf, nil)
	copy(buf, "SELECT 99")
	if s2 := r.get([]byte("SELECT 42"), nil); s2 != s1 {
		t.Fatal("registry kept a reference to the caller's buffer")
	}
	if !bytes.Contains(s1.parse, []byte("SELECT 42")) {
		t.Fatal("parse frame changed with the caller's buffer")
	}
}

func TestUnitServerStateLRU(t *testing.T) {
	sc := &pool.Conn{}
	s := stateOf(sc)
	if stateOf(sc) != s {
		t.Fatal("stateOf made a second state for one conn")
	}
	a, b, c := &stmt{name: "a"}, &stmt{name: "b"}, &stmt{name: "c"}
	s.add(a)
	s.add(b)
	s.add(c)
	if !s.has(a) { // touches a: b is now the least recently used
		t.Fatal("has(a) = false")
	}
	for _, want := range []*stmt{b, c, a} {
		if got := s.evict(); got != want {
			t.Fatalf("evicted %v, want %s", got, want.name)
		}
		if s.has(want) {
			t.Fatalf("%s still present after eviction", want.name)
		}
	}
	if s.evict() != nil || len(s.stmts) != 0 {
		t.Fatal("evict on empty")
	}
	s.add(a)
	s.add(b)
	s.remove(a)
	s.remove(a) // twice: no-op
	if s.has(a) || !s.has(b) || s.lru.Len() != 1 {
		t.Fatal("remove")
	}
	s.unnamed = &session{}
	s.clear()
	if s.has(b) || s.lru.Len() != 0 || s.unnamed != nil {
		t.Fatal("clear")
	}
}

func TestUnitFrameHelpers(t *testing.T) {
	f := frame('Q', []byte("x\x00"))
	if !bytes.Equal(f, []byte{'Q', 0, 0, 0, 6, 'x', 0}) {
		t.Fatalf("frame = %v", f)
	}
	g := wire.AppendFrame([]byte{1}, 'C', []byte{'S'}, []byte("n"), []byte{0})
	if !bytes.Equal(g, []byte{1, 'C', 0, 0, 0, 7, 'S', 'n', 0}) {
		t.Fatalf("appendFrame = %v", g)
	}
	s, rest, ok := cstring([]byte("ab\x00cd"))
	if !ok || string(s) != "ab" || string(rest) != "cd" {
		t.Fatal("cstring")
	}
	if _, _, ok := cstring([]byte("ab")); ok {
		t.Fatal("cstring without NUL")
	}
}

// Once empty, the queue reuses its array: a transaction's requests cost no
// allocation after the first.
func TestUnitQueueReusesArray(t *testing.T) {
	q := &reqQueue{}
	q.push(entry{kind: wire.FeQuery})
	q.pop()
	if allocs := testing.AllocsPerRun(100, func() {
		q.push(entry{kind: wire.FeParse})
		q.push(entry{kind: wire.FeSync})
		q.pop()
		q.pop()
	}); allocs != 0 {
		t.Fatalf("%v allocations per batch, want 0", allocs)
	}
	if !q.empty() || len(q.e) != 0 {
		t.Fatalf("queue not empty: %q", kinds(q))
	}
}

// TestUnitStmtRegistryFreesUnused: the registry keeps a statement only
// while something refers to it. Before the fix every distinct text stayed
// for the pool's life.
func TestUnitStmtRegistryFreesUnused(t *testing.T) {
	r := newStmtRegistry()
	kept := r.get([]byte("SELECT 'kept'"), nil)
	kept.validated.Store(true)
	for i := 0; i < 1000; i++ {
		r.get([]byte(fmt.Sprintf("SELECT %d", i)), nil)
	}
	size := func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.byKey)
	}
	deadline := time.Now().Add(5 * time.Second)
	for size() > 1 && time.Now().Before(deadline) {
		runtime.GC() // the cleanups run after a collection
		time.Sleep(time.Millisecond)
	}
	if n := size(); n != 1 {
		t.Fatalf("%d statements in the registry, want 1 (the one still referred to)", n)
	}
	if got := r.get([]byte("SELECT 'kept'"), nil); got != kept || !got.validated.Load() {
		t.Fatalf("a statement still referred to was replaced: %p %q, want %p %q", got, got.name, kept, kept.name)
	}
	// A text whose statement was freed gets a new one, never validated.
	if st := r.get([]byte("SELECT 7"), nil); st.validated.Load() {
		t.Fatal("a new statement is validated")
	}
	runtime.KeepAlive(kept)
}
