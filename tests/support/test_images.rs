//! Test images in one OCI layout, built once per test process from the
//! busybox rootfs ($RUNDMC_TEST_ROOTFS) with `umoci`, `skopeo` and, where
//! those cannot say it, layers written by hand:
//!
//! - `simple`: busybox with Entrypoint, Cmd, Env, WorkingDir and User set;
//! - `layers`: `simple` plus three layers: files; a whiteout of one of
//!   them (`data/gone.txt`, umoci's `.wh.`); an opaque directory
//!   (`data/opq`, removed and re-created, `.wh..wh..opq` by hand);
//! - `zstd` (in [`TestImages::zstd_layout`]): `simple` with its layer
//!   recompressed with zstd by skopeo;
//! - `multi`: an OCI index of an amd64 and an arm64/v8 image, each
//!   `simple` plus a layer whose `/marker` names its architecture;
//! - `foreign`: an index whose one entry is for linux/s390x.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

// Each support file that needs it includes it, so each stays usable alone.
#[allow(clippy::duplicate_mod)]
#[path = "process_dir.rs"]
mod process_dir;
use sha2::{Digest as _, Sha256};

/// The built layouts.
pub struct TestImages {
    /// The OCI layout with `simple`, `layers`, `multi`, `multi-amd64`, `multi-arm64`.
    pub layout: PathBuf,
    /// The OCI layout with `zstd`.
    pub zstd_layout: PathBuf,
}

/// What `simple`'s config says.
pub const ENTRYPOINT: [&str; 2] = ["/bin/sh", "-c"];
pub const CMD: &str = "echo hello from $GREETING";
pub const ENV: &str = "GREETING=simple";
pub const WORKDIR: &str = "/tmp";
pub const USER: &str = "1000:1000";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The images, built on first use.
pub fn images() -> &'static TestImages {
    static IMAGES: OnceLock<TestImages> = OnceLock::new();
    IMAGES.get_or_init(build)
}

fn rootfs() -> PathBuf {
    let dir = std::env::var_os("RUNDMC_TEST_ROOTFS")
        .map(PathBuf::from)
        .expect("RUNDMC_TEST_ROOTFS: the busybox rootfs (make rootfs)");
    assert!(
        dir.join("bin/busybox").exists(),
        "{} has no bin/busybox",
        dir.display()
    );
    dir
}

fn build() -> TestImages {
    let dir = process_dir::process_dir("rundmc-test-images");
    let layout = dir.join("layout");
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image("simple")]));
    let bundle = dir.join("bundle");
    let umoci_unpack = |tag: &str| {
        let _ = std::fs::remove_dir_all(&bundle);
        run(Command::new("umoci")
            .args(["unpack", "--image", &image(tag)])
            .arg(&bundle));
    };
    umoci_unpack("simple");
    run(Command::new("cp")
        .arg("-a")
        .arg(rootfs().join("."))
        .arg(bundle.join("rootfs")));
    run(Command::new("umoci")
        .args(["repack", "--image", &image("simple")])
        .arg(&bundle));
    run(Command::new("umoci")
        .args(["config", "--image", &image("simple")])
        .args([
            "--config.entrypoint",
            ENTRYPOINT[0],
            "--config.entrypoint",
            ENTRYPOINT[1],
        ])
        .args(["--config.cmd", CMD, "--config.env", ENV])
        .args(["--config.workingdir", WORKDIR, "--config.user", USER]));

    // layers: files, then umoci's whiteout of one, then an opaque dir.
    umoci_unpack("simple");
    let data = bundle.join("rootfs/data");
    std::fs::create_dir_all(data.join("opq")).unwrap();
    std::fs::write(data.join("gone.txt"), "gone\n").unwrap();
    std::fs::write(data.join("keep.txt"), "keep\n").unwrap();
    std::fs::write(data.join("opq/old.txt"), "old\n").unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image("layers")])
        .arg(&bundle));
    umoci_unpack("layers");
    std::fs::remove_file(bundle.join("rootfs/data/gone.txt")).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image("layers")])
        .arg(&bundle));
    append_layer(
        &layout,
        "layers",
        "layers",
        &[("data/opq/.wh..wh..opq", ""), ("data/opq/new.txt", "new\n")],
        None,
    );
    let _ = std::fs::remove_dir_all(&bundle);

    // multi: an index of two images with a marker each.
    let amd = append_layer(
        &layout,
        "simple",
        "multi-amd64",
        &[("marker", "amd64\n")],
        None,
    );
    let arm = append_layer(
        &layout,
        "simple",
        "multi-arm64",
        &[("marker", "arm64\n")],
        Some(("arm64", "v8")),
    );
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        // arm64 first: a puller that takes the first entry is caught on amd64.
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm.0, "size": arm.1,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd.0, "size": amd.1,
             "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = write_blob(&layout, &bytes);
    set_ref(
        &layout,
        "multi",
        "application/vnd.oci.image.index.v1+json",
        &digest,
        bytes.len(),
    );

    // foreign: an index with no entry for any node these tests run on.
    let foreign = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm.0, "size": arm.1,
             "platform": {"os": "linux", "architecture": "s390x"}},
        ],
    });
    let bytes = serde_json::to_vec(&foreign).unwrap();
    let digest = write_blob(&layout, &bytes);
    set_ref(
        &layout,
        "foreign",
        "application/vnd.oci.image.index.v1+json",
        &digest,
        bytes.len(),
    );

    let zstd_layout = dir.join("zstd");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-compress-format", "zstd"])
        .arg(format!("oci:{}", image("simple")))
        .arg(format!("oci:{}:zstd", zstd_layout.display())));
    TestImages {
        layout,
        zstd_layout,
    }
}

