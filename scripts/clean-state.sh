#!/bin/sh
# Remove everything `make run` made: its containers (via runc), their
# overlay mounts, supervisors and cgroups, and the state directory.
# Usage: scripts/clean-state.sh STATE_DIR CGROUP_PARENT
set -u
state=${1:?usage: clean-state.sh STATE_DIR CGROUP_PARENT}
parent=${2:?usage: clean-state.sh STATE_DIR CGROUP_PARENT}
[ -d "$state" ] || exit 0
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
rm -rf "$state"
