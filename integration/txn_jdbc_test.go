package integration

import (
	"bytes"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgtide/pgtide/integration/pgtest"
)

//go:embed testdata/jdbc/PgtideJdbcTest.java
var jdbcTestSource []byte

// jdbcJar is where Debian's libpostgresql-jdbc-java puts the driver.
const jdbcJar = "/usr/share/java/postgresql.jar"

// TestTxnJDBC runs testdata/jdbc/PgtideJdbcTest.java (the PostgreSQL JDBC
// driver: PreparedStatements past prepareThreshold=5 on 10 connections at
// once, so the driver's named server-side statements S_1, S_2, ... mean
// different texts on different connections; executeBatch; commit/rollback
// seen from another connection; setTransactionIsolation/setReadOnly following
// their connection and no other) straight against PostgreSQL, then through
// pgtide in transaction mode with 3 servers.
func TestTxnJDBC(t *testing.T) {
	javac := needBinary(t, "javac", "default-jdk-headless")
	java := needBinary(t, "java", "default-jdk-headless")
	if _, err := os.Stat(jdbcJar); err != nil {
		pgtest.SkipUnlessCI(t, "%s missing (install the libpostgresql-jdbc-java apt package): %v", jdbcJar, err)
	}

	e := drvTxnEnv(t, 3)
	directDB := e.DB + "_direct"
	e.pg.Exec(t, fmt.Sprintf("CREATE DATABASE %s OWNER %s", directDB, e.User))

	classes := t.TempDir()
	src := filepath.Join(classes, "PgtideJdbcTest.java")
	if err := os.WriteFile(src, jdbcTestSource, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.CommandContext(ctxT(t, 60*time.Second), javac, "-cp", jdbcJar, "-d", classes, src)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	t.Logf("javac took %v", time.Since(start))

	runJava := func(t *testing.T, host string, port int, db string) {
		url := fmt.Sprintf("jdbc:postgresql://%s:%d/%s?sslmode=disable", host, port, db)
		cmd := exec.CommandContext(ctxT(t, 90*time.Second), java, "-cp", classes+":"+jdbcJar, "PgtideJdbcTest", url, e.User, e.Pass)
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "JAVA_TOOL_OPTIONS") {
				env = append(env, kv)
			}
		}
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		if err != nil || strings.TrimSpace(out.String()) != "OK" {
			t.Fatalf("java PgtideJdbcTest %s: %v\n%s", url, err, out.String())
		}
		t.Logf("%s: OK in %v", url, time.Since(start))
	}
	t.Run("direct", func(t *testing.T) { runJava(t, e.pg.Host, e.pg.Port, directDB) })
	t.Run("pgtide", func(t *testing.T) { runJava(t, e.tide.Host, e.tide.Port, e.DB) })
}
