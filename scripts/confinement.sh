#!/bin/sh
# Print, side by side, the effective confinement of one process in:
#   - a default rundmc container (the real agent, a manifest with nothing
#     but a rootfs and the probe as its main process),
#   - a default `podman run` of the same rootfs (`--rootfs`; no registry;
#     `--network none`, which changes nothing printed here; when podman's
#     default rlimits cannot be set, as where the caller lacks
#     CAP_SYS_RESOURCE, once more with low nofile/nproc limits, said below),
#   - runc's own `runc spec` default config, run by runc.
# Each reads its own view from inside: CapEff/CapBnd, Seccomp mode,
# NoNewPrivs, which of containerd's masked paths are masked, whether
# /proc/sys is read-only, its uid and uid_map. Run as root; leaves nothing
# behind (a copy of the rootfs for podman and runc is made and removed).
# Usage: scripts/confinement.sh [--bin-dir DIR] [--image ROOTFS]
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/target/debug
image=${RUNDMC_TEST_ROOTFS:-$here/target/rootfs/busybox}
while [ $# -gt 0 ]; do
    case $1 in
    --bin-dir) bin=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    *) echo "usage: $0 [--bin-dir DIR] [--image ROOTFS]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 2; }
[ -x "$bin/rundmc" ] || { echo "$0: no $bin/rundmc (build first)" >&2; exit 2; }
[ -x "$image/bin/sh" ] || { echo "$0: $image is not a rootfs (make rootfs)" >&2; exit 2; }

tmp=$(mktemp -d /tmp/rundmc-confinement.XXXXXX)
cgroup=rundmc-confinement-$$
agent=
podman_note=

cleanup() {
    if [ -n "$agent" ]; then
        kill "$agent" 2>/dev/null || true
        wait "$agent" 2>/dev/null || true
    fi
    for id in $(runc --root "$tmp/runc" list -q 2>/dev/null) $(runc --root "$tmp/runc-spec" list -q 2>/dev/null); do
        runc --root "$tmp/runc" delete --force "$id" 2>/dev/null || true
        runc --root "$tmp/runc-spec" delete --force "$id" 2>/dev/null || true
    done
    grep " $tmp" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    # v2's one tree, or each v1 hierarchy's.
    for g in "$cgroup" "$cgroup-shims"; do
        for d in "/sys/fs/cgroup/$g" /sys/fs/cgroup/*/"$g"; do
            [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
        done
    done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# The probe: `key=value` lines, the same in every column.
probe='st=/proc/self/status
field() { sed -n "s/^$1:[[:space:]]*//p" $st; }
echo "CapEff=$(field CapEff)"
echo "CapBnd=$(field CapBnd)"
case $(field Seccomp) in 0) s="0 (none)" ;; 1) s="1 (strict)" ;; 2) s="2 (filter)" ;; *) s="?" ;; esac
echo "Seccomp=$s"
echo "NoNewPrivs=$(field NoNewPrivs)"
n=0; all=0; open=""
for p in /proc/acpi /proc/asound /proc/interrupts /proc/kcore /proc/keys /proc/latency_stats /proc/timer_list /proc/timer_stats /proc/sched_debug /proc/scsi /sys/firmware /sys/devices/virtual/powercap; do
    [ -e $p ] || continue
    all=$((all + 1))
    if [ -c $p ] || { [ -d $p ] && [ -z "$(ls -A $p 2>/dev/null)" ]; }; then n=$((n + 1)); else open="$open ${p##*/}"; fi
done
echo "masked (of those present)=$n of $all"
echo "left open=${open:- none}"
if [ ! -e /proc/kcore ]; then echo "/proc/kcore=absent on this kernel"
elif [ -c /proc/kcore ]; then echo "/proc/kcore=masked (/dev/null)"
else echo "/proc/kcore=readable file"; fi
if grep -q " /proc/sys [^ ]* ro," /proc/self/mounts; then echo "/proc/sys=read-only"; else echo "/proc/sys=writable"; fi
echo "uid=$(id -u)"
echo "uid_map=$(tr -s " " </proc/self/uid_map | sed "s/^ //")"
echo probe-done'

