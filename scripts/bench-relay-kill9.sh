#!/usr/bin/env bash
# kill -9 right after the 200, N times (default 100): what at-least-once costs the relay.
#
# Runs the test kill_9_right_after_the_200_loses_nothing of alerting/tests/durability.rs
# with a release build and ETCD_MONITOR_KILL9_TRIALS=N. Each round POSTs one distinct
# firing alert to the real etcd-monitor-relay binary, kills it (SIGKILL) as soon as the 200
# arrives, starts it again on the same data dir and waits (up to 15 s) for the alert's
# notification at a local webhook stand-in. At the end it prints
#   trials, lost, duplicates
# where lost = acknowledged alerts that never reached the stand-in (must be 0) and
# duplicates = alerts whose notification reached it more than once (the delivery went out
# before the kill, and its outcome was not recorded yet).
#
# Usage: ./scripts/bench-relay-kill9.sh [N]   (about 0.2 s a round after the build)
# Loopback only; the temp dirs are removed by the test. KEEP_OUTPUT=1 keeps the test's
# output file.
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"
cd "$(dirname "$0")/.."

n=${1:-100}
[[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$n'"
test_name=kill_9_right_after_the_200_loses_nothing

output_file bench-relay-kill9

log "building the test (release)"
cargo test --release --locked -p alerting --test durability --no-run --quiet

log "running $n rounds"
rc=0
ETCD_MONITOR_KILL9_TRIALS=$n run_wait cargo test --release --locked -p alerting \
    --test durability --quiet "$test_name" -- --exact --nocapture >"$out" 2>&1 || rc=$?

# kill9: trials=N lost=L duplicates=D extra_copies=E delivered_before_the_kill=B elapsed=S
line=$(grep '^kill9: ' "$out" | tail -n 1 || true)
if [[ -z "$line" ]]; then
    tail -n 30 "$out" >&2
    die "the test printed no result line (exit $rc)"
fi
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$line"; }
trials=$(field trials)
lost=$(field lost)
dups=$(field duplicates)

echo "trials, lost, duplicates"
echo "$trials, $lost, $dups"
echo "($(field extra_copies) extra copies in all; the delivery had reached the stand-in before the kill in $(field delivered_before_the_kill) rounds; $(field elapsed) s)" >&2
if [[ $rc -ne 0 ]]; then
    grep -A5 'panicked' "$out" >&2 || tail -n 30 "$out" >&2
    die "the test failed (exit $rc)"
fi
