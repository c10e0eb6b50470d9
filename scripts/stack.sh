#!/usr/bin/env bash
# Command 1 of the README: set up and run the whole stack locally, no Docker: a 3-member
# etcd cluster on 127.0.0.1, one etcd-monitor-agent per member, the etcd-monitor exporter
# in front of them, etcd-monitor-relay (console receiver) for alerts, a Pushgateway for
# etcd-monitor-bench results, and Prometheus scraping it all and sending alerts to the
# relay (with the rules in rules/, when there are any). Ctrl-C stops
# everything. Data lives in .stack/ (kept between runs; `--clean` starts afresh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
state="$root/.stack"

if [[ "${1:-}" == "--clean" ]]; then
    rm -rf "$state"
fi

./scripts/setup.sh
echo "stack: building (release)"
cargo build --release --locked -p exporter -p agent -p alerting -p bench
bin="$root/target/release"

for port in 2379 2380 12379 12380 22379 22380 9101 9102 9103 8080 9095 9090 9091; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "stack: port $port on 127.0.0.1 is already in use; stop what holds it (ss -ltnp | grep :$port)" >&2
        exit 1
    fi
done

mkdir -p "$state"
pids=()
stop() {
    trap - INT TERM EXIT
    echo
    echo "stack: stopping"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    echo "stack: stopped"
}
trap stop INT TERM EXIT

client_ports=(2379 12379 22379)
peer_ports=(2380 12380 22380)
cluster=""
for i in 0 1 2; do
    cluster+="m$((i + 1))=http://127.0.0.1:${peer_ports[$i]},"
done
cluster=${cluster%,}
for i in 0 1 2; do
    name="m$((i + 1))"
    etcd --name "$name" --data-dir "$state/$name.etcd" \
        --listen-client-urls "http://127.0.0.1:${client_ports[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${client_ports[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
        --initial-cluster "$cluster" --initial-cluster-token etcd-monitor-local \
        --initial-cluster-state new --logger zap --log-outputs stderr --log-level warn \
        >>"$state/$name.log" 2>&1 &
    pids+=($!)
done
endpoints="http://127.0.0.1:2379,http://127.0.0.1:12379,http://127.0.0.1:22379"
for _ in $(seq 1 60); do
    etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
    sleep 1
done
etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 ||
    { echo "stack: etcd did not become healthy; see $state/m*.log" >&2; exit 1; }

agent_ports=(9101 9102 9103)
agents=()
for i in 0 1 2; do
    name="m$((i + 1))"
    "$bin/etcd-monitor-agent" --member "$name" --data-dir "$state/$name.etcd" \
        --etcd-client-port "${client_ports[$i]}" --listen "127.0.0.1:${agent_ports[$i]}" \
        >>"$state/agent-$name.log" 2>&1 &
    pids+=($!)
    agents+=("--agent" "$name=http://127.0.0.1:${agent_ports[$i]}")
done

cat >"$state/relay.yml" <<'YAML'
# The local stack's relay: every alert to the console (see .stack/relay.log).
dedup_window: 5m
receivers:
  - name: log
    console: {}
YAML
"$bin/etcd-monitor-relay" --config "$state/relay.yml" --data-dir "$state/relay-data" \
    --listen 127.0.0.1:9095 >>"$state/relay.log" 2>&1 &
pids+=($!)

"$bin/etcd-monitor" --endpoints "$endpoints" --listen 127.0.0.1:8080 "${agents[@]}" \
    --relay-url http://127.0.0.1:9095 \
    >>"$state/exporter.log" 2>&1 &
pids+=($!)

prometheus-pushgateway --web.listen-address=127.0.0.1:9091 >>"$state/pushgateway.log" 2>&1 &
pids+=($!)

# prometheus/prometheus.yml targets exactly the ports above and loads rules/.
prometheus --config.file="$root/prometheus/prometheus.yml" --storage.tsdb.path="$state/prometheus-data" \
    --web.listen-address=127.0.0.1:9090 >>"$state/prometheus.log" 2>&1 &
pids+=($!)

cat <<EOT

etcd-monitor local stack is running (logs in .stack/):
  etcd members     $endpoints
  agents           http://127.0.0.1:9101/metrics  :9102  :9103  (JSON: /api/v1/snapshot)
  status page      http://127.0.0.1:8080/
  exporter         http://127.0.0.1:8080/metrics
  cluster status   http://127.0.0.1:8080/api/v1/cluster/status
  relay            http://127.0.0.1:9095/api/v1/alerts  (ingest: POST /api/v2/alerts)
  Prometheus       http://127.0.0.1:9090/  (rules and alerts: /alerts)
  Pushgateway      http://127.0.0.1:9091/
  a benchmark:     target/release/etcd-monitor-bench --endpoints $endpoints \\
                     --total 10000 --pushgateway http://127.0.0.1:9091 write
  members          http://127.0.0.1:8080/api/v1/cluster/members

Press Ctrl-C to stop everything.
EOT
wait -n "${pids[@]}" || true
echo "stack: a process exited; see .stack/*.log" >&2
