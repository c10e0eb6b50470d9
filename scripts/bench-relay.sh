#!/usr/bin/env bash
# Benchmark of etcd-monitor-relay against Prometheus Alertmanager (Debian's
# prometheus-alertmanager), both with one webhook receiver pointing at the same local
# python3 webhook sink. Alertmanager is configured so that every alert is its own group and
# is sent at once (group_by ['...'], group_wait 0s, group_interval 1s, repeat_interval 5m);
# the relay runs with the same grouping settings. They run one after the other, never at
# the same time; the webhook sink runs throughout.
#
# What it measures, for each of the two:
#   * ingest throughput: INGEST_ALERTS distinct alerts POSTed to /api/v2/alerts in batches
#     of INGEST_BATCH over INGEST_CONNS concurrent keep-alive connections (python3
#     http.client, one thread per connection): alerts/s, requests/s, p50/p99/max request
#     latency, and how long until the webhook sink had received all of them;
#   * CPU seconds (utime+stime from /proc/PID/stat) used during the ingest run, and also
#     up to the moment the last of those alerts reached the webhook;
#   * added latency from POST to webhook delivery: LAT_ALERTS distinct alerts POSTed one at
#     a time (one alert per request, LAT_GAP_MS between posts) once the ingest deliveries
#     have drained; latency = arrival at the sink - time just before the POST was sent
#     (both wall clock, same host): p50/p99/max and how many arrived;
#   * RSS (VmRSS) after start-up and after its run.
# The relay fsyncs every ingest request (redb, durable before the 200); Alertmanager keeps
# alerts in memory. Every alert carries the labels alertname, run, id, severity, instance.
#
# Run from anywhere, as root if prometheus-alertmanager still has to be installed:
#     ./scripts/bench-relay.sh            # or: bash scripts/bench-relay.sh
# Takes about 1-2 minutes after the build. Needs curl, python3 and prometheus-alertmanager
# (installed with apt-get if missing). Uses 127.0.0.1 ports 34095 (relay), 34093
# (Alertmanager; clustering disabled) and 34000 (webhook sink). KEEP_TMP=1 keeps the temp
# dir (configs, data dirs, logs, raw results) for inspection.
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"
cd "$(dirname "$0")/.."
root=$(pwd)


# ---------------------------------------------------------------- settings
INGEST_ALERTS=2000   # distinct alerts in the ingest run
INGEST_BATCH=10      # alerts per POST
INGEST_CONNS=4       # concurrent connections (threads) of the load tool
LAT_ALERTS=200       # alerts of the POST -> webhook latency run, one per POST
LAT_GAP_MS=20        # pause between two of those POSTs
DRAIN_TIMEOUT=300    # s to wait for all ingest alerts to reach the webhook
LAT_WAIT=30          # s to wait, after the last latency POST, for the missing deliveries
SETTLE_SECONDS=3     # pause after start-up and between the phases
RELAY_PORT=34095
AM_PORT=34093
HOOK_PORT=34000

# ---------------------------------------------------------------- state + cleanup
tmp=""
hook_pid=""   # the python webhook sink
target_pid="" # the relay or Alertmanager, whichever runs
fg_pid=""     # the command run_wait is waiting for


cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    stop_pid "$fg_pid"
    stop_pid "$target_pid"
    stop_pid "$hook_pid"
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
for tool in curl python3 getconf awk; do
    command -v "$tool" >/dev/null || die "$tool not found in PATH"
done
if ! command -v prometheus-alertmanager >/dev/null; then
    log "installing prometheus-alertmanager"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        prometheus-alertmanager >/dev/null 2>&1; then
        apt-get update -qq >/dev/null || die "apt-get update failed (run as root?)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            prometheus-alertmanager >/dev/null || die "apt-get install prometheus-alertmanager failed"
    fi
    command -v prometheus-alertmanager >/dev/null ||
        die "prometheus-alertmanager not in PATH after the install"
    R[install]="installed prometheus-alertmanager"
fi
am_bin=$(command -v prometheus-alertmanager)
# The real interpreter, so that pyenv-style shims do not add their start-up to every call.
PY=$(python3 -c 'import sys; print(sys.executable)')
CLK_TCK=$(getconf CLK_TCK)

log "building (release)"
cargo build --release --locked -p alerting
relay_bin="$root/target/release/etcd-monitor-relay"
[[ -x "$relay_bin" ]] || die "$relay_bin missing after the build"

