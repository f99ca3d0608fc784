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
# Images: a registry on loopback, and the tools that build, push and (for
# comparison in `make bench`) pull images. podman is compared when present.
command -v docker-registry >/dev/null 2>&1 || missing="$missing docker-registry"
command -v skopeo >/dev/null 2>&1 || missing="$missing skopeo"
command -v umoci >/dev/null 2>&1 || missing="$missing umoci"
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
