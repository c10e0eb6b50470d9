#!/usr/bin/env bash
# etcd-monitor-bench next to etcd's own load tools, against a throw-away local 3-member
# etcd cluster, all in one run (same cluster, same host, one after the other).
#
# What it measures:
#   a. the same load twice: `etcdctl check perf --load s` (60 s, 150 writes/s, 1 KiB
#      values, 256-byte keys, 50 clients; its PASS/FAIL lines are printed as they are),
#      then etcd-monitor-bench --conns 1 --clients 50 --duration 60s --rate 150
#      --key-size 256 --val-size 1024 --key-space 100000 write: throughput, p99, slowest.
#      For both: the client's CPU seconds (user+sys) over the run and the number of TCP
#      connections it holds to the cluster (sampled once, 30 s into the run).
#   b. etcd-monitor-bench at full speed, --conns 10 --clients 100 --total 30000:
#      write with 256-byte values, read --consistency l, read --consistency s
#      (throughput and p99 each).
#   c. whether etcd's Go `benchmark` tool (go.etcd.io/etcd/tools/benchmark) is available:
#      in PATH, or as a Debian package (apt-cache search etcd | grep -i bench). Nothing is
#      downloaded or built for it.
#   d. the client CPU of etcd-monitor-bench in (b) and (e): /usr/bin/time -f "%U %S %M",
#      as (user+sys) / (requests / 10000), i.e. CPU seconds per 10k requests, and the
#      client's peak RSS. The read runs first fill the key space (1000 puts of 8-byte
#      values, not counted as requests); that CPU is in their figure.
#   e. the workloads of etcd's `benchmark` that `check perf` has no counterpart for, with
#      that tool's defaults where it has them: txn-put (--conns 10 --clients 100 --total
#      30000 txn --ops-per-txn 1, then --ops-per-txn 4) and watch-latency (1000 puts at
#      100/s seen by 100 watchers on 10 streams: --total 1000 --rate 100 watch --watchers
#      100 --streams 10; its latency is put to event, its CPU per 10k events).
# etcd's Go `benchmark` is not packaged in Debian and nothing is fetched here, so the
# side-by-side comparison is with `etcdctl check perf` (a) and with the figures of
# earlier runs in README.md ("## The bench").
# The summary also gives nproc, the load average at the start and at the end, and the
# etcd version. The cluster is stopped before the summary, which says whether any etcd
# process of this run was left over.
#
# Run from anywhere, as root if /usr/bin/time still has to be installed:
#     ./scripts/bench-bench.sh            # or: bash scripts/bench-bench.sh
# Takes about 4 minutes after the build. Needs etcd, etcdctl, python3, timeout, pgrep and
# ss (iproute2); installs the `time` package with apt-get if /usr/bin/time is missing.
# Uses 127.0.0.1 ports 35379/35479/35579 (etcd clients) and 35380/35480/35580 (peers).
# KEEP_TMP=1 keeps the temp dir (etcd data, logs, raw outputs) for inspection.
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"
cd "$(dirname "$0")/.."
root=$(pwd)


# ---------------------------------------------------------------- settings
PERF_LIMIT_S=240      # timeout for the 60 s runs of (a)
FULL_LIMIT_S=600      # timeout for each --total 30000 run of (b)
CONN_SAMPLE_AT_S=30   # when the connection count is sampled in (a)
client_ports=(35379 35479 35579)
peer_ports=(35380 35480 35580)
names=(bb1 bb2 bb3)

# ---------------------------------------------------------------- state + cleanup
tmp=""
declare -A etcd_pid=() # member name -> pid
child_pid=""           # the load tool currently running (a `timeout` process)


# Pids of etcd processes whose data dir is in this run's temp dir (none once stopped).
own_etcd_pids() {
    [[ -n "$tmp" ]] || return 0
    pgrep -f -- "--data-dir $tmp/" || true
}

