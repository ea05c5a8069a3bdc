package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/cmd/pgtide/pgcluster"
	"github.com/pgtide/pgtide/proxy"
	"github.com/pgtide/pgtide/proxy/config"
)

// The demo's role, password and database.
const (
	demoUser     = "demo"
	demoPassword = "demo"
	demoDB       = "demo"
)

// runDemo implements `pgtide demo`: a throwaway PostgreSQL cluster (the same
// code the integration tests use) with pgtide in front of it, until SIGINT or
// SIGTERM; then everything is stopped and the temp data removed.
func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pgtide demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.Int("port", config.DefaultPort, "port for pgtide on 127.0.0.1 (a free port is used when it is busy; 0 = any free port)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pgtide demo [-port N]\n\nStarts a throwaway PostgreSQL cluster and pgtide in front of it; Ctrl-C stops both and removes the data.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pgtide demo: unexpected argument %q\n", fs.Arg(0))
		return 2
	}

	// Catch signals from the start, so a Ctrl-C during initdb still cleans up
	// (the server runs in its own process group and does not see it).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	start := time.Now()
	fmt.Fprintln(stdout, "pgtide demo: starting a throwaway PostgreSQL cluster ...")
	cluster, err := pgcluster.Start(pgcluster.Options{TempPrefix: "pgtide-demo-"})
	if err != nil {
		var nb *pgcluster.ErrNoBinaries
		if errors.As(err, &nb) {
			fmt.Fprintf(stderr, "pgtide demo: %v.\nInstall them with the %q apt package (sudo apt-get install %s), or set PGTIDE_PG_BINDIR to a directory with postgres and initdb.\n",
				err, pgcluster.AptPackage, pgcluster.AptPackage)
		} else {
			fmt.Fprintf(stderr, "pgtide demo: starting PostgreSQL: %v\n", err)
		}
		return 1
	}
	defer func() {
		cluster.Stop()
		fmt.Fprintf(stdout, "pgtide demo: PostgreSQL stopped, %s removed\n", cluster.RootDir)
	}()
	if interrupted(sigs) {
		return 0
	}
	if err := createDemoObjects(cluster); err != nil {
		fmt.Fprintf(stderr, "pgtide demo: %v\n%s", err, cluster.Logs())
		return 1
	}

	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly, NoColor: !isTerminal(stderr)}).
		Level(zerolog.InfoLevel).With().Timestamp().Logger()
	srv, addr, err := listenDemo(cluster, *port, log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "pgtide demo: %v\n", err)
		return 1
	}
	srv.Serve()
	tport := addr.Port

	fmt.Fprintf(stdout, `
pgtide demo is ready (%.1fs).
  PostgreSQL %s  data directory %s
  pgtide     127.0.0.1:%d  pool_mode = "transaction", database %q, user %q, password %q

Try:
  psql "host=127.0.0.1 port=%d dbname=%s user=%s password=%s"
  PGPASSWORD=%s pgbench -i -h 127.0.0.1 -p %d -U %s %s        # create the pgbench tables, directly on PostgreSQL
  PGPASSWORD=%s pgbench -c 10 -T 10 -h 127.0.0.1 -p %d -U %s %s   # 10 clients for 10 s, through pgtide

Watch the pools on the admin console (user %q is in admin_users):
  psql "host=127.0.0.1 port=%d dbname=%s user=%s password=%s" -c "SHOW POOLS"

Press Ctrl-C to stop pgtide and PostgreSQL and remove the data.
`,
		time.Since(start).Seconds(),
		cluster.Addr(), cluster.DataDir,
		tport, demoDB, demoUser, demoPassword,
		tport, demoDB, demoUser, demoPassword,
		demoPassword, cluster.Port, demoUser, demoDB,
		demoPassword, tport, demoUser, demoDB,
		demoUser, tport, config.AdminDatabaseName, demoUser, demoPassword)

	select {
	case sig := <-sigs:
		fmt.Fprintf(stdout, "\npgtide demo: %v: stopping\n", sig)
	case <-srv.Done():
		fmt.Fprintln(stderr, "pgtide demo: pgtide stopped unexpectedly")
	}
	srv.Close()
	select {
	case <-srv.Done():
	case <-time.After(10 * time.Second):
		fmt.Fprintln(stderr, "pgtide demo: pgtide did not stop within 10s")
	}
	return 0
}

func interrupted(sigs <-chan os.Signal) bool {
	select {
	case <-sigs:
		return true
	default:
		return false
	}
}

// createDemoObjects creates role demo (password demo) and database demo.
func createDemoObjects(c *pgcluster.Cluster) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, c.SuperConnString("postgres"))
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.Background())
	for _, sql := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", demoUser, demoPassword),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", demoDB, demoUser),
	} {
		if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	return nil
}

// demoConfig is the demo's pgtide configuration, built in code.
func demoConfig(pgPort, listenPort int) *config.Config {
	cfg := config.Default()
	cfg.Listen = []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(listenPort))}
	cfg.PoolMode = config.PoolTransaction
	cfg.LogFormat = "console"
	cfg.ShutdownTimeout = config.Duration{Duration: 5 * time.Second}
	cfg.Databases[demoDB] = config.Database{Host: "127.0.0.1", Port: pgPort, DBName: demoDB}
	cfg.Users[demoUser] = config.User{Password: demoPassword}
	cfg.AdminUsers = []string{demoUser} // so the printed SHOW POOLS line works
	return cfg
}

// listenDemo starts pgtide's listener on port, or on a free port when port is
// busy (or 0).
func listenDemo(c *pgcluster.Cluster, port int, log zerolog.Logger, stderr io.Writer) (*proxy.Server, *net.TCPAddr, error) {
	var lastErr error
	for attempt := 0; attempt < 4; attempt++ {
		p := port
		if attempt > 0 || p == 0 {
			var err error
			if p, err = pgcluster.FreePort(); err != nil {
				return nil, nil, err
			}
		}
		srv := proxy.New(demoConfig(c.Port, p), log)
		if err := srv.Listen(); err != nil {
			lastErr = err
			if attempt == 0 && port != 0 {
				fmt.Fprintf(stderr, "pgtide demo: port %d is busy; using a free port\n", port)
			}
			continue
		}
		for _, a := range srv.Addrs() {
			if ta, ok := a.(*net.TCPAddr); ok {
				return srv, ta, nil
			}
		}
		srv.Close()
		return nil, nil, errors.New("pgtide has no TCP listener")
	}
	return nil, nil, fmt.Errorf("cannot listen: %w", lastErr)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
