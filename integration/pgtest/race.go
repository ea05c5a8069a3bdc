//go:build race

package pgtest

// raceEnabled reports whether this test binary was built with -race; the pgtide
// binary under test is then built with -race too.
const raceEnabled = true
