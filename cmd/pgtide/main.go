// Command pgtide is the PostgreSQL connection pooler daemon.
//
//	pgtide -config FILE         run the daemon
//	pgtide -check-config FILE   validate a configuration and exit
//	pgtide -check-config FILE -v   ... and print the effective settings
//	pgtide -version             print the version
//	pgtide demo                 throwaway PostgreSQL + pgtide to try things on
//	pgtide convert-pgbouncer FILE [-o OUT]   pgbouncer.ini -> pgtide TOML
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	_ "net/http/pprof" // served only when PGTIDE_PPROF names an address
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/proxy"
	"github.com/pgtide/pgtide/proxy/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int { return runIO(args, os.Stdout, stderr) }

// runIO is run with stdout made explicit (for tests).
func runIO(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "demo":
			return runDemo(args[1:], stdout, stderr)
		case "convert-pgbouncer":
			return runConvert(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("pgtide", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pgtide -config FILE | -check-config FILE [-v] | -version\n       pgtide demo [-port N]\n       pgtide convert-pgbouncer [-o OUT] [-auth-file FILE] [-allow-weaker] [-keep-socket-dir] pgbouncer.ini")
		fs.PrintDefaults()
	}
	cfgPath := fs.String("config", "", "run the daemon with this TOML configuration file")
	check := fs.String("check-config", "", "validate this configuration file, print every problem, and exit (1 if invalid)")
	verbose := fs.Bool("v", false, "with -check-config: also print the effective settings")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch {
	case *showVersion:
		fmt.Fprintln(stdout, "pgtide", version)
		return 0
	case *check != "":
		cfg, err := config.Load(*check)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if w := cfg.FileModeWarning(*check); w != "" {
			fmt.Fprintln(stderr, "warning:", w)
		}
		fmt.Fprintf(stdout, "%s: configuration is valid (%d databases, %d users)\n", *check, len(cfg.Databases), len(cfg.Users))
		for _, w := range cfg.Warnings() {
			fmt.Fprintf(stderr, "%s: warning: %s\n", *check, w)
		}
		if *verbose {
			var raw map[string]any
			_, _ = toml.DecodeFile(*check, &raw) // it decoded once already
			printEffectiveRaw(stdout, cfg, raw)
		}
		return 0
	case *cfgPath == "":
		fmt.Fprintln(stderr, "pgtide: -config FILE is required (see -h)")
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log := newLogger(cfg, stderr)
	if w := cfg.FileModeWarning(*cfgPath); w != "" {
		log.Warn().Msg(w)
	}
	logWarnings(log, cfg)
	if addr := os.Getenv("PGTIDE_PPROF"); addr != "" {
		// Profiling endpoint for performance work; off unless asked for.
		go func() { log.Warn().Err(http.ListenAndServe(addr, nil)).Msg("pprof server stopped") }()
	}
	return serve(*cfgPath, cfg, log)
}

func newLogger(cfg *config.Config, w io.Writer) zerolog.Logger {
	console := cfg.LogFormat == "console"
	if cfg.LogFormat == "auto" || cfg.LogFormat == "" {
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				console = true
			}
		}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	// The level is zerolog's global one, so that a reload changes it for
	// every logger already handed out (sessions, pools), not only new ones.
	zerolog.SetGlobalLevel(parseLevel(cfg.LogLevel))
	return zerolog.New(w).With().Timestamp().Logger()
}

func parseLevel(s string) zerolog.Level {
	if l, err := zerolog.ParseLevel(s); err == nil && s != "" {
		return l
	}
	return zerolog.InfoLevel
}

func serve(path string, cfg *config.Config, log zerolog.Logger) int {
	log.Debug().Int("threads", applyThreads(cfg)).Msg("GOMAXPROCS set")
	srv := proxy.New(cfg, log)
	if err := srv.Listen(); err != nil {
		log.Error().Err(err).Msg("cannot listen")
		return 1
	}
	mep, err := startMetrics(cfg, srv, log)
	if err != nil {
		log.Error().Err(err).Msg("cannot open the metrics endpoint")
		srv.Close()
		return 1
	}
	defer mep.Close()
	sigs := make(chan os.Signal, 4)
	// SIGUSR1 and SIGUSR2 are PAUSE and RESUME, as PgBouncer's, so that
	// operators' scripts carry over.
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	// The admin console's RELOAD and SET run on this goroutine, as SIGHUP
	// does: a request with a nil cfg re-reads the file, one with a cfg
	// applies it.
	type reloadReq struct {
		cfg *config.Config
		ch  chan error
	}
	reloads := make(chan reloadReq)
	ask := func(cfg *config.Config) error {
		req := reloadReq{cfg, make(chan error, 1)}
		select {
		case reloads <- req:
			return <-req.ch
		case <-srv.Done():
			return errors.New("pgtide is shutting down")
		}
	}
	srv.Version = version
	srv.OnReload = func() error { return ask(nil) }
	srv.OnApply = ask
	srv.Serve()
	log.Info().Str("version", version).Int("pid", os.Getpid()).Msg("pgtide started")
	notify := newNotifier(log)
	defer notify.Close()
	notify.Ready(srv)
	notify.StatusLoop(srv)

	stopping := false
	for {
		select {
		case <-srv.Done():
			notify.Stopping("stopped")
			log.Info().Msg("pgtide stopped")
			return 0
		case req := <-reloads:
			notify.Reloading()
			if req.cfg == nil {
				req.ch <- reload(path, srv, &log)
			} else {
				req.ch <- apply(req.cfg, srv, &log)
			}
			notify.Ready(srv)
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				notify.Reloading()
				_ = reload(path, srv, &log)
				notify.Ready(srv)
			case syscall.SIGUSR1:
				log.Info().Msg("SIGUSR1: PAUSE of every database")
				srv.Pause("")
			case syscall.SIGUSR2:
				log.Info().Msg("SIGUSR2: RESUME of every database (and of SUSPEND)")
				srv.Resume("")
			case syscall.SIGQUIT:
				notify.Stopping("SIGQUIT: exiting now")
				log.Info().Msg("SIGQUIT: exiting now")
				srv.Close()
			case syscall.SIGINT, syscall.SIGTERM:
				if stopping {
					log.Info().Str("signal", sig.String()).Msg("second signal: exiting now")
					srv.Close()
					continue
				}
				stopping = true
				notify.Stopping(sig.String() + ": shutting down")
				if sig == syscall.SIGINT {
					srv.SafeShutdown()
				} else {
					srv.WaitShutdown(srv.Config().ShutdownTimeout.Duration)
				}
			}
		}
	}
}

