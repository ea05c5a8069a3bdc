package integration

import (
	"bytes"
	"embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

//go:embed testdata/*.py
var pyScripts embed.FS

// runPyScript runs testdata/<name> with /usr/bin/python3 against host:port
// and fails the test unless it exits 0 and prints OK.
func runPyScript(t *testing.T, py, name, host string, port int, db, user, password string) time.Duration {
	t.Helper()
	src, err := pyScripts.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctxT(t, 120*time.Second), py, path)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "PYTHON") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env,
		"PGT_HOST="+host, fmt.Sprintf("PGT_PORT=%d", port),
		"PGT_DB="+db, "PGT_USER="+user, "PGT_PASSWORD="+password)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	if err != nil || strings.TrimSpace(out.String()) != "OK" {
		t.Fatalf("%s %s against %s:%d: %v\n%s", py, name, host, port, err, out.String())
	}
	return took
}

// pyAgainstBoth runs the script straight against PostgreSQL first (so a
// broken script is told apart from a broken pgtide), then through pgtide,
// each in a fresh database.
func pyAgainstBoth(t *testing.T, py, script string) {
	e := newEnv(t, func(c *tideConf, db *dbConf) {})
	directDB := e.DB + "_direct"
	// The direct run gets a database of its own, same owner.
	e.pg.Exec(t, fmt.Sprintf("CREATE DATABASE %s OWNER %s", directDB, e.User))
	t.Run("direct", func(t *testing.T) {
		runPyScript(t, py, script, e.pg.Host, e.pg.Port, directDB, e.User, e.Pass)
	})
	t.Run("pgtide", func(t *testing.T) {
		runPyScript(t, py, script, e.tide.Host, e.tide.Port, e.DB, e.User, e.Pass)
	})
}

func TestPsycopg2SessionTutorial(t *testing.T) {
	py := needPython(t, "psycopg2", "python3-psycopg2")
	pyAgainstBoth(t, py, "psycopg2_session.py")
}

func TestPsycopg2Cancel(t *testing.T) {
	py := needPython(t, "psycopg2", "python3-psycopg2")
	pyAgainstBoth(t, py, "psycopg2_cancel.py")
}
