//! The images phase's test image, built with `umoci` as the tests build
//! theirs: the busybox rootfs given by `--image` as the base layer, then
//! [`DATA_LAYERS`] layers of random (incompressible) files, 64 MiB in all,
//! in an OCI layout. The bundle umoci keeps is the image unpacked: the
//! "rootfs directory" the image-less container runs from, and the size of
//! one copy of the image on disk.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::images::run_quiet;

/// Layers of random data above the base.
pub const DATA_LAYERS: usize = 4;
/// Files in each data layer.
const FILES_PER_LAYER: usize = 8;
/// Size of each file.
const FILE_BYTES: usize = 2 << 20;
/// The image's tag in the layout.
pub const TAG: &str = "bench";

/// The built image.
pub struct OciImage {
    /// The OCI layout holding it as [`TAG`].
    pub layout: PathBuf,
    /// It unpacked by umoci: one copy of the image's files.
    pub rootfs: PathBuf,
    /// How many layers it has.
    pub layers: usize,
    /// Bytes of random data in it.
    pub data_bytes: u64,
}

/// Builds the image under `dir` from the rootfs `base`.
pub fn build(dir: &Path, base: &Path) -> Result<OciImage> {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let image = format!("{}:{TAG}", layout.display());
    run_quiet(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    )?;
    run_quiet(Command::new("umoci").args(["new", "--image", &image]))?;
    run_quiet(
        Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle),
    )?;
    let rootfs = bundle.join("rootfs");
    run_quiet(
        Command::new("cp")
            .arg("-a")
            .arg(base.join("."))
            .arg(&rootfs),
    )?;
    repack(&image, &bundle)?;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for layer in 0..DATA_LAYERS {
        let data = rootfs.join(format!("data/layer{layer}"));
        fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        for file in 0..FILES_PER_LAYER {
            let path = data.join(format!("blob{file}"));
            write_random(&path, FILE_BYTES, &mut seed)?;
        }
        repack(&image, &bundle)?;
    }
    run_quiet(
        Command::new("umoci")
            .args(["config", "--image", &image])
            .args(["--config.cmd", "/bin/sh"]),
    )?;
    Ok(OciImage {
        layout,
        rootfs,
        layers: 1 + DATA_LAYERS,
        data_bytes: (DATA_LAYERS * FILES_PER_LAYER * FILE_BYTES) as u64,
    })
}

/// Packs what changed in the bundle as a new layer, and keeps the bundle
/// in step so that the next repack adds only what changes next.
fn repack(image: &str, bundle: &Path) -> Result<()> {
    run_quiet(
        Command::new("umoci")
            .args(["repack", "--refresh-bundle", "--image", image])
            .arg(bundle),
    )
}

/// `len` bytes from xorshift64*: incompressible, and fast to make.
fn write_random(path: &Path, len: usize, state: &mut u64) -> Result<()> {
    let mut buf = vec![0u8; len];
    for chunk in buf.chunks_mut(8) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let mut f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&buf)
        .with_context(|| format!("writing {}", path.display()))
}
