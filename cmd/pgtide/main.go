// Command pgtide is the PostgreSQL connection pooler daemon.
//
//	pgtide -config FILE         run the daemon
//	pgtide -check-config FILE   validate a configuration and exit
//	pgtide -version             print the version
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

	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/proxy"
	"github.com/pgtide/pgtide/proxy/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("pgtide", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "run the daemon with this TOML configuration file")
	check := fs.String("check-config", "", "validate this configuration file, print every problem, and exit (1 if invalid)")
	verbose := fs.Bool("v", false, "with -check-config: also print the effective settings")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch {
	case *showVersion:
		fmt.Fprintln(os.Stdout, "pgtide", version)
		return 0
	case *check != "":
		cfg, err := config.Load(*check)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(os.Stdout, "%s: configuration is valid (%d databases, %d users)\n", *check, len(cfg.Databases), len(cfg.Users))
		if *verbose {
			printEffective(cfg)
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
	return zerolog.New(w).Level(parseLevel(cfg.LogLevel)).With().Timestamp().Logger()
}

func parseLevel(s string) zerolog.Level {
	if l, err := zerolog.ParseLevel(s); err == nil && s != "" {
		return l
	}
	return zerolog.InfoLevel
}

func serve(path string, cfg *config.Config, log zerolog.Logger) int {
	srv := proxy.New(cfg, log)
	if err := srv.Listen(); err != nil {
		log.Error().Err(err).Msg("cannot listen")
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	srv.Serve()
	log.Info().Str("version", version).Int("pid", os.Getpid()).Msg("pgtide started")

	stopping := false
	for {
		select {
		case <-srv.Done():
			log.Info().Msg("pgtide stopped")
			return 0
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				reload(path, srv, &log)
			case syscall.SIGQUIT:
				log.Info().Msg("SIGQUIT: exiting now")
				srv.Close()
			case syscall.SIGINT, syscall.SIGTERM:
				if stopping {
					log.Info().Str("signal", sig.String()).Msg("second signal: exiting now")
					srv.Close()
					continue
				}
				stopping = true
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
// the running configuration in place (invariant 8).
func reload(path string, srv *proxy.Server, log *zerolog.Logger) {
	cfg, err := config.Load(path)
	if err != nil {
		var ce *config.Errors
		if errors.As(err, &ce) {
			log.Error().Strs("errors", errorStrings(ce.List)).Msg("reload failed; keeping the running configuration")
		} else {
			log.Error().Err(err).Msg("reload failed; keeping the running configuration")
		}
		return
	}
	old := srv.Config()
	if fmt.Sprint(old.Listen) != fmt.Sprint(cfg.Listen) || old.UnixSocketDir != cfg.UnixSocketDir {
		log.Warn().Msg("listen and unix_socket_dir changes need a restart; keeping the current listeners")
	}
	*log = log.Level(parseLevel(cfg.LogLevel))
	srv.SetLogger(*log)
	srv.Reload(cfg)
}

func errorStrings(errs []error) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Error()
	}
	return out
}

func printEffective(cfg *config.Config) {
	fmt.Printf("listen = %q\nunix_socket_dir = %q\npool_mode = %q\ndefault_pool_size = %d\nmin_pool_size = %d\nmax_client_conn = %d\n",
		cfg.Listen, cfg.UnixSocketDir, cfg.PoolMode, cfg.DefaultPoolSize, cfg.MinPoolSize, cfg.MaxClientConn)
	fmt.Printf("auth_type = %q\nserver_connect_timeout = %q\nquery_wait_timeout = %q\nserver_idle_timeout = %q\nserver_lifetime = %q\n",
		cfg.AuthType, cfg.ServerConnectTimeout, cfg.QueryWaitTimeout, cfg.ServerIdleTimeout, cfg.ServerLifetime)
	fmt.Printf("server_reset_query = %q\nclient_login_timeout = %q\nshutdown_timeout = %q\nmax_packet_size = %d\nlog_level = %q\nlog_format = %q\n",
		cfg.ServerResetQuery, cfg.ClientLoginTimeout, cfg.ShutdownTimeout, cfg.MaxPacketSize, cfg.LogLevel, cfg.LogFormat)
	for name, db := range cfg.Databases {
		fmt.Printf("[databases.%q] host = %q port = %d dbname = %q pool_size = %d pool_mode = %q\n", name, db.Host, db.Port, db.DBName, db.PoolSize, db.PoolMode)
	}
	for name, u := range cfg.Users {
		fmt.Printf("[users.%q] pool_mode = %q pool_size = %d (password not shown)\n", name, u.PoolMode, u.PoolSize)
	}
}
