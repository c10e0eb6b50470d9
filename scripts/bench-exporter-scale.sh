#!/usr/bin/env bash
# Scale benchmark of the etcd-monitor exporter watching several clusters from --config.
#
# For 3, 9 and 15 members (1, 3 and 5 throw-away local 3-member etcd clusters, each its
# own etcd processes) it runs the release exporter at --interval 1s for 60 s and measures:
#   * CPU of the exporter over the last 30 s (utime+stime from /proc/PID/stat) as ms of
#     CPU per cycle and per member per cycle; cycles = sum of the clusters' `cycle`
#     deltas (GET /api/v1/clusters) / number of clusters, i.e. cycles per cluster;
#   * RSS (VmRSS) at the end of the 60 s;
#   * cycle duration p50/p99 (collect_duration_ms of GET /api/v1/metrics/history?cluster=)
#     per cluster and pooled over all clusters;
#   * size of one /metrics response, plain and gzip (curl --compressed);
#   * GET /metrics under 10 concurrent scrapers (wrk -t2 -c10 -d15s --latency): p50, p99,
#     requests/s; once plain and once with Accept-Encoding: gzip. wrk runs after the CPU
#     window, so its load is not in the CPU figure.
# Prints a summary table at the end.
#
# Run from anywhere (as root if wrk still has to be installed):
#     bash scripts/bench-exporter-scale.sh
# Takes about 6 minutes after the build. Needs etcd, etcdctl, curl and python3; installs
# wrk with apt-get if missing. Uses 127.0.0.1 ports 36000-36999: etcd cluster K (0-4),
# member J (0-2) listens for clients on 36000+100K+10J and for peers on that +1; the
# exporter listens on 36900-36902. KEEP_TMP=1 keeps the temp dir (etcd data, logs,
# configs, wrk output) for inspection.
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"
cd "$(dirname "$0")/.."
root=$(pwd)

# ---------------------------------------------------------------- settings
# (RUN_SECONDS, CPU_WINDOW, WRK_DURATION, SCALES and EXPORTER_BIN may be set in the
# environment for a quick trial; the defaults are the benchmark.)
RUN_SECONDS=${RUN_SECONDS:-60}  # how long each exporter runs before wrk
CPU_WINDOW=${CPU_WINDOW:-30}    # CPU and cycles are sampled over the last CPU_WINDOW s of that run
INTERVAL=1s
WRK_ARGS=(-t2 -c10 "-d${WRK_DURATION:-15s}" --latency)
read -r -a SCALES <<<"${SCALES:-1 3 5}" # number of 3-member clusters per run
MEMBERS_PER_CLUSTER=3
PORT_BASE=36000
EXPORTER_PORT_BASE=36900

client_port() { echo $((PORT_BASE + 100 * $1 + 10 * $2)); } # client_port CLUSTER MEMBER
peer_port() { echo $((PORT_BASE + 100 * $1 + 10 * $2 + 1)); }

# ---------------------------------------------------------------- state + cleanup
tmp=""
etcd_pids=()
exporter_pid=""
fg_pid=""

