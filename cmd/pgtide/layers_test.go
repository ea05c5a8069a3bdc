package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The daemon must not depend on the test harness (issue 14): the throwaway
// cluster code it shares with the tests lives in cmd/pgtide/pgcluster.
func TestBinaryDoesNotImportIntegration(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/pgtide/pgtide/integration") {
			t.Errorf("cmd/pgtide imports %s", p)
		}
	}
}
