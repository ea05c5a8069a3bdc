package proxy

// reqQueue tracks what the server still owes a session, in client order:
// one entry per message that the server answers with ReadyForQuery (Query,
// FunctionCall, Sync) and a marker for each CopyDone/CopyFail. The release
// rule (DESIGN.md invariant 1) is "queue has no requests, no extended
// messages since the last Sync, no COPY open, last status 'I'".
//
// Ownership: guarded by session.mu; the client goroutine pushes, the pump
// pops.
type reqQueue struct {
	kinds []byte
	reqs  int // entries that expect a ReadyForQuery
}

const (
	reqQuery   = 'Q'
	reqFunc    = 'F'
	reqSync    = 'S'
	reqCopyEnd = 'c' // a CopyDone or CopyFail the client sent
)

func (q *reqQueue) push(k byte) {
	q.kinds = append(q.kinds, k)
	if k != reqCopyEnd {
		q.reqs++
	}
}

// popReady consumes the entry answered by a ReadyForQuery, with any copy
// markers before it. It reports false when nothing was expected.
func (q *reqQueue) popReady() bool {
	for len(q.kinds) > 0 {
		k := q.kinds[0]
		q.kinds = q.kinds[1:]
		if k != reqCopyEnd {
			q.reqs--
			if len(q.kinds) == 0 {
				q.kinds = q.kinds[:0:0]
			}
			return true
		}
	}
	return false
}

// copyStarted is called when the server enters COPY IN. PostgreSQL ignores
// Sync (and Flush) received in copy-in mode, so Syncs the client sent after
// the request that started the COPY and before its CopyDone/CopyFail will
// get no ReadyForQuery: drop them. The head entry is the request that
// started the COPY when it was a simple Query.
func (q *reqQueue) copyStarted() {
	i := 0
	if len(q.kinds) > 0 && q.kinds[0] == reqQuery {
		i = 1
	}
	out := q.kinds[:i]
	j := i
	for ; j < len(q.kinds) && q.kinds[j] != reqCopyEnd; j++ {
		if q.kinds[j] == reqSync {
			q.reqs--
			continue
		}
		out = append(out, q.kinds[j])
	}
	out = append(out, q.kinds[j:]...)
	q.kinds = out
}

func (q *reqQueue) empty() bool { return q.reqs == 0 }

func (q *reqQueue) reset() { q.kinds, q.reqs = q.kinds[:0], 0 }
