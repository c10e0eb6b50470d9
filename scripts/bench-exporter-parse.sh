#!/usr/bin/env bash
# Throughput of the exporter's text-format parser and merge (exporter/examples/
# parse_throughput.rs) on a real etcd member's /metrics: MB/s of input parsed, and of a
# three-member merge with `cluster` and `member` labels.
#
#   ./scripts/bench-exporter-parse.sh [FILE] [SECONDS per measure, default 3]
#
# FILE defaults to the fuzzing seed taken from an etcd 3.4 member
# (fuzz/corpus/exporter_textformat/etcd-3.4.23-member.metrics, ~147 KB, 1,247 samples);
# save another member's with `curl -s http://HOST:2379/metrics > FILE`. The figures are
# only comparable on the same machine at the same load.
set -euo pipefail
cd "$(dirname "$0")/.."

file=${1:-fuzz/corpus/exporter_textformat/etcd-3.4.23-member.metrics}
seconds=${2:-3}
cargo run --quiet --release --example parse_throughput -p exporter -- "$file" "$seconds"
