package proxy

import (
	"testing"

	"go.uber.org/goleak"
)

// Every session, pump, timer and listener goroutine a test starts must be
// gone when the package's tests end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