stop_etcd() {
    local p
    for p in "${etcd_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${etcd_pids[@]}"; do stop_pid "$p"; done
    etcd_pids=()
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    stop_pid "$fg_pid"
    # The last log lines before the processes are stopped (etcd's shutdown is noisy).
    if [[ $rc -ne 0 && -n "$tmp" && -d "$tmp" ]]; then
        local f
        for f in "$tmp"/etcd-*.log "$tmp"/exporter-*.log; do
            [[ -s "$f" ]] || continue
            echo "---- last lines of $(basename "$f") ----" >&2
            if [[ "$f" == */exporter-* ]]; then tail -n 25 "$f" >&2; else tail -n 5 "$f" >&2; fi
        done
    fi
    stop_pid "$exporter_pid"
    stop_etcd
    if [[ -n "$tmp" && -d "$tmp" ]]; then
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
PY=$(python3 -c 'import sys; print(sys.executable)')
CLK_TCK=$(getconf CLK_TCK)

if [[ -n "${EXPORTER_BIN:-}" ]]; then
    bin=$EXPORTER_BIN
else
    log "building (release)"
    cargo build --release --locked -p exporter
    bin="$root/target/release/etcd-monitor"
fi
[[ -x "$bin" ]] || die "$bin missing after the build"

max_clusters=0
for k in "${SCALES[@]}"; do ((k > max_clusters)) && max_clusters=$k; done
for ((c = 0; c < max_clusters; c++)); do
    for ((m = 0; m < MEMBERS_PER_CLUSTER; m++)); do
        for p in "$(client_port $c $m)" "$(peer_port $c $m)"; do
            port_in_use "$p" && die "port 127.0.0.1:$p is already in use"
        done
    done
done
for ((s = 0; s < ${#SCALES[@]}; s++)); do
    port_in_use $((EXPORTER_PORT_BASE + s)) && die "port 127.0.0.1:$((EXPORTER_PORT_BASE + s)) is already in use"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-exporter-scale.XXXXXX")
etcd_version=$(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p')

# ---------------------------------------------------------------- etcd clusters
cluster_endpoints() { # cluster_endpoints CLUSTER -> comma-separated client URLs
    local m eps=""
    for ((m = 0; m < MEMBERS_PER_CLUSTER; m++)); do eps+="http://127.0.0.1:$(client_port "$1" $m),"; done
    echo "${eps%,}"
}

start_cluster() { # start_cluster CLUSTER (0-based); cluster name c<CLUSTER+1>
    local c=$1 m name initial=""
    for ((m = 0; m < MEMBERS_PER_CLUSTER; m++)); do
        initial+="c$((c + 1))m$((m + 1))=http://127.0.0.1:$(peer_port $c $m),"
    done
    initial=${initial%,}
    for ((m = 0; m < MEMBERS_PER_CLUSTER; m++)); do
        name="c$((c + 1))m$((m + 1))"
        rm -rf "$tmp/$name.etcd"
        etcd --name "$name" --data-dir "$tmp/$name.etcd" \
            --listen-client-urls "http://127.0.0.1:$(client_port $c $m)" \
            --advertise-client-urls "http://127.0.0.1:$(client_port $c $m)" \
            --listen-peer-urls "http://127.0.0.1:$(peer_port $c $m)" \
            --initial-advertise-peer-urls "http://127.0.0.1:$(peer_port $c $m)" \
            --initial-cluster "$initial" --initial-cluster-token "bench-scale-c$((c + 1))" \
            --initial-cluster-state new --logger zap --log-outputs stderr --log-level warn \
            >>"$tmp/etcd-$name.log" 2>&1 &
        etcd_pids+=($!)
    done
}

wait_healthy() { # wait_healthy ENDPOINTS TIMEOUT_S
    local deadline=$((SECONDS + $2)) p
    until etcdctl --dial-timeout 1s --command-timeout 2s --endpoints "$1" endpoint health >/dev/null 2>&1; do
        for p in "${etcd_pids[@]}"; do
            kill -0 "$p" 2>/dev/null || die "an etcd member (pid $p) exited; see the logs below"
        done
        ((SECONDS < deadline)) || die "etcd cluster $1 not healthy after $2 s"
        sleep 0.5
    done
}

# ---------------------------------------------------------------- exporter helpers
write_config() { # write_config N FILE
    local c m
    {
        echo "clusters:"
        for ((c = 0; c < $1; c++)); do
            echo "  - name: c$((c + 1))"
            printf '    endpoints: ['
            for ((m = 0; m < MEMBERS_PER_CLUSTER; m++)); do
                ((m > 0)) && printf ', '
                printf 'http://127.0.0.1:%s' "$(client_port $c $m)"
            done
            echo ']'
        done
    } >"$2"
}

start_exporter() { # start_exporter CONFIG PORT LOG
    local deadline code
    "$bin" --config "$1" --listen "127.0.0.1:$2" --interval "$INTERVAL" >>"$3" 2>&1 &
    exporter_pid=$!
    # Ready when /health is 200: every cluster has finished its first cycle.
    deadline=$((SECONDS + 30))
    while :; do
        kill -0 "$exporter_pid" 2>/dev/null || die "etcd-monitor exited at start (see $(basename "$3"))"
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$2/health" || true)
        [[ "$code" == 200 ]] && break
        ((SECONDS < deadline)) || die "etcd-monitor on :$2 not healthy after 30 s (last /health: $code)"
        sleep 0.2
    done
}

cycle_sum() { # cycle_sum URL N -> sum of the clusters' cycle counters (checks there are N)
    curl -sf -m 5 "$1/api/v1/clusters" | "$PY" -c '
import json, sys
cl = json.load(sys.stdin)["clusters"]
if len(cl) != int(sys.argv[1]):
    sys.exit(f"expected {sys.argv[1]} clusters, /api/v1/clusters lists {len(cl)}")
print(sum(int(c["cycle"]) for c in cl))' "$2"
}

to_ms() { # wrk latency ("850.00us", "1.23ms", "1.01s") -> ms
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "?" }'
}

run_wrk() { # run_wrk KEY URL [wrk args...]: fills R[KEY.p50|p99|rps|err]
    local key=$1 url=$2 out
    shift 2
    log "$key: wrk ${WRK_ARGS[*]}${*:+ $*} $url/metrics"
    out=$(timeout 60 wrk "${WRK_ARGS[@]}" "$@" "$url/metrics") || die "wrk failed: $out"
    echo "$out" >"$tmp/wrk-$key.txt"
    R[$key.p50]=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    R[$key.p99]=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    R[$key.rps]=$(awk '$1 == "Requests/sec:" { print $2 }' <<<"$out")
    R[$key.err]=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ' | paste -sd ';' - || true)
    [[ -n "${R[$key.rps]}" && "${R[$key.p50]}" != "?" ]] || die "cannot parse wrk output: $out"
}

declare -A R=() # results, for the summary

# ---------------------------------------------------------------- one scale
run_scale() { # run_scale N_CLUSTERS INDEX
    local n=$1 port=$((EXPORTER_PORT_BASE + $2)) members=$(($1 * MEMBERS_PER_CLUSTER))
    local url="http://127.0.0.1:$port" c k0 k1 c0 c1 t0 t1 cfg elog enc
    log "$members members: starting $n etcd cluster(s)"
    for ((c = 0; c < n; c++)); do start_cluster $c; done
    for ((c = 0; c < n; c++)); do wait_healthy "$(cluster_endpoints $c)" 90; done

    cfg="$tmp/clusters-$n.yml"
    write_config "$n" "$cfg"
    elog="$tmp/exporter-$members.log"
    log "$members members: starting etcd-monitor --config $(basename "$cfg") --interval $INTERVAL on :$port for ${RUN_SECONDS} s"
    start_exporter "$cfg" "$port" "$elog"
    nap $((RUN_SECONDS - CPU_WINDOW))
    k0=$(cycle_sum "$url" "$n") || die "GET $url/api/v1/clusters failed"
    c0=$(cpu_ticks "$exporter_pid")
    t0=$(date +%s%N)
    nap "$CPU_WINDOW"
    c1=$(cpu_ticks "$exporter_pid")
    t1=$(date +%s%N)
    k1=$(cycle_sum "$url" "$n") || die "GET $url/api/v1/clusters failed"
    kill -0 "$exporter_pid" 2>/dev/null || die "etcd-monitor died during the run"
    R[$n.rss]=$(rss_mib "$exporter_pid")
    R[$n.cycles]=$(awk -v d="$((k1 - k0))" -v n="$n" 'BEGIN { printf "%.1f", d / n }')
    awk -v d="$((k1 - k0))" 'BEGIN { exit !(d > 0) }' || die "no cycles completed in the CPU window"
    R[$n.cpu_ms]=$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", 1000 * d / hz }')
    R[$n.cpu_pct]=$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" -v ns="$((t1 - t0))" \
        'BEGIN { printf "%.2f", 100 * (d / hz) / (ns / 1e9) }')
    R[$n.ms_cycle]=$(awk -v ms="${R[$n.cpu_ms]}" -v cy="${R[$n.cycles]}" 'BEGIN { printf "%.2f", ms / cy }')
    R[$n.ms_member]=$(awk -v ms="${R[$n.cpu_ms]}" -v cy="${R[$n.cycles]}" -v m="$members" \
        'BEGIN { printf "%.2f", ms / cy / m }')

    for ((c = 0; c < n; c++)); do
        curl -sf -m 5 "$url/api/v1/metrics/history?cluster=c$((c + 1))" >"$tmp/history-$n-c$((c + 1)).json" ||
            die "GET $url/api/v1/metrics/history?cluster=c$((c + 1)) failed"
    done
    R[$n.cycle]=$("$PY" - "$tmp"/history-"$n"-c*.json <<'EOF'
import json, math, sys
def pct(xs, q):  # nearest-rank percentile
    return xs[max(0, math.ceil(q / 100 * len(xs)) - 1)]
pooled, per, p99s = [], [], []
for f in sys.argv[1:]:
    doc = json.load(open(f))
    xs = sorted(float(p["collect_duration_ms"]) for p in doc["points"])
    if not xs:
        sys.exit(f"no history points in {f}")
    pooled += xs
    p99s.append(pct(xs, 99))
    per.append(f"{doc['cluster']}: n={len(xs)} p50={pct(xs, 50):.2f} p99={pct(xs, 99):.2f}")
pooled.sort()
print(f"{pct(pooled, 50):.2f} {pct(pooled, 99):.2f} {max(p99s):.2f}")
print("; ".join(per))
EOF
    ) || die "cannot compute cycle statistics from $tmp/history-$n-*.json"
    R[$n.cycle_detail]=$(sed -n 2p <<<"${R[$n.cycle]}")
    R[$n.cycle]=$(sed -n 1p <<<"${R[$n.cycle]}")

    R[$n.size]=$(curl -sf -m 5 -o /dev/null -w '%{size_download}' "$url/metrics") ||
        die "GET $url/metrics failed"
    R[$n.gzsize]=$(curl -sf -m 5 --compressed -o /dev/null -w '%{size_download}' "$url/metrics") ||
        die "GET $url/metrics (gzip) failed"
    enc=$(curl -sf -m 5 -D - -o /dev/null -H 'Accept-Encoding: gzip' "$url/metrics" |
        tr -d '\r' | awk -F': *' 'tolower($1) == "content-encoding" { print $2 }')
    [[ "$enc" == gzip ]] || die "/metrics with Accept-Encoding: gzip came back with Content-Encoding '${enc}'"

    run_wrk "$n.plain" "$url"
    run_wrk "$n.gzip" "$url" -H 'Accept-Encoding: gzip'
    kill -0 "$exporter_pid" 2>/dev/null || die "etcd-monitor died under wrk"

    stop_pid "$exporter_pid"
    exporter_pid=""
    stop_etcd
    echo "$members members ($n clusters): CPU ${R[$n.cpu_ms]} ms in ${CPU_WINDOW} s (${R[$n.cpu_pct]}% of a core), ${R[$n.cycles]} cycles/cluster -> ${R[$n.ms_cycle]} ms/cycle, ${R[$n.ms_member]} ms/member/cycle; RSS ${R[$n.rss]} MiB"
    echo "$members members ($n clusters): cycle p50/p99/worst-cluster-p99 ms ${R[$n.cycle]} (${R[$n.cycle_detail]})"
    echo "$members members ($n clusters): /metrics ${R[$n.size]} B plain, ${R[$n.gzsize]} B gzip; wrk plain p50 ${R[$n.plain.p50]} ms p99 ${R[$n.plain.p99]} ms ${R[$n.plain.rps]} req/s ${R[$n.plain.err]}; gzip p50 ${R[$n.gzip.p50]} ms p99 ${R[$n.gzip.p99]} ms ${R[$n.gzip.rps]} req/s ${R[$n.gzip.err]}"
}

for ((s = 0; s < ${#SCALES[@]}; s++)); do run_scale "${SCALES[$s]}" "$s"; done

# ---------------------------------------------------------------- summary
echo
echo "==================== etcd-monitor scale benchmark summary ===================="
echo "host: nproc=$(nproc), $(uname -sr); etcd $etcd_version; $("$bin" --version)"
echo "exporter --config (N clusters x 3 members) --interval $INTERVAL, ${RUN_SECONDS} s per run; CPU over the last ${CPU_WINDOW} s;"
echo "cycle = collect_duration_ms (pooled over clusters; worst = highest per-cluster p99); wrk ${WRK_ARGS[*]} on /metrics"
fmt='%-8s %-9s %-8s %-10s %-8s %-22s %-16s %-28s %-28s\n'
# shellcheck disable=SC2059
printf "$fmt" members clusters "CPU ms/" "CPU ms/" "RSS MiB" "cycle ms p50/p99/worst" "/metrics bytes" "wrk plain ms p50/p99 req/s" "wrk gzip ms p50/p99 req/s"
# shellcheck disable=SC2059
printf "$fmt" "" "" cycle member "" "" "plain/gzip" "" ""
for n in "${SCALES[@]}"; do
    # shellcheck disable=SC2059
    printf "$fmt" $((n * MEMBERS_PER_CLUSTER)) "$n" "${R[$n.ms_cycle]}" "${R[$n.ms_member]}" "${R[$n.rss]}" \
        "${R[$n.cycle]// //}" "${R[$n.size]}/${R[$n.gzsize]}" \
        "${R[$n.plain.p50]}/${R[$n.plain.p99]} ${R[$n.plain.rps]}" \
        "${R[$n.gzip.p50]}/${R[$n.gzip.p99]} ${R[$n.gzip.rps]}"
done
for n in "${SCALES[@]}"; do
    [[ -n "${R[$n.plain.err]}${R[$n.gzip.err]}" ]] && echo "wrk errors at $n clusters: ${R[$n.plain.err]} ${R[$n.gzip.err]}"
done
echo "=============================================================================="
