//! The agent's container image, built by `scripts/mkimage.py` as `make
//! image` does, checked as a user of it would: the archive is an OCI image
//! layout and a Docker archive whose digests and sizes hold, the same
//! binaries give the same bytes, and every binary in its layer runs under
//! real runc with nothing from the host.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/common.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rundmc-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mkimage(out: &Path) {
    // The shim and init are built beside rundmc on first use.
    let bin_dir = common::binary("rundmc-shim").parent().unwrap().to_owned();
    run(Command::new(common::workspace().join("scripts/mkimage.py"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out)
        .args(["--tag", "rundmc/rundmc:test"]));
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// `sha256:<hex>` of what `shell` writes to stdout.
fn sha256_of(shell: &str) -> String {
    let out = run(Command::new("sh").args(["-c", &format!("{shell} | sha256sum")]));
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

/// The blob a descriptor names, after checking its digest and size.
fn blob(layout: &Path, descriptor: &Value) -> PathBuf {
    let digest = descriptor["digest"].as_str().unwrap();
    let path = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let file = path.display();
    assert_eq!(sha256_of(&format!("cat {file}")), digest, "{file}");
    assert_eq!(
        descriptor["size"].as_u64().unwrap(),
        fs::metadata(&path).unwrap().len(),
        "{file}"
    );
    path
}

/// Checks the layout; returns the layer blob.
fn check_layout(layout: &Path) -> PathBuf {
    assert_eq!(
        json(&layout.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    let annotations = &manifests[0]["annotations"];
    // The normalised reference, which ctr and podman take as the name and
    // the kubelet looks up for `image: rundmc/rundmc:test`.
    assert_eq!(
        annotations["io.containerd.image.name"],
        "docker.io/rundmc/rundmc:test"
    );
    assert_eq!(annotations["org.opencontainers.image.ref.name"], "test");
    let manifest = json(&blob(layout, &manifests[0]));
    let config = json(&blob(layout, &manifest["config"]));
    let layer_desc = &manifest["layers"][0];
    assert_eq!(
        layer_desc["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer = blob(layout, layer_desc);
    assert_eq!(
        config["rootfs"]["diff_ids"][0].as_str().unwrap(),
        sha256_of(&format!("gzip -dc {}", layer.display())),
        "diff_id is the uncompressed layer's digest"
    );
    assert_eq!(
        config["config"]["Entrypoint"][0], "/usr/local/bin/rundmc",
        "{config}"
    );
    // The Docker archive view names the same blobs, and the image as
    // `docker save` does (familiar form).
    let docker = json(&layout.join("manifest.json"));
    assert_eq!(docker[0]["RepoTags"][0], "rundmc/rundmc:test");
    assert_eq!(layout.join(docker[0]["Layers"][0].as_str().unwrap()), layer);
    layer
}

/// Runs `args` in a container on `rootfs` under real runc; its output.
fn run_in_image(scratch: &Path, rootfs: &Path, name: &str, args: &[&str]) -> Output {
    let bundle = scratch.join(format!("bundle-{name}"));
    let mut spec = common::runc_spec(&bundle);
    spec["root"]["path"] = rootfs.to_str().unwrap().into();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
    fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    let id = format!("image-{name}-{}", std::process::id());
    Command::new("runc")
        .arg("--root")
        .arg(scratch.join("runc"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(id)
        .output()
        .unwrap()
}

#[test]
fn the_image_is_a_reproducible_oci_archive_whose_binaries_run_under_runc() {
    let scratch = Scratch::new("image");
    let (a, b) = (scratch.0.join("a.tar"), scratch.0.join("b.tar"));
    mkimage(&a);
    mkimage(&b);
    assert!(
        fs::read(&a).unwrap() == fs::read(&b).unwrap(),
        "two builds of the same binaries differ"
    );

    let layout = scratch.0.join("layout");
    fs::create_dir_all(&layout).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&a)
        .arg("-C")
        .arg(&layout));
    let layer = check_layout(&layout);

    let rootfs = scratch.0.join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs));
    assert!(
        !rootfs.join("bin/sh").exists(),
        "the image carries no shell"
    );
    assert!(rootfs.join("usr/local/bin/rundmc-init").is_file());

    let version = run_in_image(&scratch.0, &rootfs, "version", &["rundmc", "--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("rundmc {}", env!("CARGO_PKG_VERSION")),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
    let crd = run_in_image(&scratch.0, &rootfs, "crd", &["rundmc", "crd"]);
    assert!(
        String::from_utf8_lossy(&crd.stdout).contains("kind: CustomResourceDefinition"),
        "{crd:?}"
    );
    let runc = run_in_image(&scratch.0, &rootfs, "runc", &["runc", "--version"]);
    assert!(
        String::from_utf8_lossy(&runc.stdout).starts_with("runc version"),
        "{runc:?}"
    );
    // Without arguments the shim prints its usage: it loaded and ran.
    let shim = run_in_image(&scratch.0, &rootfs, "shim", &["rundmc-shim"]);
    assert!(
        String::from_utf8_lossy(&shim.stderr).contains("usage: rundmc-shim"),
        "{shim:?}"
    );
    if Path::new("/usr/bin/crun").exists() {
        let crun = run_in_image(&scratch.0, &rootfs, "crun", &["crun", "--version"]);
        assert!(
            String::from_utf8_lossy(&crun.stdout).starts_with("crun version"),
            "{crun:?}"
        );
    }
}
