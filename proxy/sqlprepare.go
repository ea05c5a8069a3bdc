package proxy

// A small recogniser of the SQL statements that name prepared statements:
// PREPARE, EXECUTE (alone, after EXPLAIN, or in CREATE ... AS EXECUTE) and
// DEALLOCATE. PostgreSQL keeps SQL-level and protocol-level prepared
// statements in one per-session namespace, so in transaction and statement
// mode pgtide maps both kinds through the client's one statement map and
// rewrites the names in the query text to its own server-side names.
//
// It lexes just enough of PostgreSQL's syntax to find statement heads
// reliably: whitespace, -- and nested /* */ comments, quoted identifiers,
// string constants (standard, E'', with standard_conforming_strings off),
// dollar quotes, and parentheses, splitting statements at top-level
// semicolons as psql does.

const (
	sqlPrepare       = iota + 1 // PREPARE name [(types)] AS statement
	sqlExecute                  // EXECUTE name [(args)], EXPLAIN ... EXECUTE name, CREATE ... AS EXECUTE name
	sqlDeallocate               // DEALLOCATE [PREPARE] name
	sqlDeallocateAll            // DEALLOCATE [PREPARE] ALL
)

// sqlRef is one reference to a prepared statement by name in a query text.
type sqlRef struct {
	kind       int
	name       string // as PostgreSQL resolves it: folded, unquoted, truncated
	start, end int    // the name's bytes in the text (for sqlDeallocateAll, ALL's)
	stmtEnd    int    // where its statement ends (a top-level ';' or the end)
	bad        bool   // a name pgtide cannot decode (U&"..."): never mapped
}

// mayNameStmts is the cheap test run on every simple query and unnamed
// Parse: whether the text contains a keyword that can name a prepared
// statement at all.
func mayNameStmts(q []byte) bool {
	for i := 0; i+7 <= len(q); i++ {
		switch kwStart[q[i]] {
		case 0:
		case 'p':
			if foldHasPrefix(q[i:], "prepare") {
				return true
			}
		case 'e':
			if foldHasPrefix(q[i:], "execute") {
				return true
			}
		case 'd':
			if foldHasPrefix(q[i:], "deallocate") {
				return true
			}
		}
	}
	return false
}

// mayDropStmts reports whether a statement text may drop the client's
// prepared statements: it holds DEALLOCATE or DISCARD (DISCARD ALL).
func mayDropStmts(q []byte) bool {
	for i := 0; i+7 <= len(q); i++ {
		if q[i]|0x20 == 'd' && (foldHasPrefix(q[i:], "deallocate") || foldHasPrefix(q[i:], "discard")) {
			return true
		}
	}
	return false
}

// kwStart maps the first letters of PREPARE, EXECUTE and DEALLOCATE, in
// either case, to their lower case.
var kwStart = [256]byte{'p': 'p', 'P': 'p', 'e': 'e', 'E': 'e', 'd': 'd', 'D': 'd'}

func foldHasPrefix(b []byte, lower string) bool {
	if len(b) < len(lower) {
		return false
	}
	for i := 0; i < len(lower); i++ {
		if b[i]|0x20 != lower[i] {
			return false
		}
	}
	return true
}

// token kinds of the lexer.
const (
	tokWord   = iota + 1 // an unquoted identifier or keyword
	tokIdent             // a "quoted identifier"
	tokUIdent            // a U&"quoted identifier"
	tokString            // any string constant or dollar-quoted string
	tokOpen              // (
	tokClose             // )
	tokSemi              // ;
	tokOther             // any other character (operators, numbers, ...)
)

type sqlToken struct {
	kind       int
	start, end int
}

type sqlLexer struct {
	q       []byte
	i       int
	stdStrs bool  // standard_conforming_strings
	mb      mbLen // the client encoding's, when a trail byte can be ASCII
}

