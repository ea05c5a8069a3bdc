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

	"github.com/pgtide/pgtide/proxy/config"
)

// runConvert implements `pgtide convert-pgbouncer [-o OUT] [-auth-file FILE] pgbouncer.ini`.
func runConvert(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pgtide convert-pgbouncer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	outPath := fs.String("o", "", "write the TOML here (mode 0600) instead of to stdout")
	authFile := fs.String("auth-file", "", "read passwords from this file instead of the ini's auth_file")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pgtide convert-pgbouncer [-o OUT] [-auth-file FILE] pgbouncer.ini\n\nConverts a PgBouncer configuration to pgtide TOML. Settings that cannot be\nmapped are listed on stderr with the reason.")
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
	res, err := convertPgBouncer(files[0], data, *authFile)
	if err != nil {
		fmt.Fprintf(stderr, "pgtide convert-pgbouncer: %v\n", err)
		return 1
	}
	for _, n := range res.Notes {
		fmt.Fprintf(stderr, "%s\n", n)
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

// convertResult is a converted configuration and what could not be carried over.
type convertResult struct {
	TOML  []byte
	Notes []string // "pgbouncer.ini:12: logfile: not converted: ..." (never a secret)
}

type tomlKV struct {
	Key, Value string // Value is already TOML
	Comment    string
}

type converter struct {
	file     string
	notes    []string
	noteLine []int
	global   []tomlKV
	dbs      []namedSection
	users    map[string][]tomlKV
	authType string
}

type namedSection struct {
	Name string
	KVs  []tomlKV
}

func (c *converter) note(line int, key, format string, args ...any) {
	loc := c.file
	if line > 0 {
		loc += ":" + strconv.Itoa(line)
	}
	c.addNote(line, fmt.Sprintf("%s: %s: not converted: %s", loc, key, fmt.Sprintf(format, args...)))
}

func (c *converter) addNote(line int, msg string) {
	c.notes = append(c.notes, msg)
	c.noteLine = append(c.noteLine, line)
}

// sortedNotes orders the notes by line (those without one last).
func (c *converter) sortedNotes() []string {
	idx := make([]int, len(c.notes))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		la, lb := c.noteLine[idx[a]], c.noteLine[idx[b]]
		if la == 0 || lb == 0 {
			return la != 0 && lb == 0
		}
		return la < lb
	})
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
	"logfile":                     "pgtide logs to stderr (JSON under systemd, where the journal keeps it); redirect stderr to keep a file",
	"pidfile":                     "pgtide writes no pid file; run it under systemd (Type=notify) or another supervisor",
	"auth_hba_file":               "pgtide has no HBA file; auth_type applies to every client",
	"auth_ident_file":             "pgtide has no HBA/ident file",
	"auth_query":                  authQueryHint,
	"auth_user":                   authQueryHint,
	"auth_dbname":                 authQueryHint,
	"user":                        "pgtide does not switch user; start it as the user it should run as (systemd User=)",
	"syslog":                      "pgtide logs to stderr; under systemd that reaches the journal (and syslog from there)",
	"syslog_ident":                "pgtide logs to stderr; under systemd that reaches the journal (and syslog from there)",
	"syslog_facility":             "pgtide logs to stderr; under systemd that reaches the journal (and syslog from there)",
	"log_connections":             "pgtide always logs connects at log_level info",
	"log_disconnections":          "pgtide always logs disconnects at log_level info",
	"log_pooler_errors":           "pgtide always sends pooler errors to the client and logs them",
	"log_stats":                   "pgtide has no periodic stats log line",
	"stats_period":                "pgtide has no periodic stats log line",
	"reserve_pool_size":           "pgtide has no reserve pool; raise default_pool_size instead",
	"reserve_pool_timeout":        "pgtide has no reserve pool",
	"unix_socket_mode":            "pgtide creates the socket with mode 0777",
	"unix_socket_group":           "pgtide does not change the socket's group",
	"listen_backlog":              "pgtide uses the kernel's default backlog",
	"server_check_query":          "pgtide checks idle servers without a query (a non-blocking read that sees a closed socket or a pending FATAL)",
	"server_round_robin":          "pgtide reuses the most recently returned server connection",
	"client_idle_timeout":         "no pgtide equivalent",
	"suspend_timeout":             "pgtide has no SUSPEND/online restart",
	"so_reuseport":                "pgtide has no peering/online restart across processes",
	"peer_id":                     "pgtide has no peering",
	"application_name_add_host":   "no pgtide equivalent",
	"ignore_startup_parameters":   "not needed: pgtide accepts every startup parameter and sets it on whichever server the client gets",
	"track_extra_parameters":      "no pgtide setting; pgtide tracks the session parameters it needs",
	"server_login_retry":          "no pgtide equivalent",
	"server_fast_close":           "no pgtide equivalent",
	"disable_pqexec":              "no pgtide equivalent",
	"pkt_buf":                     "pgtide sizes its buffers itself",
	"sbuf_loopcnt":                "pgtide has no such loop",
	"max_db_client_connections":   "pgtide limits clients only globally (max_client_conn)",
	"max_user_client_connections": "pgtide limits clients only globally (max_client_conn)",
	"cancel_wait_timeout":         "no pgtide equivalent",
	"client_tls_sslmode":          "TLS is not configured in pgtide's configuration file",
	"server_tls_sslmode":          "TLS to servers is not configured in pgtide's configuration file",
}

