package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Transaction-mode tests with real Python drivers (asyncpg, psycopg 3,
// psycopg2). Each script runs straight against PostgreSQL first (so that a
// broken script is told apart from a broken pgtide), then through pgtide in
// transaction mode with fewer servers than clients.

// txnPyEnv is a transaction-mode pgtide with pool_size servers.
func txnPyEnv(t *testing.T, poolSize int) *env {
	return newEnv(t, func(c *tideConf, db *dbConf) {
		db.PoolMode = "transaction"
		db.PoolSize = poolSize
		c.MaxClientConn = 200
	})
}

// runTxnPy runs testdata/<name> with /usr/bin/python3 against host:port
// and fails the test unless it exits 0 with "OK" as its last line; anything
// else the script printed is logged. extra is more of the script's
// environment, "KEY=value" each.
func runTxnPy(t *testing.T, py, name, host string, port int, db, user, password string, extra ...string) {
	t.Helper()
	src, err := pyScripts.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctxT(t, 90*time.Second), py, path)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "PYTHON") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env,
		"PGT_HOST="+host, fmt.Sprintf("PGT_PORT=%d", port),
		"PGT_DB="+db, "PGT_USER="+user, "PGT_PASSWORD="+password, "PGT_ROLE="+user+"_r")
	cmd.Env = append(cmd.Env, extra...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	text := strings.TrimSpace(out.String())
	lines := strings.Split(text, "\n")
	if err != nil || lines[len(lines)-1] != "OK" {
		t.Fatalf("%s %s against %s:%d (%v): %v\n%s", py, name, host, port, took.Round(time.Millisecond), err, text)
	}
	t.Logf("%s took %v", name, took.Round(time.Millisecond))
	if len(lines) > 1 {
		t.Logf("%s output:\n%s", name, strings.Join(lines[:len(lines)-1], "\n"))
	}
}

// txnPyAgainstBoth runs the script directly against PostgreSQL, then through
// a transaction-mode pgtide with pool_size servers.
func txnPyAgainstBoth(t *testing.T, py, script string, poolSize int) {
	e := txnPyEnv(t, poolSize)
	directDB := e.DB + "_direct"
	e.pg.Exec(t, fmt.Sprintf("CREATE DATABASE %s OWNER %s", directDB, e.User))
	t.Run("direct", func(t *testing.T) {
		runTxnPy(t, py, script, e.pg.Host, e.pg.Port, directDB, e.User, e.Pass)
	})
	t.Run("pgtide", func(t *testing.T) {
		runTxnPy(t, py, script, e.tide.Host, e.tide.Port, e.DB, e.User, e.Pass)
	})
}

// TestTxnAsyncpg: asyncpg pool of 20 on 5 servers with the default statement
// cache, conn.prepare() across transactions, and identical asyncpg statement
// names for different SQL on different connections.
func TestTxnAsyncpg(t *testing.T) {
	py := needPython(t, "asyncpg", "python3-asyncpg")
	txnPyAgainstBoth(t, py, "txn_asyncpg.py", 5)
}

// TestTxnPsycopg3: prepare_threshold=0 (server-side prepared statements with
// colliding _pg3_N names) across transactions with concurrent clients,
// autocommit on and off, pipeline mode including an error and recovery.
func TestTxnPsycopg3(t *testing.T) {
	py := needPython(t, "psycopg", "python3-psycopg")
	txnPyAgainstBoth(t, py, "txn_psycopg3.py", 5)
}

// TestTxnCancel: psycopg2 conn.cancel() in transaction mode (pool_size 2)
// during pg_sleep with another client busy, and a cancel from a client that
// holds no server.
func TestTxnCancel(t *testing.T) {
	py := needPython(t, "psycopg2", "python3-psycopg2")
	txnPyAgainstBoth(t, py, "txn_psycopg2_cancel.py", 2)
}
