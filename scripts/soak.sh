#!/usr/bin/env bash
# Soak: an idle, healthy local stack with production settings must notify nobody (issue 14,
# "quiet when healthy"). A benchmark to run by hand, not a CI test.
#
# Starts what README command 1 (scripts/stack.sh) starts: a 3-member etcd cluster on
# 127.0.0.1, one etcd-monitor-agent per member, the etcd-monitor exporter, a Pushgateway,
# and Prometheus with the shipped prometheus/prometheus.yml (shipped scrape and evaluation
# intervals, the rules in rules/). Unlike stack.sh, the relay runs the shipped
# alerting/relay.yml: its receivers (PagerDuty, Slack, heartbeat) point at a local stand-in,
# a small python3 HTTP server started here that records every request. Every daemon runs
# with its defaults. Nothing writes to etcd but the exporter's own probes.
#
# Then it waits DURATION (default 1h; `DURATION=10m scripts/soak.sh` or
# `scripts/soak.sh 90m`; s, m or h, or plain seconds), samples each daemon's RSS once a
# minute, and reports:
#   - notifications the stand-in received, per receiver and alert name (expected: only
#     EtcdMonitorHeartbeat on the heartbeat receiver, about one a minute);
#   - alerts that Prometheus had pending or firing, other than the heartbeat (ALERTS);
#   - the guards' inputs: the largest sample counts and p99s of the quantile recordings;
#   - each daemon's RSS over the run: min, max, first and last sample, in MiB.
# Exit status: 0 when only the heartbeat was heard, 1 when anything else was, 2 when the
# stack could not run.
#
# Uses the same ports as stack.sh (and fails the same way when one is taken: stop the other
# stack first). Data, logs, the stand-in's record (requests.jsonl) and the RSS samples
# (rss.csv) go to SOAK_DIR (default: a new temporary directory, kept and printed at the
# end). SOAK_BUILD=0 skips the release build and uses the binaries in target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

duration=${1:-${DURATION:-1h}}
case "$duration" in
    *h) seconds=$((${duration%h} * 3600)) ;;
    *m) seconds=$((${duration%m} * 60)) ;;
    *s) seconds=${duration%s} ;;
    *) seconds=$duration ;;
esac
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] ||
    { echo "soak: DURATION must be like 1h, 10m, 600s or 600, not '$duration'" >&2; exit 2; }

state=${SOAK_DIR:-$(mktemp -d /tmp/etcd-monitor-soak.XXXXXX)}
mkdir -p "$state"

if [[ "${SOAK_BUILD:-1}" != 0 ]]; then
    echo "soak: building (release)"
    cargo build --release --locked -p exporter -p agent -p alerting -p bench ||
        { echo "soak: the build failed" >&2; exit 2; }
fi
bin="$root/target/release"
for b in etcd-monitor etcd-monitor-agent etcd-monitor-relay; do
    [[ -x "$bin/$b" ]] || { echo "soak: $bin/$b is missing (run without SOAK_BUILD=0)" >&2; exit 2; }
done
for c in etcd etcdctl prometheus prometheus-pushgateway python3 curl; do
    command -v "$c" >/dev/null || { echo "soak: $c is not installed (scripts/setup.sh)" >&2; exit 2; }
done

for port in 2379 2380 12379 12380 22379 22380 9101 9102 9103 8080 9095 9090 9091; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "soak: port $port on 127.0.0.1 is already in use; stop what holds it (ss -ltnp | grep :$port)" >&2
        exit 2
    fi
done