// mbLen returns the length of the character that starts at q[i] (a byte
// >= 0x80) in a client encoding whose multibyte characters can end in an
// ASCII byte: SJIS, BIG5, GBK, UHC, GB18030 and JOHAB, PostgreSQL's
// client-only encodings (0x83 0x5C is SJIS "ソ", whose second byte reads
// as a backslash). PostgreSQL lexes the text after converting it to the
// server's encoding, so such a byte never escapes a quote there; a lexer
// that took it for one saw string content where PostgreSQL saw a PREPARE
// or DEALLOCATE. nil for every other encoding (UTF-8, the single-byte
// ones, EUC_*), whose multibyte characters are bytes >= 0x80 throughout.
type mbLen func(q []byte, i int) int

// clientMBLen returns the mbLen of client encoding enc (any spelling
// PostgreSQL accepts: case and punctuation ignored, WIN932 for SJIS ...),
// as PostgreSQL's pg_*_mblen (src/common/wchar.c), or nil.
func clientMBLen(enc string) mbLen {
	var b []byte
	for i := 0; i < len(enc); i++ {
		if c := enc[i] | 0x20; c >= 'a' && c <= 'z' || enc[i] >= '0' && enc[i] <= '9' {
			b = append(b, c)
		}
	}
	switch string(b) {
	case "sjis", "shiftjis", "mskanji", "win932", "windows932", "shiftjis2004":
		return func(q []byte, i int) int {
			if q[i] >= 0xa1 && q[i] <= 0xdf { // half-width katakana: one byte
				return 1
			}
			return 2
		}
	case "big5", "win950", "windows950", "gbk", "win936", "windows936", "cp936", "uhc", "win949", "windows949":
		return func([]byte, int) int { return 2 }
	case "gb18030":
		return func(q []byte, i int) int {
			if i+1 < len(q) && q[i+1] >= 0x30 && q[i+1] <= 0x39 {
				return 4
			}
			return 2
		}
	case "johab":
		return func(q []byte, i int) int { // pg_euc_mblen
			if q[i] == 0x8f {
				return 3
			}
			return 2
		}
	}
	return nil
}

// skipChar returns where the character at q[i] ends.
func (mb mbLen) skipChar(q []byte, i int) int {
	if mb == nil || q[i] < 0x80 {
		return i + 1
	}
	return min(i+mb(q, i), len(q))
}

func isIdentStart(c byte) bool {
	return c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z') || c >= 0x80
}

func isIdentCont(c byte) bool {
	return isIdentStart(c) || (c >= '0' && c <= '9') || c == '$'
}

