#!/usr/bin/env bash
# The compose stack (compose/docker-compose.yml) on a Docker engine:
#
#   ./scripts/compose.sh up [--debug] [--offline]   build what cannot be pulled, start,
#                                                   wait until healthy, print the URLs
#   ./scripts/compose.sh down                       remove containers, networks, volumes
#   ./scripts/compose.sh COMMAND [ARGS]             any other compose command on this
#                                                   stack: ps, logs relay, kill etcd2,
#                                                   start etcd2 agent2, exec etcd1 ...
#
# Images. Ours (etcd-monitor:latest, or $ETCD_MONITOR_IMAGE): the root Dockerfile when its
# public bases (rust:1-bookworm, gcr.io/distroless/cc-debian12:nonroot) are present or can
# be pulled; otherwise compose/Dockerfile.local, offline, from the checkout's release
# binaries (`cargo build --release`; --debug: the debug build) stripped, on a base made
# locally from this machine's Debian (compose/Dockerfile.base). etcd, Prometheus and the
# Pushgateway: the upstream images (or $ETCD_IMAGE, $PROMETHEUS_IMAGE, $PUSHGATEWAY_IMAGE)
# when present or pullable, else stand-ins built from Debian's etcd-server, prometheus and
# prometheus-pushgateway binaries (compose/standins/). Grafana has no Debian package: the
# `grafana` profile is enabled only when $GRAFANA_IMAGE (grafana/grafana-oss:10.4.2) is
# present or pullable; the stack runs without it otherwise.
#
# --offline (or ETCD_MONITOR_COMPOSE_OFFLINE=1): pull nothing, use local images or build.
# ETCD_MONITOR_COMPOSE_BIN_DIR=DIR: take the binaries from DIR, run no cargo (the tests).
# COMPOSE_PROJECT_NAME (default etcd-monitor) names the stack; host ports: see the compose
# file. Generated files (Prometheus config, relay token, Grafana datasource) live in
# target/compose/<project>/ and go with `down`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

cmd=${1:-}
[[ $# -gt 0 ]] && shift
offline=${ETCD_MONITOR_COMPOSE_OFFLINE:-0}
profile=release
if [[ $cmd == up ]]; then
    for arg in "$@"; do
        case "$arg" in
            --debug) profile=debug ;;
            --offline) offline=1 ;;
            *) echo "compose: unknown option $arg" >&2; exit 2 ;;
        esac
    done
fi

project=${COMPOSE_PROJECT_NAME:-etcd-monitor}
state=${ETCD_MONITOR_COMPOSE_STATE:-$root/target/compose/$project}
export COMPOSE_PROJECT_NAME=$project COMPOSE_STATE_DIR=$state
image=${ETCD_MONITOR_IMAGE:-etcd-monitor:latest}
export ETCD_MONITOR_IMAGE=$image
base_image=etcd-monitor-base:local

