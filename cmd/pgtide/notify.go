package main

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/proxy"
)

// statusInterval is how often STATUS= is refreshed for systemctl status.
const statusInterval = 5 * time.Second

// notifier tells systemd (Type=notify) what the daemon is doing, with
// sd_notify(3) datagrams on $NOTIFY_SOCKET: READY=1 once the listeners are
// open, RELOADING=1 (with MONOTONIC_USEC, as Type=notify-reload expects since
// systemd 253) then READY=1 around a SIGHUP reload, STOPPING=1 when shutdown
// starts, and STATUS= with client and server counts every few seconds.
// Without NOTIFY_SOCKET every method does nothing.
//
// The protocol is implemented by github.com/coreos/go-systemd/v22/daemon, the
// maintained client most Go daemons use: it handles abstract socket names
// (a leading "@") and keeps the datagram details out of pgtide.
type notifier struct {
	log      zerolog.Logger
	mu       sync.Mutex
	stopping bool
	stop     chan struct{}
	stopOnce sync.Once
}

func newNotifier(log zerolog.Logger) *notifier {
	return &notifier{log: log, stop: make(chan struct{})}
}

func (n *notifier) send(state string) {
	sent, err := daemon.SdNotify(false, state)
	if err != nil {
		n.log.Warn().Err(err).Msg("sd_notify failed")
	} else if sent {
		n.log.Debug().Str("state", state).Msg("sd_notify")
	}
}

// Ready says startup (or a reload) is finished.
func (n *notifier) Ready(srv *proxy.Server) {
	n.send(daemon.SdNotifyReady + "\nSTATUS=" + statusLine(srv))
}

// Reloading says a reload starts; Ready must follow.
func (n *notifier) Reloading() {
	n.send(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=reloading configuration")
}

// Stopping says shutdown has begun (sent once).
func (n *notifier) Stopping(why string) {
	n.mu.Lock()
	first := !n.stopping
	n.stopping = true
	n.mu.Unlock()
	if first {
		n.send(daemon.SdNotifyStopping + "\nSTATUS=" + why)
	}
}

// StatusLoop refreshes STATUS= until Close; it does nothing without
// NOTIFY_SOCKET.
func (n *notifier) StatusLoop(srv *proxy.Server) {
	if !notifySocketSet() {
		return
	}
	go func() {
		t := time.NewTicker(statusInterval)
		defer t.Stop()
		for {
			select {
			case <-n.stop:
				return
			case <-t.C:
				n.send("STATUS=" + statusLine(srv))
			}
		}
	}()
}

// Close stops the status loop.
func (n *notifier) Close() { n.stopOnce.Do(func() { close(n.stop) }) }

// statusLine is the one-line summary shown by systemctl status.
func statusLine(srv *proxy.Server) string {
	var waiting, servers, idle int
	pools := srv.Pools()
	for _, p := range pools {
		waiting += p.Waiting
		servers += p.Open
		idle += p.Idle
	}
	state := "accepting clients"
	if !srv.Ready() {
		state = "shutting down"
	}
	return fmt.Sprintf("%s; clients: %d (%d waiting), servers: %d (%d idle), pools: %d",
		state, srv.Clients(), waiting, servers, idle, len(pools))
}

func notifySocketSet() bool { return os.Getenv("NOTIFY_SOCKET") != "" }
