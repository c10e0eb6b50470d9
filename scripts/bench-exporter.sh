#!/usr/bin/env bash
# Benchmark of the etcd-monitor exporter against a throw-away local 3-member etcd cluster.
#
# What it measures, for --interval 1s and 5s (60 s run each):
#   * collection cycle duration (count/p50/p99/max of collect_duration_ms from
#     GET /api/v1/metrics/history),
#   * exporter RSS at the end of the run and CPU (% of one core) over the last 30 s,
#   * GET /metrics latency under 10 concurrent scrapers (wrk -t2 -c10 -d15s) and the size
#     of one /metrics response.
# Then, at --interval 1s, leader-kill detection: kill -9 the etcd leader 3 times and time
# how long the exporter's GET /api/v1/cluster/leader takes to name a new leader, next to
# how long etcd itself took (etcdctl endpoint status on the survivors).
#
# Run from anywhere (as root if wrk still has to be installed):
#     ./scripts/bench-exporter.sh            # or: bash scripts/bench-exporter.sh
# Takes about 5 minutes after the build. Needs etcd, etcdctl, curl and python3; installs
# wrk with apt-get if missing. Uses 127.0.0.1 ports 32379-32580 (etcd) and 32900-32902
# (exporter). KEEP_TMP=1 keeps the temp dir (etcd data and logs) for inspection.
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"
cd "$(dirname "$0")/.."
root=$(pwd)


# ---------------------------------------------------------------- settings
RUN_SECONDS=60       # how long each exporter runs before it is measured
CPU_WINDOW=30        # CPU is sampled over the last CPU_WINDOW seconds of that run
WRK_ARGS=(-t2 -c10 -d15s --latency)
KILL_ROUNDS=3
DETECT_TIMEOUT_MS=30000
client_ports=(32379 32479 32579)
peer_ports=(32380 32480 32580)
names=(m1 m2 m3)
exporter_ports=(32900 32901 32902)

# ---------------------------------------------------------------- state + cleanup
tmp=""
declare -A etcd_pid=()  # member name -> pid
exporter_pid=""
poller_pid=""


cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    stop_pid "$poller_pid"
    stop_pid "$exporter_pid"
    local n
    for n in "${!etcd_pid[@]}"; do stop_pid "${etcd_pid[$n]}"; done
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

# ---------------------------------------------------------------- prerequisites
for tool in etcd etcdctl curl python3 getconf; do
    command -v "$tool" >/dev/null || die "$tool not found in PATH"
done
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    if ! apt-get install -y wrk >/dev/null 2>&1; then
        apt-get update >/dev/null || die "apt-get update failed (run as root?)"
        apt-get install -y wrk >/dev/null || die "apt-get install wrk failed (run as root?)"
    fi
fi
# The real interpreter, so that pyenv-style shims do not add their start-up to every call.
PY=$(python3 -c 'import sys; print(sys.executable)')
CLK_TCK=$(getconf CLK_TCK)

log "building (release)"
cargo build --release --locked -p exporter
bin="$root/target/release/etcd-monitor"
[[ -x "$bin" ]] || die "$bin missing after the build"

for p in "${client_ports[@]}" "${peer_ports[@]}" "${exporter_ports[@]}"; do
    port_in_use "$p" && die "port 127.0.0.1:$p is already in use"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-exporter.XXXXXX")
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- etcd cluster
cluster=""
endpoints=""
for i in 0 1 2; do
    cluster+="${names[$i]}=http://127.0.0.1:${peer_ports[$i]},"
    endpoints+="http://127.0.0.1:${client_ports[$i]},"
done
cluster=${cluster%,}
endpoints=${endpoints%,}

