//! The images phase (issue 13). It builds one multi-layer image (busybox
//! and 64 MiB of random data, [`oci_image`]), starts a registry on
//! loopback ([`registry`]) and pushes it there once, then measures:
//!
//! 1. cold pull + unpack by rundmc against skopeo + umoci and podman
//!    ([`cold_pull`]);
//! 2. drop to running of a container whose image is already in the store
//!    (`imagePullPolicy: IfNotPresent`) against the same container from
//!    the image unpacked in a rootfs directory, on one agent, interleaved
//!    sample by sample as [`latency`] does;
//! 3. the disk that N running containers of the image take (store and
//!    depot, `du -x`, hard links once) against one unpacked copy of the
//!    image plus their N upper directories; and against one copy plus the
//!    depot of N containers of the rootfs directory.
//!
//! The registry is stopped at the end, and registered for the sweep.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::agent::AgentEnv;
use crate::cold_pull::{self, Puller, Tool};
use crate::latency::{agent_teardown, drop_manifest};
use crate::oci_image::{self, OciImage};
use crate::phases::{Run, WORKERS};
use crate::registry::Registry;
use crate::report::brief;
use crate::stats::Samples;
use crate::wait::{pause, wait_for};

/// The image's repository and tag in the registry.
const REPO: &str = "bench/img:1";
/// Unmeasured drop-to-running rounds first.
const WARMUP: usize = 2;

/// What the images phase measured.
#[derive(Debug, Default)]
pub struct ImageResults {
    /// Layers of the image.
    pub layers: usize,
    /// Random data in it, MiB.
    pub data_mib: f64,
    /// Tools of the comparison that are not installed.
    pub absent: Vec<String>,
    /// Cold pull + unpack, ms, by tool (rundmc first).
    pub pulls: Vec<(String, Samples)>,
    /// Drop to running from the image in the store.
    pub drop_image: Samples,
    /// Drop to running from the rootfs directory.
    pub drop_rootfs: Samples,
    /// Teardown of the image's container.
    pub teardown_image: Samples,
    /// Teardown of the rootfs directory's container.
    pub teardown_rootfs: Samples,
    /// Overlay lower directories of an image container and of a rootfs one.
    pub lowerdirs: (usize, usize),
    /// The disk figure.
    pub disk: Option<Disk>,
}

/// The disk N containers of one image take, KiB (`du -skx`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Disk {
    /// How many containers were running.
    pub containers: usize,
    /// The image store.
    pub store_kib: u64,
    /// The depot.
    pub depot_kib: u64,
    /// Store and depot in one `du` (a file linked into both counts once).
    pub together_kib: u64,
    /// One copy of the image, unpacked by umoci.
    pub image_kib: u64,
    /// The containers' upper directories.
    pub uppers_kib: u64,
    /// The depot of as many containers of the rootfs directory instead.
    pub rootfs_depot_kib: u64,
}

impl Disk {
    /// What the store and depot take ÷ one image plus the uppers.
    pub fn ratio(&self) -> f64 {
        crate::stats::ratio(
            self.together_kib as f64,
            (self.image_kib + self.uppers_kib) as f64,
        )
    }

    /// What the store and depot take ÷ one image plus the depot of as
    /// many containers of the image unpacked in a rootfs directory.
    pub fn ratio_to_rootfs(&self) -> f64 {
        crate::stats::ratio(
            self.together_kib as f64,
            (self.image_kib + self.rootfs_depot_kib) as f64,
        )
    }
}

/// Why the phase cannot run here, if it cannot.
pub fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = ["docker-registry", "skopeo", "umoci"]
        .into_iter()
        .filter(|t| which(t).is_none())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not installed (scripts/deps.sh installs them)",
            missing.join(", ")
        )
    })
}

pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The whole phase.
pub fn phase(run: &Run) -> Result<ImageResults> {
    let image = oci_image::build(&run.base.join("image-build"), run.image())
        .context("building the image with umoci")?;
    let mut registry = Registry::start(&run.base.join("registry"))?;
    registry.push(&image.layout, oci_image::TAG, REPO)?;
    let reference = registry.reference(REPO);
    let mut r = ImageResults {
        layers: image.layers,
        data_mib: image.data_bytes as f64 / f64::from(1 << 20),
        ..ImageResults::default()
    };
    let tools = cold_pull::tools();
    if !tools.contains(&Tool::Podman) {
        r.absent.push("podman".into());
    }
    let puller = Puller {
        bins: run.bins(),
        addr: &registry.addr,
        reference: &reference,
        scratch: &run.base.join("pulls"),
        run_scratch: &run.run_base.join("pulls"),
        min_kib: image.data_bytes / 1024,
    };
    for (tool, samples) in puller.measure(&tools, run.sizes().pulls)? {
        eprintln!("  {}", brief(tool.name(), &samples));
        r.pulls.push((tool.name().to_owned(), samples));
    }
    with_image_present(run, &registry, &reference, &image, &mut r)?;
    registry.stop();
    Ok(r)
}

/// Figures 2 and 3, on one agent whose store already holds the image.
fn with_image_present(
    run: &Run,
    registry: &Registry,
    reference: &str,
    image: &OciImage,
    r: &mut ImageResults,
) -> Result<()> {
    let s = run.sizes();
    let env = run.agent_env_on("images", "runc", &image.rootfs)?;
    run_quiet(
        Command::new(run.bins().join("rundmc"))
            .args(["image", "pull", "--quiet", "--insecure-registry"])
            .arg(&registry.addr)
            .arg("--image-store")
            .arg(env.dir.join("images"))
            .arg(reference),
    )
    .context("pulling the image into the agent's store")?;
    let workers = WORKERS.to_string();
    let extra = ["--workers", &workers, "--insecure-registry", &registry.addr];
    let mut agent = env.start(&extra)?;
    drops(&env, reference, s.image_drops, r)?;
    eprintln!("  {}", brief("drop to running, image", &r.drop_image));
    eprintln!("  {}", brief("drop to running, rootfs dir", &r.drop_rootfs));
    let image_kib = du_kib(&[&image.rootfs])?;
    let disk = disk(&env, reference, s.image_containers, image_kib)?;
    eprintln!("  {disk:?}");
    r.disk = Some(disk);
    agent.terminate();
    Ok(())
}

/// A manifest of `name` running the image `reference`, already present.
fn image_manifest(env: &AgentEnv, name: &str, reference: &str) -> String {
    let rootfs = format!("  rootfs: {}\n", env.rootfs().display());
    let image = format!("  image: {reference}\n  imagePullPolicy: IfNotPresent\n");
    env.manifest(name, "Always").replace(&rootfs, &image)
}

/// Image and rootfs containers dropped in turn, the order flipping every
/// sample; [`WARMUP`] rounds unmeasured.
fn drops(env: &AgentEnv, reference: &str, n: usize, r: &mut ImageResults) -> Result<()> {
    let mut d = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for i in 0..WARMUP + n {
        let (img, dir) = (format!("i{i}"), format!("f{i}"));
        let img_yaml = image_manifest(env, &img, reference);
        let dir_yaml = env.manifest(&dir, "Always");
        let (di, dd) = if i % 2 == 0 {
            let di = drop_manifest(env, &img, &img_yaml)?;
            (di, drop_manifest(env, &dir, &dir_yaml)?)
        } else {
            let dd = drop_manifest(env, &dir, &dir_yaml)?;
            (drop_manifest(env, &img, &img_yaml)?, dd)
        };
        if i == 0 {
            r.lowerdirs = (lowerdirs(env, &img)?, lowerdirs(env, &dir)?);
            if r.lowerdirs != (r.layers, 1) {
                bail!(
                    "{img} mounts {} lower directories and {dir} {}; expected {} and 1",
                    r.lowerdirs.0,
                    r.lowerdirs.1,
                    r.layers
                );
            }
        }
        let ti = agent_teardown(env, &img)?;
        let td = agent_teardown(env, &dir)?;
        if i >= WARMUP {
            for (v, x) in d.iter_mut().zip([di, dd, ti, td]) {
                v.push(x);
            }
        }
    }
    let [a, b, c, e] = d;
    r.drop_image = Samples::from_durations(&a);
    r.drop_rootfs = Samples::from_durations(&b);
    r.teardown_image = Samples::from_durations(&c);
    r.teardown_rootfs = Samples::from_durations(&e);
    Ok(())
}

