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
/// binaries are built (same target dir and profile) on first use when
/// `cargo test` ran without `make test`'s `cargo build --workspace`.
pub fn binary(name: &str) -> PathBuf {
    let rundmc = PathBuf::from(env!("CARGO_BIN_EXE_rundmc"));
    if name == "rundmc" {
        return rundmc;
    }
    let bin_dir = rundmc.parent().unwrap().to_owned();
    BUILD.call_once(|| {
        let profile = bin_dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args([
                "build",
                "--quiet",
                "-p",
                "rundmc-init",
                "-p",
                "rundmc-shim",
                "--manifest-path",
            ])
            .arg(workspace().join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", bin_dir.parent().unwrap());
        if profile != "debug" {
            cargo.args(["--profile", &profile]);
        }
        assert!(
            cargo.status().unwrap().success(),
            "building rundmc-init and rundmc-shim failed"
        );
    });
    let path = bin_dir.join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path
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
