package proxy

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"weak"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/wire"
)

// stmt is one distinct prepared statement of a pool: a query text and its
// parameter types. Clients' statement names map to it; every server that has
// it knows it by the same pgtide-chosen name, so a client can never reach a
// statement by another client's name (only by the same text and types).
type stmt struct {
	name      string // server-side name, "pgtide_<n>"
	parse     []byte // a whole Parse frame that prepares it under name
	validated atomic.Bool
	// prep is set instead of parse for a statement a client made with SQL
	// PREPARE: the PREPARE text under name (its parameter types are SQL
	// type names, which a Parse cannot carry). Such a statement belongs
	// to one client and is not in the registry.
	prep []byte
	dead atomic.Bool // prep only: its client dropped it or left (sweepLocked)
	// dep is the statement an EXECUTE statement runs (its text names
	// dep's server-side name): it must exist wherever this one is used.
	dep *stmt
	// drops: its text may drop the client's statement names (DEALLOCATE,
	// DISCARD), so what the client names after running it waits for its
	// reply (dropsBarrier).
	drops bool
	// exec is set on a client's named statement whose text EXECUTEs
	// another by the client's name (newExecStmt): the client's own text,
	// mapped again at each use (execStmtLocked). Such a statement belongs
	// to one client and is not in the registry.
	exec *execText
}

// execText is the client's Parse of a statement that EXECUTEs another.
type execText struct{ query, types []byte }

// noStmtName is a server-side name no statement has (stmtSeq starts at 1):
// an EXECUTE of one of pgtide's names is pointed at it.
const noStmtName = "pgtide_0"

// newExecStmt is a statement for a named Parse whose text (query, mapped
// to pgtide's names: dep) EXECUTEs a statement; clientQuery is the text
// as the client sent it.
func newExecStmt(query, types []byte, dep *stmt, clientQuery []byte) *stmt {
	name := newStmtName()
	return &stmt{name: name, parse: parseFrame(name, query, types), dep: dep,
		exec: &execText{query: bytes.Clone(clientQuery), types: bytes.Clone(types)}}
}

// stmtRegistry dedupes statements of one pool by text and parameter types.
// It holds them weakly: a statement lives while a client's name maps to it
// (session.stmts), a server has it (serverState), a request or another
// statement (dep) refers to it; then the garbage collector frees it and
// its entry goes (drop). Held strongly, every distinct text a pool ever
// saw stayed for the pool's life: 50,000 statements of 2 kB prepared and
// closed by one client kept 245 MiB (PgBouncer frees a statement with its
// last reference).
type stmtRegistry struct {
	mu    sync.Mutex
	byKey map[string]weak.Pointer[stmt]
}

// stmtSeq numbers statements process-wide, so names from two registries
// (a pool and its replacement after a reload) never meet on one server.
var stmtSeq atomic.Uint64

func newStmtRegistry() *stmtRegistry { return &stmtRegistry{byKey: map[string]weak.Pointer[stmt]{}} }

// get returns the statement for a Parse body's query and types, creating it.
func (r *stmtRegistry) get(query, types []byte) *stmt { return r.getDep(query, types, nil) }

// getDep is get for a query that executes dep (whose name is in the text,
// so a text has one dep).
func (r *stmtRegistry) getDep(query, types []byte, dep *stmt) *stmt {
	key := make([]byte, 0, len(query)+1+len(types))
	key = append(append(append(key, query...), 0), types...)
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.byKey[string(key)].Value(); st != nil {
		return st
	}
	name := newStmtName()
	st := &stmt{name: name, parse: parseFrame(name, query, types), dep: dep, drops: mayDropStmts(query)}
	k := string(key)
	r.byKey[k] = weak.Make(st)
	runtime.AddCleanup(st, r.drop, k)
	return st
}

// drop removes key's entry once its statement was freed, unless the key
// has a newer statement by now (invalidate, flush).
func (r *stmtRegistry) drop(key string) {
	r.mu.Lock()
	if wp, ok := r.byKey[key]; ok && wp.Value() == nil {
		delete(r.byKey, key)
	}
	r.mu.Unlock()
}

// newStmtName returns a server-side statement name never used before.
func newStmtName() string { return "pgtide_" + strconv.FormatUint(stmtSeq.Add(1), 10) }

// invalidate drops st from the registry, so that the next Parse of its
// text gets a new statement that reaches a server and reports fresh
// parameter and result types.
func (r *stmtRegistry) invalidate(st *stmt) {
	if st.parse == nil {
		return
	}
	key := st.parse[5+len(st.name)+1:]
	r.mu.Lock()
	if r.byKey[string(key)].Value() == st {
		delete(r.byKey, string(key))
	}
	r.mu.Unlock()
}

