//! The names `make image` (`scripts/mkimage.py`) writes into its archive,
//! checked against what the loading tools and the kubelet look up: `ctr
//! images import` and `podman load` take `io.containerd.image.name` as the
//! image's name, the kubelet (through the CRI) looks up the normalised
//! reference of a pod's `image`, and `docker load` reads `manifest.json`'s
//! RepoTags, which `docker save` writes in familiar form.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/chart.rs"]
mod chart;
#[path = "support/common.rs"]
mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Builds the image tagged `tag` into `dir`; (what mkimage printed, the
/// OCI index's image name, the Docker archive's RepoTags).
fn names(dir: &Path, tag: &str) -> (String, Value, Value) {
    let bin_dir = common::binary("rundmc-shim").parent().unwrap().to_owned();
    let out = dir.join("image.tar");
    let run = Command::new(common::workspace().join("scripts/mkimage.py"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(&out)
        .args(["--tag", tag])
        .output()
        .unwrap();
    assert!(run.status.success(), "mkimage --tag {tag}: {run:?}");
    let read = |member: &str| -> Value {
        let tar = Command::new("tar")
            .arg("-xOf")
            .arg(&out)
            .arg(member)
            .output()
            .unwrap();
        assert!(tar.status.success(), "{member}: {tar:?}");
        serde_json::from_slice(&tar.stdout).unwrap()
    };
    let index = read("index.json");
    let docker = read("manifest.json");
    (
        String::from_utf8(run.stdout).unwrap(),
        index["manifests"][0]["annotations"]["io.containerd.image.name"].clone(),
        docker[0]["RepoTags"].clone(),
    )
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rundmc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn image_names_are_normalised_references() {
    let dir = scratch("image-names");
    for (tag, name, repo_tag) in [
        (
            "rundmc/rundmc:0.1.0",
            "docker.io/rundmc/rundmc:0.1.0",
            "rundmc/rundmc:0.1.0",
        ),
        // A one-part name is in Docker Hub's `library/`.
        ("rundmc:1", "docker.io/library/rundmc:1", "rundmc:1"),
        (
            "docker.io/rundmc:1",
            "docker.io/library/rundmc:1",
            "rundmc:1",
        ),
        (
            "index.docker.io/rundmc/rundmc:2",
            "docker.io/rundmc/rundmc:2",
            "rundmc/rundmc:2",
        ),
        (
            "registry.example:5000/team/rundmc:3",
            "registry.example:5000/team/rundmc:3",
            "registry.example:5000/team/rundmc:3",
        ),
        (
            "localhost/rundmc:4",
            "localhost/rundmc:4",
            "localhost/rundmc:4",
        ),
    ] {
        let (printed, annotation, repo_tags) = names(&dir, tag);
        assert_eq!(annotation, name, "--tag {tag}");
        assert_eq!(repo_tags, serde_json::json!([repo_tag]), "--tag {tag}");
        assert!(printed.contains(&format!(": {name} sha256:")), "{printed}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The reference the kubelet looks up for `image` (the containerd CRI
/// normalises as Docker does); only the forms the chart can produce.
fn kubelet_lookup(image: &str) -> String {
    let (name, tag) = image.rsplit_once(':').expect("image without a tag");
    let first = name.split('/').next().unwrap();
    let qualified = match name.contains('/') && (first.contains('.') || first == "localhost") {
        true => name.to_string(),
        false if name.contains('/') => format!("docker.io/{name}"),
        false => format!("docker.io/library/{name}"),
    };
    format!("{qualified}:{tag}")
}

/// `make image`, then `ctr -n k8s.io images import`, then `helm install`
/// with default values: the pod's image is the name the import gave.
#[test]
fn the_chart_default_image_is_the_name_make_image_writes() {
    let make = Command::new("make")
        .current_dir(common::workspace())
        .args(["-n", "image"])
        .output()
        .unwrap();
    let commands = String::from_utf8(make.stdout).unwrap();
    let line = commands
        .lines()
        .find(|l| l.contains("--tag"))
        .unwrap_or_else(|| panic!("no mkimage --tag in `make -n image`:\n{commands}"));
    let tag = line
        .split_whitespace()
        .skip_while(|w| *w != "--tag")
        .nth(1)
        .unwrap();
    let dir = scratch("image-chart");
    let (_, imported, _) = names(&dir, tag);
    let _ = std::fs::remove_dir_all(&dir);

    let rendered = chart::render(&[]);
    let image = rendered.agent()["image"].as_str().unwrap().to_string();
    assert_eq!(kubelet_lookup(&image), imported, "chart image {image}");
    // Written out in full, so CRI-O's short-name rules never come into it.
    assert_eq!(image, imported);
}