# rundmc: the agent, one manifest, its main process's log.
rundmc_column() {
    mkdir -p "$tmp/m" "$tmp/cni"
    "$bin/rundmc" agent --manifests "$tmp/m" --depot "$tmp/depot" --state-dir "$tmp/state" \
        --runtime-root "$tmp/runc" --image-store "$tmp/images" --cgroup-parent "$cgroup" \
        --shim-cgroup "$cgroup-shims" --cni-conf-dir "$tmp/cni" --cni-cache-dir "$tmp/cni-cache" \
        --init-binary "$bin/rundmc-init" --shim-binary "$bin/rundmc-shim" \
        >"$tmp/agent.log" 2>&1 &
    agent=$!
    {
        printf 'apiVersion: rundmc.io/v1alpha1\nkind: Container\nmetadata: {name: probe}\n'
        printf 'spec:\n  rootfs: %s\n  process:\n    args: ["/bin/sh", "-c", %s]\n' \
            "$image" "$(printf '%s; exec sleep 100000' "$probe" | jq -Rs .)"
    } >"$tmp/m/probe.yaml"
    log=$tmp/depot/probe/processes/main-1/output.log
    i=0
    until grep -q probe-done "$log" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt 120 ]; then
            echo "rundmc: no probe output; agent log:" >&2
            tail -20 "$tmp/agent.log" >&2
            exit 1
        fi
        sleep 0.5
    done
    sed -n 's/^[^ ]* stdout F //p' "$log" >"$tmp/rundmc.out"
    # Destroy it the way a user does, then stop the agent.
    rm "$tmp/m/probe.yaml"
    i=0
    while [ -d "$tmp/depot/probe" ] && [ "$i" -lt 60 ]; do
        sleep 0.5
        i=$((i + 1))
    done
    kill "$agent"
    wait "$agent" 2>/dev/null || true
    agent=
}

podman_column() {
    cp -a "$image" "$tmp/rootfs-podman"
    run_podman() {
        podman run --rm --network none "$@" --rootfs "$tmp/rootfs-podman" /bin/sh -c "$probe" \
            >"$tmp/podman.out" 2>"$tmp/podman.err"
    }
    run_podman && return
    if grep -q setrlimit "$tmp/podman.err" &&
        run_podman --ulimit nofile=1024:1024 --ulimit nproc=1024:1024; then
        podman_note="podman: its default rlimits cannot be set here (no CAP_SYS_RESOURCE); run with --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
        return
    fi
    echo "podman failed: $(head -3 "$tmp/podman.err")" >&2
}

runc_spec_column() {
    mkdir -p "$tmp/bundle"
    cp -a "$image" "$tmp/bundle/rootfs"
    (cd "$tmp/bundle" && runc spec)
    jq --arg probe "$probe" '.process.terminal = false | .process.args = ["/bin/sh", "-c", $probe]' \
        "$tmp/bundle/config.json" >"$tmp/bundle/config.new"
    mv "$tmp/bundle/config.new" "$tmp/bundle/config.json"
    runc --root "$tmp/runc-spec" run --bundle "$tmp/bundle" "confinement-$$" \
        >"$tmp/runc.out" 2>"$tmp/runc.err" </dev/null || echo "runc failed: $(head -3 "$tmp/runc.err")" >&2
}

rundmc_column
podman_column
runc_spec_column

get() { sed -n "s|^$2=||p" "$tmp/$1.out" | head -1; }
printf '%-32s | %-30s | %-30s | %-30s\n' "" "rundmc (default)" "podman run (default)" "runc spec (default)"
printf '%-32s-+-%-30s-+-%-30s-+-%-30s\n' "" "" "" "" | tr ' ' '-'
for key in CapEff CapBnd Seccomp NoNewPrivs "masked (of those present)" "left open" /proc/kcore /proc/sys uid uid_map; do
    printf '%-32s | %-30s | %-30s | %-30s\n' "$key" "$(get rundmc "$key")" "$(get podman "$key")" "$(get runc "$key")"
done
printf '\n%s; %s; %s\n' "$("$bin/rundmc" --version)" "$(podman --version)" "$(runc --version | head -1)"
[ -z "$podman_note" ] || echo "$podman_note"
echo "CapBnd of this shell: $(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status) (rundmc and runc cap every set to it)"
