package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/pgtide/pgtide/proxy/auth"
	"github.com/pgtide/pgtide/proxy/config"
)

// HBA: client authentication rules in PostgreSQL's pg_hba.conf format,
// used when auth_type = "hba". Supported: connection types local, host,
// hostssl, hostnossl (hostgssenc never matches, hostnogssenc is host);
// databases all, sameuser, replication (never matches: pgtide refuses
// replication connections) and names; users all and names (a name that
// starts with '/', PostgreSQL 16's regular expression, is refused); comma
// lists and double quotes in both; addresses all, CIDR, or an IP and a netmask;
// methods trust, reject, password, md5, scram-sha-256 and cert. The first
// rule that matches decides; no match means the connection is refused.

// hbaConnType is the first field of a rule.
type hbaConnType int

const (
	hbaLocal hbaConnType = iota
	hbaHost
	hbaHostSSL
	hbaHostNoSSL
	hbaHostGSS // never matches: pgtide has no GSSAPI encryption
)

// hbaMethod is the method field of a rule.
type hbaMethod int

const (
	hbaTrust hbaMethod = iota
	hbaReject
	hbaPassword
	hbaMD5
	hbaSCRAM
	hbaCert
)

var hbaMethods = map[string]hbaMethod{
	"trust": hbaTrust, "reject": hbaReject, "password": hbaPassword,
	"md5": hbaMD5, "scram-sha-256": hbaSCRAM, "cert": hbaCert,
}

func (m hbaMethod) String() string {
	for k, v := range hbaMethods {
		if v == m {
			return k
		}
	}
	return "?"
}

// hbaName is one element of a database or user list.
type hbaName struct {
	name    string
	keyword bool // an unquoted keyword: all, sameuser, replication
}

type hbaRule struct {
	line      int
	typ       hbaConnType
	databases []hbaName
	users     []hbaName
	addr      *net.IPNet // nil = any address (or a local rule)
	method    hbaMethod
}

// hbaRules is a parsed file. It is not modified after parsing.
type hbaRules struct {
	file  string
	rules []hbaRule
}

// hbaConn describes a connecting client to the matcher.
type hbaConn struct {
	local bool   // unix socket
	ip    net.IP // TCP peer address
	ssl   bool
	user  string
	db    string
	alias string // the database's other name ("" none): the admin console has two
}

// loadHBA reads and parses an HBA file.
func loadHBA(path string) (*hbaRules, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth_hba_file: %w", err)
	}
	return parseHBA(path, string(data))
}

// parseHBA parses the text of an HBA file; errors name the file and line.
func parseHBA(file, text string) (*hbaRules, error) {
	rs := &hbaRules{file: file}
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		lineNo := i + 1
		line := strings.TrimRight(lines[i], "\r")
		// A backslash at the end of a line continues it (PostgreSQL 16+).
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			line = line[:len(line)-1] + strings.TrimRight(lines[i], "\r")
		}
		fields, err := hbaFields(line)
		if err != nil {
			return nil, fmt.Errorf("auth_hba_file %s:%d: %w", file, lineNo, err)
		}
		if len(fields) == 0 {
			continue
		}
		r, err := parseHBARule(fields)
		if err != nil {
			return nil, fmt.Errorf("auth_hba_file %s:%d: %w", file, lineNo, err)
		}
		r.line = lineNo
		rs.rules = append(rs.rules, r)
	}
	return rs, nil
}

// hbaFields splits a line into fields, each a comma-separated list of
// names ("a,b" or "a, b"); a '#' outside quotes starts a comment. Quoted
// names are never keywords.
func hbaFields(line string) ([][]hbaName, error) {
	var fields [][]hbaName
	var cur []hbaName
	var tok strings.Builder
	inTok, quoted, afterComma := false, false, false
	flushTok := func() {
		if inTok {
			cur = append(cur, hbaName{name: tok.String(), keyword: !quoted})
		}
		tok.Reset()
		inTok, quoted = false, false
	}
	flushField := func() {
		flushTok()
		if cur != nil {
			fields = append(fields, cur)
		}
		cur = nil
	}
scan:
	for i := 0; i < len(line); i++ {
		switch c := line[i]; c {
		case '"':
			j := strings.IndexByte(line[i+1:], '"')
			if j < 0 {
				return nil, fmt.Errorf("unterminated quoted string")
			}
			tok.WriteString(line[i+1 : i+1+j])
			inTok, quoted, afterComma = true, true, false
			i += j + 1
		case '#':
			break scan
		case ' ', '\t':
			if inTok {
				flushField()
			}
		case ',':
			if !inTok {
				return nil, fmt.Errorf("empty element in a comma-separated list")
			}
			flushTok()
			afterComma = true
		default:
			tok.WriteByte(c)
			inTok, afterComma = true, false
		}
	}
	if afterComma && !inTok {
		return nil, fmt.Errorf("list ends with a comma")
	}
	flushField()
	return fields, nil
}

