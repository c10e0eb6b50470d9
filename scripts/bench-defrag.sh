#!/usr/bin/env bash
# What a defrag costs the writers: write p50/p99/p99.9/max and throughput of a steady,
# rate-limited write load (etcd-monitor-bench --rate) on a 3-member cluster whose database
# is ~100 MB with about half of it free pages,
#   1. with no defrag (the baseline),
#   2. during `etcd-monitor-ctl defrag --rolling` (followers one at a time, leadership
#      moved once, the former leader last),
#   3. during `etcd-monitor-ctl --force defrag` without --rolling (every member at once:
#      what the guards refuse by default).
# The database is filled by writing KEYS keys of VAL_SIZE bytes twice and compacting
# (the first values become free pages); before run 3 every key is overwritten once more and
# compacted, so that defrag too starts from ~100 MB with half of it free.
#
# The load starts DEFRAG_AFTER seconds before the defrag and lasts LOAD_SECONDS; the summary
# says whether it covered the whole defrag. The bench measures each request from when it is
# sent, so a stall shows in the tail (p99.9, max) more than in p99 and throughput.
#
# Run from anywhere: bash scripts/bench-defrag.sh
# Needs etcd, etcdctl, jq, bc and cargo (it builds release binaries of etcd-monitor-bench
# and etcd-monitor-ctl unless BENCH_BIN and CTL_BIN are given). Uses 127.0.0.1 ports
# 37000-37021. KEEP_TMP=1 keeps the temp dir (etcd logs, bench reports, ctl output).
# Settings (environment): KEYS (50000), VAL_SIZE (1024), RATE (500 writes/s),
# LOAD_SECONDS (30), DEFRAG_AFTER (3 s into the load), BENCH_BIN, CTL_BIN.
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"
cd "$(dirname "$0")/.."
root=$(pwd)

KEYS=${KEYS:-50000}
VAL_SIZE=${VAL_SIZE:-1024}
RATE=${RATE:-500}
LOAD_SECONDS=${LOAD_SECONDS:-30}
DEFRAG_AFTER=${DEFRAG_AFTER:-3}
PORT_BASE=37000

tmp=""
etcd_pids=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    set +e
    for p in "${etcd_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${etcd_pids[@]}"; do stop_pid "$p"; done
    if [[ -n "$tmp" && -d "$tmp" ]]; then
        if [[ "${KEEP_TMP:-0}" == 1 ]]; then log "kept $tmp"; else rm -rf "$tmp"; fi
    fi
    [[ $rc -ne 0 ]] && log "failed (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

for tool in etcd etcdctl jq bc; do command -v "$tool" >/dev/null || die "$tool not found in PATH"; done
if [[ -z "${BENCH_BIN:-}" || -z "${CTL_BIN:-}" ]]; then
    log "building (release)"
    cargo build --release --locked -p bench -p ctl
fi
bench=${BENCH_BIN:-$root/target/release/etcd-monitor-bench}
ctl=${CTL_BIN:-$root/target/release/etcd-monitor-ctl}
[[ -x "$bench" && -x "$ctl" ]] || die "binaries missing after the build"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-defrag.XXXXXX")
eps=""
initial=""
for m in 0 1 2; do
    cp=$((PORT_BASE + 10 * m)) pp=$((PORT_BASE + 10 * m + 1))
    for p in $cp $pp; do port_in_use $p && die "port 127.0.0.1:$p is already in use"; done
    eps+="http://127.0.0.1:$cp,"
    initial+="m$m=http://127.0.0.1:$pp,"
done
eps=${eps%,}
initial=${initial%,}
for m in 0 1 2; do
    cp=$((PORT_BASE + 10 * m)) pp=$((PORT_BASE + 10 * m + 1))
    etcd --name "m$m" --data-dir "$tmp/m$m.etcd" \
        --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
        --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
        --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token bench-defrag \
        --quota-backend-bytes $((4 * 1024 * 1024 * 1024)) >"$tmp/etcd-$m.log" 2>&1 &
    etcd_pids+=($!)
done
for _ in $(seq 1 100); do
    etcdctl --endpoints "$eps" endpoint health >/dev/null 2>&1 && break
    nap 0.2
done
etcdctl --endpoints "$eps" endpoint health >/dev/null 2>&1 || die "etcd did not become healthy"

db_sizes() { # the members' DB sizes in MiB, space separated
    etcdctl --endpoints "$eps" endpoint status -w json |
        jq -r '[.[].Status.dbSize / 1048576 | floor | tostring] | join(" ")'
}

db_in_use() { # the members' DB sizes in use in MiB (etcd 3.4 reports it), space separated
    etcdctl --endpoints "$eps" endpoint status -w json |
        jq -r '[.[].Status.dbSizeInUse // 0 | . / 1048576 | floor | tostring] | join(" ")'
}