log() { echo "compose: $*" >&2; }
die() { log "$*"; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    die "neither 'docker compose' nor 'docker-compose' is installed"
fi
compose+=(-f "$root/compose/docker-compose.yml" -p "$project")
# What `up` resolved (images, generated files, profiles), for every later command.
envfile=$state/compose.env
[[ $cmd != up && -f $envfile ]] && compose+=(--env-file "$envfile")

# docker build, quiet unless it fails.
build() {
    local out
    out=$(docker build -q "$@" 2>&1) || { echo "$out" >&2; die "docker build $* failed"; }
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
# Present locally, or pulled (unless offline; a registry that does not answer in 60s counts
# as none).
available() {
    have_image "$1" && return 0
    [[ $offline == 1 ]] && return 1
    timeout 60 docker pull -q "$1" >/dev/null 2>&1
}

# The shared libraries of the given binaries and their loader, as `ldd` resolves them.
libs_of() {
    ldd "$@" 2>/dev/null | awk '/=> \// {print $3} /^[[:space:]]*\/[^ ]+ \(0x/ {print $1}' | sort -u
}

# rootfs of the local base: glibc and libgcc of this machine, CA bundle, users, busybox.
stage_base() {
    local dir=$state/build/base r lib
    r=$dir/rootfs
    rm -rf "$dir"
    mkdir -p "$r/etc/ssl/certs" "$r/usr/local/bin" "$r/tmp"
    chmod 1777 "$r/tmp"
    for lib in $(libs_of "$@"); do
        mkdir -p "$r$(dirname "$lib")"
        cp -L "$lib" "$r$lib"
    done
    cp -L /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
    [[ -x /bin/busybox ]] && file_is_static /bin/busybox ||
        die "/bin/busybox (Debian package busybox-static) is required: ./scripts/setup.sh installs it"
    cp /bin/busybox "$r/usr/local/bin/busybox"
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' >"$r/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' 'nogroup:x:65534:' >"$r/etc/group"
    cp "$root/compose/Dockerfile.base" "$dir/Dockerfile"
}
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

build_ours() {
    if [[ -z ${ETCD_MONITOR_COMPOSE_BIN_DIR:-} ]] &&
        available rust:1-bookworm && available gcr.io/distroless/cc-debian12:nonroot; then
        log "building $image from the root Dockerfile (public bases)"
        build -t "$image" "$root"
        return
    fi
    local bindir=${ETCD_MONITOR_COMPOSE_BIN_DIR:-}
    if [[ -z $bindir ]]; then
        local flags=(--locked -p exporter -p agent -p alerting -p bench -p ctl)
        [[ $profile == release ]] && flags+=(--release)
        log "building the binaries ($profile)"
        cargo build "${flags[@]}"
        bindir=${CARGO_TARGET_DIR:-$root/target}/$profile
    fi
    local ctx=$state/build/image b
    rm -rf "$ctx"
    mkdir -p "$ctx/bin" "$ctx/relay-data"
    for b in etcd-monitor etcd-monitor-agent etcd-monitor-relay; do
        [[ -x $bindir/$b ]] || die "$bindir/$b is missing"
    done
    for b in etcd-monitor etcd-monitor-agent etcd-monitor-relay etcd-monitor-bench etcd-monitor-ctl; do
        if [[ -x $bindir/$b ]]; then
            strip -o "$ctx/bin/$b" "$bindir/$b"
        elif [[ $b == etcd-monitor-bench || $b == etcd-monitor-ctl ]]; then
            log "note: $bindir/$b is missing; the image has no ${b#etcd-monitor-}"
        fi
    done
    install -m 0755 "$root/compose/image/healthcheck" "$ctx/bin/etcd-monitor-healthcheck"
    cp "$root/compose/Dockerfile.local" "$ctx/Dockerfile"
    stage_base "$ctx"/bin/etcd-monitor* "$(command -v etcd)" "$(command -v etcdctl)" \
        "$(command -v prometheus)" "$(command -v prometheus-pushgateway)"
    log "building $base_image (scratch + this machine's glibc, CA bundle, busybox)"
    build -t "$base_image" "$state/build/base"
    log "building $image from $bindir (compose/Dockerfile.local)"
    build --build-arg BASE="$base_image" -t "$image" "$ctx"
}

# A stand-in from Debian's binaries when the upstream image is not available.
standin() { # name var default
    local name=$1 var=$2 default=$3 want ctx tag
    want=${!var:-$default}
    if available "$want"; then
        export "$var=$want"
        return
    fi
    [[ -n ${!var:-} ]] && die "$var=$want is neither present nor pullable"
    tag=etcd-monitor-standin-$name:local
    ctx=$state/build/standin-$name
    rm -rf "$ctx"
    mkdir -p "$ctx/bin" "$ctx/data"
    case $name in
        etcd) cp "$(command -v etcd)" "$(command -v etcdctl)" "$ctx/" ;;
        prometheus)
            cp "$(command -v prometheus)" "$ctx/bin/"
            mkdir -p "$ctx/web"
            cp -r /usr/share/prometheus/web/. "$ctx/web/" 2>/dev/null || true
            ln -s /usr/local/bin/busybox "$ctx/bin/wget" ;;
        pushgateway)
            cp "$(command -v prometheus-pushgateway)" "$ctx/bin/pushgateway"
            ln -s /usr/local/bin/busybox "$ctx/bin/wget" ;;
    esac
    cp "$root/compose/standins/$name.Dockerfile" "$ctx/Dockerfile"
    log "$want cannot be pulled: building the stand-in $tag from Debian's binaries"
    build --build-arg BASE="$base_image" -t "$tag" "$ctx"
    export "$var=$tag"
}