func parseHBARule(fields [][]hbaName) (hbaRule, error) {
	var r hbaRule
	single := func(f []hbaName, what string) (string, error) {
		if len(f) != 1 {
			return "", fmt.Errorf("%s must be a single value", what)
		}
		return f[0].name, nil
	}
	typ, err := single(fields[0], "connection type")
	if err != nil {
		return r, err
	}
	switch typ {
	case "local":
		r.typ = hbaLocal
	case "host", "hostnogssenc":
		r.typ = hbaHost
	case "hostssl":
		r.typ = hbaHostSSL
	case "hostnossl":
		r.typ = hbaHostNoSSL
	case "hostgssenc":
		r.typ = hbaHostGSS
	default:
		return r, fmt.Errorf("invalid connection type %q (expected local, host, hostssl or hostnossl)", typ)
	}
	rest := fields[1:]
	if len(rest) < 2 {
		return r, fmt.Errorf("end-of-line before user specification")
	}
	r.databases, r.users = rest[0], rest[1]
	// PostgreSQL 16 reads a name that starts with a slash, quoted or not,
	// as a regular expression: taken as a literal name, a reject rule for
	// it would match no one and let the next rule decide (fail open).
	for _, list := range [][]hbaName{r.databases, r.users} {
		for _, n := range list {
			if strings.HasPrefix(n.name, "/") {
				return r, fmt.Errorf("%q: regular expressions are not supported in database and user names", n.name)
			}
		}
	}
	for _, n := range r.databases {
		if n.keyword && (n.name == "samerole" || n.name == "samegroup") {
			return r, fmt.Errorf("database keyword %q is not supported", n.name)
		}
		if n.keyword && strings.HasPrefix(n.name, "@") {
			return r, fmt.Errorf("@file inclusion is not supported")
		}
	}
	for _, n := range r.users {
		if n.keyword && (strings.HasPrefix(n.name, "+") || strings.HasPrefix(n.name, "@")) {
			return r, fmt.Errorf("user %q: group membership (+) and @file inclusion are not supported", n.name)
		}
	}
	rest = rest[2:]
	if r.typ != hbaLocal {
		if len(rest) == 0 {
			return r, fmt.Errorf("end-of-line before IP address specification")
		}
		a, err := single(rest[0], "address")
		if err != nil {
			return r, err
		}
		rest = rest[1:]
		switch {
		case a == "all":
		case a == "samehost" || a == "samenet":
			return r, fmt.Errorf("address %q is not supported", a)
		case strings.Contains(a, "/"):
			_, n, err := net.ParseCIDR(a)
			if err != nil {
				return r, fmt.Errorf("invalid CIDR address %q", a)
			}
			r.addr = n
		default:
			ip := net.ParseIP(a)
			if ip == nil {
				return r, fmt.Errorf("invalid IP address %q (host names are not supported)", a)
			}
			if len(rest) == 0 {
				return r, fmt.Errorf("end-of-line before netmask specification")
			}
			m, err := single(rest[0], "netmask")
			if err != nil {
				return r, err
			}
			rest = rest[1:]
			mip := net.ParseIP(m)
			if mip == nil {
				return r, fmt.Errorf("invalid IP mask %q", m)
			}
			if v4 := ip.To4(); v4 != nil {
				ip, mip = v4, mip.To4()
			}
			if mip == nil || len(mip) != len(ip) {
				return r, fmt.Errorf("IP address and mask %q do not match", m)
			}
			mask := net.IPMask(mip)
			if ones, bits := mask.Size(); ones == 0 && bits == 0 {
				return r, fmt.Errorf("invalid IP mask %q", m)
			}
			r.addr = &net.IPNet{IP: ip.Mask(mask), Mask: mask}
		}
	}
	if len(rest) == 0 {
		return r, fmt.Errorf("end-of-line before authentication method")
	}
	m, err := single(rest[0], "authentication method")
	if err != nil {
		return r, err
	}
	method, ok := hbaMethods[m]
	if !ok {
		return r, fmt.Errorf("authentication method %q is not supported (expected trust, reject, password, md5, scram-sha-256 or cert)", m)
	}
	if method == hbaCert && r.typ != hbaHostSSL {
		return r, fmt.Errorf("cert authentication is only supported on hostssl connections")
	}
	r.method = method
	for _, opt := range rest[1:] {
		for _, o := range opt {
			return r, fmt.Errorf("authentication option %q is not supported", o.name)
		}
	}
	return r, nil
}

