package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pgtide/pgtide/proxy"
	"github.com/pgtide/pgtide/proxy/config"
)

// runConvert implements `pgtide convert-pgbouncer [-o OUT] [-auth-file FILE] [-allow-weaker] pgbouncer.ini`.
func runConvert(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pgtide convert-pgbouncer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	outPath := fs.String("o", "", "write the TOML here (mode 0600) instead of to stdout")
	authFile := fs.String("auth-file", "", "read passwords from this file instead of the ini's auth_file")
	allowWeaker := fs.Bool("allow-weaker", false, "convert even when a security setting (TLS, HBA, authentication) cannot be carried over")
	keepSocketDir := fs.Bool("keep-socket-dir", false, "keep the ini's unix_socket_dir instead of "+systemdSocketDir+" (the systemd unit's RuntimeDirectory)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pgtide convert-pgbouncer [-o OUT] [-auth-file FILE] [-allow-weaker] [-keep-socket-dir] pgbouncer.ini\n\nConverts a PgBouncer configuration to pgtide TOML. Settings that cannot be\nmapped are listed on stderr with the reason and as comments in the output.\nA security setting that cannot be carried over is an error unless -allow-weaker.")
		fs.PrintDefaults()
	}
	// Flags may come before or after the file name.
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(files) != 1 {
		fs.Usage()
		return 2
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		fmt.Fprintf(stderr, "pgtide convert-pgbouncer: %v\n", err)
		return 1
	}
	res, err := convertPgBouncerOpts(files[0], data, convertOptions{AuthFile: *authFile, KeepSocketDir: *keepSocketDir})
	if err != nil {
		fmt.Fprintf(stderr, "pgtide convert-pgbouncer: %v\n", err)
		return 1
	}
	for _, n := range res.Notes {
		fmt.Fprintf(stderr, "%s\n", n)
	}
	if len(res.Weaker) > 0 {
		if !*allowWeaker {
			fmt.Fprintf(stderr, "pgtide convert-pgbouncer: not converted: pgtide would be less secure than this PgBouncer configuration:\n")
			for _, w := range res.Weaker {
				fmt.Fprintf(stderr, "  %s\n", w)
			}
			fmt.Fprintf(stderr, "Change these settings, or give -allow-weaker to convert anyway.\n")
			return 1
		}
		fmt.Fprintf(stderr, "pgtide convert-pgbouncer: warning: -allow-weaker: %d security setting(s) were not carried over (see above)\n", len(res.Weaker))
	}
	code := 0
	if _, err := config.Parse(nameOr(*outPath, "converted configuration"), res.TOML); err != nil {
		fmt.Fprintf(stderr, "pgtide convert-pgbouncer: the converted configuration does not validate; fix these in the output:\n%v\n", err)
		code = 1
	}
	if *outPath != "" {
		if err := os.WriteFile(*outPath, res.TOML, 0o600); err != nil {
			fmt.Fprintf(stderr, "pgtide convert-pgbouncer: %v\n", err)
			return 1
		}
	} else if _, err := stdout.Write(res.TOML); err != nil {
		return 1
	}
	return code
}

func nameOr(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// systemdSocketDir is the RuntimeDirectory of systemd/pgtide.service: the
// only directory the sandboxed unit can create its socket in.
const systemdSocketDir = "/run/pgtide"

// convertOptions are the converter's flags.
type convertOptions struct {
	AuthFile      string // replaces the ini's auth_file when set
	KeepSocketDir bool   // keep unix_socket_dir instead of systemdSocketDir
}

// convertResult is a converted configuration and what could not be carried over.
type convertResult struct {
	TOML   []byte
	Notes  []string // "pgbouncer.ini:12: logfile: not converted: ..." (never a secret)
	Weaker []string // the notes about settings whose loss weakens security
}

// tomlKV is one line of output: a key and value, or (Key "") a comment.
type tomlKV struct {
	Key, Value string // Value is already TOML
	Comment    string
}

type converter struct {
	file     string
	notes    []string
	noteSeq  []int
	weaker   []string
	global   []tomlKV
	dbs      []namedSection
	users    map[string][]tomlKV
	authType string
	// server_tls_* are global in PgBouncer and per database in pgtide.
	serverTLS []tomlKV
}

type namedSection struct {
	Name string
	KVs  []tomlKV
}

// noSeq sorts a note after every note about a line.
const noSeq = math.MaxInt

func loc(e iniEntry) string {
	if e.Line > 0 {
		return e.File + ":" + strconv.Itoa(e.Line)
	}
	return e.File
}

// note records that key (of entry e) was not converted, and why.
func (c *converter) note(e iniEntry, key, format string, args ...any) {
	c.addNote(e.Seq, fmt.Sprintf("%s: %s: not converted: %s", loc(e), key, fmt.Sprintf(format, args...)))
}

func (c *converter) addNote(seq int, msg string) {
	c.notes = append(c.notes, msg)
	c.noteSeq = append(c.noteSeq, seq)
}

// dropped notes a setting that was left out and returns the comment that
// stands in its place in the output. Values of keys that may hold a secret
// are not repeated.
func (c *converter) dropped(e iniEntry, key, value, format string, args ...any) tomlKV {
	reason := fmt.Sprintf(format, args...)
	c.note(e, key, "%s", reason)
	if strings.Contains(key, "password") {
		value = "(not shown)"
	}
	return tomlKV{Comment: fmt.Sprintf("not converted: %s = %s (%s:%d): %s", key, value, filepath.Base(e.File), e.Line, reason)}
}

// dropGlobal leaves a [pgbouncer] setting out, with a comment in its place.
func (c *converter) dropGlobal(e iniEntry, key, format string, args ...any) {
	c.global = append(c.global, c.dropped(e, key, e.Value, format, args...))
}

// weaken is dropGlobal for a setting whose loss makes pgtide less secure
// than the PgBouncer it replaces: it is an error unless -allow-weaker.
func (c *converter) weaken(e iniEntry, key, format string, args ...any) {
	c.dropGlobal(e, key, format, args...)
	c.weaker = append(c.weaker, c.notes[len(c.notes)-1])
}

// sortedNotes orders the notes as the lines they are about (those without one last).
func (c *converter) sortedNotes() []string {
	idx := make([]int, len(c.notes))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return c.noteSeq[idx[a]] < c.noteSeq[idx[b]] })
	out := make([]string, len(idx))
	for i, j := range idx {
		out[i] = c.notes[j]
	}
	return out
}