for p in "$RELAY_PORT" "$AM_PORT" "$HOOK_PORT"; do
    port_in_use "$p" && die "port 127.0.0.1:$p is already in use"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-relay.XXXXXX")
tmp_fs=$(df -PT "$tmp" | awk 'NR == 2 { print $2 }')
hook_url="http://127.0.0.1:$HOOK_PORT"

# ---------------------------------------------------------------- helper programs
# The webhook sink: answers every POST 200 at once (before parsing it), then records, per
# alert, the wall-clock arrival time of its first delivery and how many deliveries it got,
# keyed by the alert's labels run and id. GET /count?run=R and GET /dump?run=R read it.
cat >"$tmp/webhook.py" <<'EOF'
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

lock = threading.Lock()
runs = {}  # run -> {id: [first_arrival_ns, deliveries, last_arrival_ns]}
stats = {"posts": 0, "bad": 0}

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, doc=None):
        body = b"" if doc is None else json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        t = time.time_ns()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.reply(200)
        try:
            items = [(a["labels"]["run"], a["labels"]["id"]) for a in json.loads(body)["alerts"]]
        except Exception:
            with lock:
                stats["bad"] += 1
            return
        with lock:
            stats["posts"] += 1
            for run, id_ in items:
                r = runs.setdefault(run, {})
                e = r.get(id_)
                if e is None:
                    r[id_] = [t, 1, t]
                else:
                    e[1] += 1
                    e[2] = t

    def do_GET(self):
        u = urlparse(self.path)
        run = parse_qs(u.query).get("run", [""])[0]
        with lock:
            r = runs.get(run, {})
            if u.path == "/health":
                doc = {"status": "ok", **stats}
            elif u.path == "/count":
                doc = {"distinct": len(r), "deliveries": sum(e[1] for e in r.values()),
                       "first_ns": min((e[0] for e in r.values()), default=0),
                       "last_ns": max((e[0] for e in r.values()), default=0)}
            elif u.path == "/dump":
                doc = {k: e[0] for k, e in r.items()}
            else:
                doc = None
        if doc is None:
            self.reply(404, {"error": "no such path"})
        else:
            self.reply(200, doc)

class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # Alertmanager opens many connections at once

    def handle_error(self, request, client_address):  # one line, not a traceback
        print(f"webhook sink: {client_address}: {sys.exc_info()[1]!r}", file=sys.stderr, flush=True)

Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
EOF

# Shared by the two load programs (python puts the script's own directory on sys.path).
cat >"$tmp/benchlib.py" <<'EOF'
import datetime, math

def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

def alert(run, i, name):
    return {
        "labels": {"alertname": name, "run": run, "id": str(i), "severity": "warning",
                   "instance": f"bench-{i % 50}"},
        "annotations": {"summary": f"bench alert {i} of run {run}"},
        "startsAt": now_rfc3339(),
        "generatorURL": "http://bench.invalid/graph?g0.expr=up",
    }

def pct(xs, q):  # nearest-rank percentile of a sorted list
    return xs[max(0, math.ceil(q / 100 * len(xs)) - 1)] if xs else float("nan")

def emit(d):  # "key value" lines, read by the shell
    for k, v in d.items():
        print(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}")
EOF

# Ingest load: N distinct alerts in batches over C keep-alive connections (one thread each).
cat >"$tmp/ingest.py" <<'EOF'
import http.client, json, sys, threading, time
from benchlib import alert, emit, pct

port, run, n, batch, conns = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
bodies = [json.dumps([alert(run, i, "BenchIngest") for i in range(b, min(b + batch, n))]).encode()
          for b in range(0, n, batch)]
sizes = [min(batch, n - b) for b in range(0, n, batch)]
lock = threading.Lock()
state = {"next": 0, "ok_alerts": 0}
lat, errors = [], []
go = threading.Barrier(conns + 1)

def worker():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    go.wait()
    while True:
        with lock:
            i = state["next"]
            if i >= len(bodies):
                break
            state["next"] = i + 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/api/v2/alerts", bodies[i], {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            dt = time.perf_counter() - t0
            with lock:
                if resp.status == 200:
                    lat.append(dt)
                    state["ok_alerts"] += sizes[i]
                else:
                    errors.append(f"HTTP {resp.status}: {data[:200]!r}")
        except Exception as e:
            with lock:
                errors.append(repr(e))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.close()

threads = [threading.Thread(target=worker) for _ in range(conns)]
for t in threads:
    t.start()
go.wait()
start_ns = time.time_ns()
t0 = time.perf_counter()
for t in threads:
    t.join()
