#!/bin/sh
# Remove everything `make run` made: its containers, their networks, overlay
# mounts, supervisors and cgroups, and the state directory. The agent itself
# destroys what it can (a run on no manifests: CNI DEL frees addresses,
# veths and port mappings); what is left is removed by hand.
#
# It refuses while an agent runs on the state (`make run` in another
# terminal): removing the state under a running agent leaves containers
# that nothing controls. Stop that agent first (Ctrl-C), then run it again.
# Usage: scripts/clean-state.sh STATE_DIR CGROUP_PARENT [RUNDMC]
set -u
state=${1:?usage: clean-state.sh STATE_DIR CGROUP_PARENT [RUNDMC]}
parent=${2:?usage: clean-state.sh STATE_DIR CGROUP_PARENT [RUNDMC]}
rundmc=${3:-}
[ -d "$state" ] || exit 0
# The agent's locks (src/cli/lock.rs): an flock each, held by a running agent.
depot_lock="$state/depot/.rundmc-agent.lock"
state_lock="$state/run/.rundmc-agent.lock"

# Exit, saying which agent holds LOCK (and WHAT was done so far).
refuse() {
    pid=$(head -n 1 "$1" 2>/dev/null)
    echo "clean-state: a rundmc agent (pid ${pid:-unknown}) is running on $state (it holds $1)." >&2
    echo "clean-state: $2 Stop that agent first (Ctrl-C in its terminal, or kill ${pid:-it}), then run this again." >&2
    exit 1
}

for lock in "$depot_lock" "$state_lock"; do
    [ -e "$lock" ] && ! flock -n "$lock" true && refuse "$lock" "Nothing was removed."
done
if [ -n "$rundmc" ] && [ -x "$rundmc" ] && [ -d "$state/depot" ]; then
    # An agent on no manifests destroys every container the depot holds.
    mkdir -p "$state/none"
    "$rundmc" agent --manifests "$state/none" --depot "$state/depot" --state-dir "$state/run" \
        --runtime-root "$state/runc" --image-store "$state/images" --cgroup-parent "$parent" \
        --cni-conf-dir "$(dirname "$0")/../manifests/cni" --cni-cache-dir "$state/cni" \
        >"$state/clean.log" 2>&1 &
    agent=$!
    i=0
    # Until the depot has no container left (its lock file is a dotfile).
    while [ "$i" -lt 60 ] && kill -0 "$agent" 2>/dev/null && [ -n "$(ls "$state/depot" 2>/dev/null)" ]; do
        sleep 1
        i=$((i + 1))
    done
    kill "$agent" 2>/dev/null
    wait "$agent" 2>/dev/null
    # An agent started since the check above holds the lock: leave it be.
    grep -q "held by another rundmc agent" "$state/clean.log" &&
        refuse "$depot_lock" "Nothing was removed."
fi
# From here to the end the locks are this script's (fds 8 and 9): no
# agent starts on the state while it is being removed.
if [ -d "$state/depot" ]; then
    exec 8>>"$depot_lock"
    flock -n 8 || refuse "$depot_lock" "Its containers are left to it."
fi
if [ -d "$state/run" ]; then
    exec 9>>"$state_lock"
    flock -n 9 || refuse "$state_lock" "Its containers are left to it."
fi
if [ -d "$state/runc" ]; then
    for id in $(runc --root "$state/runc" list -q 2>/dev/null); do
        runc --root "$state/runc" kill "$id" KILL 2>/dev/null
        runc --root "$state/runc" delete --force "$id" 2>/dev/null
    done
fi
# Whatever is still mounted below the state (rootfs overlays in the
# bundles, idmapped layers in the depot, pinned network namespaces),
# deepest first: nothing mounted may be in the way of the removal.
for m in $(awk -v d="$state/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null
done
for f in "$state"/depot/*/processes/*/shim.json; do
    [ -f "$f" ] || continue
    pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$f")
    [ -n "$pid" ] && grep -q rundmc-shim "/proc/$pid/cmdline" 2>/dev/null && kill -9 "$pid"
done
for c in /sys/fs/cgroup/*/"$parent" /sys/fs/cgroup/"$parent" /sys/fs/cgroup/*/"$parent-shims" /sys/fs/cgroup/"$parent-shims"; do
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