# write_keys: every key once (the bench, as fast as it goes); an overwritten value stays
# in the database as history until a compaction frees its pages.
write_keys() {
    "$bench" --endpoints "$eps" --conns 4 --clients 32 --total "$KEYS" --key-space "$KEYS" \
        --key-size 16 --val-size "$VAL_SIZE" --prefix /bulk/ --output json write --sequential-keys \
        >"$tmp/fill.json" 2>"$tmp/fill.log" || die "filling failed: $(tail -n 3 "$tmp/fill.log")"
    [[ "$(jq '.writes.errors' "$tmp/fill.json")" == 0 ]] || die "filling saw write errors"
}

# compact_all: a physical compaction to the current revision; every overwritten value's
# page becomes free, which is what a defrag gives back.
compact_all() {
    local rev
    rev=$(etcdctl --endpoints "$eps" endpoint status -w json | jq '[.[].Status.header.revision] | max')
    etcdctl --endpoints "$eps" compaction --physical "$rev" >/dev/null
}

# fragment PASSES: write every key PASSES times, then compact.
fragment() {
    local i t0
    t0=$(date +%s.%N)
    for ((i = 1; i <= $1; i++)); do
        log "writing $KEYS keys of $VAL_SIZE B (pass $i of $1)"
        write_keys
    done
    compact_all
    log "fragmented in $(echo "$(date +%s.%N) - $t0" | bc -l | xargs printf '%.0f') s; DB sizes (MiB): $(db_sizes), in use: $(db_in_use)"
}

pct() { # pct PERCENT FILE: that percentile of a bench JSON report, in ms (flat or as pairs)
    jq --argjson p "$1" '(.latency["p\($p)"] // (.latency.percentiles[] | select(.[0] == $p) | .[1])) * 1000' "$2"
}

# load NAME [DEFRAG-COMMAND...]: the write load for LOAD_SECONDS, with the command started
# DEFRAG_AFTER seconds in; one line of the summary.
load() {
    local name=$1
    shift
    local before
    before=$(db_sizes)
    log "$name: load $RATE writes/s for ${LOAD_SECONDS}s${1:+, defrag ${DEFRAG_AFTER}s in}"
    "$bench" --endpoints "$eps" --conns 4 --clients 16 --rate "$RATE" --duration "${LOAD_SECONDS}s" \
        --warmup 0s --val-size 256 --key-space 1000 --prefix /load/ --output json write \
        >"$tmp/$name.json" 2>"$tmp/$name.bench.log" &
    local bench_pid=$! defrag_s="-" covered="-"
    if [[ $# -gt 0 ]]; then
        nap "$DEFRAG_AFTER"
        local t0 t1
        t0=$(date +%s.%N)
        "$@" >"$tmp/$name.defrag.log" 2>&1 || { cat "$tmp/$name.defrag.log" >&2; die "$name: the defrag failed"; }
        t1=$(date +%s.%N)
        defrag_s=$(echo "$t1 - $t0" | bc -l | xargs printf '%.2f')
        sed 's/^/    /' "$tmp/$name.defrag.log" >&2
        covered=$(echo "$DEFRAG_AFTER + $defrag_s <= $LOAD_SECONDS" | bc -l | sed 's/1/yes/; s/0/NO/')
    fi
    wait "$bench_pid" || true
    local f="$tmp/$name.json"
    [[ -s "$f" ]] || die "$name: no bench report ($(tail -n 3 "$tmp/$name.bench.log"))"
    printf '%-16s %9.1f %8.1f %8.1f %8.1f %8.1f %7s %9s %8s   %-12s %s\n' "$name" \
        "$(jq '.throughput' "$f")" "$(pct 50 "$f")" "$(pct 99 "$f")" "$(pct 99.9 "$f")" \
        "$(jq '.latency.slowest * 1000' "$f")" "$(jq '[.errors[]] | add // 0' "$f")" \
        "$defrag_s" "$covered" "$before" "$(db_sizes)" >>"$tmp/summary"
}

printf '%-16s %9s %8s %8s %8s %8s %7s %9s %8s   %-12s %s\n' run "writes/s" "p50 ms" "p99 ms" "p99.9 ms" "max ms" \
    errors "defrag s" covered "DB MiB" "DB MiB after" >"$tmp/summary"
fragment 2
load no-defrag
load rolling-defrag "$ctl" --endpoints "$eps" --command-timeout 5s defrag --rolling
fragment 1
load all-at-once "$ctl" --endpoints "$eps" --command-timeout 5s --force defrag
echo
echo "etcd $(etcd --version | sed -n 's/^etcd Version: //p'), $(nproc) CPUs; DB: $KEYS keys x $VAL_SIZE B written twice and compacted"
echo "load: $RATE writes/s of 256 B (16 clients, 4 connections over the 3 members) for ${LOAD_SECONDS}s, defrag ${DEFRAG_AFTER}s in"
cat "$tmp/summary"
for run in no-defrag rolling-defrag all-at-once; do # the errors by kind, where there were any
    kinds=$(jq -c '.errors | select(length > 0)' "$tmp/$run.json")
    [[ -z "$kinds" ]] || echo "$run errors: $kinds"
done
