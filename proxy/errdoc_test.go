package proxy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// docError is one error pgtide builds for a client: its SQLSTATE ("" when
// it is not a constant) and a regexp for its message.
type docError struct {
	where, code, shape string
	re                 *regexp.Regexp
}

// TestTroubleshootingListsEveryError keeps docs/troubleshooting.md true:
// every error message pgtide itself sends to a client (found in the
// sources: clientError values, errorFrame, kill, fatal and syntaxError
// calls, and the *Reason/*Why helpers that give their messages) appears in
// it, on a line that also names its SQLSTATE.
func TestTroubleshootingListsEveryError(t *testing.T) {
	doc, err := os.ReadFile("../docs/troubleshooting.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(doc), "\n")
	errs := collectClientErrors(t)
	if len(errs) < 40 {
		t.Fatalf("found only %d client errors in the sources; the scan is broken", len(errs))
	}
	for _, e := range errs {
		found := false
		for _, l := range lines {
			if e.re.MatchString(l) && (e.code == "" || strings.Contains(l, e.code)) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s: %s %q is not in docs/troubleshooting.md (on one line with its SQLSTATE)", e.where, e.code, e.shape)
		}
	}
}

var fmtVerb = regexp.MustCompile(`%[-+# 0-9.]*[a-zA-Z]`)

func collectClientErrors(t *testing.T) []docError {
	fset := token.NewFileSet()
	var files []*ast.File
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "config" || d.Name() == "metrics") {
			return filepath.SkipDir // no client errors there
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err == nil {
			files = append(files, f)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{} // constant or errors.New variable -> string value
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, name := range vs.Names {
				if i >= len(vs.Values) {
					break
				}
				switch v := vs.Values[i].(type) {
				case *ast.BasicLit:
					if s, err := strconv.Unquote(v.Value); err == nil {
						consts[name.Name] = s
					}
				case *ast.CallExpr: // errors.New("...")
					if sel, ok := v.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "New" && len(v.Args) == 1 {
						if lit, ok := v.Args[0].(*ast.BasicLit); ok {
							s, _ := strconv.Unquote(lit.Value)
							consts[name.Name] = s
						}
					}
				}
			}
			return true
		})
	}
	var out []docError
	add := func(pos token.Pos, code ast.Expr, msg ast.Expr) {
		parts, ok := msgParts(msg, consts)
		if !ok {
			return // built from a server's error or another variable
		}
		c := ""
		switch x := code.(type) {
		case *ast.Ident:
			c = consts[x.Name]
		case *ast.SelectorExpr:
			if !isSQLState(x, consts) {
				return // the server's SQLSTATE (se.Code), passed through
			}
			c = consts[x.Sel.Name]
		case *ast.BasicLit:
			c, _ = strconv.Unquote(x.Value)
		case nil:
		default:
			return // the server's SQLSTATE, passed through
		}
		var re strings.Builder
		for i, p := range parts {
			if i > 0 {
				re.WriteString(".*?")
			}
			for j, lit := range fmtVerb.Split(p, -1) {
				if j > 0 {
					re.WriteString(".*?")
				}
				re.WriteString(regexp.QuoteMeta(lit))
			}
		}
		shape := strings.Join(parts, "…")
		out = append(out, docError{where: fset.Position(pos).String(), code: c, shape: shape, re: regexp.MustCompile(re.String())})
	}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.CompositeLit:
				// clientError{code, msg}, or any {SQLSTATE, message} pair (so an
				// error type of another package, e.g. the console's, is found too).
				if len(x.Elts) == 2 && (isClientError(x.Type) || isSQLState(x.Elts[0], consts)) {
					add(x.Pos(), x.Elts[0], x.Elts[1])
				}
			case *ast.CallExpr:
				name := ""
				switch fn := x.Fun.(type) {
				case *ast.Ident:
					name = fn.Name
				case *ast.SelectorExpr:
					name = fn.Sel.Name
				}
				switch {
				case (name == "errorFrame" || name == "ErrorFrame") && len(x.Args) == 3:
					add(x.Pos(), x.Args[1], x.Args[2])
				case (name == "kill" || name == "fatal") && len(x.Args) == 2:
					add(x.Pos(), x.Args[0], x.Args[1])
				case len(x.Args) >= 2 && isSQLState(x.Args[0], consts):
					add(x.Pos(), x.Args[0], x.Args[1]) // any f(SQLSTATE, message, ...)
				case len(x.Args) >= 3 && isSQLState(x.Args[1], consts):
					add(x.Pos(), x.Args[1], x.Args[2]) // any f(severity, SQLSTATE, message)
				case name == "syntaxError" && len(x.Args) >= 1:
					add(x.Pos(), &ast.BasicLit{Kind: token.STRING, Value: strconv.Quote(consts["codeSyntaxError"])}, x.Args[0])
				}
			case *ast.FuncDecl:
				// Messages handed to kill through a variable come from these.
				if lower := strings.ToLower(x.Name.Name); x.Body != nil && (strings.Contains(lower, "reason") || strings.Contains(lower, "why")) {
					ast.Inspect(x.Body, func(n ast.Node) bool {
						if r, ok := n.(*ast.ReturnStmt); ok {
							for _, res := range r.Results {
								add(r.Pos(), nil, res)
							}
						}
						if as, ok := n.(*ast.AssignStmt); ok && len(as.Rhs) == 1 {
							if lit, ok := as.Rhs[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
								add(as.Pos(), nil, lit)
							}
						}
						return true
					})
				}
			}
			return true
		})
	}
	return out
}

