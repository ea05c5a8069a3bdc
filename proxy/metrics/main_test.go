package metrics

import (
	"testing"

	"go.uber.org/goleak"
)

// The HTTP endpoint's goroutines must be gone when the tests end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