func (c *converter) set(key, value, comment string) {
	for i := range c.global {
		if c.global[i].Key == key {
			c.global[i] = tomlKV{key, value, comment}
			return
		}
	}
	c.global = append(c.global, tomlKV{key, value, comment})
}

// Settings of [pgbouncer] that have no pgtide equivalent, with the reason.
var unmappedReasons = map[string]string{
	"logfile":                "pgtide logs to stderr (JSON under systemd, where the journal keeps it); redirect stderr to keep a file",
	"pidfile":                "pgtide writes no pid file; run it under systemd (Type=notify) or another supervisor",
	"auth_ident_file":        "pgtide has no ident maps (and no peer or ident authentication)",
	"user":                   "pgtide does not switch user; start it as the user it should run as (systemd User=)",
	"syslog":                 "pgtide logs to stderr; under systemd that reaches the journal (and syslog from there)",
	"syslog_ident":           "pgtide logs to stderr; under systemd that reaches the journal (and syslog from there)",
	"syslog_facility":        "pgtide logs to stderr; under systemd that reaches the journal (and syslog from there)",
	"unix_socket_group":      "pgtide does not change the socket's group",
	"server_round_robin":     "pgtide reuses the most recently returned server connection",
	"suspend_timeout":        "pgtide's SUSPEND drops no connection, so it needs no timeout (docs/admin-console.md)",
	"peer_id":                "pgtide has no peering (so_reuseport restarts need none: cancel keys are routed by the process that accepted the query's client)",
	"track_extra_parameters": "no pgtide setting needed: in transaction mode every parameter a client sets follows it to each server (README: what carries over)",
	"disable_pqexec":         "no pgtide equivalent",
	"pkt_buf":                "pgtide sizes its buffers itself",
	"sbuf_loopcnt":           "pgtide has no such loop",
	"client_tls_dheparams":   "pgtide (Go's TLS) uses ECDHE key exchange only",
	"client_tls_ecdhcurve":   "pgtide (Go's TLS) chooses the curves itself (X25519, P-256, P-384, P-521)",
	"server_tls_ciphers":     "pgtide uses Go's default cipher suites towards servers",
	"server_tls_protocols":   "pgtide accepts TLS 1.2 and 1.3 from servers",
	"stats_users_prefix":     "no pgtide equivalent",
}

// Durations: PgBouncer writes seconds as a number.
var durationKeys = map[string]bool{
	"server_connect_timeout": true, "server_idle_timeout": true, "server_lifetime": true,
	"query_timeout": true, "query_wait_timeout": true, "idle_transaction_timeout": true,
	"client_login_timeout": true, "server_check_delay": true, "stats_period": true, "autodb_idle_timeout": true,
	"client_idle_timeout": true, "tcp_keepidle": true, "tcp_keepintvl": true, "server_login_retry": true,
	"reserve_pool_timeout": true, "cancel_wait_timeout": true, "query_wait_notify": true,
	"transaction_timeout": true,
}

var intKeys = map[string]bool{
	"default_pool_size": true, "min_pool_size": true, "max_client_conn": true,
	"max_db_connections": true, "max_user_connections": true, "max_packet_size": true,
	"listen_backlog": true, "tcp_keepcnt": true, "reserve_pool_size": true,
	"max_db_client_connections": true, "max_user_client_connections": true,
}

