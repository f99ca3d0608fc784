#!/bin/sh
# Install what rundmc's build, tests and demo need and this machine lacks.
# Idempotent: does nothing when everything is present. Debian/Ubuntu, as root.
set -eu
missing=""
command -v runc >/dev/null 2>&1 || missing="$missing runc"
command -v crun >/dev/null 2>&1 || missing="$missing crun"
{ [ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1; } || missing="$missing busybox-static"
command -v gcc >/dev/null 2>&1 || missing="$missing gcc libc6-dev"
command -v python3 >/dev/null 2>&1 || missing="$missing python3 python3-pip"
# Images: a real registry on loopback, skopeo and umoci to build and push
# test images (and, in `make bench`, to pull for comparison; podman too when
# present), openssl for a test CA, htpasswd (apache2-utils) for Basic auth.
command -v docker-registry >/dev/null 2>&1 || missing="$missing docker-registry"
command -v skopeo >/dev/null 2>&1 || missing="$missing skopeo"
command -v umoci >/dev/null 2>&1 || missing="$missing umoci"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
command -v htpasswd >/dev/null 2>&1 || missing="$missing apache2-utils"
# Networking: Debian's CNI plugins (bridge, host-local, portmap), iptables
# for portmap, iproute2 for the tests' bridges and namespaces.
[ -x /usr/lib/cni/bridge ] || missing="$missing containernetworking-plugins"
command -v iptables >/dev/null 2>&1 || missing="$missing iptables"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v script >/dev/null 2>&1 || missing="$missing bsdutils"
# `make bench` (issue 19): a CPU hog for bursts under saturation, and the
# peers it measures rundmc against: podman (with conmon, which drives runc
# or crun) and containerd with its ctr client and runc shim.
command -v stress-ng >/dev/null 2>&1 || missing="$missing stress-ng"
command -v podman >/dev/null 2>&1 || missing="$missing podman"
command -v conmon >/dev/null 2>&1 || missing="$missing conmon"
{ command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1 \
    && command -v containerd-shim-runc-v2 >/dev/null 2>&1; } || missing="$missing containerd"
command -v perf >/dev/null 2>&1 || missing="$missing linux-perf"
# Seccomp: containers/common's profile, which the default profile's test
# diffs against (Moby's, loosened for Podman).
[ -f /usr/share/containers/seccomp.json ] || missing="$missing golang-github-containers-common"
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps: missing:$missing; run as root to install them" >&2
        exit 1
    fi
    echo "deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $missing >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "deps: cargo is in $HOME/.cargo/bin; add it to PATH" >&2
    exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "deps: no Rust toolchain; install one with rustup (https://rustup.rs), Rust 1.85 or later" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "deps: rundmc drives runc, mounts overlays and writes cgroups: run as root" >&2
    exit 1
fi
# tests/chart.rs lints and renders the Helm chart with Helm's own library.
if ! python3 -c 'import helm_python' >/dev/null 2>&1; then
    echo "deps: installing helm-python-sdk"
    python3 -m pip --version >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null; }
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet helm-python-sdk==0.2.2
fi
