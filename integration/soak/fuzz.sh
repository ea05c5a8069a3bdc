#!/usr/bin/env bash
# Run each fuzz target of package proxy for a while (not run in CI; CI runs
# the seeds as ordinary tests).
#
#   integration/soak/fuzz.sh [DURATION] [TARGET...]
#
# DURATION is a go test -fuzztime value (default 2m). TARGETs default to all.
# New crashers land in proxy/testdata/fuzz/<Target>/ and make the run fail;
# commit them as regression seeds once fixed. A summary line per target
# (execs, new interesting inputs, result) is printed at the end.
set -uo pipefail
cd "$(dirname "$0")/../.."
dur=${1:-2m}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	targets=(FuzzStartupPacket FuzzFrontendFraming FuzzSessionStateMachine)
fi
status=0
summary=()
for t in "${targets[@]}"; do
	log=$(mktemp)
	echo "== $t for $dur"
	go test ./proxy -run '^$' -fuzz "^${t}\$" -fuzztime "$dur" 2>&1 | tee "$log" | grep -E '^(fuzz: elapsed|---|FAIL|ok|panic)' | tail -n 400
	rc=${PIPESTATUS[0]}
	last=$(grep -E '^fuzz: elapsed' "$log" | tail -n 1)
	if [ "$rc" -ne 0 ]; then
		status=1
		res=FAIL
		# The failure and the input that caused it (first 40 lines).
		grep -vE '^(fuzz: elapsed|goroutine |\s*$)' "$log" | grep -A40 -m1 -E -- '--- FAIL|panic:' | head -n 40
	else
		res=ok
	fi
	summary+=("$t: $res; $last")
	rm -f "$log"
done
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $status
