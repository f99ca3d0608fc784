//! Cold pull + unpack of one image from the loopback registry, each tool
//! into a fresh directory per sample: `rundmc image pull` into a fresh
//! `--image-store`; `skopeo copy` into a fresh OCI layout then `umoci
//! unpack`; `podman pull` into a fresh `--root`, `--runroot` and
//! `--network-config-dir`, when podman is installed.
//! The tools take turns, the order rotating every sample. The page cache
//! is not dropped (the registry's blobs are in memory for every tool
//! alike, after an unmeasured warm-up round); after each sample its output
//! is checked, removed, and `sync` runs, outside the timing, so that no
//! tool pays for another's writeback.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::images::{du_kib, run_quiet};
use crate::stats::Samples;
use crate::{cleanup, sys, wait};

/// A puller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `rundmc image pull`.
    Rundmc,
    /// `skopeo copy` + `umoci unpack`.
    SkopeoUmoci,
    /// `podman pull`.
    Podman,
}

impl Tool {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Rundmc => "rundmc image pull",
            Tool::SkopeoUmoci => "skopeo copy + umoci unpack",
            Tool::Podman => "podman pull",
        }
    }
}

/// What to pull from where, and where the samples go.
pub struct Puller<'a> {
    /// The directory holding `rundmc`.
    pub bins: &'a Path,
    /// The registry's `127.0.0.1:<port>`.
    pub addr: &'a str,
    /// `<addr>/<repo>:<tag>`.
    pub reference: &'a str,
    /// Fresh directories for each sample, on disk.
    pub scratch: &'a Path,
    /// Podman's `--runroot`s, on the tmpfs.
    pub run_scratch: &'a Path,
    /// Each pull's output must take at least this much disk.
    pub min_kib: u64,
}

/// Where podman makes its network lock whatever its flags say.
const PODMAN_RUN_DIRS: [&str; 2] = ["/run/containers/networks", "/run/containers"];

/// The tools to compare: rundmc and skopeo + umoci, and podman if installed
/// (then the directories it makes in `/run`, if they are not there yet,
/// are registered for the sweep, which removes them if empty).
pub fn tools() -> Vec<Tool> {
    let mut tools = vec![Tool::Rundmc, Tool::SkopeoUmoci];
    if installed("podman") {
        tools.push(Tool::Podman);
        for dir in PODMAN_RUN_DIRS.map(PathBuf::from) {
            if !dir.exists() {
                cleanup::register(|r| r.empty_dirs.push(dir));
            }
        }
    }
    tools
}

/// `what` runs (`what --version` succeeds).
pub fn installed(what: &str) -> bool {
    run_quiet(Command::new(what).arg("--version")).is_ok()
}

impl Puller<'_> {
    /// One warm-up round, then `n` timed rounds; samples in ms by tool.
    pub fn measure(&self, tools: &[Tool], n: usize) -> Result<Vec<(Tool, Samples)>> {
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); tools.len()];
        for round in 0..=n {
            for k in 0..tools.len() {
                let at = (k + round) % tools.len();
                let took = self.sample(tools[at], round)?;
                if round > 0 {
                    times[at].push(took);
                }
            }
        }
        Ok(tools
            .iter()
            .zip(times)
            .map(|(t, d)| (*t, Samples::from_durations(&d)))
            .collect())
    }

    /// One pull by `tool` into a fresh directory, timed; then checked and
    /// removed.
    fn sample(&self, tool: Tool, round: usize) -> Result<Duration> {
        wait::check_interrupted()?;
        let dir = self.scratch.join(format!("{tool:?}-{round}"));
        let run_dir = self.run_scratch.join(format!("{tool:?}-{round}"));
        for d in [&dir, &run_dir] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut commands = self.commands(tool, &dir, &run_dir);
        let t0 = Instant::now();
        for cmd in &mut commands {
            run_quiet(cmd).with_context(|| format!("{} (sample {round})", tool.name()))?;
        }
        let took = t0.elapsed();
        let kib = du_kib(&[&dir])?;
        if kib < self.min_kib {
            bail!(
                "{} left {kib} KiB in {}, less than the image's {} KiB",
                tool.name(),
                dir.display(),
                self.min_kib
            );
        }
        remove(&dir)?;
        remove(&run_dir)?;
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        Ok(took)
    }

    fn commands(&self, tool: Tool, dir: &Path, run_dir: &Path) -> Vec<Command> {
        match tool {
            Tool::Rundmc => {
                let mut c = Command::new(self.bins.join("rundmc"));
                c.args(["image", "pull", "--quiet", "--insecure-registry", self.addr])
                    .arg("--image-store")
                    .arg(dir.join("store"))
                    .arg(self.reference);
                vec![c]
            }
            Tool::SkopeoUmoci => {
                let layout = format!("{}:bench", dir.join("layout").display());
                let mut copy = Command::new("skopeo");
                copy.args(["copy", "--quiet", "--src-tls-verify=false"])
                    .arg(format!("docker://{}", self.reference))
                    .arg(format!("oci:{layout}"));
                let mut unpack = Command::new("umoci");
                unpack
                    .args(["unpack", "--image", &layout])
                    .arg(dir.join("bundle"));
                vec![copy, unpack]
            }
            Tool::Podman => {
                let mut c = Command::new("podman");
                c.arg("--root")
                    .arg(dir.join("root"))
                    .arg("--runroot")
                    .arg(run_dir.join("run"))
                    .arg("--network-config-dir")
                    .arg(run_dir.join("networks"))
                    .args(["--storage-driver", "overlay", "--events-backend", "none"])
                    .args(["pull", "--quiet", "--tls-verify=false", self.reference]);
                vec![c]
            }
        }
    }
}

/// Unmounts whatever a tool left mounted under `dir` (podman's storage may
/// bind-mount its own), then removes it.
fn remove(dir: &Path) -> Result<()> {
    for m in cleanup::mounts_under(dir) {
        sys::unmount(&m).with_context(|| format!("unmounting {}", m.display()))?;
    }
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}
