#!/usr/bin/env bash
# Measures the time from a fault to its notification, end to end, with the production
# settings: the exporter at its default cycle, prometheus/prometheus.yml's scrape and
# evaluation intervals, rules/etcd-alerts.yml's rule groups and `for`s, and the relay running
# alerting/relay.yml (grouping, group_wait, inhibition) delivering to local PagerDuty, Slack
# and dead man's switch stand-ins. The test changes nothing of the shipped files but
# addresses and secrets, so these are the figures a user gets (see "Timing" at the head of
# rules/etcd-alerts.yml for what they add up to).
#
# It runs the end-to-end test tests/tests/alert_chain.rs (the same one CI runs) RUNS times
# (default 3) and summarises the `chain:` lines it prints: for each notification, the
# seconds from the kill (or the restart, for resolutions) to its arrival at the stand-in
# (or at the relay, for the inhibited alert). For many samples of the page alone, after
# a kill and after a freeze, see scripts/bench-quorum-page.sh.
#
# Usage: ./scripts/bench-alerts.sh [RUNS]     (about 7 minutes a run after the build)
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"
cd "$(dirname "$0")/.."

runs=${1:-3}
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$runs'"
out=$(mktemp -d)
log "building the test"
cargo test -p tests --test alert_chain --no-run --quiet
for i in $(seq 1 "$runs"); do
    log "run $i of $runs"
    cargo test -p tests --test alert_chain --quiet \
        a_failing_member -- --nocapture >"$out/run-$i.log" 2>&1 ||
        { grep -A3 panicked "$out/run-$i.log" >&2; die "run $i failed; its log: $out/run-$i.log"; }
    grep '^chain:' "$out/run-$i.log" >&2
done
echo
echo "seconds from the fault (or the restart) to the notification, $runs runs, shipped settings:"
cat "$out"/run-*.log | grep '^chain: .* after the' | python3 -c '
import re, statistics, sys
from collections import defaultdict
seen = defaultdict(list)
for line in sys.stdin:
    m = re.match(r"chain: (.*?) ([0-9.]+)(ms|s) after the ([a-z ]+)", line.strip())
    if not m:
        continue
    what, value, unit, fault = m.groups()
    what = re.sub(r"\(m\d\)|on m\d", "(member)", what) + " after the " + fault
    seen[what].append(float(value) / (1000 if unit == "ms" else 1))
for what, v in seen.items():
    print(f"  {what:75s} min {min(v):5.1f}  median {statistics.median(v):5.1f}  max {max(v):5.1f}  (n={len(v)})")
'
rm -rf "$out"
