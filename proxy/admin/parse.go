package admin

import (
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// command is one parsed console command.
type command struct {
	Verb  string // upper case: SHOW, PAUSE, KILL_CLIENT, ...
	Arg   string // SHOW's subject and SHUTDOWN's mode in upper case; a database name or SET's key as written; "" when none
	Value string // SET's value
}

type argRule int

const (
	argNone argRule = iota
	argOptional
	argRequired
)

// verbs: the commands, their argument, and whether stats_users may run them.
var verbs = map[string]struct {
	arg      argRule
	readOnly bool
}{
	"SHOW": {argRequired, true}, "PAUSE": {argOptional, false}, "RESUME": {argOptional, false},
	"RECONNECT": {argOptional, false}, "DISABLE": {argRequired, false}, "ENABLE": {argRequired, false},
	"KILL": {argOptional, false}, "KILL_CLIENT": {argRequired, false}, "WAIT_CLOSE": {argOptional, false},
	"RELOAD": {argNone, false}, "SHUTDOWN": {argOptional, false}, "SET": {argRequired, false},
	"SUSPEND": {argNone, false},
}

var showSubjects = []string{
	"HELP", "POOLS", "CLIENTS", "SERVERS", "DATABASES", "USERS", "STATS", "STATS_TOTALS",
	"STATS_AVERAGES", "TOTALS", "CONFIG", "LISTS", "STATE", "VERSION", "MEM", "FDS", "SOCKETS",
	"ACTIVE_SOCKETS", "DNS_HOSTS", "DNS_ZONES", "PEERS", "PEER_POOLS",
}

// splitStatements splits a simple Query at semicolons outside double
// and single quotes, dropping empty statements.
func splitStatements(q string) []string {
	var out []string
	start := 0
	var quote byte
	for i := 0; i < len(q); i++ {
		switch c := q[i]; {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == ';':
			if st := strings.TrimSpace(q[start:i]); st != "" {
				out = append(out, st)
			}
			start = i + 1
		}
	}
	if st := strings.TrimSpace(q[start:]); st != "" {
		out = append(out, st)
	}
	return out
}

// words splits a statement into words: bare words, identifiers in double
// quotes or strings in single quotes (a doubled quote inside stands for
// one); '=' is a word of its own.
func words(st string) ([]string, error) {
	var out []string
	for i := 0; i < len(st); {
		r := rune(st[i])
		switch {
		case unicode.IsSpace(r):
			i++
		case r == '=':
			out = append(out, "=")
			i++
		case r == '"' || r == '\'':
			q := st[i]
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(st) {
					if q == '"' {
						return nil, syntaxError("unterminated quoted identifier in %q", st)
					}
					return nil, syntaxError("unterminated quoted string in %q", st)
				}
				if st[j] == q {
					if j+1 < len(st) && st[j+1] == q {
						b.WriteByte(q)
						j += 2
						continue
					}
					break
				}
				b.WriteByte(st[j])
				j++
			}
			if b.Len() == 0 && q == '"' {
				return nil, syntaxError("zero-length quoted identifier in %q", st)
			}
			out = append(out, b.String())
			i = j + 1
		default:
			j := i
			for j < len(st) && !unicode.IsSpace(rune(st[j])) && st[j] != '"' && st[j] != '\'' && st[j] != '=' {
				j++
			}
			out = append(out, st[i:j])
			i = j
		}
	}
	return out, nil
}

// parseCommand parses one console statement (no semicolons).
func parseCommand(st string) (command, error) {
	st = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(st), ";"))
	ws, err := words(st)
	if err != nil {
		return command{}, err
	}
	if len(ws) == 0 {
		return command{}, syntaxError("empty command")
	}
	verb := strings.ToUpper(ws[0])
	spec, ok := verbs[verb]
	if !ok {
		return command{}, syntaxError("invalid command %q, use SHOW HELP;", st)
	}
	args := ws[1:]
	if verb == "SET" {
		// SET key = value | SET key TO value, as PgBouncer's console.
		if len(args) != 3 || (args[1] != "=" && !strings.EqualFold(args[1], "TO")) {
			return command{}, syntaxError("SET takes key = value")
		}
		return command{Verb: verb, Arg: strings.ToLower(args[0]), Value: args[2]}, nil
	}
	switch {
	case len(args) > 1:
		return command{}, syntaxError("too many arguments to %s", verb)
	case len(args) == 1 && spec.arg == argNone:
		return command{}, syntaxError("%s takes no argument", verb)
	case len(args) == 0 && spec.arg == argRequired:
		if verb == "SHOW" {
			return command{}, syntaxError("SHOW needs a subject, use SHOW HELP;")
		}
		return command{}, syntaxError("%s needs an argument", verb)
	}
	cmd := command{Verb: verb}
	if len(args) == 1 {
		cmd.Arg = args[0]
	}
	switch verb {
	case "SHOW":
		cmd.Arg = strings.ToUpper(cmd.Arg)
		if _, fake := fakeParam(cmd.Arg); !slices.Contains(showSubjects, cmd.Arg) && !fake {
			return command{}, syntaxError("unknown SHOW subject %q, use SHOW HELP;", args[0])
		}
	case "SHUTDOWN":
		cmd.Arg = strings.ToUpper(cmd.Arg)
		if cmd.Arg != "" && cmd.Arg != "WAIT_FOR_SERVERS" && cmd.Arg != "WAIT_FOR_CLIENTS" {
			return command{}, syntaxError("SHUTDOWN takes WAIT_FOR_SERVERS or WAIT_FOR_CLIENTS, not %q", args[0])
		}
	case "KILL_CLIENT":
		if _, err := strconv.ParseUint(cmd.Arg, 10, 64); err != nil {
			return command{}, syntaxError("invalid client id %q", cmd.Arg)
		}
	}
	return cmd, nil
}
