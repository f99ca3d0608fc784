#!/bin/sh
# Build the demo image that manifests/examples/from-image.yaml runs: the
# busybox rootfs as one layer, Entrypoint /bin/sh -c, written as a
# docker-archive tar (`docker save`'s format) that `rundmc image import`
# takes, so `make run` needs no registry. Idempotent.
# Usage: scripts/mkdemo-image.sh ROOTFS OUT.tar
set -eu
rootfs=${1:?usage: mkdemo-image.sh ROOTFS OUT.tar}
out=${2:?usage: mkdemo-image.sh ROOTFS OUT.tar}
[ -s "$out" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umoci init --layout "$tmp/layout"
umoci new --image "$tmp/layout:demo"
umoci unpack --image "$tmp/layout:demo" "$tmp/bundle" >/dev/null
cp -a "$rootfs/." "$tmp/bundle/rootfs/"
umoci repack --image "$tmp/layout:demo" "$tmp/bundle"
umoci config --image "$tmp/layout:demo" \
    --config.entrypoint /bin/sh --config.entrypoint -c \
    --config.cmd 'echo hello from an image; exec sleep 1000000' \
    --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p "$(dirname "$out")"
skopeo copy --quiet "oci:$tmp/layout:demo" "docker-archive:$out.tmp:rundmc/busybox:demo"
mv "$out.tmp" "$out"