// authQueryHint: pgtide has auth_user, auth_query and auth_dbname, but not
// in the shape a converter could fill in safely (the query reads a function
// the README shows; auth_dbname is required, since the lookup never runs in
// the client's database).
const authQueryHint = "set auth_user, auth_query and auth_dbname by hand: pgtide requires auth_dbname (the lookup never runs in the database the client names), auth_user's plaintext password in a [users] table, and the lookup function of the README's auth_query section"

// Durations: PgBouncer writes seconds as a number.
var durationKeys = map[string]bool{
	"server_connect_timeout": true, "server_idle_timeout": true, "server_lifetime": true,
	"query_timeout": true, "query_wait_timeout": true, "idle_transaction_timeout": true,
	"client_login_timeout": true, "server_check_delay": true, "autodb_idle_timeout": true,
}

var intKeys = map[string]bool{
	"default_pool_size": true, "min_pool_size": true, "max_client_conn": true,
	"max_db_connections": true, "max_user_connections": true, "max_packet_size": true,
}

// convertPgBouncer converts the ini text (named file) to pgtide TOML.
// authFileOverride, when set, replaces the ini's auth_file.
func convertPgBouncer(file string, data []byte, authFileOverride string) (*convertResult, error) {
	entries, err := parseINI(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	c := &converter{file: file, users: map[string][]tomlKV{}}
	pgb := map[string]iniEntry{}
	for _, e := range entries {
		if e.Key == "%include" {
			c.note(e.Line, "%include", "includes are not followed; convert %s separately and merge it", e.Value)
			continue
		}
		if e.Section == "pgbouncer" {
			pgb[strings.ToLower(e.Key)] = e
		}
	}

	c.convertListen(pgb)
	keys := make([]string, 0, len(pgb))
	for k := range pgb {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return pgb[keys[i]].Line < pgb[keys[j]].Line })
	var authFile iniEntry
	for _, k := range keys {
		e := pgb[k]
		switch {
		case k == "listen_addr" || k == "listen_port" || k == "unix_socket_dir":
			// done by convertListen
		case k == "auth_file":
			authFile = e
		case durationKeys[k]:
			d, err := pgbDuration(e.Value)
			if err != nil {
				c.note(e.Line, k, "%v", err)
				continue
			}
			c.set(k, tomlString(d), "")
		case intKeys[k]:
			n, err := strconv.Atoi(e.Value)
			if err != nil || n < 0 {
				c.note(e.Line, k, "%q is not a non-negative integer", e.Value)
				continue
			}
			if k == "max_packet_size" && n < config.MinMaxPacketSize {
				c.note(e.Line, k, "%d is below pgtide's minimum; using %d", n, config.MinMaxPacketSize)
				n = config.MinMaxPacketSize
			}
			c.set(k, strconv.Itoa(n), "")
		case k == "max_prepared_statements":
			n, err := strconv.Atoi(e.Value)
			switch {
			case err != nil || n < 0:
				c.note(e.Line, k, "%q is not a non-negative integer", e.Value)
			case n == 0:
				c.note(e.Line, k, "0 disables prepared-statement support in PgBouncer but means \"no limit\" in pgtide, which always supports them; keeping pgtide's default (200)")
			default:
				c.set(k, strconv.Itoa(n), "")
			}
		case k == "pool_mode":
			c.set(k, tomlString(strings.ToLower(e.Value)), "")
		case k == "auth_type":
			c.convertAuthType(e)
		case k == "server_reset_query":
			c.set(k, tomlString(e.Value), "")
		case k == "server_reset_query_always":
			b, ok := pgbBool(e.Value)
			if !ok {
				c.note(e.Line, k, "%q is not a boolean", e.Value)
				continue
			}
			c.set(k, strconv.FormatBool(b), "")
		case k == "admin_users" || k == "stats_users":
			c.set(k, tomlList(splitList(e.Value)), "")
		case k == "verbose":
			if n, err := strconv.Atoi(e.Value); err == nil && n > 0 {
				c.set("log_level", tomlString("debug"), "from verbose = "+e.Value)
			}
		case strings.HasPrefix(k, "client_tls_") || strings.HasPrefix(k, "server_tls_"):
			c.note(e.Line, k, "TLS is not configured in pgtide's configuration file")
		case strings.HasPrefix(k, "tcp_"):
			c.note(e.Line, k, "pgtide uses Go's TCP defaults (keepalive on)")
		case strings.HasPrefix(k, "dns_") || k == "resolv_conf":
			c.note(e.Line, k, "pgtide resolves server host names with the system resolver at dial time")
		case unmappedReasons[k] != "":
			c.note(e.Line, k, "%s", unmappedReasons[k])
		default:
			c.note(e.Line, k, "no pgtide equivalent")
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
			c.note(e.Line, "peers."+e.Key, "pgtide has no peering")
		default:
			c.note(e.Line, e.Section+"."+e.Key, "unknown section [%s]", e.Section)
		}
	}

	path := authFileOverride
	line := 0
	if path == "" && authFile.Key != "" {
		path, line = authFile.Value, authFile.Line
		if path != "" && !filepath.IsAbs(path) {
			// PgBouncer resolves it from its working directory; the ini's
			// directory is the usual place.
			if alt := filepath.Join(filepath.Dir(file), path); fileExists(alt) || !fileExists(path) {
				path = alt
			}
		}
	}
	if path != "" {
		if err := c.readAuthFile(path, line); err != nil {
			return nil, err
		}
	}
	for name := range c.users {
		if !hasKey(c.users[name], "password") {
			c.addNote(0, fmt.Sprintf("%s: users.%s: has no password (not in auth_file); clients cannot log in as this user until you add one", c.file, name))
		}
	}
	return &convertResult{TOML: c.render(), Notes: c.sortedNotes()}, nil
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

// convertListen maps listen_addr, listen_port and unix_socket_dir.
func (c *converter) convertListen(pgb map[string]iniEntry) {
	port := strconv.Itoa(config.DefaultPort)
	if e, ok := pgb["listen_port"]; ok {
		if n, err := strconv.Atoi(e.Value); err == nil && n > 0 && n < 65536 {
			port = e.Value
		} else {
			c.note(e.Line, "listen_port", "%q is not a port number; using %s", e.Value, port)
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
			c.addNote(e.Line, fmt.Sprintf("%s:%d: listen_port: not converted: without a listen address pgtide names its unix socket .s.PGSQL.%d, not .s.PGSQL.%s; add a listen entry with port %s to keep the name",
				c.file, e.Line, config.DefaultPort, port, port))
		}
	}
	if e, ok := pgb["unix_socket_dir"]; ok {
		c.set("unix_socket_dir", tomlString(e.Value), "")
	} else {
		c.set("unix_socket_dir", tomlString("/tmp"), "PgBouncer's default")
	}
}

func (c *converter) convertAuthType(e iniEntry) {
	v := strings.ToLower(e.Value)
	c.authType = v
	switch v {
	case "scram-sha-256", "md5", "trust":
		c.set("auth_type", tomlString(v), "")
	case "plain":
		c.set("auth_type", tomlString("password"), "PgBouncer's plain")
	case "hba":
		c.note(e.Line, "auth_type", "\"hba\" needs auth_hba_file, which pgtide does not have; keeping pgtide's default scram-sha-256")
	case "cert":
		c.note(e.Line, "auth_type", "client certificate authentication is not supported; keeping pgtide's default scram-sha-256")
	case "pam":
		c.note(e.Line, "auth_type", "PAM is not supported; keeping pgtide's default scram-sha-256")
	case "any":
		c.note(e.Line, "auth_type", "\"any\" (no authentication, user name ignored) has no pgtide equivalent; \"trust\" is the closest, set it by hand if you want it")
	default:
		c.note(e.Line, "auth_type", "unknown value %q; keeping pgtide's default scram-sha-256", e.Value)
	}
}

// Per-database keys that carry over unchanged (value kind).
var dbKeys = map[string]string{
	"host": "string", "port": "int", "dbname": "string", "user": "string", "password": "string",
	"pool_size": "int", "min_pool_size": "int", "pool_mode": "mode", "max_db_connections": "int",
}

func (c *converter) convertDatabase(e iniEntry) {
	params, err := parseConnString(e.Value)
	where := "databases." + e.Key
	if err != nil {
		c.note(e.Line, where, "cannot parse the connection string: %v", err)
		return
	}
	var kvs []tomlKV
	hasHost := false
	for _, p := range params {
		kind, ok := dbKeys[p.Key]
		if !ok {
			reason := "no per-database pgtide equivalent"
			switch p.Key {
			case "reserve_pool", "reserve_pool_size":
				reason = "pgtide has no reserve pool"
			case "connect_query":
				reason = "pgtide runs no query on new server connections"
			case "client_encoding", "datestyle", "timezone", "application_name":
				reason = "pgtide does not force server parameters; set it with ALTER DATABASE ... SET or in the client"
			case "auth_user", "auth_query", "auth_dbname":
				reason = "pgtide has only the global auth_user, auth_query and auth_dbname; " + authQueryHint
			case "server_lifetime":
				reason = "pgtide has only the global server_lifetime"
			case "load_balance_hosts":
				reason = "pgtide connects to one host per database"
			}
			c.note(e.Line, where+"."+p.Key, "%s", reason)
			continue
		}
		val := p.Value
		if p.Key == "host" {
			hasHost = true
			if hosts := strings.Split(val, ","); len(hosts) > 1 {
				c.note(e.Line, where+".host", "pgtide connects to one host per database; using the first of %q", val)
				val = strings.TrimSpace(hosts[0])
			}
		}
		switch kind {
		case "int":
			n, err := strconv.Atoi(val)
			if err != nil {
				c.note(e.Line, where+"."+p.Key, "%q is not an integer", val)
				continue
			}
			kvs = append(kvs, tomlKV{Key: p.Key, Value: strconv.Itoa(n)})
		case "mode":
			kvs = append(kvs, tomlKV{Key: p.Key, Value: tomlString(strings.ToLower(val))})
		default:
			kvs = append(kvs, tomlKV{Key: p.Key, Value: tomlString(val)})
		}
	}
	if !hasHost {
		c.addNote(e.Line, fmt.Sprintf("%s:%d: %s: no host: PgBouncer then uses the server's unix socket, pgtide uses %s; add host = \"/var/run/postgresql\" (the socket directory) if that is what you want",
			c.file, e.Line, where, config.DefaultServerHost))
	}
	for i := range c.dbs {
		if c.dbs[i].Name == e.Key {
			c.note(e.Line, where, "defined twice; the later line wins")
			c.dbs[i].KVs = kvs
			return
		}
	}
	c.dbs = append(c.dbs, namedSection{Name: e.Key, KVs: kvs})
}

func (c *converter) convertUser(e iniEntry) {
	params, err := parseConnString(e.Value)
	where := "users." + e.Key
	if err != nil {
		c.note(e.Line, where, "cannot parse: %v", err)
		return
	}
	kvs := c.users[e.Key]
	for _, p := range params {
		switch p.Key {
		case "pool_mode":
			kvs = append(kvs, tomlKV{Key: "pool_mode", Value: tomlString(strings.ToLower(p.Value))})
		case "pool_size", "max_user_connections":
			n, err := strconv.Atoi(p.Value)
			if err != nil {
				c.note(e.Line, where+"."+p.Key, "%q is not an integer", p.Value)
				continue
			}
			kvs = append(kvs, tomlKV{Key: p.Key, Value: strconv.Itoa(n)})
		default:
			c.note(e.Line, where+"."+p.Key, "no per-user pgtide equivalent")
		}
	}
	c.users[e.Key] = kvs
}

func (c *converter) readAuthFile(path string, line int) error {
	data, err := os.ReadFile(path)
	if err != nil {
		if line > 0 {
			return fmt.Errorf("%s:%d: auth_file: %v (use -auth-file FILE to read it from elsewhere)", c.file, line, err)
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
		c.addNote(0, fmt.Sprintf("%s: auth_type: %d user(s) have SCRAM-SHA-256 secrets; PgBouncer then uses SCRAM for them, pgtide uses the one auth_type you set (\"md5\"): consider auth_type = \"scram-sha-256\"", c.file, scram))
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
	if kv.Comment != "" {
		fmt.Fprintf(b, "%s = %s  # %s\n", kv.Key, kv.Value, kv.Comment)
		return
	}
	fmt.Fprintf(b, "%s = %s\n", kv.Key, kv.Value)
}