/// How many lower directories the overlay of `name`'s rootfs has.
fn lowerdirs(env: &AgentEnv, name: &str) -> Result<usize> {
    let target = env.bundle(name).join("rootfs");
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4).map(Path::new) == Some(target.as_path()))
        .with_context(|| format!("{} is not mounted", target.display()))?;
    let lower = line
        .rsplit(' ')
        .next()
        .and_then(|o| o.split(',').find_map(|o| o.strip_prefix("lowerdir=")))
        .with_context(|| format!("no lowerdir in {line}"))?;
    Ok(lower.split(':').count())
}

/// `n` containers of the image running: what store, depot and uppers
/// take; then, those removed, what the depot of `n` containers of the
/// rootfs directory takes.
fn disk(env: &AgentEnv, reference: &str, n: usize, image_kib: u64) -> Result<Disk> {
    let names: Vec<String> = (0..n).map(|i| format!("c{i:03}")).collect();
    run_all(env, &names, |c| image_manifest(env, c, reference))?;
    let store = env.dir.join("images");
    let uppers: Vec<_> = names
        .iter()
        .map(|c| env.depot.join(c).join("upper"))
        .collect();
    let upper_refs: Vec<&Path> = uppers.iter().map(|p| p.as_path()).collect();
    let mut disk = Disk {
        containers: n,
        store_kib: du_kib(&[&store])?,
        depot_kib: du_kib(&[&env.depot])?,
        together_kib: du_kib(&[&store, &env.depot])?,
        image_kib,
        uppers_kib: du_kib(&upper_refs)?,
        rootfs_depot_kib: 0,
    };
    env.remove_all(&names, Duration::from_secs(300))?;
    let names: Vec<String> = (0..n).map(|i| format!("r{i:03}")).collect();
    run_all(env, &names, |c| env.manifest(c, "Always"))?;
    disk.rootfs_depot_kib = du_kib(&[&env.depot])?;
    env.remove_all(&names, Duration::from_secs(300))?;
    Ok(disk)
}

/// Writes the manifest `yaml(name)` of each of `names`, and waits until
/// every one is running and has put out its first line.
fn run_all(env: &AgentEnv, names: &[String], yaml: impl Fn(&str) -> String) -> Result<()> {
    for name in names {
        env.write(name, &yaml(name))?;
    }
    wait_for(
        &format!("{} containers running", names.len()),
        Duration::from_secs(300),
        Duration::from_millis(20),
        || names.iter().all(|c| env.output_landed(c)) && env.all_running(names),
    )
    .with_context(|| env.log_tail())?;
    pause(Duration::from_secs(1))
}

/// Disk usage of `paths` together, KiB: `du -skxc` (one file system each,
/// a hard-linked file counted once).
pub fn du_kib(paths: &[&Path]) -> Result<u64> {
    let mut cmd = Command::new("du");
    cmd.arg("-skxc").args(paths).stderr(Stdio::piped());
    let out = crate::reaper::output(&mut cmd).context("running du")?;
    if !out.status.success() {
        bail!("du: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|k| k.parse().ok())
        .with_context(|| format!("du said {text:?}"))
}

/// Runs `cmd` to completion, its output captured; an error carrying its
/// stderr unless it succeeds.
pub fn run_quiet(cmd: &mut Command) -> Result<()> {
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    let what = format!("{:?}", cmd.get_program());
    let out = crate::reaper::output(cmd).with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} {:?}: {}: {}",
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