// next returns the next token; kind 0 at the end of the text.
func (l *sqlLexer) next() sqlToken {
	q := l.q
	for l.i < len(q) {
		c := q[l.i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			l.i++
			continue
		case c == '-' && l.i+1 < len(q) && q[l.i+1] == '-':
			for l.i < len(q) && q[l.i] != '\n' {
				l.i++
			}
			continue
		case c == '/' && l.i+1 < len(q) && q[l.i+1] == '*':
			depth := 0
			for l.i < len(q) {
				if q[l.i] == '/' && l.i+1 < len(q) && q[l.i+1] == '*' {
					depth++
					l.i += 2
				} else if q[l.i] == '*' && l.i+1 < len(q) && q[l.i+1] == '/' {
					depth--
					l.i += 2
					if depth == 0 {
						break
					}
				} else {
					l.i++
				}
			}
			continue
		}
		start := l.i
		switch {
		case c == '\'':
			l.i = skipString(q, l.i, !l.stdStrs, l.mb)
			return sqlToken{tokString, start, l.i}
		case c == '"':
			l.i = skipQuoted(q, l.i, '"')
			return sqlToken{tokIdent, start, l.i}
		case c == '$':
			if end, ok := skipDollar(q, l.i); ok {
				l.i = end
				return sqlToken{tokString, start, l.i}
			}
			l.i++
			for l.i < len(q) && q[l.i] >= '0' && q[l.i] <= '9' {
				l.i++
			}
			return sqlToken{tokOther, start, l.i}
		case isIdentStart(c):
			// String prefixes: E'...' (backslash escapes), U&'...' and
			// U&"..." (Unicode escapes), B'', X'', N''.
			if l.i+1 < len(q) && q[l.i+1] == '\'' {
				switch c | 0x20 {
				case 'e':
					l.i = skipString(q, l.i+1, true, l.mb)
					return sqlToken{tokString, start, l.i}
				case 'b', 'x', 'n':
					l.i = skipString(q, l.i+1, !l.stdStrs && c|0x20 == 'n', l.mb)
					return sqlToken{tokString, start, l.i}
				}
			}
			if c|0x20 == 'u' && l.i+2 < len(q) && q[l.i+1] == '&' && (q[l.i+2] == '\'' || q[l.i+2] == '"') {
				if q[l.i+2] == '"' {
					l.i = skipQuoted(q, l.i+2, '"')
					return sqlToken{tokUIdent, start, l.i}
				}
				l.i = skipString(q, l.i+2, false, l.mb)
				return sqlToken{tokString, start, l.i}
			}
			for l.i < len(q) && isIdentCont(q[l.i]) {
				l.i = l.mb.skipChar(q, l.i)
			}
			return sqlToken{tokWord, start, l.i}
		case c == '(':
			l.i++
			return sqlToken{tokOpen, start, l.i}
		case c == ')':
			l.i++
			return sqlToken{tokClose, start, l.i}
		case c == ';':
			l.i++
			return sqlToken{tokSemi, start, l.i}
		}
		l.i++
		return sqlToken{tokOther, start, l.i}
	}
	return sqlToken{}
}

// skipString returns the end of the string constant whose opening quote is
// at q[i]; backslash escapes count when esc is set. A multibyte character
// (mb) is skipped whole: its trail byte is no backslash.
func skipString(q []byte, i int, esc bool, mb mbLen) int {
	for i++; i < len(q); i++ {
		if mb != nil && q[i] >= 0x80 {
			i = mb.skipChar(q, i) - 1
			continue
		}
		switch q[i] {
		case '\\':
			if esc {
				i++
			}
		case '\'':
			if i+1 < len(q) && q[i+1] == '\'' {
				i++
				continue
			}
			return i + 1
		}
	}
	return len(q)
}

// skipQuoted returns the end of a quoted identifier opening at q[i].
func skipQuoted(q []byte, i int, quote byte) int {
	for i++; i < len(q); i++ {
		if q[i] == quote {
			if i+1 < len(q) && q[i+1] == quote {
				i++
				continue
			}
			return i + 1
		}
	}
	return len(q)
}

// skipDollar returns the end of the dollar-quoted string opening at q[i],
// if q[i] starts a dollar quote ($$ or $tag$) rather than a parameter ($1).
func skipDollar(q []byte, i int) (int, bool) {
	j := i + 1
	if j < len(q) && isIdentStart(q[j]) {
		for j < len(q) && isIdentCont(q[j]) && q[j] != '$' {
			j++
		}
	}
	if j >= len(q) || q[j] != '$' {
		return 0, false
	}
	tag := q[i : j+1]
	for k := j + 1; k+len(tag) <= len(q); k++ {
		if q[k] == '$' && string(q[k:k+len(tag)]) == string(tag) {
			return k + len(tag), true
		}
	}
	return len(q), true
}

func (l *sqlLexer) word(t sqlToken, lower string) bool {
	return t.kind == tokWord && t.end-t.start == len(lower) && foldHasPrefix(l.q[t.start:], lower)
}

