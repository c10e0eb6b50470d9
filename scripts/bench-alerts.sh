#!/usr/bin/env bash
# Measures the time from a fault to its notification, end to end, with the production
# defaults: the exporter's 5s cycle, prometheus/prometheus.yml's scrape intervals (exporter
# 5s, the rest 15s) and evaluation interval (15s; the quorum rules 10s, set in
# rules/etcd-alerts.yml), and the relay delivering to local Slack and PagerDuty stand-ins.
#
# It runs the end-to-end test tests/tests/alert_chain.rs RUNS times (default 3) with
# ETCD_MONITOR_CHAIN_SHIPPED_INTERVALS set, so the test keeps the shipped intervals instead
# of its 1s ones, and summarises the `chain:` lines it prints: for each notification, the
# seconds from the kill (or the restart, for resolutions) to its arrival at the stand-in.
# CI runs the same test with 1s intervals; the figures there are printed with --nocapture.
#
# Usage: ./scripts/bench-alerts.sh [RUNS]     (about 6 minutes a run after the build)
#        INTERVALS=test ./scripts/bench-alerts.sh [RUNS]   the test's 1s intervals instead
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"
cd "$(dirname "$0")/.."

runs=${1:-3}
out=$(mktemp -d)
log "building the test"
cargo test -p tests --test alert_chain --no-run --quiet
for i in $(seq 1 "$runs"); do
    log "run $i of $runs"
    if [[ "${INTERVALS:-shipped}" == shipped ]]; then
        export ETCD_MONITOR_CHAIN_SHIPPED_INTERVALS=1
    fi
    cargo test -p tests --test alert_chain --quiet \
        a_failing_member -- --nocapture >"$out/run-$i.log" 2>&1 ||
        { grep -A3 panicked "$out/run-$i.log" >&2; die "run $i failed; its log: $out/run-$i.log"; }
    grep '^chain:' "$out/run-$i.log" >&2
done
echo
echo "seconds from the fault (or the restart) to the notification, $runs runs:"
cat "$out"/run-*.log | grep '^chain: .* after the' | python3 -c '
import re, statistics, sys
from collections import defaultdict
seen = defaultdict(list)
for line in sys.stdin:
    m = re.match(r"chain: (.*?) ([0-9.]+)(ms|s) after the (.*)", line.strip())
    if not m:
        continue
    what, value, unit, _ = m.groups()
    what = re.sub(r"\(m\d\)|on m\d", "(member)", what)
    seen[what].append(float(value) / (1000 if unit == "ms" else 1))
for what, v in seen.items():
    print(f"  {what:55s} min {min(v):5.1f}  median {statistics.median(v):5.1f}  max {max(v):5.1f}  (n={len(v)})")
'
rm -rf "$out"