# prometheus/prometheus.yml with the compose targets, rule files under
# /etc/prometheus/rules/ and the relay token: the same jobs, intervals and rules.
generate_prometheus() {
    local src=$root/prometheus/prometheus.yml out=$state/prometheus.yml
    {
        echo "# Generated by scripts/compose.sh from prometheus/prometheus.yml; do not edit."
        sed -e "s#'127.0.0.1:8080'#'exporter:8080'#" \
            -e "s#'127.0.0.1:9101'#'agent1:9101'#" \
            -e "s#'127.0.0.1:9102'#'agent2:9101'#" \
            -e "s#'127.0.0.1:9103'#'agent3:9101'#" \
            -e "s#'127.0.0.1:9095'#'relay:9095'#" \
            -e "s#'127.0.0.1:9091'#'pushgateway:9091'#" \
            -e "s#\.\./rules/#rules/#" "$src" |
            awk '
                { print }
                /^[[:space:]]*- api_version: v2[[:space:]]*$/ || /^[[:space:]]*- job_name: etcd-monitor-relay[[:space:]]*$/ {
                    match($0, /^[[:space:]]*/)
                    printf "%s  authorization: {credentials_file: /etc/prometheus/relay-token}\n", substr($0, 1, RLENGTH)
                }'
    } >"$out"
    # Fail loudly when prometheus/prometheus.yml changed in a way this does not know.
    local left
    left=$(grep -v '^[[:space:]]*#' "$out" | grep -o "127\.0\.0\.1:[0-9]*" | grep -v ':9090$' || true)
    [[ -z $left ]] || die "prometheus/prometheus.yml has targets compose.sh does not map: $left"
    [[ $(grep -c 'credentials_file: /etc/prometheus/relay-token' "$out") == 2 ]] ||
        die "prometheus/prometheus.yml: no 'api_version: v2' alertmanager or no etcd-monitor-relay job to add the relay token to"
    grep -q "^  - rules/etcd-alerts.yml" "$out" || die "prometheus/prometheus.yml: rule files not under ../rules/"
}

generate() {
    mkdir -p "$state/grafana-datasources"
    chmod 0755 "$state"
    if [[ ! -s $state/relay-token ]]; then
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$state/relay-token"
    fi
    # Read by the containers' users (65532, 65534) through a file bind mount.
    chmod 0644 "$state/relay-token"
    generate_prometheus
    sed -e 's#url: http://127.0.0.1:9090#url: http://prometheus:9090#' \
        "$root/grafana/provisioning/datasources/prometheus.yml" >"$state/grafana-datasources/prometheus.yml"
    local set=0 v
    for v in PAGERDUTY_ROUTING_KEY SLACK_WEBHOOK_URL HEARTBEAT_URL; do
        [[ -n ${!v:-} ]] && set=$((set + 1))
    done
    if ((set == 3)); then
        export RELAY_CONFIG=$root/alerting/relay.yml
        log "relay: alerting/relay.yml (PagerDuty, Slack, heartbeat)"
    elif ((set == 0)); then
        export RELAY_CONFIG=$root/compose/relay-console.yml
        log "relay: console receiver (set PAGERDUTY_ROUTING_KEY, SLACK_WEBHOOK_URL and HEARTBEAT_URL for alerting/relay.yml)"
    else
        die "set all of PAGERDUTY_ROUTING_KEY, SLACK_WEBHOOK_URL and HEARTBEAT_URL, or none (console receiver)"
    fi
}

wait_healthy() {
    local deadline=$((SECONDS + ${ETCD_MONITOR_COMPOSE_WAIT:-300})) ids id status pending
    while :; do
        ids=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
        pending=""
        for id in $ids; do
            status=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")
            case $status in
                *" running healthy" | *" running none") ;;
                *" exited "* | *" dead "*) pending+=" ${status%% *}(exited)" ;;
                *) pending+=" ${status%% *}" ;;
            esac
        done
        [[ -n $ids && -z $pending ]] && return 0
        if ((SECONDS > deadline)); then
            "${compose[@]}" ps >&2 || true
            die "not healthy after ${ETCD_MONITOR_COMPOSE_WAIT:-300}s:$pending (./scripts/compose.sh logs SERVICE)"
        fi
        sleep 2
    done
}