wall = time.perf_counter() - t0
lat.sort()
for e in errors[:5]:
    print("ingest error:", e, file=sys.stderr)
if not lat:
    sys.exit("no request succeeded")
emit({"start_ns": start_ns, "wall_s": wall, "requests": len(bodies), "ok_requests": len(lat),
      "errors": len(errors), "ok_alerts": state["ok_alerts"],
      "alerts_per_s": state["ok_alerts"] / wall, "requests_per_s": len(lat) / wall,
      "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3, "max_ms": lat[-1] * 1e3})
EOF

# POST -> webhook latency: N alerts, one per POST, sequential, GAP_MS apart; then waits up to
# WAIT_S for the missing ones at the sink and compares arrival with send time per alert.
cat >"$tmp/latency.py" <<'EOF'
import http.client, json, sys, time
from benchlib import alert, emit, pct

port, hook_port, run, n, gap_ms, wait_s = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                           int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]))
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
sent, post_ms, errors = {}, [], []
for i in range(n):
    body = json.dumps([alert(run, i, "BenchLatency")]).encode()
    t = time.time_ns()
    try:
        conn.request("POST", "/api/v2/alerts", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status == 200:
            sent[str(i)] = t
            post_ms.append((time.time_ns() - t) / 1e6)
        else:
            errors.append(f"HTTP {resp.status}: {data[:200]!r}")
    except Exception as e:
        errors.append(repr(e))
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    time.sleep(gap_ms / 1000)
conn.close()
for e in errors[:5]:
    print("latency post error:", e, file=sys.stderr)

def sink(path):
    c = http.client.HTTPConnection("127.0.0.1", hook_port, timeout=10)
    try:
        c.request("GET", f"{path}?run={run}")
        return json.loads(c.getresponse().read())
    finally:
        c.close()

deadline = time.monotonic() + wait_s
while sink("/count")["distinct"] < len(sent) and time.monotonic() < deadline:
    time.sleep(0.1)
arrived = sink("/dump")
lat = sorted((arrived[k] - t) / 1e6 for k, t in sent.items() if k in arrived)
post_ms.sort()
emit({"posted": len(sent), "errors": len(errors), "arrived": len(lat),
      "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "min_ms": lat[0] if lat else float("nan"),
      "max_ms": lat[-1] if lat else float("nan"),
      "post_p50_ms": pct(post_ms, 50), "post_p99_ms": pct(post_ms, 99)})
EOF

# ---------------------------------------------------------------- configs
cat >"$tmp/relay.yml" <<EOF
group_by: ['...']
group_wait: 0s
group_interval: 1s
repeat_interval: 5m
receivers:
  - name: hook
    webhook:
      url: $hook_url/hook
EOF

cat >"$tmp/alertmanager.yml" <<EOF
route:
  receiver: hook
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 5m
receivers:
  - name: hook
    webhook_configs:
      - url: $hook_url/hook
        send_resolved: true
EOF

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

# Runs a command in the background and waits for it: unlike a foreground command, `wait`
# returns at once on Ctrl-C or kill, so the trap (and cleanup) runs without delay.



sink_count() { # sink_count RUN FIELD: a field of the sink's GET /count?run=RUN
    curl -sf -m 5 "$hook_url/count?run=$1" |
        "$PY" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

read_results() { # read_results KEY FILE: "name value" lines into R[KEY.name]
    local k v
    while read -r k v; do
        [[ -n "$k" ]] && R[$1.$k]=$v
    done <"$2"
}

start_relay() {
    "$relay_bin" --config "$tmp/relay.yml" --data-dir "$tmp/relay-data" \
        --listen "127.0.0.1:$RELAY_PORT" >>"$tmp/relay.log" 2>&1 &
    target_pid=$!
    wait_http_200 "http://127.0.0.1:$RELAY_PORT/health" "$target_pid" "etcd-monitor-relay" 30
}

start_alertmanager() {
    "$am_bin" --config.file="$tmp/alertmanager.yml" --storage.path="$tmp/am-data" \
        --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= \
        >>"$tmp/alertmanager.log" 2>&1 &
    target_pid=$!
    wait_http_200 "http://127.0.0.1:$AM_PORT/-/ready" "$target_pid" "alertmanager" 30
}

# ---------------------------------------------------------------- webhook sink
log "starting the webhook sink on :$HOOK_PORT"
"$PY" "$tmp/webhook.py" "$HOOK_PORT" >>"$tmp/webhook.log" 2>&1 &
hook_pid=$!
wait_http_200 "$hook_url/health" "$hook_pid" "webhook sink" 15

# ---------------------------------------------------------------- one target
run_target() { # run_target KEY NAME PORT START_FUNCTION
    local key=$1 name=$2 port=$3 start=$4 run c0 c1 c2 distinct deadline last_ns
    log "$name: starting on :$port"
    "$start"
    nap "$SETTLE_SECONDS"
    R[$key.rss0]=$(rss_mib "$target_pid")

    # 1. ingest throughput
    run="$key-ingest"
    log "$name: ingest, $INGEST_ALERTS alerts in batches of $INGEST_BATCH over $INGEST_CONNS connections"
    c0=$(cpu_ticks "$target_pid")
    run_wait timeout 300 "$PY" "$tmp/ingest.py" "$port" "$run" "$INGEST_ALERTS" \
        "$INGEST_BATCH" "$INGEST_CONNS" >"$tmp/ingest-$key.txt" 2>"$tmp/ingest-$key.log" ||
        die "$name: ingest load failed: $(tail -n 5 "$tmp/ingest-$key.log")"
    c1=$(cpu_ticks "$target_pid")
    kill -0 "$target_pid" 2>/dev/null || die "$name died during the ingest run"
    read_results "$key.in" "$tmp/ingest-$key.txt"
    R[$key.cpu_ingest]=$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d / hz }')

    # ... and the deliveries it caused, until all have reached the sink
    deadline=$((SECONDS + DRAIN_TIMEOUT))
    while :; do
        distinct=$(sink_count "$run" distinct) || die "webhook sink not answering"
        ((distinct >= ${R[$key.in.ok_alerts]})) && break
        kill -0 "$target_pid" 2>/dev/null || die "$name died while delivering"
        if ((SECONDS >= deadline)); then
            log "warning: $name: only $distinct of ${R[$key.in.ok_alerts]} ingest alerts reached the webhook within $DRAIN_TIMEOUT s"
            break
        fi
        sleep 0.1
    done
    c2=$(cpu_ticks "$target_pid")
    R[$key.drained]=$distinct
    last_ns=$(sink_count "$run" last_ns)
    R[$key.drain_s]=$(awk -v a="$last_ns" -v b="${R[$key.in.start_ns]}" 'BEGIN { printf "%.2f", (a - b) / 1e9 }')
    R[$key.cpu_drain]=$(awk -v d="$((c2 - c0))" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d / hz }')
    echo "$name: ingest ${R[$key.in.alerts_per_s]} alerts/s, ${R[$key.in.requests_per_s]} req/s, p50 ${R[$key.in.p50_ms]} ms, p99 ${R[$key.in.p99_ms]} ms, ${R[$key.in.errors]} errors; CPU ${R[$key.cpu_ingest]} s; $distinct delivered, the last ${R[$key.drain_s]} s after the first POST"
    nap "$SETTLE_SECONDS"

    # 2. POST -> webhook latency
    run="$key-latency"
    log "$name: latency, $LAT_ALERTS alerts one at a time, ${LAT_GAP_MS} ms apart"
    run_wait timeout 180 "$PY" "$tmp/latency.py" "$port" "$HOOK_PORT" "$run" "$LAT_ALERTS" \
        "$LAT_GAP_MS" "$LAT_WAIT" >"$tmp/latency-$key.txt" 2>"$tmp/latency-$key.log" ||
        die "$name: latency run failed: $(tail -n 5 "$tmp/latency-$key.log")"
    kill -0 "$target_pid" 2>/dev/null || die "$name died during the latency run"
    read_results "$key.lat" "$tmp/latency-$key.txt"
    echo "$name: POST->webhook p50 ${R[$key.lat.p50_ms]} ms, p99 ${R[$key.lat.p99_ms]} ms, max ${R[$key.lat.max_ms]} ms; ${R[$key.lat.arrived]}/$LAT_ALERTS arrived"

    # 3. RSS after the run, duplicate deliveries, stop
    nap 1
    R[$key.rss1]=$(rss_mib "$target_pid")
    R[$key.dup]=$(($(sink_count "$key-ingest" deliveries) - $(sink_count "$key-ingest" distinct) \
        + $(sink_count "$key-latency" deliveries) - $(sink_count "$key-latency" distinct)))
    stop_pid "$target_pid"
    target_pid=""
}

run_target relay etcd-monitor-relay "$RELAY_PORT" start_relay
nap "$SETTLE_SECONDS"
run_target am alertmanager "$AM_PORT" start_alertmanager

# ---------------------------------------------------------------- wind down, then summary
bad_posts=$(curl -sf -m 5 "$hook_url/health" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["bad"])' ||
    echo "?")