# Daemons by name, for the RSS samples; every process started here is stopped by its pid.
names=()
pids=()
started() { names+=("$1"); pids+=("$2"); }
stop() {
    trap - INT TERM EXIT
    echo "soak: stopping"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop EXIT
trap 'exit 2' INT TERM

# The stand-in for PagerDuty, Slack and the dead man's switch: answers as each does (202,
# "ok", 200) and appends one JSON line per request: time, receiver (from the path),
# alert names found in the body, and the body.
cat >"$state/receiver.py" <<'PY'
import json, re, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

out = open(sys.argv[1], "a", buffering=1)

def names(body):
    found = set()
    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k == "alertname" and isinstance(x, str):
                    found.add(x)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    try:
        walk(json.loads(body))
    except ValueError:
        pass
    # Slack messages carry the name only in their text.
    found.update(re.findall(r"\b(Etcd[A-Za-z0-9]+)\b", body))
    return sorted(found) or ["(none)"]

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
        receiver = self.path.strip("/").split("/")[0] or "(root)"
        out.write(json.dumps({"time": time.time(), "receiver": receiver,
                              "alertnames": names(body), "body": body}) + "\n")
        status, text = {"pagerduty": (202, b'{"status":"success"}'), "slack": (200, b"ok")}.get(receiver, (200, b"ok"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[2], "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
PY
: >"$state/requests.jsonl"
rm -f "$state/receiver.port"
python3 "$state/receiver.py" "$state/requests.jsonl" "$state/receiver.port" 2>>"$state/receiver.log" &
started receiver $!
for _ in $(seq 1 50); do [[ -s "$state/receiver.port" ]] && break; sleep 0.1; done
[[ -s "$state/receiver.port" ]] || { echo "soak: the stand-in receiver did not start; see $state/receiver.log" >&2; exit 2; }
sink="http://127.0.0.1:$(cat "$state/receiver.port")"

client_ports=(2379 12379 22379)
peer_ports=(2380 12380 22380)
cluster=""
for i in 0 1 2; do cluster+="m$((i + 1))=http://127.0.0.1:${peer_ports[$i]},"; done
cluster=${cluster%,}
for i in 0 1 2; do
    name="m$((i + 1))"
    etcd --name "$name" --data-dir "$state/$name.etcd" \
        --listen-client-urls "http://127.0.0.1:${client_ports[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${client_ports[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
        --initial-cluster "$cluster" --initial-cluster-token etcd-monitor-soak \
        --initial-cluster-state new --logger zap --log-outputs stderr --log-level warn \
        >>"$state/$name.log" 2>&1 &
    started "etcd-$name" $!
done
endpoints="http://127.0.0.1:2379,http://127.0.0.1:12379,http://127.0.0.1:22379"
for _ in $(seq 1 60); do
    etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
    sleep 1
done
etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 ||
    { echo "soak: etcd did not become healthy; see $state/m*.log" >&2; exit 2; }

agent_ports=(9101 9102 9103)
agents=()
for i in 0 1 2; do
    name="m$((i + 1))"
    "$bin/etcd-monitor-agent" --member "$name" --data-dir "$state/$name.etcd" \
        --etcd-client-port "${client_ports[$i]}" --listen "127.0.0.1:${agent_ports[$i]}" \
        >>"$state/agent-$name.log" 2>&1 &
    started "agent-$name" $!
    agents+=("--agent" "$name=http://127.0.0.1:${agent_ports[$i]}")
done

# The shipped relay configuration; its receivers read these at start.
PAGERDUTY_ROUTING_KEY=soak-routing-key PAGERDUTY_URL="$sink/pagerduty" \
    SLACK_WEBHOOK_URL="$sink/slack" HEARTBEAT_URL="$sink/heartbeat" \
    "$bin/etcd-monitor-relay" --config "$root/alerting/relay.yml" --data-dir "$state/relay-data" \
    --listen 127.0.0.1:9095 >>"$state/relay.log" 2>&1 &
started relay $!

"$bin/etcd-monitor" --endpoints "$endpoints" --listen 127.0.0.1:8080 "${agents[@]}" \
    --relay-url http://127.0.0.1:9095 >>"$state/exporter.log" 2>&1 &
started exporter $!

prometheus-pushgateway --web.listen-address=127.0.0.1:9091 >>"$state/pushgateway.log" 2>&1 &
started pushgateway $!

prometheus --config.file="$root/prometheus/prometheus.yml" --storage.tsdb.path="$state/prometheus-data" \
    --web.listen-address=127.0.0.1:9090 >>"$state/prometheus.log" 2>&1 &
started prometheus $!

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
sample() {
    local t=$1 i
    for i in "${!pids[@]}"; do
        echo "$t,${names[$i]},$(rss_kib "${pids[$i]}")" >>"$state/rss.csv"
    done
}
alive() {
    local i
    for i in "${!pids[@]}"; do
        kill -0 "${pids[$i]}" 2>/dev/null || { echo "${names[$i]}"; return 0; }
    done
    return 1
}

start=$(date +%s)
echo "soak: stack up; idle for ${seconds}s (data and logs in $state)"
echo "time,daemon,rss_kib" >"$state/rss.csv"
sample 0
died=""
while :; do
    elapsed=$(($(date +%s) - start))
    ((elapsed >= seconds)) && break
    sleep $((seconds - elapsed < 60 ? seconds - elapsed : 60))
    if died=$(alive); then
        echo "soak: $died exited after $(($(date +%s) - start))s; see $state" >&2
        break
    fi
    sample $(($(date +%s) - start))
    received=$(wc -l <"$state/requests.jsonl")
    echo "soak: $(($(date +%s) - start))s, $received notification(s) received"
done
elapsed=$(($(date +%s) - start))

# Prometheus' view of the run, before it stops: alerts other than the heartbeat that were
# ever pending or firing, and the guards' inputs.
range="${elapsed}s"
# One line per query: a key, a tab, Prometheus' JSON answer.
query() {
    local answer
    answer=$(curl -fsS --max-time 20 http://127.0.0.1:9090/api/v1/query --data-urlencode "query=$2" 2>/dev/null) ||
        answer='{"status":"error"}'
    printf '%s\t%s\n' "$1" "$answer"
}
{
    query alerts "max by (alertname, alertstate) (max_over_time(ALERTS{alertname!=\"EtcdMonitorHeartbeat\"}[$range]))"
    for h in member:etcd_disk_wal_fsync_duration_seconds member:etcd_disk_backend_commit_duration_seconds \
        member:etcd_network_peer_round_trip_time_seconds member:etcd_probe_read_duration_seconds \
        cluster:etcd_probe_write_duration_seconds member:etcd_agent_fsync_duration_seconds; do
        query "$h min_count" "min(min_over_time($h:count_5m[$range]))"
        query "$h max_count" "max(max_over_time($h:count_5m[$range]))"
        query "$h max_p99" "max(max_over_time($h:p99_5m[$range]))"
    done
} >"$state/prometheus-queries.txt"

stop
trap - EXIT

python3 - "$state" "$elapsed" "$died" <<'PY'
import collections, csv, json, sys
state, elapsed, died = sys.argv[1], int(sys.argv[2]), sys.argv[3]

print()
print(f"soak report: {elapsed}s idle ({elapsed / 60:.1f} min), data in {state}")
if died:
    print(f"  STOPPED EARLY: {died} exited")

counts = collections.Counter()
for line in open(f"{state}/requests.jsonl"):
    r = json.loads(line)
    for n in r["alertnames"]:
        counts[(r["receiver"], n)] += 1
print()
print("notifications received (receiver, alert name, count):")
if not counts:
    print("  none")
for (recv, name), n in sorted(counts.items()):
    print(f"  {recv:<10} {name:<34} {n}")
unexpected = {k: n for k, n in counts.items() if k != ("heartbeat", "EtcdMonitorHeartbeat")}

answers = {}
for line in open(f"{state}/prometheus-queries.txt"):
    key, _, body = line.rstrip("\n").partition("\t")
    try:
        answers[key] = json.loads(body)["data"]["result"]
    except (ValueError, KeyError, TypeError):
        answers[key] = None
print()
print("alerts pending or firing in Prometheus (other than the heartbeat):")
alerts = answers.get("alerts")
if alerts is None:
    print("  (Prometheus did not answer)")
elif not alerts:
    print("  none")
else:
    for a in alerts:
        print(f"  {a['metric'].get('alertname')}  {a['metric'].get('alertstate')}")
print()
print("quantile guards' inputs over the run (observations in 5 minutes, min..max; largest p99 in s):")
fmt = lambda r: f"{float(r[0]['value'][1]):.4g}" if r else "-"
for key in answers:
    if key.endswith(" min_count"):
        h = key[: -len(" min_count")]
        print(f"  {h:<52} count_5m {fmt(answers[key])}..{fmt(answers.get(h + ' max_count'))}"
              f"  p99_5m max {fmt(answers.get(h + ' max_p99'))}")

rss = collections.defaultdict(list)
for row in csv.DictReader(open(f"{state}/rss.csv")):
    if row["rss_kib"]:
        rss[row["daemon"]].append(int(row["rss_kib"]) / 1024)
print()
print("RSS per daemon, sampled every minute (MiB):")
print(f"  {'daemon':<12} {'min':>8} {'max':>8} {'first':>8} {'last':>8} {'samples':>8}")
for d, v in rss.items():
    print(f"  {d:<12} {min(v):8.1f} {max(v):8.1f} {v[0]:8.1f} {v[-1]:8.1f} {len(v):8d}")
print()
if died:
    print("verdict: incomplete (a daemon exited)")
    sys.exit(2)
if unexpected or (alerts and any(a["metric"].get("alertstate") == "firing" for a in alerts)):
    print("verdict: NOT quiet: something besides the heartbeat was sent or fired")
    sys.exit(1)
print("verdict: quiet (only the heartbeat)" if counts else "verdict: quiet, but not even the heartbeat arrived")
sys.exit(0 if counts else 1)
PY
