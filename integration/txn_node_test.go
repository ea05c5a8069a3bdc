package integration

import (
	"bytes"
	"embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgtide/pgtide/integration/pgtest"
)

//go:embed testdata/node/package.json testdata/node/package-lock.json testdata/node/test.js
var nodeTestFiles embed.FS

// npmOffline matches npm errors that mean the registry could not be reached.
var npmOffline = regexp.MustCompile(`ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|network request|socket hang up|getaddrinfo`)

// nodeProject copies testdata/node into a temp dir and runs `npm ci` there.
// A registry that cannot be reached skips the test locally and fails it in CI.
func nodeProject(t *testing.T) (node, dir string) {
	t.Helper()
	node = needBinary(t, "node", "nodejs")
	npm := needBinary(t, "npm", "npm")
	dir = t.TempDir()
	for _, name := range []string{"package.json", "package-lock.json", "test.js"} {
		b, err := nodeTestFiles.ReadFile("testdata/node/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.CommandContext(ctxT(t, 90*time.Second), npm, "ci", "--no-audit", "--no-fund", "--no-update-notifier")
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		if !pgtest.InCI() && npmOffline.MatchString(out.String()) {
			t.Skipf("npm ci could not reach the registry (not in CI, so skipping): %v\n%s", err, out.String())
		}
		t.Fatalf("npm ci: %v\n%s", err, out.String())
	}
	t.Logf("npm ci took %v", time.Since(start))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "pg", "package.json")); err != nil {
		t.Fatalf("npm ci did not install pg: %v\n%s", err, out.String())
	}
	return node, dir
}

// TestTxnNode runs testdata/node/test.js (node-postgres: named queries where
// every client uses the name "q1" for a text of its own, a pg.Pool of 10 with
// 100 concurrent queries, BEGIN/INSERT/ROLLBACK and COMMIT) straight against
// PostgreSQL, then through pgtide in transaction mode with 3 servers.
func TestTxnNode(t *testing.T) {
	node, dir := nodeProject(t)
	e := drvTxnEnv(t, 3)
	directDB := e.DB + "_direct"
	e.pg.Exec(t, fmt.Sprintf("CREATE DATABASE %s OWNER %s", directDB, e.User))

	runNode := func(t *testing.T, dsn string) {
		cmd := exec.CommandContext(ctxT(t, 90*time.Second), node, "test.js")
		cmd.Dir = dir
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "NODE_") {
				env = append(env, kv)
			}
		}
		cmd.Env = append(env, "PGT_DSN="+dsn)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		if err != nil || strings.TrimSpace(out.String()) != "OK" {
			t.Fatalf("node test.js against %s: %v\n%s", redact(dsn), err, out.String())
		}
		t.Logf("%s: OK in %v", redact(dsn), time.Since(start))
	}
	t.Run("direct", func(t *testing.T) { runNode(t, e.pg.ConnString(directDB, e.User, e.Pass)) })
	t.Run("pgtide", func(t *testing.T) { runNode(t, e.URL()) })
}
