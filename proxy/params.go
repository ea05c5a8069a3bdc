package proxy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// Startup parameters that are not session settings.
var notSettings = map[string]bool{"user": true, "database": true, "replication": true, "options": true}

// wantFromStartup records the settings the client asked for in its startup
// packet, including "-c name=value" and "--name=value" in options (which
// the packet's own parameters override, as in PostgreSQL), less
// those ignore_startup_parameters names (PgBouncer's list of parameters it
// accepts without applying; pgtide accepts every parameter anyway, so the
// list only keeps values off the servers). db's client_encoding, datestyle
// and timezone fill in for those the client did not send.
func (ss *session) wantFromStartup(cfg *config.Config, db config.Database, params map[string]string) error {
	ignored := func(name string) bool {
		for _, n := range cfg.IgnoreStartupParameters {
			if strings.EqualFold(n, name) {
				return true
			}
		}
		return false
	}
	var opts []string
	if !ignored("options") {
		opts = splitOptions(params["options"])
	}
	for i := 0; i < len(opts); i++ {
		o := opts[i]
		var kv string
		switch {
		case o == "-c" && i+1 < len(opts):
			i++
			kv = opts[i]
		case strings.HasPrefix(o, "-c"):
			kv = o[2:]
		case strings.HasPrefix(o, "--"):
			kv = o[2:]
		default:
			return &clientError{codeFeatureNotSupported, "unsupported startup option " + quoteIdentForMsg(o) + ": only -c name=value and --name=value are supported"}
		}
		name, val, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			// PostgreSQL: 42601, "-c NAME requires a value".
			return &clientError{codeSyntaxError, "invalid startup option " + quoteIdentForMsg(o)}
		}
		if name = strings.ToLower(strings.ReplaceAll(name, "-", "_")); !ignored(name) {
			ss.setWant(name, val)
		}
	}
	// After options, as PostgreSQL applies them (process_startup_options):
	// a parameter sent both ways takes the startup packet's own value.
	for k, v := range params {
		if lk := strings.ToLower(k); !notSettings[k] && !ignored(lk) {
			ss.setWant(lk, v)
		}
	}
	for _, d := range [...][2]string{{"client_encoding", db.ClientEncoding}, {"datestyle", db.DateStyle}, {"timezone", db.TimeZone}} {
		if _, sent := ss.want[d[0]]; !sent && d[1] != "" {
			ss.setWant(d[0], d[1])
		}
	}
	if cfg.ApplicationNameAddHost {
		// PgBouncer's format ("%s - %s" with "app" when none was sent), so
		// log searches written for it keep working.
		app, ok := ss.want["application_name"]
		if !ok {
			app = "app"
		}
		ss.setWant("application_name", app+" - "+clientHostPort(ss.conn))
	}
	return nil
}

// clientHostPort is the client's address as application_name_add_host
// writes it: host:port ([host]:port for IPv6), or "unix" for a unix socket.
func clientHostPort(nc net.Conn) string {
	if nc == nil {
		return "unix"
	}
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
	}
	return "unix"
}

func quoteIdentForMsg(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return `"` + s + `"`
}

// splitOptions splits the options startup parameter on whitespace, with a
// backslash escaping the next character, as PostgreSQL does.
func splitOptions(s string) []string {
	var out []string
	var cur strings.Builder
	esc, has := false, false
	for _, r := range s {
		switch {
		case esc:
			cur.WriteRune(r)
			esc, has = false, true
		case r == '\\':
			esc = true
		case r == ' ' || r == '\t' || r == '\n':
			if has {
				out = append(out, cur.String())
				cur.Reset()
				has = false
			}
		default:
			cur.WriteRune(r)
			has = true
		}
	}
	if has {
		out = append(out, cur.String())
	}
	return out
}

// toldTracked are the reported parameters a client keeps as it was told
// at login, unless it changes them, whatever the defaults of the servers it
// gets later (after ALTER DATABASE/ROLE ... SET, or a restart with other
// settings): PgBouncer's tracked set, and IntervalStyle. A direct session
// keeps the values it started with; libpq quotes literals by the
// standard_conforming_strings it was told.
var toldTracked = [...]string{"client_encoding", "datestyle", "timezone", "intervalstyle", "standard_conforming_strings", "application_name"}

