#!/usr/bin/env bash
# Installs what etcd-monitor needs to build and test on a fresh Debian machine: the
# protobuf compiler (for etcd-client), etcd and etcdctl, Prometheus (for promtool),
# Alertmanager (for amtool, which the relay's tests drive), and the Rust components for the
# lint step. Safe to run again: it only installs what is missing.
set -euo pipefail

packages=(protobuf-compiler libprotobuf-dev etcd-server etcd-client prometheus prometheus-alertmanager prometheus-pushgateway fio python3-aiosmtpd busybox-static python3-yaml python3-jsonschema systemd dpkg-dev chromium fonts-dejavu-core fuse3 python3-fusepy iproute2 iptables)
# kubectl (kustomize v5) for the Kubernetes deployment's tests: Debian's kubernetes-client is
# only a fallback (its kustomize is too old for kubernetes/, and the test says so).
command -v kubectl >/dev/null || packages+=(kubernetes-client)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The Debian packages start services where an init system runs; the project starts
    # its own processes on other ports, so those are left alone.
fi

# cargo-deb builds the Debian packages (scripts/package.sh, tests/tests/deploy_systemd.rs);
# pinned: `--profile dev`, which the test packages with, is deprecated in later versions.
if command -v cargo >/dev/null && ! cargo deb --version >/dev/null 2>&1; then
    echo "setup: installing cargo-deb 3.8.0 (crates.io)"
    cargo install cargo-deb --version 3.8.0 --locked --quiet
fi

# The Kubernetes deployment's tests (tests/tests/deploy_kubernetes.rs) run the python3 on
# PATH, which may not be Debian's (pyenv): give it PyYAML and jsonschema too, and
# kubernetes-validate (PyPI only), which validates the built-in objects.
py_missing=()
for m in yaml:PyYAML jsonschema:jsonschema kubernetes_validate:kubernetes-validate; do
    python3 -c "import ${m%%:*}" 2>/dev/null || py_missing+=("${m#*:}")
done
if ((${#py_missing[@]})); then
    echo "setup: installing ${py_missing[*]} (PyPI)"
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check "${py_missing[@]}" \
        || { echo "setup: pip install ${py_missing[*]} failed (Debian: apt-get install python3-pip)" >&2; exit 1; }
fi

if command -v rustup >/dev/null; then
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
command -v cargo >/dev/null || { echo "setup: cargo is required (https://rustup.rs)" >&2; exit 1; }