var boolKeys = map[string]bool{
	"server_reset_query_always": true, "so_reuseport": true, "tcp_keepalive": true, "tcp_defer_accept": true,
	"log_connections": true, "log_disconnections": true, "log_pooler_errors": true,
	"application_name_add_host": true, "server_fast_close": true,
}

// Settings copied as strings.
var stringKeys = map[string]bool{
	"server_reset_query": true, "server_check_query": true,
	"auth_user": true, "auth_query": true, "auth_dbname": true,
	"client_tls_sslmode": true, "client_tls_cert_file": true, "client_tls_key_file": true, "client_tls_ca_file": true,
}

// pgbDefaultAuthQuery is PgBouncer 1.18's auth_query, used when the ini sets
// auth_user without one (pgtide's own default is different).
const pgbDefaultAuthQuery = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1"

// convertPgBouncerOpts converts the ini text (named file, with the files it
// %includes) to pgtide TOML.
func convertPgBouncerOpts(file string, data []byte, opts convertOptions) (*convertResult, error) {
	entries, err := loadINI(file, data)
	if err != nil {
		return nil, err
	}
	c := &converter{file: file, users: map[string][]tomlKV{}}
	pgb := map[string]iniEntry{}
	for _, e := range entries {
		if e.Section == "pgbouncer" {
			pgb[strings.ToLower(e.Key)] = e
		}
	}

	c.convertListen(pgb, opts)
	keys := make([]string, 0, len(pgb))
	for k := range pgb {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return pgb[keys[i]].Seq < pgb[keys[j]].Seq })
	if e, ok := pgb["auth_type"]; ok {
		c.authType = strings.ToLower(e.Value)
	}
	var authFile iniEntry
	for _, k := range keys {
		e := pgb[k]
		switch {
		case k == "listen_addr" || k == "listen_port" || k == "unix_socket_dir" || k == "unix_socket_mode":
			// done by convertListen
		case k == "auth_file":
			authFile = e
		case durationKeys[k]:
			d, err := pgbDuration(e.Value)
			if err != nil {
				c.dropGlobal(e, k, "%v", err)
				continue
			}
			c.set(k, tomlString(d), "")
		case intKeys[k]:
			n, err := strconv.Atoi(e.Value)
			if err != nil || n < 0 {
				c.dropGlobal(e, k, "%q is not a non-negative integer", e.Value)
				continue
			}
			if k == "max_packet_size" && n < config.MinMaxPacketSize {
				c.note(e, k, "%d is below pgtide's minimum; using %d", n, config.MinMaxPacketSize)
				n = config.MinMaxPacketSize
			}
			c.set(k, strconv.Itoa(n), "")
		case boolKeys[k]:
			b, ok := pgbBool(e.Value)
			if !ok {
				c.dropGlobal(e, k, "%q is not a boolean", e.Value)
				continue
			}
			c.set(k, strconv.FormatBool(b), "")
		case stringKeys[k]:
			v := e.Value
			if k == "client_tls_sslmode" {
				v = strings.ToLower(v)
			}
			c.set(k, tomlString(v), "")
		case k == "log_stats":
			if b, ok := pgbBool(e.Value); ok && !b {
				c.set("stats_period", tomlString("0"), "from log_stats = "+e.Value)
			}
		case k == "max_prepared_statements":
			n, err := strconv.Atoi(e.Value)
			switch {
			case err != nil || n < 0:
				c.dropGlobal(e, k, "%q is not a non-negative integer", e.Value)
			case n == 0:
				c.dropGlobal(e, k, "0 disables prepared-statement support in PgBouncer but means \"no limit\" in pgtide, which always supports them; keeping pgtide's default (200)")
			default:
				c.set(k, strconv.Itoa(n), "")
			}
		case k == "pool_mode":
			c.set(k, tomlString(strings.ToLower(e.Value)), "")
		case k == "auth_type":
			c.convertAuthType(e, pgb)
		case k == "auth_hba_file":
			if c.authType == "hba" {
				c.set(k, tomlString(e.Value), "")
			} else {
				c.dropGlobal(e, k, "used only with auth_type = hba")
			}
		case k == "admin_users" || k == "stats_users" || k == "ignore_startup_parameters":
			c.set(k, tomlList(splitList(e.Value)), "")
		case k == "verbose":
			if n, err := strconv.Atoi(e.Value); err == nil && n > 0 {
				c.set("log_level", tomlString("debug"), "from verbose = "+e.Value)
			}
		case k == "client_tls_protocols":
			c.convertTLSProtocols(e)
		case k == "client_tls_ciphers":
			c.convertTLSCiphers(e)
		case k == "server_tls_sslmode":
			c.serverTLS = append(c.serverTLS, tomlKV{Key: k, Value: tomlString(strings.ToLower(e.Value))})
		case k == "server_tls_ca_file" || k == "server_tls_cert_file" || k == "server_tls_key_file":
			c.serverTLS = append(c.serverTLS, tomlKV{Key: k, Value: tomlString(e.Value)})
		case k == "server_tls_protocols":
			if !strings.Contains(strings.ToLower(e.Value), "tlsv1.2") && pgbTLSProtocolsKeyword(e.Value) == "" {
				c.weaken(e, k, "pgtide accepts TLS 1.2 and 1.3 from servers; it cannot require TLS 1.3")
			} else {
				c.dropGlobal(e, k, "%s", unmappedReasons[k])
			}
		case k == "server_tls_ciphers":
			if isPgbCipherKeyword(e.Value) {
				c.dropGlobal(e, k, "%s", unmappedReasons[k])
			} else {
				c.weaken(e, k, "pgtide cannot restrict the cipher suites it accepts from servers; it uses Go's defaults (AEAD suites with forward secrecy first)")
			}
		case k == "tcp_user_timeout": // milliseconds in PgBouncer
			n, err := strconv.ParseUint(e.Value, 10, 31)
			if err != nil {
				c.dropGlobal(e, k, "%q is not a number of milliseconds", e.Value)
				continue
			}
			c.set(k, tomlString(durationString(time.Duration(n)*time.Millisecond)), "")
		case strings.HasPrefix(k, "tcp_"):
			c.dropGlobal(e, k, "no pgtide equivalent (pgtide has tcp_keepalive, tcp_keepidle, tcp_keepintvl, tcp_keepcnt, tcp_user_timeout and tcp_defer_accept)")
		case strings.HasPrefix(k, "dns_") || k == "resolv_conf":
			c.dropGlobal(e, k, "pgtide resolves server host names with the system resolver at dial time")
		case unmappedReasons[k] != "":
			c.dropGlobal(e, k, "%s", unmappedReasons[k])
		default:
			c.dropGlobal(e, k, "no pgtide equivalent")
		}
	}
	if e, ok := pgb["auth_user"]; ok && e.Value != "" {
		if _, ok := pgb["auth_query"]; !ok {
			c.set("auth_query", tomlString(pgbDefaultAuthQuery), "PgBouncer 1.18's default; pgtide's own differs")
		}
		if d, ok := pgb["auth_dbname"]; !ok || d.Value == "" {
			c.addNote(e.Seq, fmt.Sprintf("%s: auth_user: pgtide requires auth_dbname: PgBouncer runs auth_query in the database the client names, pgtide only in the one auth_dbname names (choose one only trusted roles own, e.g. postgres); the output does not validate until you set it", loc(e)))
		}
	}

	for _, e := range entries {
		switch e.Section {
		case "databases":
			c.convertDatabase(e)
		case "users":
			c.convertUser(e)
		case "pgbouncer":
		case "peers":
			c.global = append(c.global, c.dropped(e, "peers."+e.Key, e.Value, "pgtide has no peering"))
		default:
			c.global = append(c.global, c.dropped(e, e.Section+"."+e.Key, e.Value, "unknown section [%s]", e.Section))
		}
	}
	c.applyServerTLS()

	path := opts.AuthFile
	authLine := iniEntry{File: file}
	if path == "" && authFile.Key != "" {
		path, authLine = authFile.Value, authFile
		if path != "" && !filepath.IsAbs(path) {
			// PgBouncer resolves it from its working directory; the ini's
			// directory is the usual place.
			if alt := filepath.Join(filepath.Dir(authFile.File), path); fileExists(alt) || !fileExists(path) {
				path = alt
			}
		}
	}
	if path != "" {
		if err := c.readAuthFile(path, authLine); err != nil {
			return nil, err
		}
	}
	for _, name := range sortedKeys(c.users) {
		if !hasKey(c.users[name], "password") {
			c.addNote(noSeq, fmt.Sprintf("%s: users.%s: has no password (not in auth_file); clients cannot log in as this user until you add one", c.file, name))
		}
	}
	c.checkConsoleUsers(pgb)
	return &convertResult{TOML: c.render(), Notes: c.sortedNotes(), Weaker: c.weaker}, nil
}