case $cmd in
    up)
        start=$SECONDS
        mkdir -p "$state"
        generate
        build_ours
        have_image "$base_image" || {
            stage_base "$(command -v etcd)" "$(command -v etcdctl)" "$(command -v prometheus)" "$(command -v prometheus-pushgateway)"
            build -t "$base_image" "$state/build/base"
        }
        standin etcd ETCD_IMAGE gcr.io/etcd-development/etcd:v3.5.17
        standin prometheus PROMETHEUS_IMAGE prom/prometheus:v2.53.2
        standin pushgateway PUSHGATEWAY_IMAGE prom/pushgateway:v1.9.0
        grafana=0
        if available "${GRAFANA_IMAGE:-grafana/grafana-oss:10.4.2}"; then
            export COMPOSE_PROFILES=grafana
            grafana=1
        else
            log "Grafana: ${GRAFANA_IMAGE:-grafana/grafana-oss:10.4.2} is not available (no Debian package, nothing pullable): the stack runs without it"
        fi
        docker image prune -f --filter label=org.etcd-monitor.local-build=true >/dev/null 2>&1 || true
        built=$SECONDS
        {
            echo "COMPOSE_STATE_DIR=$state"
            echo "ETCD_MONITOR_IMAGE=$image"
            echo "ETCD_IMAGE=$ETCD_IMAGE"
            echo "PROMETHEUS_IMAGE=$PROMETHEUS_IMAGE"
            echo "PUSHGATEWAY_IMAGE=$PUSHGATEWAY_IMAGE"
            echo "GRAFANA_IMAGE=${GRAFANA_IMAGE:-grafana/grafana-oss:10.4.2}"
            echo "RELAY_CONFIG=$RELAY_CONFIG"
            echo "COMPOSE_PROFILES=${COMPOSE_PROFILES:-}"
            for v in EXPORTER_HOST_PORT RELAY_HOST_PORT PROMETHEUS_HOST_PORT PUSHGATEWAY_HOST_PORT GRAFANA_HOST_PORT; do
                [[ -n ${!v:-} ]] && echo "$v=${!v}"
            done
        } >"$envfile"
        compose+=(--env-file "$envfile")
        log "starting $project"
        "${compose[@]}" up -d --no-build --quiet-pull >&2
        wait_healthy
        now=$SECONDS
        log "built in $((built - start))s, healthy $((now - built))s after start"
        cat <<EOT

etcd-monitor compose stack "$project" is up (./scripts/compose.sh down removes it):
  status page      http://127.0.0.1:${EXPORTER_HOST_PORT:-8080}/
  cluster status   http://127.0.0.1:${EXPORTER_HOST_PORT:-8080}/api/v1/cluster/status
  exporter         http://127.0.0.1:${EXPORTER_HOST_PORT:-8080}/metrics
  relay            http://127.0.0.1:${RELAY_HOST_PORT:-9095}/api/v1/alerts  (token: $state/relay-token)
  Prometheus       http://127.0.0.1:${PROMETHEUS_HOST_PORT:-9090}/  (alerts: /alerts)
  Pushgateway      http://127.0.0.1:${PUSHGATEWAY_HOST_PORT:-9091}/
EOT
        if ((grafana)); then
            echo "  Grafana          http://127.0.0.1:${GRAFANA_HOST_PORT:-3000}/  (dashboards in folder etcd-monitor)"
        else
            echo "  Grafana          not running (no image; set GRAFANA_IMAGE to one you have)"
        fi
        cat <<EOT
  etcd members     inside the network: http://etcd1:2379, etcd2, etcd3
                   ./scripts/compose.sh exec etcd1 etcdctl endpoint status --cluster -w table
  a member down:   ./scripts/compose.sh kill etcd2 (its agent stops with it: they share a
                   PID namespace); back: ./scripts/compose.sh start etcd2 agent2
  a benchmark:     docker run --rm --network ${project}_default $image etcd-monitor-bench \\
                     --endpoints http://etcd1:2379 --total 10000 --pushgateway http://pushgateway:9091 write
EOT
        ;;
    down)
        export COMPOSE_PROFILES=grafana
        "${compose[@]}" down -v --remove-orphans --timeout 10 >&2
        rm -rf "$state"
        log "removed $project (containers, network, volumes)"
        ;;
    "" | -h | --help | help)
        echo "usage: $0 up [--debug] [--offline] | down | COMMAND [ARGS] (ps, logs SERVICE, kill etcd2, ...)" >&2
        exit 2
        ;;
    *)
        exec "${compose[@]}" "$cmd" "$@"
        ;;
esac
