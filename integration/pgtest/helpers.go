package pgtest

import (
	"os"
	"testing"
	"time"
)

// Helpers for the tests of every package: this package is imported by test
// code only, so none of it reaches the pgtide binary.

// InCI reports whether the tests run under CI=true, where a missing
// dependency is a broken machine rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// SkipUnlessCI skips the test, except under CI=true, where whatever made it
// impossible is a broken CI machine and must fail instead of hiding.
func SkipUnlessCI(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// Eventually polls cond until it returns true or d passes, and says which.
// Polls start 1 ms apart and back off to 20 ms: quick for conditions in
// the test's own process, light on ones that ask PostgreSQL.
func Eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	wait := time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// WaitUntil polls cond until it holds, failing the test with what it
// waited for when d passes.
func WaitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Eventually(d, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}