// checkConsoleUsers warns about admin_users and stats_users that nothing
// gives a password: they cannot open the console.
func (c *converter) checkConsoleUsers(pgb map[string]iniEntry) {
	if c.authType == "trust" || c.authType == "any" {
		return
	}
	lookup := pgb["auth_user"].Value != "" && pgb["auth_dbname"].Value != ""
	seen := map[string]bool{}
	for _, k := range []string{"admin_users", "stats_users"} {
		e, ok := pgb[k]
		if !ok {
			continue
		}
		for _, u := range splitList(e.Value) {
			if seen[u] || hasKey(c.users[u], "password") || lookup {
				continue
			}
			seen[u] = true
			c.addNote(e.Seq, fmt.Sprintf("%s: %s: warning: %q has no password source (not in auth_file, and auth_query needs auth_dbname to serve the console): it cannot open the admin console until you add a [users.%s] password",
				loc(e), k, u, tomlKey(u)))
		}
	}
}

// applyServerTLS copies PgBouncer's global server_tls_* into every
// [databases] section, where pgtide keeps them.
func (c *converter) applyServerTLS() {
	if len(c.serverTLS) == 0 {
		return
	}
	if len(c.dbs) == 0 {
		c.global = append(c.global, tomlKV{Comment: "server_tls_* are per database in pgtide: add them to each [databases.NAME] you add"})
		c.addNote(noSeq, fmt.Sprintf("%s: server_tls_*: no [databases] to apply them to; add them to each [databases.NAME] you add", c.file))
		return
	}
	for i := range c.dbs {
		c.dbs[i].KVs = append(c.dbs[i].KVs, c.serverTLS...)
	}
}

