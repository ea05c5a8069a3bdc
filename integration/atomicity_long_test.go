//go:build ledgerlong

package integration

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtide/pgtide/integration/pgtest"
)

// TestAtomicityLedgerRestarts is the longer run for docs/reliability.md,
// by hand (the build tag keeps it out of the suite):
//
//	go test -tags ledgerlong -run TestAtomicityLedgerRestarts ./integration/
//
// It runs PGTIDE_LEDGER_LONG (default 3m), terminating backends and
// restarting PostgreSQL (fast and immediate shutdowns) while the ledger
// runs on a server of its own.
func TestAtomicityLedgerRestarts(t *testing.T) {
	v := os.Getenv("PGTIDE_LEDGER_LONG")
	if v == "" {
		v = "3m"
	}
	dur, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("PGTIDE_LEDGER_LONG: %v", err)
	}
	// Durable commits: with the harness's synchronous_commit=off an
	// immediate shutdown loses acknowledged commits by design.
	pg := pgtest.StartPostgres(t, pgtest.WithSetting("synchronous_commit", "on"),
		pgtest.WithSetting("fsync", "on"), pgtest.WithSetting("full_page_writes", "on"))
	e := &env{t: t, pg: pg, User: "ledgeruser", DB: "ledgerdb", Pass: "Ledger-pw-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	e.secrets = []string{e.Pass, pg.Password}
	pgtest.CreateRole(t, pg, e.User, e.Pass)
	pgtest.CreateDatabase(t, pg, e.DB, e.User)
	e.conf = defaultConf()
	e.conf.PoolMode = "transaction"
	e.conf.MaxClientConn = 200
	e.conf.Databases = []dbConf{{Name: e.DB, PoolSize: 4}}
	e.conf.Users[e.User] = e.Pass
	e.tide = pgtest.StartPgtide(t, e.conf.TOML(pg.Port))
	t.Cleanup(e.checkNoSecrets)
	setupLedger(t, connect(t, e.DirectURL()), 24)

	l := &ledger{url: e.URL(), clients: 24}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { l.run(stop); close(done) }()
	var kinds []string
	end := time.Now().Add(dur)
	for round := 0; time.Now().Before(end); round++ {
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond) // random gaps between faults
		switch round % 6 {
		case 2:
			pg.Restart(t)
			kinds = append(kinds, "restart-fast")
		case 5:
			pg.RestartImmediate(t)
			kinds = append(kinds, "restart-immediate")
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			mon, err := pgx.Connect(ctx, pg.SuperConnString(e.DB))
			if err == nil {
				_, _ = terminateBackends(ctx, mon, e.DB)
				mon.Close(ctx)
			}
			cancel()
			kinds = append(kinds, "terminate")
		}
	}
	close(stop)
	<-done
	counts := map[string]int{}
	for _, k := range kinds {
		counts[k]++
	}
	t.Logf("%s of faults: %v", dur, counts)
	if v := l.check(t, connect(t, e.DirectURL())); v > 0 {
		t.Fatalf("%d atomicity violations", v)
	}
}
