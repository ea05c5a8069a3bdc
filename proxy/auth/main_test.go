package auth

import (
	"testing"

	"go.uber.org/goleak"
)

// The tests' client/server goroutine pairs must be gone when they end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