// match returns the first rule that applies to c, or nil.
func (rs *hbaRules) match(c hbaConn) *hbaRule {
	if rs == nil {
		return nil
	}
	for i := range rs.rules {
		r := &rs.rules[i]
		switch r.typ {
		case hbaLocal:
			if !c.local {
				continue
			}
		case hbaHost:
			if c.local {
				continue
			}
		case hbaHostSSL:
			if c.local || !c.ssl {
				continue
			}
		case hbaHostNoSSL:
			if c.local || c.ssl {
				continue
			}
		case hbaHostGSS:
			continue
		}
		if r.addr != nil && (c.ip == nil || !r.addr.Contains(c.ip)) {
			continue
		}
		if !matchHBADatabase(r.databases, c.db, c.user) && (c.alias == "" || !matchHBADatabase(r.databases, c.alias, c.user)) ||
			!matchHBAUser(r.users, c.user) {
			continue
		}
		return r
	}
	return nil
}

func matchHBADatabase(list []hbaName, db, user string) bool {
	for _, n := range list {
		switch {
		case n.keyword && n.name == "all":
			return true
		case n.keyword && n.name == "sameuser":
			if db == user {
				return true
			}
		case n.keyword && n.name == "replication":
			// pgtide refuses replication connections before this.
		case n.name == db:
			return true
		}
	}
	return false
}

func matchHBAUser(list []hbaName, user string) bool {
	for _, n := range list {
		if (n.keyword && n.name == "all") || n.name == user {
			return true
		}
	}
	return false
}

// clientAuthMethod decides how a client logging in as user to db proves
// who it is, enforcing client_tls_sslmode and, with auth_type = "hba", the
// HBA rules. Certificate checks happen here; the method returned is then
// run by auth.Authenticate (Trust for a passed cert rule).
func (s *Server) clientAuthMethod(cfg *config.Config, nc net.Conn, user, db string) (auth.Method, error) {
	sec := s.security()
	tc, ssl := nc.(*tls.Conn)
	_, local := nc.RemoteAddr().(*net.UnixAddr)
	if !ssl && !local && config.SSLModeRank(sec.mode) >= config.SSLModeRank("require") {
		return 0, &clientError{codeInvalidAuthSpec, fmt.Sprintf("connection requires SSL (client_tls_sslmode is %q)", sec.mode)}
	}
	var cn string
	hasCert := false
	if ssl {
		if st := tc.ConnectionState(); len(st.PeerCertificates) > 0 && len(st.VerifiedChains) > 0 {
			hasCert, cn = true, st.PeerCertificates[0].Subject.CommonName
		}
	}
	if ssl && sec.mode == "verify-full" && cn != user {
		return 0, &clientError{codeInvalidAuthSpec, fmt.Sprintf("certificate validation (client_tls_sslmode=verify-full) failed for user %q: CN mismatch", user)}
	}
	if cfg.AuthType != "hba" {
		m, err := auth.ParseMethod(cfg.AuthType)
		if err != nil {
			m = auth.SCRAM
		}
		return m, nil
	}
	hc := hbaConn{local: local, ssl: ssl, user: user, db: db}
	// The console answers to "pgtide" and "pgbouncer" (isConsole): a rule
	// for either name is a rule for it. Matched by the name given only, a
	// reject for "pgtide" was passed by logging in as "pgbouncer".
	switch {
	case db == config.AdminDatabaseName && isConsole(cfg, pgbouncerDatabase):
		hc.alias = pgbouncerDatabase
	case db == pgbouncerDatabase && isConsole(cfg, db):
		hc.alias = config.AdminDatabaseName
	}
	host := "[local]"
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		hc.ip, host = ta.IP, ta.IP.String()
	}
	// PostgreSQL 12 and later name the encryption, not "SSL on/off".
	sslWord := "no encryption"
	if ssl {
		sslWord = "SSL encryption"
	}
	r := sec.hba.match(hc)
	if r == nil {
		return 0, &clientError{codeInvalidAuthSpec, fmt.Sprintf("no pg_hba.conf entry for host %q, user %q, database %q, %s", host, user, db, sslWord)}
	}
	switch r.method {
	case hbaReject:
		return 0, &clientError{codeInvalidAuthSpec, fmt.Sprintf("pg_hba.conf rejects connection for host %q, user %q, database %q, %s", host, user, db, sslWord)}
	case hbaCert:
		if !hasCert {
			return 0, &clientError{codeInvalidAuthSpec, "connection requires a valid client certificate"}
		}
		if cn != user {
			return 0, &clientError{codeInvalidAuthSpec, fmt.Sprintf("certificate authentication failed for user %q", user)}
		}
		return auth.Trust, nil
	case hbaTrust:
		return auth.Trust, nil
	case hbaPassword:
		return auth.Cleartext, nil
	case hbaMD5:
		return auth.MD5, nil
	}
	return auth.SCRAM, nil
}

// CheckHBAFile reports whether path is an HBA file pgtide can use (for
// `pgtide convert-pgbouncer`, which checks a PgBouncer auth_hba_file).
func CheckHBAFile(path string) error {
	_, err := loadHBA(path)
	return err
}