// scanSQL finds the prepared-statement references of a query text, in
// order, and counts its statements.
func scanSQL(q []byte, stdStrings bool, mb mbLen) (refs []sqlRef, nstmts int) {
	l := &sqlLexer{q: q, stdStrs: stdStrings, mb: mb}
	ntok, depth := 0, 0 // top-level tokens of the current statement so far
	head := 0           // what the statement's head says is still to come
	var prev sqlToken
	first := 0 // the current statement's first ref
	for {
		t := l.next()
		if t.kind == 0 || (t.kind == tokSemi && depth == 0) {
			if ntok > 0 {
				nstmts++
			}
			for i := first; i < len(refs); i++ {
				refs[i].stmtEnd = t.start
			}
			if t.kind == 0 {
				for i := first; i < len(refs); i++ {
					refs[i].stmtEnd = len(q)
				}
				return refs, nstmts
			}
			ntok, depth, head, first = 0, 0, 0, len(refs)
			continue
		}
		switch t.kind {
		case tokOpen:
			depth++
		case tokClose:
			if depth > 0 {
				depth--
			}
		}
		ntok++
		if ntok == 1 {
			switch {
			case l.word(t, "prepare"):
				head = sqlPrepare
			case l.word(t, "execute"):
				head = sqlExecute
			case l.word(t, "deallocate"):
				head = sqlDeallocate
			case l.word(t, "explain"):
				head = 'x'
			case l.word(t, "create"):
				head = 'c'
			default:
				head = -1
			}
			prev = t
			continue
		}
		switch head {
		case sqlPrepare:
			// PREPARE name ...; but PREPARE TRANSACTION 'gid' is 2PC.
			if !(l.word(t, "transaction") && l.peek().kind == tokString) {
				refs = appendRef(refs, q, sqlPrepare, t)
			}
			head = -1
		case sqlExecute:
			refs = appendRef(refs, q, sqlExecute, t)
			head = -1
		case sqlDeallocate:
			if ntok == 2 && l.word(t, "prepare") {
				if n := l.peek(); n.kind == tokWord || n.kind == tokIdent || n.kind == tokUIdent {
					break // DEALLOCATE PREPARE name
				}
			}
			if l.word(t, "all") {
				refs = append(refs, sqlRef{kind: sqlDeallocateAll, start: t.start, end: t.end})
			} else {
				refs = appendRef(refs, q, sqlDeallocate, t)
			}
			head = -1
		case 'x':
			// EXPLAIN [ANALYZE] [VERBOSE] [( options )] EXECUTE name
			switch {
			case depth > 0 || t.kind == tokClose:
			case l.word(t, "analyze") || l.word(t, "analyse") || l.word(t, "verbose"):
			case l.word(t, "execute"):
				head = sqlExecute
			default:
				head = -1
			}
		case 'c':
			// CREATE ... AS EXECUTE name (CREATE TABLE AS)
			if depth == 0 && l.word(t, "execute") && l.word(prev, "as") {
				head = sqlExecute
			}
		}
		prev = t
	}
}

// peek returns the next token without consuming it.
func (l *sqlLexer) peek() sqlToken {
	save := l.i
	t := l.next()
	l.i = save
	return t
}

// appendRef adds a reference to the statement named by token t.
func appendRef(refs []sqlRef, q []byte, kind int, t sqlToken) []sqlRef {
	r := sqlRef{kind: kind, start: t.start, end: t.end}
	switch t.kind {
	case tokWord:
		r.name = truncateIdent(lowerASCII(q[t.start:t.end]))
	case tokIdent:
		s := q[t.start+1 : t.end]
		if len(s) == 0 || s[len(s)-1] != '"' {
			r.bad = true
			break
		}
		r.name = truncateIdent(unquote(s[:len(s)-1]))
		r.bad = r.name == ""
	case tokUIdent:
		r.bad = true
	default:
		return refs // not a name: a syntax error the server reports
	}
	return append(refs, r)
}

func lowerASCII(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return string(out)
}

func unquote(b []byte) string {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		out = append(out, b[i])
		if b[i] == '"' && i+1 < len(b) && b[i+1] == '"' {
			i++
		}
	}
	return string(out)
}

// truncateIdent cuts an identifier to NAMEDATALEN-1 bytes on a character
// boundary, as PostgreSQL's lexer does.
func truncateIdent(s string) string {
	const max = 63
	if len(s) <= max {
		return s
	}
	n := max
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