// toldDiff returns the toldTracked parameters whose value in told differs
// from sc's login defaults (sc.Defaults): the ones a client told so needs
// set on sc. Remembered per told map, as sessions share their login's map:
// one pointer comparison per borrow.
func toldDiff(sc *pool.Conn, told map[string]string) []string {
	s := stateOf(sc)
	if s.toldFor != nil && reflect.ValueOf(s.toldFor).UnsafePointer() == reflect.ValueOf(told).UnsafePointer() {
		return s.toldKeys
	}
	s.toldFor, s.toldKeys = told, s.toldKeys[:0]
	for _, k := range toldTracked {
		tv, ok := reportedParam(told, k)
		if !ok {
			continue
		}
		if dv, ok := reportedParam(sc.Defaults, k); !ok || dv != tv {
			s.toldKeys = append(s.toldKeys, k)
		}
	}
	return s.toldKeys
}

// syncParams brings a borrowed server in line with what this client wants
// (invariant 4: the replies are swallowed). Settings a previous borrower
// had applied and this client does not want are reset. synced reports
// that statements were run (the server was not already in line).
func (ss *session) syncParams(sc *pool.Conn) (synced bool, err error) {
	ss.mu.Lock()
	var set, reset []string
	stale := func(k, v string) bool {
		cur, rep := reportedParam(sc.Params, k)
		if a, ok := sc.Applied[k]; ok && a.Want == v && (!rep || cur == a.Got) {
			return false
		}
		return !rep || cur != v
	}
	for k, v := range ss.want {
		if stale(k, v) {
			set = append(set, k)
		}
	}
	want, cloned := ss.want, false
	var keep []string // told values to keep on this server (toldDiff)
	// Not before the first server of a login answered from the welcome
	// cache: the cached values may be stale, and checkWelcome tells the
	// client the server's (then told is those).
	if ss.login != nil && ss.welcomeKey == "" && ss.mode != config.PoolSession && sc.Defaults != nil {
		for _, k := range toldDiff(sc, ss.login.told) {
			if _, ok := ss.want[k]; ok {
				continue // the client's own value
			}
			keep = append(keep, k)
			v, _ := reportedParam(ss.login.told, k)
			if stale(k, v) {
				if !cloned { // the values syncQueries reads: the client's, and these
					want, cloned = maps.Clone(ss.want), true
					if want == nil {
						want = map[string]string{}
					}
				}
				want[k] = v
				set = append(set, k)
			}
		}
	}
	for k := range sc.Applied {
		if _, ok := ss.want[k]; !ok && !slices.Contains(keep, k) {
			reset = append(reset, k)
		}
	}
	if len(set) == 0 && len(reset) == 0 {
		ss.mu.Unlock()
		return false, nil
	}
	qs := syncQueries(set, reset, serverValues(sc, want))
	wants := make(map[string]string, len(set)) // Applied keeps what the client asked for
	for _, k := range set {
		wants[k] = want[k]
	}
	ss.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stateOf(sc).unnamed = nil // ExecParams used the unnamed statement
	if err := sc.ExecParams(ctx, qs); err != nil {
		var se *pool.ServerError
		if errors.As(err, &se) && sc.TxStatus == wire.TxIdle {
			return true, newSettingRefused(se) // its detail and hint too, as PostgreSQL's
		}
		return true, err
	}
	for _, k := range reset {
		delete(sc.Applied, k)
	}
	for k, v := range wants {
		got, ok := reportedParam(sc.Params, k)
		if !ok {
			got = v
		}
		sc.Applied[k] = pool.AppliedParam{Want: v, Got: got}
	}
	return true, nil
}

