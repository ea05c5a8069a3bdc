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

type psqlResult struct {
	stdout, stderr string
	code           int
}

// runPsql runs psql against url (password via PGPASSWORD) with the given
// arguments and returns its output and exit code.
func runPsql(t *testing.T, psql, url, password string, args ...string) psqlResult {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	cmd := exec.CommandContext(ctx, psql, append([]string{"-X", url}, args...)...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=10", "LC_ALL=C")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("psql: %v", err)
		}
		code = ee.ExitCode()
	}
	return psqlResult{out.String(), errb.String(), code}
}

// urlNoPassword is the pgtide URL without the password (psql takes PGPASSWORD).
func urlNoPassword(host string, port int, db, user string) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", user, host, port, db)
}

func TestPsql(t *testing.T) {
	psql := needBinary(t, "psql", "postgresql-client")
	e := newEnv(t, nil)
	viaTide := urlNoPassword("127.0.0.1", e.tide.Port, e.DB, e.User)
	direct := urlNoPassword("127.0.0.1", e.pg.Port, e.DB, e.User)

	// Run the same psql invocation directly and through pgtide: the output
	// must be byte-identical (and we also pin the direct output).
	same := func(t *testing.T, args ...string) psqlResult {
		t.Helper()
		want := runPsql(t, psql, direct, e.Pass, args...)
		got := runPsql(t, psql, viaTide, e.Pass, args...)
		if got != want {
			t.Fatalf("psql %q through pgtide differs from direct:\n--- pgtide (exit %d)\nstdout:\n%s\nstderr:\n%s\n--- direct (exit %d)\nstdout:\n%s\nstderr:\n%s",
				args, got.code, got.stdout, got.stderr, want.code, want.stdout, want.stderr)
		}
		return got
	}

	t.Run("select1", func(t *testing.T) {
		r := same(t, "-c", "select 1")
		want := " ?column? \n----------\n        1\n(1 row)\n\n"
		if r.code != 0 || r.stdout != want || r.stderr != "" {
			t.Fatalf("psql -c 'select 1': exit %d, stdout %q, stderr %q; want stdout %q", r.code, r.stdout, r.stderr, want)
		}
	})

	t.Run("error", func(t *testing.T) {
		r := same(t, "-c", "select 1/0")
		if r.code != 1 || !strings.Contains(r.stderr, "ERROR:  division by zero") {
			t.Fatalf("select 1/0: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("copy", func(t *testing.T) {
		dir := t.TempDir()
		in := filepath.Join(dir, "in.tsv")
		var data strings.Builder
		const rows = 5000
		for i := 1; i <= rows; i++ {
			switch {
			case i%97 == 0:
				fmt.Fprintf(&data, "%d\t\\N\t%d.5\n", i, i)
			case i%13 == 0:
				fmt.Fprintf(&data, "%d\ttab\\there \\\\ back\\nslash ünïcødé €\t-%d\n", i, i)
			default:
				fmt.Fprintf(&data, "%d\trow %d %s\t%d\n", i, i, strings.Repeat("x", i%50), i*3)
			}
		}
		if err := os.WriteFile(in, []byte(data.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		setup := runPsql(t, psql, viaTide, e.Pass, "-v", "ON_ERROR_STOP=1",
			"-c", "CREATE TABLE copytest (id int PRIMARY KEY, txt text, n numeric)")
		if setup.code != 0 {
			t.Fatalf("create table through pgtide: exit %d: %s", setup.code, setup.stderr)
		}
		r := runPsql(t, psql, viaTide, e.Pass, "-v", "ON_ERROR_STOP=1", "-c", fmt.Sprintf(`\copy copytest from '%s'`, in))
		if r.code != 0 || r.stdout != fmt.Sprintf("COPY %d\n", rows) || r.stderr != "" {
			t.Fatalf(`\copy from: exit %d, stdout %q, stderr %q; want "COPY %d"`, r.code, r.stdout, r.stderr, rows)
		}
		out := filepath.Join(dir, "out.tsv")
		r = runPsql(t, psql, viaTide, e.Pass, "-v", "ON_ERROR_STOP=1",
			"-c", fmt.Sprintf(`\copy (SELECT * FROM copytest ORDER BY id) to '%s'`, out))
		if r.code != 0 || r.stdout != fmt.Sprintf("COPY %d\n", rows) || r.stderr != "" {
			t.Fatalf(`\copy to: exit %d, stdout %q, stderr %q; want "COPY %d"`, r.code, r.stdout, r.stderr, rows)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, []byte(data.String())) {
			t.Fatalf("\\copy out (%d bytes) differs from what was copied in (%d bytes)", len(got), data.Len())
		}
		// Cross-check from a direct connection: the rows really are in the table.
		c := connect(t, e.DirectURL())
		if n := queryInt(t, c, "SELECT count(*) FROM copytest"); n != rows {
			t.Fatalf("direct count(*) = %d, want %d", n, rows)
		}

		// An error in the middle of COPY FROM: same output as PostgreSQL,
		// nothing loaded, and the session goes on.
		bad := filepath.Join(dir, "bad.tsv")
		if err := os.WriteFile(bad, []byte("100001\ta\t1\n100002\tb\t2\nnot-a-number\tc\t3\n100004\td\t4\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r = same(t, "-c", fmt.Sprintf(`\copy copytest from '%s'`, bad), "-c", "SELECT count(*) FROM copytest WHERE id > 100000")
		if r.code != 0 && r.code != 1 || !strings.Contains(r.stderr, `invalid input syntax for type integer: "not-a-number"`) ||
			!strings.Contains(r.stdout, "     0\n(1 row)") {
			t.Fatalf("copy with a bad row: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
	})
}