var sqlstateRE = regexp.MustCompile(`^[0-9A-Z]{5}$`)

// isSQLState reports whether e is a SQLSTATE: a 5-character constant of
// digits and capitals with at least one digit.
func isSQLState(e ast.Expr, consts map[string]string) bool {
	v := ""
	switch x := e.(type) {
	case *ast.Ident:
		v = consts[x.Name]
	case *ast.SelectorExpr:
		v = consts[x.Sel.Name]
	case *ast.BasicLit:
		v, _ = strconv.Unquote(x.Value)
	}
	return sqlstateRE.MatchString(v) && strings.ContainsAny(v, "0123456789")
}

func isClientError(t ast.Expr) bool {
	switch x := t.(type) {
	case *ast.Ident:
		return x.Name == "clientError"
	case *ast.SelectorExpr:
		return x.Sel.Name == "clientError"
	}
	return false
}

// msgParts returns the literal pieces of a message expression: a string
// literal, fmt.Sprintf with a literal format, a known errors.New variable's
// .Error(), or a + concatenation of those and other values (left as gaps).
func msgParts(e ast.Expr, consts map[string]string) ([]string, bool) {
	switch x := e.(type) {
	case *ast.BasicLit:
		if x.Kind != token.STRING {
			return nil, false
		}
		s, err := strconv.Unquote(x.Value)
		return []string{s}, err == nil && s != ""
	case *ast.CallExpr:
		if sel, ok := x.Fun.(*ast.SelectorExpr); ok {
			if sel.Sel.Name == "Sprintf" && len(x.Args) > 0 {
				return msgParts(x.Args[0], consts)
			}
			if sel.Sel.Name == "Error" && len(x.Args) == 0 {
				if v, ok := sel.X.(*ast.SelectorExpr); ok && consts[v.Sel.Name] != "" {
					return []string{consts[v.Sel.Name]}, true
				}
			}
		}
	case *ast.BinaryExpr:
		if x.Op != token.ADD {
			return nil, false
		}
		l, lok := msgParts(x.X, consts)
		r, rok := msgParts(x.Y, consts)
		switch {
		case lok && rok:
			return append(l, r...), true
		case lok:
			return l, true
		case rok:
			return r, true
		}
	}
	return nil, false
}