stop_cluster() {
    local n p
    for n in "${!etcd_pid[@]}"; do
        stop_pid "${etcd_pid[$n]}"
        unset "etcd_pid[$n]"
    done
    # Belt and braces: anything still running on this run's data dirs.
    for p in $(own_etcd_pids); do
        log "etcd pid $p still running after stop; killing it"
        kill -KILL "$p" 2>/dev/null || true
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    # `timeout` passes the TERM on to its whole process group (time + the tool).
    stop_pid "$child_pid"
    stop_cluster
    if [[ -n "$tmp" && -d "$tmp" ]]; then
        if [[ $rc -ne 0 ]]; then
            local f
            for f in "$tmp"/*.log "$tmp"/*.err; do
                [[ -s "$f" ]] || continue
                echo "---- last lines of $(basename "$f") ----" >&2
                tail -n 15 "$f" >&2
            done
        fi
        if [[ "${KEEP_TMP:-0}" == 1 ]]; then
            log "kept $tmp"
        else
            rm -rf "$tmp"
        fi
    fi
    [[ $rc -ne 0 ]] && log "failed (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ---------------------------------------------------------------- prerequisites
for tool in etcd etcdctl python3 timeout pgrep ss apt-cache; do
    command -v "$tool" >/dev/null || die "$tool not found in PATH"
done
if [[ ! -x /usr/bin/time ]]; then
    log "installing time"
    if ! apt-get install -y time >/dev/null 2>&1; then
        apt-get update >/dev/null || die "apt-get update failed (run as root?)"
        apt-get install -y time >/dev/null || die "apt-get install time failed (run as root?)"
    fi
    [[ -x /usr/bin/time ]] || die "/usr/bin/time missing after installing package time"
fi
# The real interpreter, so that pyenv-style shims do not add their start-up to every call.
PY=$(python3 -c 'import sys; print(sys.executable)')

log "building (release)"
cargo build --release --locked -p bench
bin="$root/target/release/etcd-monitor-bench"
[[ -x "$bin" ]] || die "$bin missing after the build"

for p in "${client_ports[@]}" "${peer_ports[@]}"; do
    port_in_use "$p" && die "port 127.0.0.1:$p is already in use"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-bench.XXXXXX")
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
declare -A R=() # results, for the summary
R[load.start]=$(loadavg)

# ---------------------------------------------------------------- etcd cluster
cluster=""
endpoints=""
for i in 0 1 2; do
    cluster+="${names[$i]}=http://127.0.0.1:${peer_ports[$i]},"
    endpoints+="http://127.0.0.1:${client_ports[$i]},"
done
cluster=${cluster%,}
endpoints=${endpoints%,}

start_member() { # start_member INDEX
    local i=$1 name=${names[$1]}
    etcd --name "$name" --data-dir "$tmp/$name.etcd" \
        --listen-client-urls "http://127.0.0.1:${client_ports[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${client_ports[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
        --initial-cluster "$cluster" --initial-cluster-token bench-bench \
        --initial-cluster-state new --logger zap --log-outputs stderr --log-level warn \
        >>"$tmp/$name.log" 2>&1 &
    etcd_pid[$name]=$!
}

ectl() { etcdctl --dial-timeout 1s --command-timeout 2s "$@"; }

wait_healthy() { # wait_healthy TIMEOUT_S
    local deadline=$((SECONDS + $1)) n
    until ectl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; do
        for n in "${!etcd_pid[@]}"; do
            kill -0 "${etcd_pid[$n]}" 2>/dev/null || die "etcd member $n exited; see its log above"
        done
        ((SECONDS < deadline)) || die "etcd cluster not healthy after $1 s"
        sleep 0.5
    done
}

log "starting etcd (3 members) in $tmp"
for i in 0 1 2; do start_member "$i"; done
wait_healthy 60
etcd_version=$(etcd --version 2>/dev/null | sed -n '1s/^etcd Version: //p')
etcdctl_version=$(etcdctl version 2>/dev/null | sed -n '1s/^etcdctl version: //p')
log "etcd $etcd_version healthy at $endpoints"

# ---------------------------------------------------------------- helpers
# TCP connections from process PID to the cluster's client ports.
count_conns() {
    ss -tnpH state established \
        "( dport = :${client_ports[0]} or dport = :${client_ports[1]} or dport = :${client_ports[2]} )" |
        grep -c "pid=$1," || true
}

# run_timed NAME LIMIT_S SAMPLE_AT_S CMD...: runs CMD under /usr/bin/time (-o NAME.time)
# and `timeout LIMIT_S`, stdout to NAME.out and stderr to NAME.err in $tmp; with
# SAMPLE_AT_S > 0, R[NAME.conns] gets CMD's connection count SAMPLE_AT_S s in.
# Sets RC to CMD's exit status (124: timed out). Runs in the background and waits, so
# that a signal to the script is handled at once and cleanup stops the tool.
run_timed() {
    local name=$1 limit=$2 at=$3 deadline tpid pid
    shift 3
    timeout -k 10 "$limit" /usr/bin/time -f "%U %S %M" -o "$tmp/$name.time" "$@" \
        >"$tmp/$name.out" 2>"$tmp/$name.err" &
    child_pid=$!
    if ((at > 0)); then
        deadline=$((SECONDS + at))
        while kill -0 "$child_pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
        # timeout -> time -> the tool
        tpid=$(pgrep -P "$child_pid" | awk "NR == 1" || true)
        pid=""
        [[ -n "$tpid" ]] && pid=$(pgrep -P "$tpid" | awk "NR == 1" || true)
        R[$name.conns]=$([[ -n "$pid" ]] && count_conns "$pid" || echo "n/a")
    fi
    RC=0
    wait "$child_pid" || RC=$?
    child_pid=""
    ((RC != 124)) || die "$name: timed out after $limit s"
}

cpu_secs() { # cpu_secs NAME: user+sys from NAME.time (its last line is "%U %S %M")
    tail -n 1 "$tmp/$1.time" | awk 'NF == 3 { printf "%.2f", $1 + $2; ok = 1 } END { exit !ok }' ||
        die "$1: cannot read /usr/bin/time output: $(cat "$tmp/$1.time")"
}

rss_of() { # rss_of NAME: peak RSS in MiB from NAME.time
    tail -n 1 "$tmp/$1.time" | awk 'NF == 3 { printf "%.1f", $3 / 1024; ok = 1 } END { exit !ok }' ||
        die "$1: cannot read /usr/bin/time output: $(cat "$tmp/$1.time")"
}

# bench_run NAME LIMIT_S SAMPLE_AT_S ARGS...: etcd-monitor-bench with JSON output; fills
# R[NAME.tput|p99|slowest|requests|errors|events|cpu|cpu10k|rss]. The watch workload's
# latency is put to event, and its CPU per 10k is per 10k events.
bench_run() {
    local name=$1 limit=$2 at=$3 figs
    shift 3
    log "$name: etcd-monitor-bench $*"
    run_timed "$name" "$limit" "$at" "$bin" --endpoints "$endpoints" --output json "$@"
    ((RC == 0)) || die "$name: etcd-monitor-bench exited with $RC: $(tail -n 3 "$tmp/$name.err")"
    figs=$("$PY" - "$tmp/$name.out" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
p99 = r["latency"]["p99"]
watch = r.get("watch", {})
errors = r["reads"]["errors"] + r["writes"]["errors"] + watch.get("missing_events", 0)
print(f'{r["throughput"]:.1f} {p99 * 1000:.2f} {r["latency"]["slowest"] * 1000:.2f} '
      f'{r["requests"]} {errors} {r["total_seconds"]:.2f} {watch.get("received_events", 0)}')
EOF
    ) || die "$name: cannot parse the JSON report in $tmp/$name.out"
    read -r "R[$name.tput]" "R[$name.p99]" "R[$name.slowest]" "R[$name.requests]" \
        "R[$name.errors]" "R[$name.secs]" "R[$name.events]" <<<"$figs"
    R[$name.cpu]=$(cpu_secs "$name")
    R[$name.rss]=$(rss_of "$name")
    local ops=${R[$name.requests]}
    [[ ${R[$name.events]} == 0 ]] || ops=${R[$name.events]}
    R[$name.cpu10k]=$(awk -v c="${R[$name.cpu]}" -v n="$ops" \
        'BEGIN { if (n > 0) printf "%.3f", c / (n / 10000); else print "n/a" }')
    echo "$name: ${R[$name.tput]} requests/s, p99 ${R[$name.p99]} ms, slowest ${R[$name.slowest]} ms," \
        "${R[$name.requests]} requests in ${R[$name.secs]} s, ${R[$name.errors]} errors;" \
        "client CPU ${R[$name.cpu]} s (${R[$name.cpu10k]} s/10k), peak RSS ${R[$name.rss]} MiB${R[$name.conns]:+, ${R[$name.conns]} TCP connections}"
}

# ---------------------------------------------------------------- (a) check perf vs bench
log "a: etcdctl check perf --load s (60 s)"
run_timed perf "$PERF_LIMIT_S" "$CONN_SAMPLE_AT_S" etcdctl --endpoints "$endpoints" check perf --load s
# The progress bar uses \r; keep only the verdict lines. Exit status 1 means a FAIL line.
tr '\r' '\n' <"$tmp/perf.out" | grep -E '^(PASS|FAIL)' >"$tmp/perf.lines" || true
[[ -s "$tmp/perf.lines" ]] ||
    die "etcdctl check perf (exit $RC) printed no PASS/FAIL line: $(tail -n 3 "$tmp/perf.err")"
R[perf.rc]=$RC
R[perf.cpu]=$(cpu_secs perf)
R[perf.rss]=$(rss_of perf)
sed 's/^/perf: /' "$tmp/perf.lines"
echo "perf: exit $RC; client CPU ${R[perf.cpu]} s, peak RSS ${R[perf.rss]} MiB, ${R[perf.conns]} TCP connections"

bench_run a.write "$PERF_LIMIT_S" "$CONN_SAMPLE_AT_S" --conns 1 --clients 50 --duration 60s \
    --rate 150 --key-size 256 --val-size 1024 --key-space 100000 write

# ---------------------------------------------------------------- (b) full speed, (d) CPU
bench_run b.write "$FULL_LIMIT_S" 0 --conns 10 --clients 100 --total 30000 --val-size 256 write
bench_run b.read-l "$FULL_LIMIT_S" 0 --conns 10 --clients 100 --total 30000 read --consistency l
bench_run b.read-s "$FULL_LIMIT_S" 0 --conns 10 --clients 100 --total 30000 read --consistency s

# ---------------------------------------------------------------- (e) txn-put, watch-latency
bench_run e.txn1 "$FULL_LIMIT_S" 0 --conns 10 --clients 100 --total 30000 --key-space 100000 \
    txn --ops-per-txn 1
bench_run e.txn4 "$FULL_LIMIT_S" 0 --conns 10 --clients 100 --total 30000 --key-space 100000 \
    txn --ops-per-txn 4
bench_run e.watch "$FULL_LIMIT_S" 0 --conns 10 --clients 1 --total 1000 --rate 100 --prefix wl/ \
    watch --watchers 100 --streams 10

# ---------------------------------------------------------------- (c) etcd's benchmark tool
go_bench=""
if command -v benchmark >/dev/null && benchmark --help 2>&1 | grep -qi etcd; then
    go_bench="found in PATH at $(command -v benchmark), not run by this script"
else
    pkgs=$(apt-cache search etcd 2>/dev/null | grep -i bench | cut -d' ' -f1 | paste -sd' ' - || true)
    if [[ -n "$pkgs" ]]; then
        go_bench="not installed; apt-cache search etcd | grep -i bench lists: $pkgs"
    else
        go_bench="unavailable (no 'benchmark' in PATH; apt-cache search etcd | grep -i bench finds no package; sources not fetched)"
    fi
fi

# ---------------------------------------------------------------- teardown
R[load.end]=$(loadavg)
log "stopping the cluster"
stop_cluster
left=$(own_etcd_pids | paste -sd' ' -)
R[left]=${left:-none}
[[ -z "$left" ]] || die "etcd processes of this run still running: $left"

# ---------------------------------------------------------------- summary
perf_lines=$(sed 's/^/    /' "$tmp/perf.lines")
cat <<EOF

==================== etcd-monitor-bench vs etcd tools: summary ====================
host: nproc=$(nproc), $(uname -sr); etcd $etcd_version, etcdctl $etcdctl_version; $("$bin" --version)
cluster: 3 members on 127.0.0.1 (clients ${client_ports[*]}), one run, tools one after the other
load average (1/5/15 min): start ${R[load.start]}, end ${R[load.end]}
a. same load: 60 s, 150 writes/s, 256-byte keys, 1 KiB values, 50 clients
  etcdctl check perf --load s (exit ${R[perf.rc]}):
$perf_lines
    client CPU: ${R[perf.cpu]} s; peak RSS ${R[perf.rss]} MiB; TCP connections to the cluster: ${R[perf.conns]}
  etcd-monitor-bench --conns 1 --clients 50 --duration 60s --rate 150 --key-size 256 --val-size 1024 --key-space 100000 write:
    throughput: ${R[a.write.tput]} requests/s (${R[a.write.requests]} requests, ${R[a.write.errors]} errors; first 1 s is warm-up)
    p99:        ${R[a.write.p99]} ms
    slowest:    ${R[a.write.slowest]} ms
    client CPU: ${R[a.write.cpu]} s; peak RSS ${R[a.write.rss]} MiB; TCP connections to the cluster: ${R[a.write.conns]}
b, e. etcd-monitor-bench --conns 10 (d: client CPU, user+sys, per 10k requests; peak RSS)
  put (write --val-size 256; --clients 100 --total 30000):
    ${R[b.write.tput]} requests/s, p99 ${R[b.write.p99]} ms, ${R[b.write.errors]} errors; CPU ${R[b.write.cpu]} s = ${R[b.write.cpu10k]} s/10k; RSS ${R[b.write.rss]} MiB
  range l (read --consistency l; --clients 100 --total 30000; CPU incl. the 1000-key fill):
    ${R[b.read-l.tput]} requests/s, p99 ${R[b.read-l.p99]} ms, ${R[b.read-l.errors]} errors; CPU ${R[b.read-l.cpu]} s = ${R[b.read-l.cpu10k]} s/10k; RSS ${R[b.read-l.rss]} MiB
  range s (read --consistency s; --clients 100 --total 30000; CPU incl. the 1000-key fill):
    ${R[b.read-s.tput]} requests/s, p99 ${R[b.read-s.p99]} ms, ${R[b.read-s.errors]} errors; CPU ${R[b.read-s.cpu]} s = ${R[b.read-s.cpu10k]} s/10k; RSS ${R[b.read-s.rss]} MiB
  txn-put (txn --ops-per-txn 1; --clients 100 --total 30000):
    ${R[e.txn1.tput]} txn/s, p99 ${R[e.txn1.p99]} ms, ${R[e.txn1.errors]} errors; CPU ${R[e.txn1.cpu]} s = ${R[e.txn1.cpu10k]} s/10k; RSS ${R[e.txn1.rss]} MiB
  txn-put (txn --ops-per-txn 4; --clients 100 --total 30000):
    ${R[e.txn4.tput]} txn/s, p99 ${R[e.txn4.p99]} ms, ${R[e.txn4.errors]} errors; CPU ${R[e.txn4.cpu]} s = ${R[e.txn4.cpu10k]} s/10k; RSS ${R[e.txn4.rss]} MiB
  watch-latency (1000 puts at 100/s, 100 watchers on 10 streams; latency put to event):
    p99 ${R[e.watch.p99]} ms, slowest ${R[e.watch.slowest]} ms; ${R[e.watch.events]} events, ${R[e.watch.errors]} errors or missing; CPU ${R[e.watch.cpu]} s = ${R[e.watch.cpu10k]} s/10k events; RSS ${R[e.watch.rss]} MiB
c. etcd benchmark tool (go.etcd.io/etcd/tools/benchmark): $go_bench
etcd processes of this run left after stopping the cluster: ${R[left]}
===================================================================================
EOF