// reload applies a changed configuration file; a file with errors leaves
// the running configuration in place (invariant 8) and is returned.
func reload(path string, srv *proxy.Server, log *zerolog.Logger) error {
	cfg, err := config.Load(path)
	if err != nil {
		var ce *config.Errors
		if errors.As(err, &ce) {
			log.Error().Strs("errors", errorStrings(ce.List)).Msg("reload failed; keeping the running configuration")
		} else {
			log.Error().Err(err).Msg("reload failed; keeping the running configuration")
		}
		return err
	}
	if w := cfg.FileModeWarning(path); w != "" {
		log.Warn().Msg(w)
	}
	return apply(cfg, srv, log)
}

// apply puts a checked configuration in force (a reload, or the admin
// console's SET); TLS and HBA files that do not load leave the running
// configuration in place and are returned.
func apply(cfg *config.Config, srv *proxy.Server, log *zerolog.Logger) error {
	old := srv.Config()
	if fmt.Sprint(old.Listen) != fmt.Sprint(cfg.Listen) || old.UnixSocketDir != cfg.UnixSocketDir ||
		old.UnixSocketMode != cfg.UnixSocketMode || old.SoReuseport != cfg.SoReuseport || old.ListenBacklog != cfg.ListenBacklog {
		log.Warn().Msg("listen, unix_socket_dir, unix_socket_mode, so_reuseport and listen_backlog changes need a restart; keeping the current listeners")
	}
	if old.MetricsListen != cfg.MetricsListen {
		log.Warn().Msg("metrics_listen changes need a restart; keeping the current metrics endpoint")
	}
	if err := srv.CheckSecurity(cfg); err != nil { // TLS and HBA files (proxy/tls.go)
		log.Error().Err(err).Msg("reload failed; keeping the running configuration")
		return err
	}
	zerolog.SetGlobalLevel(parseLevel(cfg.LogLevel))
	applyThreads(cfg)
	srv.Reload(cfg)
	logWarnings(*log, cfg)
	return nil
}

// logWarnings logs what -check-config warns about (config.Warnings).
func logWarnings(log zerolog.Logger, cfg *config.Config) {
	for _, w := range cfg.Warnings() {
		log.Warn().Msg(w)
	}
}

func errorStrings(errs []error) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Error()
	}
	return out
}