func hasKey(kvs []tomlKV, key string) bool {
	for _, kv := range kvs {
		if kv.Key == key {
			return true
		}
	}
	return false
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// convertListen maps listen_addr, listen_port, unix_socket_dir and unix_socket_mode.
func (c *converter) convertListen(pgb map[string]iniEntry, opts convertOptions) {
	port := strconv.Itoa(config.DefaultPort)
	if e, ok := pgb["listen_port"]; ok {
		if n, err := strconv.Atoi(e.Value); err == nil && n > 0 && n < 65536 {
			port = e.Value
		} else {
			c.note(e, "listen_port", "%q is not a port number; using %s", e.Value, port)
		}
	}
	if e, ok := pgb["listen_addr"]; ok {
		var addrs []string
		for _, a := range splitList(e.Value) {
			if a == "*" {
				addrs = append(addrs, ":"+port)
			} else {
				addrs = append(addrs, net.JoinHostPort(a, port))
			}
		}
		c.set("listen", tomlList(addrs), "")
	} else {
		c.set("listen", "[]", "PgBouncer without listen_addr accepts no TCP connections")
		if e, ok := pgb["listen_port"]; ok && port != strconv.Itoa(config.DefaultPort) {
			c.addNote(e.Seq, fmt.Sprintf("%s: listen_port: not converted: without a listen address pgtide names its unix socket .s.PGSQL.%d, not .s.PGSQL.%s; add a listen entry with port %s to keep the name",
				loc(e), config.DefaultPort, port, port))
		}
	}
	// Under systemd/pgtide.service (ProtectSystem=strict, PrivateTmp) the
	// only place pgtide can create its socket is its RuntimeDirectory.
	e, ok := pgb["unix_socket_dir"]
	switch {
	case ok && e.Value == "":
		c.set("unix_socket_dir", `""`, "PgBouncer's unix_socket_dir is empty: no unix socket")
	case opts.KeepSocketDir && ok:
		c.set("unix_socket_dir", tomlString(e.Value), "")
	case opts.KeepSocketDir:
		c.set("unix_socket_dir", tomlString("/tmp"), "PgBouncer's default")
	case ok && e.Value == systemdSocketDir:
		c.set("unix_socket_dir", tomlString(e.Value), "")
	default:
		was := "/tmp"
		if ok {
			was = e.Value
		}
		c.set("unix_socket_dir", tomlString(systemdSocketDir), fmt.Sprintf("was %s: the systemd unit's RuntimeDirectory (-keep-socket-dir keeps the old one)", was))
		seq := noSeq
		if ok {
			seq = e.Seq
		}
		c.addNote(seq, fmt.Sprintf("%s: unix_socket_dir: the socket moves from %s to %s, the only directory pgtide's sandboxed systemd unit can write; point unix-socket clients there (host=%s), or give -keep-socket-dir and allow the old directory in the unit (ReadWritePaths=)",
			c.file, was, systemdSocketDir, systemdSocketDir))
	}
	if e, ok := pgb["unix_socket_mode"]; ok {
		n, err := strconv.ParseUint(e.Value, 8, 32)
		switch {
		case err != nil || n > 0o777:
			c.weaken(e, "unix_socket_mode", "%q is not an octal file mode", e.Value)
		default:
			c.set("unix_socket_mode", tomlString(fmt.Sprintf("%04o", n)), "")
		}
	}
}

func (c *converter) convertAuthType(e iniEntry, pgb map[string]iniEntry) {
	v := strings.ToLower(e.Value)
	switch v {
	case "scram-sha-256", "md5", "trust":
		c.set("auth_type", tomlString(v), "")
	case "plain":
		c.set("auth_type", tomlString("password"), "PgBouncer's plain")
	case "hba":
		c.set("auth_type", tomlString("hba"), "")
		h, ok := pgb["auth_hba_file"]
		if !ok || h.Value == "" {
			c.note(e, "auth_type", "\"hba\" without auth_hba_file: pgtide will refuse to start until you set auth_hba_file")
			return
		}
		path := h.Value
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(h.File), path)
		}
		if err := proxy.CheckHBAFile(path); err != nil {
			// pgtide refuses to start on a file it cannot parse: that fails
			// closed, so it is a note, not a weakening.
			c.addNote(h.Seq, fmt.Sprintf("%s: auth_hba_file: pgtide cannot use this file as it is (it will refuse to start until it is fixed): %v", loc(h), err))
		}
	case "cert":
		c.weaken(e, "auth_type", "pgtide has client certificate authentication only as an HBA rule: set auth_type = \"hba\" with a `hostssl all all 0.0.0.0/0 cert` rule (and client_tls_ca_file); keeping pgtide's default scram-sha-256")
	case "pam":
		c.weaken(e, "auth_type", "PAM is not supported; keeping pgtide's default scram-sha-256")
	case "any":
		c.dropGlobal(e, "auth_type", "\"any\" (no authentication, user name ignored) has no pgtide equivalent; \"trust\" is the closest, set it by hand if you want it; keeping scram-sha-256")
	default:
		c.weaken(e, "auth_type", "unknown value %q; keeping pgtide's default scram-sha-256", e.Value)
	}
}

