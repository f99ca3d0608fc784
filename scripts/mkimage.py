#!/usr/bin/env python3
"""Build the agent's container image, without a container engine.

The image holds rundmc, rundmc-shim and rundmc-init in /usr/local/bin, the
OCI runtimes found on this machine (runc, and crun if installed) at the paths
they have here, and every shared library those binaries load (found with
ldd), at the paths the dynamic loader looks for them. Nothing else: no shell,
no package manager.

It is written as one archive that is both an OCI image layout (for
`ctr images import`, `skopeo copy oci-archive:...`, `podman load`) and a
Docker archive (`manifest.json`, for `docker load`). The layer is
reproducible: sorted entries, owner root, mtime 0, gzip without a timestamp,
so the same binaries always give the same digests.

Names are written as the tools that load the archive expect them: the OCI
index's `io.containerd.image.name` holds the normalised reference
(`rundmc/rundmc:0.1.0` becomes `docker.io/rundmc/rundmc:0.1.0`, `busybox:1`
becomes `docker.io/library/busybox:1`), which `ctr images import` and
`podman load` take as the image's name and which the kubelet looks up for
an image field of `rundmc/rundmc:0.1.0`; `manifest.json`'s RepoTags hold
the familiar form `docker save` writes (`rundmc/rundmc:0.1.0`).

usage: mkimage.py --bin-dir DIR --out FILE [--tag NAME:TAG] [--runtime PATH]...
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

AGENT_BINARIES = ["rundmc", "rundmc-shim", "rundmc-init"]
DEFAULT_RUNTIMES = ["runc", "crun"]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def fail(message):
    print(f"mkimage: {message}", file=sys.stderr)
    sys.exit(1)


DOCKER_HUB = "docker.io"


def split_domain(name):
    """(domain, path) of a reference without tag, as the reference library
    Docker, containerd and the kubelet share splits it: the first component
    is a registry only if it has a `.` or `:`, or is `localhost`."""
    first, slash, rest = name.partition("/")
    if not slash or (not any(c in first for c in ".:") and first != "localhost"
                     and first.lower() == first):
        domain, path = DOCKER_HUB, name
    else:
        domain, path = first, rest
    if domain == "index.docker.io":
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return domain, path


def normalized(reference):
    """`reference` (NAME:TAG) in normal form: `docker.io/library/busybox:1`."""
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon <= slash:
        fail(f"--tag {reference}: give NAME:TAG")
    name, tag = reference[:colon], reference[colon + 1:]
    domain, path = split_domain(name)
    if path != path.lower():
        fail(f"--tag {reference}: a repository name must be lowercase")
    return f"{domain}/{path}:{tag}"


def familiar(reference):
    """A normalised reference as `docker save` names it: `busybox:1`."""
    if not reference.startswith(f"{DOCKER_HUB}/"):
        return reference
    short = reference[len(DOCKER_HUB) + 1:]
    rest = short[len("library/"):]
    return rest if short.startswith("library/") and "/" not in rest else short


def shared_libraries(binary):
    """Absolute paths of the libraries `binary` loads, and its loader."""
    result = subprocess.run(["ldd", binary], capture_output=True, text=True)
    # A static binary makes ldd exit 1 with "not a dynamic executable".
    if result.returncode != 0:
        if "not a dynamic executable" in result.stdout + result.stderr:
            return []
        fail(f"ldd {binary}: {result.stderr.strip()}")
    libraries = []
    for line in result.stdout.splitlines():
        words = line.split()
        if "=>" in words:
            target = words[words.index("=>") + 1]
            if target == "not":
                fail(f"{binary}: {line.strip()}")
            libraries.append(target)
        elif words and words[0].startswith("/"):
            libraries.append(words[0])
    return libraries


def stripped(source, scratch):
    """A copy of `source` without debug info (symbols stay, for backtraces)."""
    target = os.path.join(scratch, os.path.basename(source))
    result = subprocess.run(["strip", "--strip-debug", "-o", target, source],
                            capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"strip {source}: {result.stderr.strip()}")
    return target


def image_files(bin_dir, runtimes, scratch):
    """Path in the image -> path on this machine."""
    files = {}
    for name in AGENT_BINARIES:
        source = os.path.join(bin_dir, name)
        if not os.path.isfile(source):
            fail(f"{source}: not built (run `make build`)")
        files[f"/usr/local/bin/{name}"] = stripped(source, scratch)
    for runtime in runtimes:
        files[runtime] = runtime
    for binary in list(files.values()):
        for library in shared_libraries(binary):
            files[library] = library
    return files


def add_dirs(tar, path, seen):
    parent = os.path.dirname(path)
    if parent in ("", "/") or parent in seen:
        return
    add_dirs(tar, parent, seen)
    seen.add(parent)
    info = tarfile.TarInfo(parent.lstrip("/"))
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    tar.addfile(info)


def layer_tar(files):
    """An uncompressed, reproducible tar of `files` plus an empty /tmp."""
    buffer = io.BytesIO()
    seen = set()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            add_dirs(tar, path, seen)
            with open(files[path], "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mtime = len(data), 0
            info.mode = 0o755 if os.access(files[path], os.X_OK) else 0o644
            tar.addfile(info, io.BytesIO(data))
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode, tmp.mtime = tarfile.DIRTYPE, 0o1777, 0
        tar.addfile(tmp)
    return buffer.getvalue()


def blob(archive, data, media_type):
    """Store `data` as a blob; its OCI descriptor."""
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    archive.addfile(info, io.BytesIO(data))
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def add_json(archive, name, value):
    data = json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    archive.addfile(info, io.BytesIO(data))


def config(diff_id, version):
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/usr/local/bin/rundmc"],
            "Cmd": ["agent"],
            "Env": [f"PATH={PATH}"],
            "Labels": {
                "org.opencontainers.image.title": "rundmc",
                "org.opencontainers.image.version": version,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created_by": "scripts/mkimage.py"}],
    }


def write_image(out, files, name):
    """Write the archive for image `name` (normalised); its digest and size."""
    layer = layer_tar(files)
    diff_id = hashlib.sha256(layer).hexdigest()
    compressed = gzip.compress(layer, compresslevel=6, mtime=0)
    version = name.rsplit(":", 1)[1]
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        layer_desc = blob(archive, compressed, "application/vnd.oci.image.layer.v1.tar+gzip")
        config_bytes = json.dumps(config(diff_id, version), sort_keys=True).encode()
        config_desc = blob(archive, config_bytes, "application/vnd.oci.image.config.v1+json")
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        manifest_desc = blob(archive, manifest_bytes, "application/vnd.oci.image.manifest.v1+json")
        manifest_desc["annotations"] = {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": version,
        }
        add_json(archive, "index.json", {"schemaVersion": 2, "manifests": [manifest_desc]})
        add_json(archive, "oci-layout", {"imageLayoutVersion": "1.0.0"})
        add_json(archive, "manifest.json", [{
            "Config": f"blobs/sha256/{config_desc['digest'][7:]}",
            "RepoTags": [familiar(name)],
            "Layers": [f"blobs/sha256/{layer_desc['digest'][7:]}"],
        }])
    return manifest_desc["digest"], len(compressed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", required=True, help="where rundmc, rundmc-shim, rundmc-init are")
    parser.add_argument("--out", required=True, help="the archive to write")
    parser.add_argument("--tag", default="docker.io/rundmc/rundmc:latest", help="NAME:TAG")
    parser.add_argument("--runtime", action="append", default=[],
                        help="an OCI runtime to include (default: runc and crun, if installed)")
    args = parser.parse_args()
    reference = normalized(args.tag)
    runtimes = []
    for name in args.runtime or DEFAULT_RUNTIMES:
        found = shutil.which(name)
        if found:
            runtimes.append(os.path.realpath(found) if os.path.isabs(name) else found)
        elif args.runtime:
            fail(f"--runtime {name}: not found")
    if not runtimes:
        fail("no OCI runtime found: install runc (apt-get install runc)")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        files = image_files(args.bin_dir, runtimes, scratch)
        digest, size = write_image(args.out, files, reference)
    print(f"{args.out}: {reference} {digest} ({size // 1024} KiB compressed)")


if __name__ == "__main__":
    main()