// flush invalidates every statement: DDL went through the pool, and any
// statement's types may have changed. Statements already mapped by
// clients keep working (or fail as PostgreSQL fails them); servers drop
// the old ones as they are evicted.
func (r *stmtRegistry) flush() {
	r.mu.Lock()
	if len(r.byKey) > 0 {
		r.byKey = map[string]weak.Pointer[stmt]{}
	}
	r.mu.Unlock()
}

// parseFrame is a whole Parse message preparing query (with its parameter
// types, as the client's Parse carried them) under the server-side name.
func parseFrame(name string, query, types []byte) []byte {
	body := make([]byte, 0, len(name)+1+len(query)+1+len(types))
	body = append(append(body, name...), 0)
	body = append(append(body, query...), 0)
	return frame(wire.FeParse, append(body, types...))
}

// frame builds a whole message from a type and body.
func frame(typ byte, body []byte) []byte {
	b := make([]byte, 5+len(body))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)+4))
	copy(b[5:], body)
	return b
}

// serverState is the proxy's bookkeeping for one server connection, kept
// in pool.Conn.Proto. Owned by the server's current borrower.
type serverState struct {
	lru     *list.List // of *stmt, most recently used at the front
	stmts   map[*stmt]*list.Element
	unnamed *session // whose unnamed statement the server holds, if any
	// unnamedGen is unnamed's session.unnamedGen when the server got it:
	// the statement is that client's current one only while they match.
	unnamedGen uint32
	swept      uint64 // deadSeq when dead statements were last closed here

	// toldDiff's answer for toldFor (kept, so its address is not reused).
	toldFor  map[string]string
	toldKeys []string
}

func stateOf(sc *pool.Conn) *serverState {
	if st, ok := sc.Proto.(*serverState); ok {
		return st
	}
	st := &serverState{lru: list.New(), stmts: map[*stmt]*list.Element{}}
	sc.Proto = st
	return st
}

// holdsUnnamed reports whether the server's unnamed statement is ss's
// current one: ss's, and not an older one that ss has replaced, closed or
// lost (a simple query) since, on another server.
func (s *serverState) holdsUnnamed(ss *session) bool {
	return s.unnamed == ss && s.unnamedGen == ss.unnamedGen
}

// setUnnamed records that the server's unnamed statement is ss's current one.
func (s *serverState) setUnnamed(ss *session) { s.unnamed, s.unnamedGen = ss, ss.unnamedGen }

// newUnnamedLocked starts a new unnamed statement of the client (unnamedParse
// changed): no server holds it until setUnnamed says so.
func (ss *session) newUnnamedLocked() { ss.unnamedGen++ }

func (s *serverState) has(st *stmt) bool {
	if e := s.stmts[st]; e != nil {
		s.lru.MoveToFront(e)
		return true
	}
	return false
}

func (s *serverState) add(st *stmt) { s.stmts[st] = s.lru.PushFront(st) }

func (s *serverState) remove(st *stmt) {
	if e := s.stmts[st]; e != nil {
		s.lru.Remove(e)
		delete(s.stmts, st)
	}
}

// evict removes and returns the least recently used statement.
func (s *serverState) evict() *stmt {
	e := s.lru.Back()
	if e == nil {
		return nil
	}
	st := e.Value.(*stmt)
	s.lru.Remove(e)
	delete(s.stmts, st)
	return st
}

func (s *serverState) clear() {
	s.lru.Init()
	clear(s.stmts)
	s.unnamed = nil
}

// cstring splits a NUL-terminated string off the front of b.
func cstring(b []byte) (s, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

// Scratch buffers for rewritten batches and spliced replies come from a
// shared pool rather than living in each session, so an idle session holds
// none.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func getScratch() []byte { return (*scratchPool.Get().(*[]byte))[:0] }

// takeScratch and giveScratch pass the pool's own pointer back, so a batch's
// buffers go round without an allocation (putScratch makes a new pointer).
func takeScratch() *[]byte {
	p := scratchPool.Get().(*[]byte)
	*p = (*p)[:0]
	return p
}

func giveScratch(p *[]byte, b []byte) {
	if cap(b) == 0 || cap(b) > 64<<10 {
		return
	}
	*p = b[:0]
	scratchPool.Put(p)
}

func putScratch(b []byte) {
	if cap(b) == 0 || cap(b) > 64<<10 {
		return
	}
	b = b[:0]
	scratchPool.Put(&b)
}

// scratch returns b, or a pooled buffer when b is nil.
func scratch(b []byte) []byte {
	if b == nil {
		return getScratch()
	}
	return b
}