// serverValues returns want as the server can take it: an application_name
// that is not valid UTF-8 has its invalid bytes replaced as PostgreSQL
// replaces them when it gets such a name in a startup packet (its check
// hook, pg_clean_ascii: '?' per byte up to version 15, "\xNN" from 16),
// where set_config, whose text is checked against the encoding, refused it
// (22021) and the client could not log in. The server replaces the rest
// (valid non-ASCII) itself. Other parameters are sent as they came: such
// bytes in them PostgreSQL keeps as they are, which a bound text cannot.
func serverValues(sc *pool.Conn, want map[string]string) map[string]string {
	v, ok := want["application_name"]
	if !ok || utf8.ValidString(v) {
		return want
	}
	var b strings.Builder
	for i := 0; i < len(v); {
		r, n := utf8.DecodeRuneInString(v[i:])
		switch {
		case r != utf8.RuneError || n > 1:
			b.WriteString(v[i : i+n])
		case serverMajor(sc) >= 16:
			fmt.Fprintf(&b, `\x%02x`, v[i])
		default:
			b.WriteByte('?')
		}
		i += n
	}
	out := maps.Clone(want)
	out["application_name"] = b.String()
	return out
}

// serverMajor is sc's PostgreSQL major version from its server_version, 0
// if it reported none it can be read from.
func serverMajor(sc *pool.Conn) int {
	v := sc.Params["server_version"]
	n := 0
	for i := 0; i < len(v) && v[i] >= '0' && v[i] <= '9'; i++ {
		n = n*10 + int(v[i]-'0')
	}
	return n
}

// syncQueries builds the statements that reset and set parameters on a
// server. Values are bound as parameters (issue 13 item 6: quoting inside
// the SQL text can be broken by a client-only encoding such as GBK with
// backslash_quote on); names are identifiers, whose quote character is
// never a trail byte of any encoding PostgreSQL accepts. Order matters:
// session_authorization before role (setting it resets role), both after
// the other settings (which may need the login user's privileges), and
// client_encoding first of the sets, so later values are read in it.
func syncQueries(set, reset []string, want map[string]string) []pool.ParamQuery {
	rank := func(k string) int {
		switch k {
		case "client_encoding":
			return 0
		case "session_authorization":
			return 2
		case "role":
			return 3
		}
		return 1
	}
	sort.Slice(reset, func(i, j int) bool {
		ri, rj := 3-rank(reset[i]), 3-rank(reset[j]) // role, session_authorization, then the rest
		if ri != rj {
			return ri < rj
		}
		return reset[i] < reset[j]
	})
	sort.Slice(set, func(i, j int) bool {
		ri, rj := rank(set[i]), rank(set[j])
		if ri != rj {
			return ri < rj
		}
		return set[i] < set[j]
	})
	var qs []pool.ParamQuery
	for _, k := range reset {
		qs = append(qs, pool.ParamQuery{SQL: "RESET " + quoteIdent(k)})
	}
	sel := -1 // the statement that sets the ordinary parameters
	for _, k := range set {
		if rank(k) == 1 && sel >= 0 {
			q := &qs[sel]
			n := len(q.Args)
			q.SQL += ", pg_catalog.set_config($" + strconv.Itoa(n+1) + ", $" + strconv.Itoa(n+2) + ", false)"
			q.Args = append(q.Args, k, want[k])
			continue
		}
		qs = append(qs, pool.ParamQuery{SQL: "SELECT pg_catalog.set_config($1, $2, false)", Args: []string{k, want[k]}})
		if rank(k) == 1 {
			sel = len(qs) - 1
		}
	}
	return qs
}

// canonicalParam maps lower-case names of the parameters PostgreSQL reports
// to the spelling it reports them with.
var canonicalParam = map[string]string{
	"datestyle": "DateStyle", "timezone": "TimeZone", "intervalstyle": "IntervalStyle",
}

// reportedParam looks up a server-reported parameter by lower-case name
// without allocating.
func reportedParam(params map[string]string, lower string) (string, bool) {
	name := lower
	if c, ok := canonicalParam[lower]; ok {
		name = c
	}
	if v, ok := params[name]; ok {
		return v, true
	}
	for k, v := range params {
		if strings.EqualFold(k, lower) {
			return v, true
		}
	}
	return "", false
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func randUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}
