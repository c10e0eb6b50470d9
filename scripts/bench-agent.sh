#!/usr/bin/env bash
# Footprint of etcd-monitor-agent next to a throw-away single-member etcd, compared with
# Prometheus node_exporter (Debian's prometheus-node-exporter, default collectors) on the
# same host.
#
# What it measures, for the agent and node_exporter alike (one after the other, never both
# under load at once):
#   * RSS (VmRSS) about 5 s after start-up and again at the end of the measurements,
#   * CPU per scrape: utime+stime of the process over exactly N=500 sequential GET /metrics
#     (one python3 urllib loop, a new connection per request), in ms per scrape, next to
#     the wall time per scrape,
#   * one /metrics response: its size in bytes and its number of sample lines,
#   * GET /metrics under wrk -t1 -c4 -d10s --latency: p50, p99, requests/sec.
# Then the cost of the agent's fsync probe: the agent alone for 60 s with the default
# --fsync-probe-interval 10s, then 60 s with --fsync-probe-interval 0 (probe off), each
# time write_bytes and syscw from /proc/<agent>/io over the window (per minute) and the
# number of probes (etcd_agent_fsync_duration_seconds_count) in it; the difference between
# the two runs is the probe's. write_bytes is what the kernel charges to the agent for the
# pages it dirties (page granularity); the filesystem journal's own writes are not in it.
#
# Run from anywhere, as root (it installs prometheus-node-exporter and wrk with apt-get if
# missing):
#     ./scripts/bench-agent.sh            # or: bash scripts/bench-agent.sh
# Takes about 3 minutes after the build. Needs etcd, etcdctl, curl and python3. Uses
# 127.0.0.1 ports 33379/33380 (etcd), 33101 (agent) and 33100 (node_exporter).
# KEEP_TMP=1 keeps the temp dir (etcd data, logs, /metrics samples) for inspection.
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"
cd "$(dirname "$0")/.."
root=$(pwd)


# ---------------------------------------------------------------- settings
SCRAPES=500          # sequential scrapes for CPU per scrape
WRK_ARGS=(-t1 -c4 -d10s --latency)
SETTLE_SECONDS=5     # wait after start-up before the first RSS reading
IO_WINDOW=60         # seconds of the fsync-probe write measurement
CLIENT_PORT=33379
PEER_PORT=33380
NODE_PORT=33100
AGENT_PORT=33101
MEMBER=m1

# ---------------------------------------------------------------- state + cleanup
tmp=""
etcd_pid=""
agent_pid=""
node_pid=""
fg_pid="" # the command run_wait is waiting for


cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    stop_pid "$fg_pid"
    stop_pid "$agent_pid"
    stop_pid "$node_pid"
    stop_pid "$etcd_pid"
    if [[ -n "$tmp" && -d "$tmp" ]]; then
        if [[ $rc -ne 0 ]]; then
            local f
            for f in "$tmp"/*.log; do
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

load_start=$(cat /proc/loadavg)
declare -A R=() # results, for the summary

# ---------------------------------------------------------------- prerequisites
for tool in etcd etcdctl curl python3 getconf apt-get dpkg-query; do
    command -v "$tool" >/dev/null || die "$tool not found in PATH"
done

# Processes running the node_exporter binary (Debian names it prometheus-node-exporter, so
# its comm is "prometheus-node": match the full command line).
node_exporter_pids() { pgrep -f '(^|/)(prometheus-node-exporter|node_exporter)( |$)' || true; }

apt_install() { # apt_install PACKAGE: install, with apt-get update and a retry on failure
    local pkg=$1
    log "installing $pkg"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" \
        >/dev/null 2>&1; then
        apt-get update -qq >/dev/null || die "apt-get update failed (run as root?)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" \
            >/dev/null || die "apt-get install $pkg failed (run as root?)"
    fi
}

if ! command -v prometheus-node-exporter >/dev/null; then
    before=" $(node_exporter_pids | tr '\n' ' ') "
    apt_install prometheus-node-exporter
    command -v prometheus-node-exporter >/dev/null ||
        die "prometheus-node-exporter not in PATH after the install"
    # Without systemd the package's service normally does not start (policy-rc.d or no
    # init); if it did, that instance is ours (we just installed it): stop it.
    for pid in $(node_exporter_pids); do
        [[ "$before" == *" $pid "* ]] && continue
        log "stopping node_exporter pid $pid started by the package install"
        if [[ -x /etc/init.d/prometheus-node-exporter ]]; then
            /etc/init.d/prometheus-node-exporter stop >/dev/null 2>&1 || true
        fi
        stop_pid "$pid"
    done
    left=$(node_exporter_pids | tr '\n' ' ')
    [[ "$before" == " ${left} " || -z "${left// /}" ]] ||
        die "a node_exporter from the package is still running: $left"
    R[install]="installed prometheus-node-exporter; no package-started node_exporter left running"
fi
if ! command -v wrk >/dev/null; then
    apt_install wrk
    command -v wrk >/dev/null || die "wrk not in PATH after the install"
    R[install]="${R[install]:+${R[install]}; }installed wrk"
fi
others=$(node_exporter_pids | tr '\n' ' ')
[[ -z "${others// /}" ]] || log "note: node_exporter already running, not ours, left alone: pid(s) $others"

# The real interpreter, so that pyenv-style shims do not add their start-up to every call.
PY=$(python3 -c 'import sys; print(sys.executable)')
CLK_TCK=$(getconf CLK_TCK)

log "building (release)"
cargo build --release --locked -p agent
agent_bin="$root/target/release/etcd-monitor-agent"
[[ -x "$agent_bin" ]] || die "$agent_bin missing after the build"
node_bin=$(command -v prometheus-node-exporter)

for p in "$CLIENT_PORT" "$PEER_PORT" "$NODE_PORT" "$AGENT_PORT"; do
    port_in_use "$p" && die "port 127.0.0.1:$p is already in use"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-agent.XXXXXX")
# The data dir is inside the temp dir, so the agent's probe dir (.m1.etcd.fsync-probe,
# beside the data dir) is removed with it.
data_dir="$tmp/$MEMBER.etcd"
endpoint="http://127.0.0.1:$CLIENT_PORT"

# ---------------------------------------------------------------- etcd
log "starting etcd in $data_dir"
etcd --name "$MEMBER" --data-dir "$data_dir" \
    --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "$MEMBER=http://127.0.0.1:$PEER_PORT" --initial-cluster-token bench-agent \
    --initial-cluster-state new --logger zap --log-outputs stderr --log-level warn \
    >>"$tmp/etcd.log" 2>&1 &
etcd_pid=$!
deadline=$((SECONDS + 60))
until etcdctl --dial-timeout 1s --command-timeout 2s --endpoints "$endpoint" endpoint health \
    >/dev/null 2>&1; do
    kill -0 "$etcd_pid" 2>/dev/null || die "etcd exited at start; see its log above"
    ((SECONDS < deadline)) || die "etcd not healthy after 60 s"
    sleep 0.5
done
etcd_version=$(etcd --version 2>/dev/null | sed -n '1s/^etcd Version: //p')
log "etcd $etcd_version healthy at $endpoint"

# ---------------------------------------------------------------- helpers
wait_http_200() { # wait_http_200 URL PID NAME TIMEOUT_S
    local url=$1 pid=$2 name=$3 deadline=$((SECONDS + $4)) code
    while :; do
        kill -0 "$pid" 2>/dev/null || die "$name exited at start"
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" || true)
        [[ "$code" == 200 ]] && return 0
        ((SECONDS < deadline)) || die "$name: $url not 200 after $4 s (last: $code)"
        sleep 0.2
    done
}

start_agent() { # start_agent PROBE_INTERVAL
    "$agent_bin" --member "$MEMBER" --data-dir "$data_dir" --listen "127.0.0.1:$AGENT_PORT" \
        --etcd-client-port "$CLIENT_PORT" --interval 5s --fsync-probe-interval "$1" \
        >>"$tmp/agent-probe-$1.log" 2>&1 &
    agent_pid=$!
    wait_http_200 "http://127.0.0.1:$AGENT_PORT/metrics" "$agent_pid" "etcd-monitor-agent" 30
}

start_node_exporter() {
    "$node_bin" --web.listen-address="127.0.0.1:$NODE_PORT" >>"$tmp/node_exporter.log" 2>&1 &
    node_pid=$!
    wait_http_200 "http://127.0.0.1:$NODE_PORT/metrics" "$node_pid" "node_exporter" 30
}

# Runs a command in the background and waits for it: unlike a foreground command, `wait`
# returns at once on Ctrl-C or kill, so the trap (and cleanup) runs without delay.



io_field() { # io_field PID FIELD: a counter from /proc/PID/io
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/io"
}

# Prints the wall time of SCRAPES sequential GETs of URL in ns; fails on any non-200.
cat >"$tmp/scrape.py" <<'EOF'
import sys, time, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
t0 = time.monotonic_ns()
for _ in range(n):
    with urllib.request.urlopen(url, timeout=5) as r:
        if r.status != 200:
            sys.exit(f"GET {url}: HTTP {r.status}")
        r.read()
print(time.monotonic_ns() - t0)
EOF

fsync_count() { # the agent's probe count from /metrics
    curl -sf -m 5 "http://127.0.0.1:$AGENT_PORT/metrics" |
        awk '$1 ~ /^etcd_agent_fsync_duration_seconds_count/ { print $2; found = 1 } END { if (!found) exit 1 }'
}


# ---------------------------------------------------------------- agent + node_exporter
log "starting etcd-monitor-agent on :$AGENT_PORT and node_exporter on :$NODE_PORT"
start_agent 10s
start_node_exporter
nap "$SETTLE_SECONDS"
R[agent.rss0]=$(rss_mib "$agent_pid")
R[node.rss0]=$(rss_mib "$node_pid")
# The agent must have found the etcd process (it looks for the data dir in command lines).
found_pid=$(curl -sf -m 5 "http://127.0.0.1:$AGENT_PORT/api/v1/snapshot" | "$PY" -c '
import json, sys
p = json.load(sys.stdin).get("etcd_process") or {}
print(p.get("pid", "none"))' || echo "none")
if [[ "$found_pid" == "$etcd_pid" ]]; then
    R[agent.etcd]="it found etcd (pid $etcd_pid)"
else
    R[agent.etcd]="it did NOT find etcd (pid $etcd_pid; snapshot says $found_pid)"
    log "warning: agent ${R[agent.etcd]}"
fi

measure() { # measure KEY NAME PID PORT
    local key=$1 name=$2 pid=$3 url="http://127.0.0.1:$4/metrics" c0 c1 ns body wrk_out
    kill -0 "$pid" 2>/dev/null || die "$name is not running"

    curl -sf -m 5 -o "$tmp/metrics-$key.txt" "$url" || die "GET $url failed"
    R[$key.size]=$(wc -c <"$tmp/metrics-$key.txt")
    R[$key.samples]=$(grep -v '^#' "$tmp/metrics-$key.txt" | grep -c . || true)

    log "$name: $SCRAPES sequential scrapes of $url"
    c0=$(cpu_ticks "$pid")
    run_wait timeout 300 "$PY" "$tmp/scrape.py" "$url" "$SCRAPES" >"$tmp/scrape-$key.ns" ||
        die "$name: scrape loop failed"
    ns=$(<"$tmp/scrape-$key.ns")
    c1=$(cpu_ticks "$pid")
    R[$key.ticks]=$((c1 - c0))
    R[$key.cpu]=$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" -v n="$SCRAPES" \
        'BEGIN { printf "%.3f", d * 1000 / hz / n }')
    R[$key.wall]=$(awk -v ns="$ns" -v n="$SCRAPES" 'BEGIN { printf "%.3f", ns / 1e6 / n }')

    log "$name: wrk ${WRK_ARGS[*]} $url"
    run_wait timeout 60 wrk "${WRK_ARGS[@]}" "$url" >"$tmp/wrk-$key.txt" || die "$name: wrk failed"
    wrk_out=$(<"$tmp/wrk-$key.txt")
    R[$key.p50]=$(awk '$1 == "50%" { print $2 }' <<<"$wrk_out")
    R[$key.p99]=$(awk '$1 == "99%" { print $2 }' <<<"$wrk_out")
    R[$key.rps]=$(awk '$1 == "Requests/sec:" { print $2 }' <<<"$wrk_out")
    R[$key.wrkerr]=$(grep -E 'Non-2xx|Socket errors' <<<"$wrk_out" | tr -s ' ' | paste -sd ';' - || true)
    [[ -n "${R[$key.p50]}" && -n "${R[$key.p99]}" && -n "${R[$key.rps]}" ]] ||
        die "$name: cannot parse wrk output: $wrk_out"
    kill -0 "$pid" 2>/dev/null || die "$name died during the measurements"
    echo "$name: ${R[$key.size]} bytes, ${R[$key.samples]} samples; CPU ${R[$key.cpu]} ms/scrape (${R[$key.ticks]} ticks), wall ${R[$key.wall]} ms/scrape; wrk p50 ${R[$key.p50]} p99 ${R[$key.p99]} ${R[$key.rps]} req/s ${R[$key.wrkerr]}"
}

measure agent etcd-monitor-agent "$agent_pid" "$AGENT_PORT"
nap 2
measure node node_exporter "$node_pid" "$NODE_PORT"
R[agent.rss1]=$(rss_mib "$agent_pid")
R[node.rss1]=$(rss_mib "$node_pid")
stop_pid "$node_pid"
node_pid=""
stop_pid "$agent_pid"
agent_pid=""

# ---------------------------------------------------------------- fsync probe writes
probe_run() { # probe_run KEY PROBE_INTERVAL
    local key=$1 interval=$2 n0 n1 w0 w1 s0 s1 c0 c1 t0 t1 deadline
    log "agent alone with --fsync-probe-interval $interval: ${IO_WINDOW} s of /proc/PID/io"
    start_agent "$interval"
    if [[ "$interval" != 0 ]]; then
        # The first probe runs at start (after the probe file is preallocated); start the
        # window half an interval after it, so that exactly IO_WINDOW/interval probes fall in.
        deadline=$((SECONDS + 30))
        until [[ "$(fsync_count || echo 0)" -ge 1 ]]; do
            ((SECONDS < deadline)) || die "no fsync probe within 30 s of the agent's start"
            sleep 0.2
        done
    fi
    nap "$SETTLE_SECONDS"
    n0=$(fsync_count) || die "no etcd_agent_fsync_duration_seconds_count in /metrics"
    w0=$(io_field "$agent_pid" write_bytes)
    s0=$(io_field "$agent_pid" syscw)
    c0=$(cpu_ticks "$agent_pid")
    t0=$(date +%s%N)
    nap "$IO_WINDOW"
    w1=$(io_field "$agent_pid" write_bytes)
    s1=$(io_field "$agent_pid" syscw)
    c1=$(cpu_ticks "$agent_pid")
    t1=$(date +%s%N)
    n1=$(fsync_count) || die "no etcd_agent_fsync_duration_seconds_count in /metrics"
    kill -0 "$agent_pid" 2>/dev/null || die "etcd-monitor-agent died during the window"
    R[$key.wb]=$(awk -v d="$((w1 - w0))" -v ns="$((t1 - t0))" 'BEGIN { printf "%.0f", d * 60e9 / ns }')
    R[$key.sw]=$(awk -v d="$((s1 - s0))" -v ns="$((t1 - t0))" 'BEGIN { printf "%.1f", d * 60e9 / ns }')
    R[$key.cpu]=$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" -v ns="$((t1 - t0))" \
        'BEGIN { printf "%.0f", d * 1000 / hz * 60e9 / ns }')
    R[$key.raw]="$((w1 - w0)) B, $((s1 - s0)) syscw"
    R[$key.probes]=$((n1 - n0))
    R[$key.secs]=$(awk -v ns="$((t1 - t0))" 'BEGIN { printf "%.1f", ns / 1e9 }')
    stop_pid "$agent_pid"
    agent_pid=""
    echo "probe $interval: ${R[$key.wb]} bytes/min, ${R[$key.sw]} write syscalls/min, ${R[$key.probes]} probes, idle CPU ${R[$key.cpu]} ms/min (window ${R[$key.secs]} s)"
}

probe_run on 10s
probe_run off 0
R[diff.wb]=$((${R[on.wb]} - ${R[off.wb]}))
R[diff.sw]=$(awk -v a="${R[on.sw]}" -v b="${R[off.sw]}" 'BEGIN { printf "%.1f", a - b }')
R[diff.per]=$(awk -v d="${R[diff.wb]}" -v p="${R[on.probes]}" \
    'BEGIN { if (p > 0) printf "%.0f", d / p; else print "n/a" }')

# ---------------------------------------------------------------- wind down, then summary
stop_pid "$etcd_pid"
etcd_pid=""
strays=$(pgrep -f "$tmp" | tr '\n' ' ' || true)
[[ -z "${strays// /}" ]] || die "processes still running on $tmp: $strays"
node_version=$("$node_bin" --version 2>&1 | sed -n 1p)
load_end=$(cat /proc/loadavg)

row() { printf '  %-40s %22s %22s\n' "$@"; }
cat <<EOF

==================== etcd-monitor-agent benchmark summary ====================
host: nproc=$(nproc), kernel $(uname -r); CLK_TCK=$CLK_TCK
versions: etcd $etcd_version; $("$agent_bin" --version); $node_version
loadavg at start: $load_start
loadavg at end:   $load_end
prerequisites: ${R[install]:-prometheus-node-exporter and wrk were already installed}
etcd: 1 member on 127.0.0.1:$CLIENT_PORT; agent: ${R[agent.etcd]}
agent --interval 5s --fsync-probe-interval 10s on :$AGENT_PORT; node_exporter default collectors on :$NODE_PORT
EOF
row "" "etcd-monitor-agent" "node_exporter"
row "RSS ${SETTLE_SECONDS} s after start (MiB)" "${R[agent.rss0]}" "${R[node.rss0]}"
row "RSS after the scrapes + wrk (MiB)" "${R[agent.rss1]}" "${R[node.rss1]}"
row "CPU per scrape, $SCRAPES sequential (ms)" "${R[agent.cpu]}" "${R[node.cpu]}"
row "  (CPU ticks over the $SCRAPES scrapes)" "${R[agent.ticks]}" "${R[node.ticks]}"
row "wall time per scrape (ms)" "${R[agent.wall]}" "${R[node.wall]}"
row "/metrics size (bytes)" "${R[agent.size]}" "${R[node.size]}"
row "/metrics sample lines" "${R[agent.samples]}" "${R[node.samples]}"
row "wrk ${WRK_ARGS[*]}: p50" "${R[agent.p50]}" "${R[node.p50]}"
row "wrk: p99" "${R[agent.p99]}" "${R[node.p99]}"
row "wrk: requests/sec" "${R[agent.rps]}" "${R[node.rps]}"
if [[ -n "${R[agent.wrkerr]}${R[node.wrkerr]}" ]]; then
    row "wrk errors" "${R[agent.wrkerr]:-none}" "${R[node.wrkerr]:-none}"
fi
cat <<EOF
fsync probe, agent alone, ${IO_WINDOW} s windows (/proc/<agent>/io, scaled to per minute):
EOF
row "" "probe 10s (default)" "probe off (0)"
row "window length (s)" "${R[on.secs]}" "${R[off.secs]}"
row "probes in the window" "${R[on.probes]}" "${R[off.probes]}"
row "raw deltas over the window" "${R[on.raw]}" "${R[off.raw]}"
row "write_bytes per minute" "${R[on.wb]}" "${R[off.wb]}"
row "write syscalls (syscw) per minute" "${R[on.sw]}" "${R[off.sw]}"
row "agent CPU per minute, no scrapes (ms)" "${R[on.cpu]}" "${R[off.cpu]}"
cat <<EOF
  added by the probe: ${R[diff.wb]} bytes/min (${R[diff.per]} bytes per probe), ${R[diff.sw]} write syscalls/min
stray processes: none (etcd, agent and node_exporter stopped)
==============================================================================
EOF
