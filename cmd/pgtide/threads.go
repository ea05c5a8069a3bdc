package main

import (
	"os"
	"runtime"

	"github.com/pgtide/pgtide/proxy/config"
)

// applyThreads sets GOMAXPROCS from the threads setting. Auto (0) keeps a
// GOMAXPROCS given in the environment, else uses half the CPUs: pgtide
// usually shares its host with PostgreSQL, and on the benchmark machine one
// thread per two CPUs cost ~30% less CPU per transaction than one per CPU
// (fewer cross-CPU goroutine wake-ups). It returns the value in force.
func applyThreads(cfg *config.Config) int {
	n := cfg.Threads
	if n == 0 {
		if os.Getenv("GOMAXPROCS") != "" {
			return runtime.GOMAXPROCS(0)
		}
		n = max(1, runtime.NumCPU()/2)
	}
	runtime.GOMAXPROCS(n)
	return n
}
