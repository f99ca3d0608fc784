#!/bin/sh
# Build a tiny read-only image directory from Debian's busybox-static:
# busybox with its applets as symlinks, an /etc/passwd with root, nobody and
# app (1000:1000), and the empty directories runc mounts over.
# Usage: scripts/mkrootfs.sh DIR
set -eu
dir=${1:?usage: mkrootfs.sh DIR}
busybox=$(command -v busybox || echo /bin/busybox)
if [ ! -x "$busybox" ] || ! "$busybox" --list >/dev/null 2>&1; then
    echo "mkrootfs: busybox-static is missing (apt-get install busybox-static)" >&2
    exit 1
fi
if [ -f "$dir/.complete" ]; then exit 0; fi
tmp="$dir.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/bin" "$tmp/etc" "$tmp/proc" "$tmp/sys" "$tmp/dev" "$tmp/tmp" "$tmp/root" "$tmp/home/app" "$tmp/var"
cp "$busybox" "$tmp/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$tmp/bin/$applet"
done
ln -s bin "$tmp/sbin"
mkdir -p "$tmp/usr"
ln -s ../bin "$tmp/usr/bin"
chmod 1777 "$tmp/tmp"
chown 1000:1000 "$tmp/home/app"
cat > "$tmp/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$tmp/etc/group" <<'GROUP'
root:x:0:
app:x:1000:
nogroup:x:65534:
GROUP
echo "rundmc test image" > "$tmp/etc/motd"
touch "$tmp/.complete"
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
mv "$tmp" "$dir"
