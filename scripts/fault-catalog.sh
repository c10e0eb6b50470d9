#!/usr/bin/env bash
# The fault catalog (issue 14): for each fault, the alert it raises, its severity, the
# receiver it reaches, and the seconds from the fault to the notification and from the
# fault's removal to the resolution, measured end to end with the shipped settings.
#
# Runs tests/tests/fault_catalog.rs and fault_slow_disk.rs (a FUSE filesystem that delays
# fsync under one member's data dir; about 27 minutes), every test including the
# #[ignore]d ones (each
# starts its own stack: 3 etcd members, an agent per member, the exporter, a real
# Prometheus on the shipped prometheus/prometheus.yml and rules/, the relay on the shipped
# alerting/relay.yml, and local stand-ins for PagerDuty, Slack and the heartbeat's dead
# man's switch), one at a time, and makes a markdown table of the `catalog:` lines they
# print. The `catalog-note:` lines (fill levels, the heartbeat's period and silence) follow
# the table.
#
# Usage: ./scripts/fault-catalog.sh [FILTER]   FILTER: a test name or part of it, e.g.
#        member_frozen, leader_killed, nospace, database_near_quota, agent_down,
#        exporter_down, relay_down, member_partitioned. About an hour for all of them
#        after the build: the rules' `for` and the warnings' 30s group_wait and 5m group_interval (a
#        warning's resolution reaches chat at the group's next flush, up to 5 minutes
#        after its first message) set the pace.
# member_partitioned runs its stack in network namespaces it creates (each member in its
# own, iptables dropping what is forwarded between the cut member and its peers): it needs
# root, iproute2, iptables and util-linux's unshare and nsenter, and fails without them.
# The whole output of the run is kept in FAULT_CATALOG_LOG (default: a temp file, printed).
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"
cd "$(dirname "$0")/.."

filter=${1:-}
out=${FAULT_CATALOG_LOG:-$(mktemp -t fault-catalog.XXXXXX.log)}
log "building the tests"
cargo test -p tests --test fault_catalog --test fault_slow_disk --no-run --quiet
log "running the fault catalog${filter:+ (filter: $filter)}; the run's log: $out"
started=$(date +%s)
rc=0
# --include-ignored alone: libtest refuses it together with --ignored. An empty filter
# vanishes (no empty argument).
cargo test -p tests --test fault_catalog --test fault_slow_disk -- --include-ignored \
    --test-threads=1 --nocapture ${filter:+"$filter"} >"$out" 2>&1 || rc=$?
elapsed=$(($(date +%s) - started))

echo
echo "| fault | alert | severity | receiver | fired (s) | resolved (s) |"
echo "|---|---|---|---|---:|---:|"
grep '^catalog: ' "$out" | sed 's/^catalog: //' | awk -F' [|] ' '{
    fired = $5; sub(/^fired /, "", fired); sub(/s$/, "", fired)
    res = $6; sub(/^resolved /, "", res); sub(/s$/, "", res)
    printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, fired, res
}'
echo
grep '^catalog-note: ' "$out" | sed 's/^catalog-note: /- /' || true
grep '^test result: ' "$out" >&2 || true
log "total $((elapsed / 60))m$((elapsed % 60))s"
if [[ $rc -ne 0 ]]; then
    grep -A12 'panicked' "$out" >&2 || true
    die "some fault tests failed (exit $rc); the run's log: $out"
fi