impl TestImages {
    /// The digest of the manifest (or index) tagged `tag` in `layout`.
    pub fn digest(layout: &Path, tag: &str) -> String {
        let index: Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no {tag} in {}", layout.display()))["digest"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A blob of `layout` as JSON.
    pub fn json(layout: &Path, digest: &str) -> Value {
        serde_json::from_slice(&read_blob(layout, digest)).unwrap()
    }

    /// The manifest tagged `tag` in the main layout.
    pub fn manifest(&self, tag: &str) -> Value {
        TestImages::json(&self.layout, &TestImages::digest(&self.layout, tag))
    }

    /// The layer digests of the image tagged `tag` in the main layout.
    pub fn layers(&self, tag: &str) -> Vec<String> {
        self.manifest(tag)["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    }
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(blob_path(layout, digest)).unwrap()
}

fn write_blob(layout: &Path, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    std::fs::write(blob_path(layout, &digest), bytes).unwrap();
    digest
}

/// Points `tag` at `digest` in the layout's index.json.
fn set_ref(layout: &Path, tag: &str, media_type: &str, digest: &str, size: usize) {
    let path = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let list = index["manifests"].as_array_mut().unwrap();
    list.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    list.push(json!({
        "mediaType": media_type, "digest": digest, "size": size,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Makes `to` = `from` plus one gzip layer of `files` (path, content; a
/// directory is made for each parent), with the config's architecture
/// and variant set when `platform` says: (manifest digest, size).
fn append_layer(
    layout: &Path,
    from: &str,
    to: &str,
    files: &[(&str, &str)],
    platform: Option<(&str, &str)>,
) -> (String, usize) {
    let tar = layer_tar(files);
    let diff_id = sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let blob = gz.finish().unwrap();
    let layer_digest = write_blob(layout, &blob);
    let mut manifest = TestImages::json(layout, &TestImages::digest(layout, from));
    let mut config = TestImages::json(layout, manifest["config"]["digest"].as_str().unwrap());
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(json!(diff_id));
    config["history"]
        .as_array_mut()
        .unwrap()
        .push(json!({"created_by": "rundmc test layer"}));
    if let Some((arch, variant)) = platform {
        config["architecture"] = json!(arch);
        config["variant"] = json!(variant);
    }
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = write_blob(layout, &config_bytes);
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(config_bytes.len());
    manifest["layers"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": layer_digest,
        "size": blob.len(),
    }));
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = write_blob(layout, &bytes);
    set_ref(
        layout,
        to,
        "application/vnd.oci.image.manifest.v1+json",
        &digest,
        bytes.len(),
    );
    (digest, bytes.len())
}

fn layer_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, content) in files {
        let mut parent = Path::new(path).parent();
        let mut chain = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            chain.push(p.to_owned());
            parent = p.parent();
        }
        for d in chain.into_iter().rev() {
            if dirs.insert(d.clone()) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                b.append_data(&mut h, &d, std::io::empty()).unwrap();
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, path, content.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}