start_member() { # start_member INDEX new|existing
    local i=$1 state=$2 name=${names[$1]}
    etcd --name "$name" --data-dir "$tmp/$name.etcd" \
        --listen-client-urls "http://127.0.0.1:${client_ports[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${client_ports[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
        --initial-cluster "$cluster" --initial-cluster-token bench \
        --initial-cluster-state "$state" --logger zap --log-outputs stderr --log-level warn \
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
for i in 0 1 2; do start_member "$i" new; done
wait_healthy 60
etcd_version=$(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p')
log "etcd $etcd_version healthy at $endpoints"

# ---------------------------------------------------------------- exporter helpers
start_exporter() { # start_exporter PORT INTERVAL
    local port=$1 interval=$2 deadline code
    "$bin" --endpoints "$endpoints" --listen "127.0.0.1:$port" --interval "$interval" \
        >>"$tmp/exporter-$interval-$port.log" 2>&1 &
    exporter_pid=$!
    # Ready when /health is 200, i.e. the first collection cycle has finished.
    deadline=$((SECONDS + 30))
    while :; do
        kill -0 "$exporter_pid" 2>/dev/null || die "etcd-monitor (--interval $interval) exited at start"
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/health" || true)
        [[ "$code" == 200 ]] && break
        ((SECONDS < deadline)) || die "etcd-monitor on :$port not healthy after 30 s (last /health: $code)"
        sleep 0.2
    done
}

stop_exporter() {
    stop_pid "$exporter_pid"
    exporter_pid=""
}



declare -A R=() # results, for the summary

# ---------------------------------------------------------------- per-interval runs
run_interval() { # run_interval INTERVAL PORT
    local interval=$1 port=$2 url t0 t1 c0 c1 stats wrk_out size
    url="http://127.0.0.1:$port"
    log "interval $interval: starting etcd-monitor on :$port, running ${RUN_SECONDS} s"
    start_exporter "$port" "$interval"
    sleep $((RUN_SECONDS - CPU_WINDOW))
    c0=$(cpu_ticks "$exporter_pid")
    t0=$(date +%s%N)
    sleep "$CPU_WINDOW"
    c1=$(cpu_ticks "$exporter_pid")
    t1=$(date +%s%N)
    kill -0 "$exporter_pid" 2>/dev/null || die "etcd-monitor (--interval $interval) died during the run"
    R[$interval.rss]=$(rss_mib "$exporter_pid")
    R[$interval.cpu]=$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" -v ns="$((t1 - t0))" \
        'BEGIN { printf "%.2f", 100 * (d / hz) / (ns / 1e9) }')

    curl -sf -m 5 "$url/api/v1/metrics/history" >"$tmp/history-$interval.json" ||
        die "GET $url/api/v1/metrics/history failed"
    stats=$("$PY" - "$tmp/history-$interval.json" <<'EOF'
import json, math, sys
doc = json.load(open(sys.argv[1]))
xs = sorted(float(p["collect_duration_ms"]) for p in doc["points"])
if not xs:
    sys.exit("no history points")
def pct(q):  # nearest-rank percentile
    return xs[max(0, math.ceil(q / 100 * len(xs)) - 1)]
print(f"count={len(xs)} p50={pct(50):.2f}ms p99={pct(99):.2f}ms max={xs[-1]:.2f}ms "
      f"(interval_ms={doc['interval_ms']})")
EOF
    ) || die "cannot compute cycle statistics from $tmp/history-$interval.json"
    R[$interval.cycle]=$stats

    size=$(curl -sf -m 5 -o /dev/null -w '%{size_download}' "$url/metrics") ||
        die "GET $url/metrics failed"
    R[$interval.size]=$size

    log "interval $interval: wrk ${WRK_ARGS[*]} $url/metrics"
    wrk_out=$(timeout 60 wrk "${WRK_ARGS[@]}" "$url/metrics") || die "wrk failed"
    echo "$wrk_out" >"$tmp/wrk-$interval.txt"
    R[$interval.p50]=$(awk '$1 == "50%" { print $2 }' <<<"$wrk_out")
    R[$interval.p99]=$(awk '$1 == "99%" { print $2 }' <<<"$wrk_out")
    R[$interval.rps]=$(awk '$1 == "Requests/sec:" { print $2 }' <<<"$wrk_out")
    R[$interval.wrkerr]=$(grep -E 'Non-2xx|Socket errors' <<<"$wrk_out" | tr -s ' ' | paste -sd ';' - || true)
    [[ -n "${R[$interval.p50]}" && -n "${R[$interval.rps]}" ]] || die "cannot parse wrk output: $wrk_out"

    stop_exporter
    echo "interval $interval: cycle ${R[$interval.cycle]}"
    echo "interval $interval: RSS ${R[$interval.rss]} MiB, CPU ${R[$interval.cpu]}% of one core (last ${CPU_WINDOW} s)"
    echo "interval $interval: /metrics ${R[$interval.size]} bytes; wrk c10: p50 ${R[$interval.p50]}, p99 ${R[$interval.p99]}, ${R[$interval.rps]} req/s ${R[$interval.wrkerr]}"
    grep -E '^ +(50|99)%|Requests/sec' <<<"$wrk_out" | sed "s/^/interval $interval: wrk: /"
}

run_interval 1s "${exporter_ports[0]}"
run_interval 5s "${exporter_ports[1]}"

# ---------------------------------------------------------------- leader kill at 1s
# Prints "NAME MEMBER_ID" of the current leader, from etcdctl endpoint status on all members.
find_leader() {
    local json
    json=$(ectl --endpoints "$endpoints" endpoint status -w json 2>/dev/null) || return 1
    "$PY" -c '
import json, sys
eps = {u: n for u, n in zip(sys.argv[1].split(","), sys.argv[2].split(","))}
for e in json.loads(sys.stdin.read()):
    s = e["Status"]
    if s["leader"] == s["header"]["member_id"]:
        print(eps[e["Endpoint"]], s["header"]["member_id"])
        break
else:
    sys.exit(1)
' "$endpoints" "$(IFS=,; echo "${names[*]}")" <<<"$json"
}

# Background: polls etcdctl endpoint status on the survivors until one of them reports
# itself as leader; writes the elapsed ms since T0 to OUT (or "timeout").
etcd_leader_poller() { # SURVIVOR_ENDPOINTS T0_MS OUT
    trap - EXIT INT TERM
    local eps=$1 t0=$2 out=$3 json now
    while :; do
        now=$(now_ms)
        if ((now - t0 > DETECT_TIMEOUT_MS)); then
            echo timeout >"$out"
            return 0
        fi
        json=$(ectl --endpoints "$eps" endpoint status -w json 2>/dev/null || true)
        # A survivor's own member_id equal to its leader field: etcd has a new leader.
        if [[ -n "$json" ]] && "$PY" -c '
import json, sys
sys.exit(0 if any(e["Status"]["leader"] == e["Status"]["header"]["member_id"]
                  for e in json.loads(sys.stdin.read())) else 1)' <<<"$json" 2>/dev/null; then
            echo $(($(now_ms) - t0)) >"$out"
            return 0
        fi
        sleep 0.05
    done
}

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

kill_port=${exporter_ports[2]}
kill_url="http://127.0.0.1:$kill_port/api/v1/cluster/leader"
log "leader kill: starting etcd-monitor --interval 1s on :$kill_port"
start_exporter "$kill_port" 1s
sleep 5
exporter_ms=()
etcd_ms=()
for round in $(seq 1 "$KILL_ROUNDS"); do
    leader=$(find_leader) || die "round $round: no leader found with etcdctl endpoint status"
    victim=${leader%% *}
    vi=-1
    for i in 0 1 2; do [[ "${names[$i]}" == "$victim" ]] && vi=$i; done
    ((vi >= 0)) || die "round $round: leader name $victim unknown"
    survivors=""
    for i in 0 1 2; do ((i == vi)) || survivors+="http://127.0.0.1:${client_ports[$i]},"; done
    survivors=${survivors%,}
    etcd_out="$tmp/etcd-detect-$round"
    rm -f "$etcd_out"

    t0=$(now_ms)
    kill -9 "${etcd_pid[$victim]}"
    wait "${etcd_pid[$victim]}" 2>/dev/null || true
    unset "etcd_pid[$victim]"
    etcd_leader_poller "$survivors" "$t0" "$etcd_out" &
    poller_pid=$!

    # Poll the exporter every 50 ms. LeaderRef has no nested object, so a regex suffices
    # (and keeps each poll at a curl's cost).
    detected=""
    new_leader=""
    while :; do
        now=$(now_ms)
        ((now - t0 <= DETECT_TIMEOUT_MS)) ||
            die "round $round: exporter did not report a new leader within $((DETECT_TIMEOUT_MS / 1000)) s after killing $victim"
        body=$(curl -s -m 1 "$kill_url" || true)
        if [[ "$body" =~ \"leader\":\{[^{}]*\"name\":\"([^\"]*)\" ]]; then
            name=${BASH_REMATCH[1]}
            if [[ "$name" != "$victim" ]]; then
                detected=$(($(now_ms) - t0))
                new_leader=$name
                break
            fi
        fi
        sleep 0.05
    done
    wait "$poller_pid" 2>/dev/null || true
    poller_pid=""
    etcd_fig=$(cat "$etcd_out" 2>/dev/null || echo "n/a")
    exporter_ms+=("$detected")
    [[ "$etcd_fig" =~ ^[0-9]+$ ]] && etcd_ms+=("$etcd_fig")
    echo "leader kill $round: killed $victim; exporter reported $new_leader after ${detected} ms; etcd (etcdctl) had a new leader after ${etcd_fig} ms"
    R[kill.$round]="killed $victim -> $new_leader: exporter ${detected} ms, etcd ${etcd_fig} ms"

    log "round $round: restarting $victim"
    start_member "$vi" existing
    wait_healthy 60
    kill -0 "$exporter_pid" 2>/dev/null || die "etcd-monitor died during the leader-kill test"
    sleep 5
done
stop_exporter
R[kill.median]=$(median "${exporter_ms[@]}")
R[kill.etcd_median]=$( ((${#etcd_ms[@]} > 0)) && median "${etcd_ms[@]}" || echo n/a)

# ---------------------------------------------------------------- summary
cat <<EOF

==================== etcd-monitor benchmark summary ====================
host: nproc=$(nproc), $(uname -sr); etcd $etcd_version; $("$bin" --version)
cluster: 3 members on 127.0.0.1 (clients ${client_ports[*]}); each run ${RUN_SECONDS} s
EOF
for interval in 1s 5s; do
    cat <<EOF
--interval $interval
  collection cycle (collect_duration_ms): ${R[$interval.cycle]}
  RSS at end:                             ${R[$interval.rss]} MiB
  CPU over the last ${CPU_WINDOW} s:                 ${R[$interval.cpu]} % of one core
  /metrics response size:                 ${R[$interval.size]} bytes
  /metrics, wrk ${WRK_ARGS[*]}:
    50% latency:  ${R[$interval.p50]}
    99% latency:  ${R[$interval.p99]}
    requests/sec: ${R[$interval.rps]}${R[$interval.wrkerr]:+  (${R[$interval.wrkerr]})}
EOF
done
echo "leader kill -9 at --interval 1s (time until GET /api/v1/cluster/leader names a new leader; polled every 50 ms):"
for round in $(seq 1 "$KILL_ROUNDS"); do
    echo "  round $round: ${R[kill.$round]}"
done
echo "  median: exporter ${R[kill.median]} ms; etcd itself (etcdctl endpoint status on survivors) ${R[kill.etcd_median]} ms"
echo "========================================================================"
