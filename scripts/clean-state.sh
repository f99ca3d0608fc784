#!/bin/sh
# Remove everything `make run` made: its containers, their networks, overlay
# mounts, supervisors and cgroups, and the state directory. The agent itself
# destroys what it can (a run on no manifests: CNI DEL frees addresses,
# veths and port mappings); what is left is removed by hand.
# Usage: scripts/clean-state.sh STATE_DIR CGROUP_PARENT [RUNDMC]
set -u
state=${1:?usage: clean-state.sh STATE_DIR CGROUP_PARENT [RUNDMC]}
parent=${2:?usage: clean-state.sh STATE_DIR CGROUP_PARENT [RUNDMC]}
rundmc=${3:-}
[ -d "$state" ] || exit 0
if [ -n "$rundmc" ] && [ -x "$rundmc" ] && [ -d "$state/depot" ]; then
    mkdir -p "$state/none"
    "$rundmc" agent --manifests "$state/none" --depot "$state/depot" --state-dir "$state/run" \
        --runtime-root "$state/runc" --image-store "$state/images" --cgroup-parent "$parent" \
        --cni-conf-dir "$(dirname "$0")/../manifests/cni" --cni-cache-dir "$state/cni" \
        >"$state/clean.log" 2>&1 &
    agent=$!
    i=0
    while [ "$i" -lt 60 ] && [ -n "$(ls -A "$state/depot" 2>/dev/null)" ]; do
        sleep 1
        i=$((i + 1))
    done
    kill "$agent" 2>/dev/null
    wait "$agent" 2>/dev/null
fi
if [ -d "$state/runc" ]; then
    for id in $(runc --root "$state/runc" list -q 2>/dev/null); do
        runc --root "$state/runc" kill "$id" KILL 2>/dev/null
        runc --root "$state/runc" delete --force "$id" 2>/dev/null
    done
fi
for m in $(awk -v d="$state/depot/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo); do
    umount -l "$m"
done
for f in "$state"/depot/*/processes/*/shim.json; do
    [ -f "$f" ] || continue
    pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$f")
    [ -n "$pid" ] && grep -q rundmc-shim "/proc/$pid/cmdline" 2>/dev/null && kill -9 "$pid"
done
for c in /sys/fs/cgroup/*/"$parent" /sys/fs/cgroup/"$parent"; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
done
for ns in "$state"/run/netns/*; do
    [ -e "$ns" ] && umount -l "$ns" 2>/dev/null
done
# The directory is a mount of its own, as `ip netns` makes /run/netns.
umount -l "$state/run/netns" 2>/dev/null
# The demo's bridge (manifests/cni), once nothing is attached to it.
if [ -z "$(ip -o link show master rundmc0 2>/dev/null)" ]; then
    ip link del rundmc0 2>/dev/null
fi
rm -rf "$state"
