#!/usr/bin/env bash
# Command 2 of the README: set up and run every check and test.
#   promtool over the rules and the Prometheus config, fmt, clippy with -D warnings, unit
#   tests, the end-to-end tests that start real etcd clusters (and Prometheus) on
#   loopback ports, and a short run of the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

echo "== promtool: rules, rule unit tests, Prometheus config"
promtool check rules rules/*.yml
promtool test rules rules/tests/*.yml
promtool check config prometheus/prometheus.yml

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== fuzz: the relay's and the exporter's parsers, 20 s per target (scripts/fuzz.sh)"
./scripts/fuzz.sh 20