// pgbTLSProtocolsKeyword returns the lowest version PgBouncer's keyword
// (client_tls_protocols) allows, "" if v is not a keyword.
func pgbTLSProtocolsKeyword(v string) string {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "secure", "default":
		return "tlsv1.2"
	case "all", "legacy", "normal":
		return "tlsv1.0"
	}
	return ""
}

// convertTLSProtocols maps client_tls_protocols to client_tls_min_version.
// pgtide never accepts less than TLS 1.2, so only a list without it is kept
// as a minimum of TLS 1.3.
func (c *converter) convertTLSProtocols(e iniEntry) {
	v := strings.ToLower(e.Value)
	low := pgbTLSProtocolsKeyword(v)
	if low == "" {
		for _, p := range splitList(v) {
			switch p {
			case "tlsv1.0", "tlsv1.1", "tlsv1.2":
				if low == "" || p < low {
					low = p
				}
			case "tlsv1.3":
				if low == "" {
					low = p
				}
			default:
				c.weaken(e, "client_tls_protocols", "unknown protocol %q", p)
				return
			}
		}
	}
	switch low {
	case "tlsv1.3":
		c.set("client_tls_min_version", tomlString("TLSv1.3"), "")
	case "tlsv1.2":
		c.set("client_tls_min_version", tomlString("TLSv1.2"), "")
	default:
		c.set("client_tls_min_version", tomlString("TLSv1.2"), "from client_tls_protocols = "+e.Value+": pgtide never accepts TLS 1.0 or 1.1")
		c.note(e, "client_tls_protocols", "pgtide does not accept TLS 1.0 or 1.1; clients that need them cannot connect with TLS")
	}
}

// PgBouncer's cipher keywords; each allows at least Go's default suites.
func isPgbCipherKeyword(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "default", "secure", "fast", "normal", "compat", "legacy", "all", "high", "high:medium:+3des:!anull":
		return true
	}
	return false
}

// OpenSSL names of the TLS 1.2 suites Go supports, to Go's (IANA) names.
var opensslCiphers = map[string]string{
	"ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256":   "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-AES256-GCM-SHA384":   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-RSA-CHACHA20-POLY1305":   "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-ECDSA-AES128-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
	"ECDHE-RSA-AES128-SHA":          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
	"ECDHE-ECDSA-AES256-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
	"ECDHE-RSA-AES256-SHA":          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
}

// convertTLSCiphers maps client_tls_ciphers. A keyword gives Go's defaults;
// an explicit list keeps the suites Go has. Using fewer suites than listed is
// never weaker; using Go's defaults instead of a list would be.
func (c *converter) convertTLSCiphers(e iniEntry) {
	if isPgbCipherKeyword(e.Value) {
		c.global = append(c.global, c.dropped(e, "client_tls_ciphers", e.Value, "a PgBouncer keyword; pgtide uses Go's default suites, which it allows"))
		return
	}
	var names, unknown []string
	for _, n := range strings.FieldsFunc(e.Value, func(r rune) bool { return r == ':' || r == ',' || r == ' ' }) {
		if strings.HasPrefix(n, "!") || strings.HasPrefix(n, "-") || strings.HasPrefix(n, "+") {
			continue // exclusions: the explicit list is already exclusive
		}
		if g, ok := opensslCiphers[strings.ToUpper(n)]; ok {
			names = append(names, g)
		} else {
			unknown = append(unknown, n)
		}
	}
	if len(names) == 0 {
		c.weaken(e, "client_tls_ciphers", "none of these OpenSSL cipher names is a TLS 1.2 suite pgtide has; pgtide would use Go's defaults")
		return
	}
	c.set("client_tls_ciphers", tomlList(names), "from client_tls_ciphers")
	if len(unknown) > 0 {
		c.note(e, "client_tls_ciphers", "left out %s (not TLS 1.2 suites pgtide has; TLS 1.3 suites are always on)", strings.Join(unknown, ", "))
	}
}