stop_pid "$hook_pid"
hook_pid=""
strays=$(pgrep -f "$tmp" | tr '\n' ' ' || true)
[[ -z "${strays// /}" ]] || die "processes still running on $tmp: $strays"
am_version=$("$am_bin" --version 2>&1 | sed -n 1p)
load_end=$(cat /proc/loadavg)

row() { printf '  %-44s %20s %20s\n' "$@"; }
cat <<EOF

==================== etcd-monitor-relay benchmark summary ====================
host: nproc=$(nproc), kernel $(uname -r); CLK_TCK=$CLK_TCK; temp dir on $tmp_fs
versions: $("$relay_bin" --version); $am_version; python $("$PY" -c 'import platform; print(platform.python_version())')
loadavg at start: $load_start
loadavg at end:   $load_end
prerequisites: ${R[install]:-prometheus-alertmanager was already installed}
relay: one webhook receiver, defaults (dedup_window 5m), data dir fsynced per request;
alertmanager: one webhook receiver, group_by ['...'], group_wait 0s, group_interval 1s,
  repeat_interval 5m, clustering off. Same python3 webhook sink (answers 200 at once).
EOF
row "" "etcd-monitor-relay" "alertmanager"
row "RSS ${SETTLE_SECONDS} s after start (MiB)" "${R[relay.rss0]}" "${R[am.rss0]}"
echo "ingest: $INGEST_ALERTS distinct alerts, batches of $INGEST_BATCH ($((INGEST_ALERTS / INGEST_BATCH)) POST /api/v2/alerts), $INGEST_CONNS connections"
row "  alerts/s" "${R[relay.in.alerts_per_s]}" "${R[am.in.alerts_per_s]}"
row "  requests/s" "${R[relay.in.requests_per_s]}" "${R[am.in.requests_per_s]}"
row "  request latency p50 (ms)" "${R[relay.in.p50_ms]}" "${R[am.in.p50_ms]}"
row "  request latency p99 (ms)" "${R[relay.in.p99_ms]}" "${R[am.in.p99_ms]}"
row "  request latency max (ms)" "${R[relay.in.max_ms]}" "${R[am.in.max_ms]}"
row "  wall time (s)" "${R[relay.in.wall_s]}" "${R[am.in.wall_s]}"
row "  failed requests" "${R[relay.in.errors]}" "${R[am.in.errors]}"
row "  CPU during the ingest run (s)" "${R[relay.cpu_ingest]}" "${R[am.cpu_ingest]}"
row "  alerts delivered to the webhook" "${R[relay.drained]}/${R[relay.in.ok_alerts]}" "${R[am.drained]}/${R[am.in.ok_alerts]}"
row "  last delivery, s after the first POST" "${R[relay.drain_s]}" "${R[am.drain_s]}"
row "  CPU until that last delivery (s)" "${R[relay.cpu_drain]}" "${R[am.cpu_drain]}"
echo "POST -> webhook: $LAT_ALERTS alerts, one per POST, sequential, ${LAT_GAP_MS} ms apart"
row "  arrived" "${R[relay.lat.arrived]}/${R[relay.lat.posted]}" "${R[am.lat.arrived]}/${R[am.lat.posted]}"
row "  delivery latency p50 (ms)" "${R[relay.lat.p50_ms]}" "${R[am.lat.p50_ms]}"
row "  delivery latency p99 (ms)" "${R[relay.lat.p99_ms]}" "${R[am.lat.p99_ms]}"
row "  delivery latency min / max (ms)" "${R[relay.lat.min_ms]} / ${R[relay.lat.max_ms]}" "${R[am.lat.min_ms]} / ${R[am.lat.max_ms]}"
row "  POST answered, p50 / p99 (ms)" "${R[relay.lat.post_p50_ms]} / ${R[relay.lat.post_p99_ms]}" "${R[am.lat.post_p50_ms]} / ${R[am.lat.post_p99_ms]}"
row "  failed POSTs" "${R[relay.lat.errors]}" "${R[am.lat.errors]}"
row "duplicate deliveries (both runs)" "${R[relay.dup]}" "${R[am.dup]}"
row "RSS after its run (MiB)" "${R[relay.rss1]}" "${R[am.rss1]}"
cat <<EOF
webhook POSTs the sink could not parse: $bad_posts
stray processes: none (relay, alertmanager and webhook sink stopped)
==============================================================================
EOF
