package main

import (
	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/proxy"
	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/metrics"
)

// startMetrics installs the metrics observer on srv (before Serve) and opens
// metrics_listen. It returns nil, nil when metrics_listen is "". A port that
// cannot be opened is an error: the operator asked for it.
func startMetrics(cfg *config.Config, srv *proxy.Server, log zerolog.Logger) (*metrics.Endpoint, error) {
	if cfg.MetricsListen == "" {
		return nil, nil
	}
	m := metrics.New(srv, version)
	srv.SetObserver(m)
	return metrics.Listen(cfg.MetricsListen, m.Handler(), log)
}
