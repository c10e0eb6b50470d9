#!/usr/bin/env bash
# How long a lost quorum takes to reach PagerDuty, with the production settings, over many
# samples: the exporter at its default cycle, prometheus/prometheus.yml, rules/ and
# alerting/relay.yml as shipped (only addresses and secrets changed), a real 3-member etcd
# cluster and a local PagerDuty stand-in.
#
# It runs the ignored test quorum_loss_reaches_pagerduty of tests/tests/alert_chain.rs,
# which, RUNS times (default 5) for each of two faults, at a random moment:
#   kill    SIGKILLs the leader and one other member (their connections break, which wakes
#           the exporter at once), then restarts them;
#   freeze  SIGSTOPs the leader and one other member (nothing breaks: the exporter's calls
#           time out), then SIGCONTs them;
# measures the fault to EtcdQuorumLost's trigger at the stand-in (`quorum: <fault> <s>s`),
# and waits for the incident's resolve before the next run. This prints min, median, max
# and n per fault. The product promises under 30s; "Timing" at the head of
# rules/etcd-alerts.yml says what the shipped settings add up to.
#
# Usage: ./scripts/bench-quorum-page.sh [RUNS]   (about 1.5 minutes a run, two runs per RUNS)
# KEEP_OUTPUT=1 keeps the test's output file.
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"
cd "$(dirname "$0")/.."

runs=${1:-5}
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$runs'"

output_file bench-quorum-page

log "building the test"
cargo test -p tests --test alert_chain --no-run --quiet

log "running $runs runs of each fault"
rc=0
ETCD_MONITOR_QUORUM_RUNS=$runs run_wait cargo test -p tests --test alert_chain --quiet \
    -- --ignored --nocapture quorum_loss >"$out" 2>&1 || rc=$?
grep '^quorum' "$out" >&2 || true
if [[ $rc -ne 0 ]]; then
    grep -A3 panicked "$out" >&2 || tail -n 30 "$out" >&2
    die "the test failed (exit $rc)"
fi
echo
echo "seconds from the fault to EtcdQuorumLost at PagerDuty, shipped settings:"
grep '^quorum: ' "$out" | python3 -c '
import re, statistics, sys
from collections import defaultdict
seen = defaultdict(list)
for line in sys.stdin:
    m = re.match(r"quorum: (\S+) ([0-9.]+)s", line.strip())
    if m:
        seen[m.group(1)].append(float(m.group(2)))
if not seen:
    sys.exit("bench: ERROR: the test printed no quorum: line")
for fault, v in seen.items():
    print(f"  {fault:8s} min {min(v):5.1f}  median {statistics.median(v):5.1f}  max {max(v):5.1f}  (n={len(v)})")
'
