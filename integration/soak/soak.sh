#!/usr/bin/env bash
# Bounded soak run of pgtide (not run in CI). Starts a throwaway PostgreSQL
# and pgtide, runs mixed pgbench workloads (transaction and session mode,
# simple/extended/prepared, reconnect-per-transaction), kills pgbench
# processes at random (clients vanishing mid-transaction), terminates random
# backends, restarts PostgreSQL once half-way, and samples pgtide's RSS,
# goroutines, descriptors, pool gauges and the workloads' errors every 10 s
# into a CSV. It fails if pgtide exits, or if clients, servers, goroutines or
# descriptors do not return to normal after a 10 s quiet period.
#
#   integration/soak/soak.sh [DURATION] [CSV]
#
# DURATION defaults to 10m; CSV to /tmp/pgtide-soak-<time>.csv.
# Needs the PostgreSQL server binaries (postgresql apt package or
# PGTIDE_PG_BINDIR) and pgbench (postgresql-client).
set -euo pipefail
cd "$(dirname "$0")/../.."
dur=${1:-10m}
csv=${2:-/tmp/pgtide-soak-$(date +%s).csv}
case $dur in
*h) secs=$((${dur%h} * 3600)) ;;
*m) secs=$((${dur%m} * 60)) ;;
*s) secs=${dur%s} ;;
*) secs=$dur; dur=${dur}s ;;
esac
SOAK_DURATION=$dur SOAK_CSV=$csv go test -tags soak ./integration/soak -run TestSoak -count=1 -v -timeout "$((secs + 300))s" 2>&1 |
	grep -v '^\s*{' | grep -Ev '^\s*$'
echo "samples: $csv"
column -s, -t < "$csv" 2>/dev/null || cat "$csv"