// Per-database keys that carry over unchanged (value kind).
var dbKeys = map[string]string{
	"host": "string", "port": "int", "dbname": "string", "user": "string", "password": "string",
	"pool_size": "int", "min_pool_size": "int", "pool_mode": "mode", "max_db_connections": "int",
	"max_db_client_connections": "int", "connect_query": "string",
	"client_encoding": "string", "datestyle": "string", "timezone": "string",
	"reserve_pool_size": "int", "reserve_pool": "int", "load_balance_hosts": "string",
	"server_lifetime": "duration",
}

func (c *converter) convertDatabase(e iniEntry) {
	params, err := parseConnString(e.Value)
	where := "databases." + e.Key
	if err != nil {
		c.global = append(c.global, c.dropped(e, where, "(not shown)", "cannot parse the connection string: %v", err))
		return
	}
	var kvs []tomlKV
	hasHost := false
	hosts, portList := 1, 0 // the host list's length; the port list's (0: one port)
	for _, p := range params {
		kind, ok := dbKeys[p.Key]
		if !ok {
			reason := "no per-database pgtide equivalent"
			switch p.Key {
			case "application_name":
				reason = "pgtide does not force application_name; set it in the client (or with ALTER DATABASE ... SET)"
			case "auth_user", "auth_query", "auth_dbname":
				reason = "pgtide has auth_user, auth_query and auth_dbname only globally: users of this database who are not in [users] are looked up with the global ones, or cannot log in"
			}
			kvs = append(kvs, c.dropped(e, where+"."+p.Key, p.Value, "%s", reason))
			continue
		}
		val := p.Value
		if p.Key == "host" {
			hasHost = true
			hosts = len(config.SplitHosts(val))
		}
		if p.Key == "port" && strings.Contains(val, ",") {
			// A port per host: an array in pgtide (checked against the host
			// count below, once both are known).
			ports := config.SplitHosts(val)
			bad := false
			for _, s := range ports {
				if _, err := strconv.Atoi(s); err != nil {
					bad = true
				}
			}
			if bad {
				kvs = append(kvs, c.dropped(e, where+".port", val, "%q is not a list of port numbers", val))
				continue
			}
			portList = len(ports)
			kvs = append(kvs, tomlKV{Key: "port", Value: "[" + strings.Join(ports, ", ") + "]"})
			continue
		}
		if p.Key == "load_balance_hosts" {
			v := strings.ToLower(strings.TrimSpace(val))
			if v != config.LoadBalanceRoundRobin && v != config.LoadBalanceDisable {
				kvs = append(kvs, c.dropped(e, where+".load_balance_hosts", val, "%q is neither round-robin nor disable", val))
				continue
			}
			kvs = append(kvs, tomlKV{Key: p.Key, Value: tomlString(v)})
			continue
		}
		switch kind {
		case "int":
			n, err := strconv.Atoi(val)
			if err != nil {
				kvs = append(kvs, c.dropped(e, where+"."+p.Key, val, "%q is not an integer", val))
				continue
			}
			key := p.Key
			if key == "reserve_pool" { // PgBouncer's old name
				key = "reserve_pool_size"
			}
			kvs = append(kvs, tomlKV{Key: key, Value: strconv.Itoa(n)})
		case "mode":
			kvs = append(kvs, tomlKV{Key: p.Key, Value: tomlString(strings.ToLower(val))})
		case "duration":
			d, err := pgbDuration(val)
			if err != nil {
				kvs = append(kvs, c.dropped(e, where+"."+p.Key, val, "%v", err))
				continue
			}
			if d == "0" {
				// PgBouncer's per-database 0 is "the global one", which
				// leaving the key out says in pgtide too.
				continue
			}
			kvs = append(kvs, tomlKV{Key: p.Key, Value: tomlString(d)})
		default:
			kvs = append(kvs, tomlKV{Key: p.Key, Value: tomlString(val)})
		}
	}
	if portList > 0 && portList != hosts {
		// pgtide would not load it (databases.NAME.port names the mismatch).
		for i := range kvs {
			if kvs[i].Key == "port" {
				kvs[i] = c.dropped(e, where+".port", strings.Trim(kvs[i].Value, "[]"), "%d ports for %d hosts: give one port, or one per host; using pgtide's default port %d", portList, hosts, config.DefaultServerPort)
			}
		}
	}
	if !hasHost {
		c.addNote(e.Seq, fmt.Sprintf("%s: %s: no host: PgBouncer then uses the server's unix socket, pgtide uses %s; add host = \"/var/run/postgresql\" (the socket directory) if that is what you want",
			loc(e), where, config.DefaultServerHost))
	}
	for i := range c.dbs {
		if c.dbs[i].Name == e.Key {
			c.note(e, where, "defined twice; the later line wins")
			c.dbs[i].KVs = kvs
			return
		}
	}
	c.dbs = append(c.dbs, namedSection{Name: e.Key, KVs: kvs})
}

