//! Helpers every integration test shares: the workspace, the busybox image,
//! the workspace's binaries, and a `runc spec` to edit. Included by path
//! from each test crate's own support module.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

static BUILD: Once = Once::new();

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The busybox image directory, built by scripts/mkrootfs.sh when missing.
pub fn image() -> PathBuf {
    let dir = std::env::var_os("RUNDMC_TEST_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/rootfs/busybox"));
    if !dir.join(".complete").exists() {
        let status = Command::new(workspace().join("scripts/mkrootfs.sh"))
            .arg(&dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "scripts/mkrootfs.sh {} failed",
            dir.display()
        );
    }
    dir
}

/// A binary of the workspace, next to `rundmc`. The other packages'
/// binaries are built on first use, into the same target dir.
pub fn binary(name: &str) -> PathBuf {
    let rundmc = PathBuf::from(env!("CARGO_BIN_EXE_rundmc"));
    if name == "rundmc" {
        return rundmc;
    }
    let bin_dir = rundmc.parent().unwrap().to_owned();
    BUILD.call_once(|| build_beside(&bin_dir));
    let path = bin_dir.join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// Build rundmc-shim and rundmc-init into `bin_dir`, beside `rundmc`.
/// The shim is built with the profile the tests were built with and the
/// whole workspace's features, so that it reuses their dependencies
/// (`make test` compiles each once). rundmc-init is no_std and cannot
/// unwind: when the tests' profile unwinds (`make test`'s test-unwind), it
/// is built with profile.dev, which aborts, and copied beside `rundmc`.
fn build_beside(bin_dir: &Path) {
    let target = bin_dir.parent().unwrap();
    let dir = bin_dir.file_name().unwrap().to_str().unwrap();
    // `cargo test` builds into "debug" with the test profile.
    let profile = if dir == "debug" { "test" } else { dir };
    cargo_build(
        target,
        &["--workspace", "--bin", "rundmc-shim", "--profile", profile],
    );
    let (init_profile, init_dir) = match dir {
        "debug" | "test-unwind" => ("dev", "debug"),
        other => (other, other),
    };
    cargo_build(target, &["-p", "rundmc-init", "--profile", init_profile]);
    if init_dir != dir {
        // Copied then renamed: a running rundmc-init is replaced, not
        // written into.
        let temp = bin_dir.join(".rundmc-init.tmp");
        std::fs::copy(target.join(init_dir).join("rundmc-init"), &temp).unwrap();
        std::fs::rename(&temp, bin_dir.join("rundmc-init")).unwrap();
    }
}

fn cargo_build(target: &Path, args: &[&str]) {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(workspace().join("Cargo.toml"))
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .status()
        .unwrap();
    assert!(status.success(), "cargo build {args:?} failed");
}

/// `runc spec` written into `bundle`, read back to be edited.
pub fn runc_spec(bundle: &Path) -> serde_json::Value {
    std::fs::create_dir_all(bundle).unwrap();
    let out = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "runc spec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap()
}
