#!/usr/bin/env bash
# Builds the Debian packages of etcd-monitor with cargo-deb, into target/debian/:
#   etcd-monitor        the exporter (/usr/bin/etcd-monitor), etcd-monitor-bench and
#                       etcd-monitor-ctl, its unit,
#                       /etc/etcd-monitor/exporter.env
#   etcd-monitor-agent  the agent, its unit, /etc/etcd-monitor/agent.env
#   etcd-monitor-relay  the relay, its unit, /etc/etcd-monitor/relay.{yml,env}
# Units go to /usr/lib/systemd/system (= /lib/systemd/system on merged-/usr Debian) and are
# neither enabled nor started; the files under /etc are conffiles. The package metadata is
# the [package.metadata.deb] table of exporter/, agent/ and alerting/Cargo.toml.
#
#   ./scripts/package.sh          release build (stripped binaries): what users install
#   ./scripts/package.sh --dev    packages the debug binaries instead (built when missing or
#                                 stale, usually already there after `cargo test`): for tests
#
# Installs cargo-deb (crates.io, pinned below) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0

dev=false
for arg in "$@"; do
    case "$arg" in
    --dev) dev=true ;;
    -h | --help)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "package.sh: unknown argument $arg (use --dev or nothing)" >&2
        exit 2
        ;;
    esac
done

if ! cargo deb --version >/dev/null 2>&1; then
    echo "package: installing cargo-deb $CARGO_DEB_VERSION (cargo install, about 3 minutes on 2 cores)"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
echo "package: $(cargo deb --version)"

out="${CARGO_TARGET_DIR:-$PWD/target}/debian"
mkdir -p "$out"

# Build every binary once (the workspace's packages share the build), then let cargo-deb
# package what is there.
bins=(-p exporter -p agent -p alerting -p bench -p ctl --bins)
deb_args=(--no-build -o "$out")
if $dev; then
    cargo build --locked "${bins[@]}"
    # cargo-deb warns that the dev profile is meant for tests only: that is what this is.
    deb_args+=(--profile dev --no-strip --fast)
else
    cargo build --locked --release "${bins[@]}"
fi

for p in exporter agent alerting; do
    cargo deb -p "$p" "${deb_args[@]}" 2> >(grep -v -e 'dev profile is not supported' -e 'To enable debug symbols set' >&2)
done
echo "package: packages in $out"