func (c *converter) convertUser(e iniEntry) {
	params, err := parseConnString(e.Value)
	where := "users." + e.Key
	kvs := c.users[e.Key]
	if err != nil {
		c.users[e.Key] = append(kvs, c.dropped(e, where, "(not shown)", "cannot parse: %v", err))
		return
	}
	for _, p := range params {
		switch p.Key {
		case "pool_mode":
			kvs = append(kvs, tomlKV{Key: "pool_mode", Value: tomlString(strings.ToLower(p.Value))})
		case "query_timeout", "query_wait_timeout", "idle_transaction_timeout", "client_idle_timeout", "transaction_timeout":
			if strings.TrimSpace(p.Value) == "-1" {
				continue // PgBouncer's "not set": the global one applies
			}
			d, err := pgbDuration(p.Value)
			if err != nil {
				kvs = append(kvs, c.dropped(e, where+"."+p.Key, p.Value, "%v", err))
				continue
			}
			kvs = append(kvs, tomlKV{Key: p.Key, Value: tomlString(d)})
		case "pool_size", "max_user_connections", "max_user_client_connections", "reserve_pool_size":
			n, err := strconv.Atoi(p.Value)
			if err != nil {
				kvs = append(kvs, c.dropped(e, where+"."+p.Key, p.Value, "%q is not an integer", p.Value))
				continue
			}
			kvs = append(kvs, tomlKV{Key: p.Key, Value: strconv.Itoa(n)})
		default:
			kvs = append(kvs, c.dropped(e, where+"."+p.Key, p.Value, "no per-user pgtide equivalent"))
		}
	}
	c.users[e.Key] = kvs
}

func (c *converter) readAuthFile(path string, e iniEntry) error {
	data, err := os.ReadFile(path)
	if err != nil {
		if e.Line > 0 {
			return fmt.Errorf("%s: auth_file: %v (use -auth-file FILE to read it from elsewhere)", loc(e), err)
		}
		return fmt.Errorf("auth file: %v", err)
	}
	list, err := parseAuthFile(data)
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	scram := 0
	for _, a := range list {
		kvs := c.users[a.User]
		if hasKey(kvs, "password") {
			continue
		}
		c.users[a.User] = append([]tomlKV{{Key: "password", Value: tomlString(a.Secret)}}, kvs...)
		if strings.HasPrefix(a.Secret, "SCRAM-SHA-256$") {
			scram++
		}
	}
	if scram > 0 && c.authType == "md5" {
		c.addNote(noSeq, fmt.Sprintf("%s: auth_type: %d user(s) have SCRAM-SHA-256 secrets; PgBouncer then uses SCRAM for them, pgtide uses the one auth_type you set (\"md5\"): consider auth_type = \"scram-sha-256\"", c.file, scram))
	}
	return nil
}

// pgbDuration converts a PgBouncer time value (seconds, possibly
// fractional, or a value with a unit) to a pgtide duration string.
func pgbDuration(v string) (string, error) {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return "", fmt.Errorf("%q is not a non-negative number of seconds", v)
		}
		if f == 0 {
			return "0", nil
		}
		if f == math.Trunc(f) {
			return strconv.FormatFloat(f, 'f', -1, 64) + "s", nil
		}
		return time.Duration(f * float64(time.Second)).String(), nil
	}
	// Newer PgBouncers accept units (e.g. "30s", "5min").
	u := strings.Replace(strings.ToLower(v), "min", "m", 1)
	if d, err := time.ParseDuration(strings.ReplaceAll(u, " ", "")); err == nil && d >= 0 {
		if d == 0 {
			return "0", nil
		}
		return d.String(), nil
	}
	return "", fmt.Errorf("%q is not a number of seconds", v)
}

// durationString writes d as pgtide reads it ("0" for zero).
func durationString(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return d.String()
}

func pgbBool(v string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true, true
	case "0", "false", "no", "off":
		return false, true
	}
	return false, false
}

// splitList splits a PgBouncer list ("a, b c").
func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

func tomlList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = tomlString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func (c *converter) render() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Converted from %s by `pgtide convert-pgbouncer`.\n", c.file)
	b.WriteString("# Keys not listed here have pgtide's defaults; see docs/configuration.md.\n\n")
	for _, kv := range c.global {
		writeKV(&b, kv)
	}
	for _, db := range c.dbs {
		fmt.Fprintf(&b, "\n[databases.%s]\n", tomlKey(db.Name))
		for _, kv := range db.KVs {
			writeKV(&b, kv)
		}
	}
	for _, name := range sortedKeys(c.users) {
		fmt.Fprintf(&b, "\n[users.%s]\n", tomlKey(name))
		for _, kv := range c.users[name] {
			writeKV(&b, kv)
		}
	}
	return b.Bytes()
}

func writeKV(b *bytes.Buffer, kv tomlKV) {
	if kv.Key == "" {
		fmt.Fprintf(b, "# %s\n", kv.Comment)
		return
	}
	if kv.Comment != "" {
		fmt.Fprintf(b, "%s = %s  # %s\n", kv.Key, kv.Value, kv.Comment)
		return
	}
	fmt.Fprintf(b, "%s = %s\n", kv.Key, kv.Value)
}
