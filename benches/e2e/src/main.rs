//! `rundmc-bench`: the end-to-end benchmarks of issues 6, 13 and 14. It drives the
//! release `rundmc agent` binary and the raw OCI runtime (runc, then crun)
//! in the same run on the same image, writes `BENCHMARKS.md`, and leaves
//! nothing behind. `make bench` runs it; as root:
//!
//! ```text
//! rundmc-bench --image DIR [--bin-dir DIR] [--out FILE] [--findings FILE]
//!              [--quick] [--samples N] [--burst N] [--rounds N] [--scale N]
//!              [--phases runc,crun,peers,steady,scale,images,network,userns,seccomp,probes,pods,ops]
//! ```
//!
//! `--quick` runs every figure with a handful of samples, to try changes;
//! `--phases` runs only some. The `images` phase (issue 13) pulls from a
//! registry it starts on loopback (see [`images`]); the `network` phase
//! (issue 14) attaches containers to a bridge of its own (see [`network`]); the `seccomp` phase
//! (issue 15) weighs the default seccomp profile against none (see [`seccomp`]). `--findings` (default
//! `benches/e2e/FINDINGS.md`) is hand-written analysis appended as it is.

mod agent;
mod burst;
mod cleanup;
mod cold_pull;
mod cpu;
mod exit;
mod hog;
mod idmap;
mod images;
mod images_report;
mod latency;
mod machine;
mod metrics;
mod net;
mod network;
mod network_report;
mod oci_image;
mod ops;
mod peers;
mod peers_report;
mod phases;
// Issue 17 (pods): drop to running of a container with a sidecar and a pea.
mod pods;
mod probes;
mod probes_report;
mod procfs;
mod raw;
mod reaper;
mod registry;
mod report;
mod scale;
mod seccomp;
mod seccomp_report;
mod stats;
mod steady;
mod sys;
mod userns;
mod wait;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use phases::Run;
use report::Results;

/// How much of everything to do.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    samples: usize,
    warmup: usize,
    burst: usize,
    rounds: usize,
    crun_rounds: usize,
    exits: usize,
    idle_secs: u64,
    steady: [usize; 2],
    restarts: usize,
    /// Timed cold pulls per tool.
    pulls: usize,
    /// Drop-to-running samples, image against rootfs directory.
    image_drops: usize,
    /// Containers of one image for the disk figure.
    image_containers: usize,
    /// Network phase samples: drops with and without, hand ADD and DEL.
    net_samples: usize,
    /// Containers per burst beside a CPU hog, and rounds of them.
    sat_burst: usize,
    sat_rounds: usize,
    /// The peers phase.
    peers: peers::PeerSizes,
    /// The scale phase.
    scale: scale::ScaleSizes,
}

const FULL: Sizes = Sizes {
    samples: 60,
    warmup: 2,
    burst: 100,
    rounds: 4,
    crun_rounds: 3,
    exits: 40,
    idle_secs: 30,
    steady: [100, 300],
    restarts: 5,
    pulls: 5,
    image_drops: 60,
    image_containers: 100,
    net_samples: 40,
    sat_burst: 50,
    sat_rounds: 4,
    peers: peers::PeerSizes {
        samples: 15,
        burst: 50,
        rounds: 3,
        idle_secs: 6,
    },
    scale: scale::ScaleSizes {
        containers: 1000,
        restarts: 2,
        resync_period: std::time::Duration::from_secs(2),
    },
};

const QUICK: Sizes = Sizes {
    samples: 6,
    warmup: 1,
    burst: 10,
    rounds: 1,
    crun_rounds: 1,
    exits: 5,
    idle_secs: 3,
    steady: [10, 30],
    restarts: 2,
    pulls: 1,
    image_drops: 4,
    image_containers: 10,
    net_samples: 4,
    sat_burst: 10,
    sat_rounds: 1,
    peers: peers::PeerSizes {
        samples: 3,
        burst: 10,
        rounds: 1,
        idle_secs: 2,
    },
    scale: scale::ScaleSizes {
        containers: 40,
        restarts: 1,
        resync_period: std::time::Duration::from_secs(1),
    },
};

struct Args {
    image: PathBuf,
    bins: PathBuf,
    out: PathBuf,
    sizes: Sizes,
    /// Which phases to run: runc, crun, steady, images, network, seccomp, ops.
    phases: Vec<String>,
    /// Hand-written findings appended to the report, when the file exists.
    findings: PathBuf,
}

const USAGE: &str = "rundmc-bench --image DIR [--bin-dir DIR] [--out FILE] [--findings FILE] [--quick] [--samples N] [--burst N] [--rounds N] [--scale N] [--phases runc,crun,peers,steady,scale,images,network,userns,seccomp,probes,pods,ops]";

fn number(p: PathBuf) -> Result<usize> {
    p.to_string_lossy()
        .parse()
        .with_context(|| format!("{} is not a number", p.display()))
}

fn parse_args() -> Result<Args> {
    let own_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("no directory of the harness binary")?;
    let mut args = Args {
        image: PathBuf::from("target/rootfs/busybox"),
        bins: own_dir,
        out: PathBuf::from("BENCHMARKS.md"),
        sizes: FULL,
        phases: [
            "runc", "crun", "peers", "steady", "scale", "images", "network", "userns", "seccomp",
            "probes", "pods", "ops",
        ]
        .map(String::from)
        .to_vec(),
        findings: PathBuf::from("benches/e2e/FINDINGS.md"),
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().map(PathBuf::from).context("flag needs a value");
        match a.to_str() {
            Some("--image") => args.image = value()?,
            Some("--bin-dir") => args.bins = value()?,
            Some("--out") => args.out = value()?,
            Some("--findings") => args.findings = value()?,
            Some("--quick") => args.sizes = QUICK,
            Some("--samples") => args.sizes.samples = number(value()?)?,
            Some("--burst") => {
                args.sizes.burst = number(value()?)?;
                args.sizes.sat_burst = args.sizes.burst;
            }
            Some("--scale") => args.sizes.scale.containers = number(value()?)?,
            Some("--rounds") => {
                args.sizes.rounds = number(value()?)?;
                args.sizes.crun_rounds = args.sizes.rounds;
                args.sizes.sat_rounds = args.sizes.rounds;
            }
            Some("--phases") => {
                let list = value()?.to_string_lossy().into_owned();
                args.phases = list.split(',').map(str::to_owned).collect();
            }
            _ => bail!("usage: {USAGE}"),
        }
    }
    args.image = std::path::absolute(&args.image)?;
    Ok(args)
}

fn main() {
    if let Err(e) = reaper::start() {
        eprintln!("rundmc-bench: cannot become a subreaper: {e}");
        std::process::exit(1);
    }
    wait::install_interrupt_handler();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        for left in cleanup::sweep() {
            eprintln!("rundmc-bench: left behind: {left}");
        }
    }));
    let started = Instant::now();
    let outcome = parse_args().and_then(|args| run(&args).map(|r| (args, r)));
    eprintln!("rundmc-bench: cleaning up");
    let left = cleanup::sweep();
    for l in &left {
        eprintln!("rundmc-bench: left behind: {l}");
    }
    let written = outcome.and_then(|(args, results)| write_report(&args, results, &left, started));
    if let Err(e) = written {
        eprintln!("rundmc-bench: {e:#}");
        std::process::exit(1);
    }
    if !left.is_empty() {
        std::process::exit(1);
    }
}

fn write_report(
    args: &Args,
    mut results: Results,
    left: &[String],
    started: Instant,
) -> Result<()> {
    results.took = started.elapsed();
    results.findings = std::fs::read_to_string(&args.findings).ok();
    results.notes.push(cleanup_note(left));
    std::fs::write(&args.out, report::render(&results))
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "rundmc-bench: wrote {} in {:.1} min",
        args.out.display(),
        results.took.as_secs_f64() / 60.0
    );
    Ok(())
}

fn cleanup_note(left: &[String]) -> String {
    if left.is_empty() {
        "Cleanup: no container, mount, cgroup, supervisor or directory of the run was left behind (checked after the sweep).".into()
    } else {
        format!("Cleanup left behind: {}", left.join(", "))
    }
}

fn run(args: &Args) -> Result<Results> {
    preflight(args)?;
    let run = Run::set_up(args)?;
    let mut results = Results {
        machine: machine::describe(&run.base, &run.run_base),
        ..Results::default()
    };
    let wants = |p: &str| args.phases.iter().any(|x| x == p);
    if wants("runc") {
        let (runc, exits) = phase("runc", || {
            phases::runtime_phase(&run, "runc", args.sizes.rounds, true)
        })?;
        results.runtimes.push(runc);
        results.exits = exits;
    }
    if wants("crun") {
        match machine::prepare_crun() {
            Ok(done) => {
                results.notes.push(done);
                let (crun, _) = phase("crun", || {
                    phases::runtime_phase(&run, "crun", args.sizes.crun_rounds, false)
                })?;
                results.runtimes.push(crun);
            }
            Err(why) => results.notes.push(format!("crun skipped: {why}")),
        }
    }
    if wants("peers") {
        let sizes = args.sizes.peers;
        results.peers = Some(phase("peers", || peers::phase(&run, sizes))?);
    }
    if wants("steady") {
        phase("steady state", || phases::steady_phase(&run, &mut results))?;
    }
    if wants("scale") {
        let sizes = args.sizes.scale;
        results.scale = Some(phase("scale", || scale::phase(&run, sizes))?);
    }
    if wants("images") {
        match images::missing_tools() {
            None => results.images = Some(phase("images", || images::phase(&run))?),
            Some(why) => results.notes.push(format!("images skipped: {why}")),
        }
    }
    if wants("userns") {
        let r = phase("user namespaces", || userns::phase(&run))?;
        results.notes.push(r.summary());
    }
    if wants("network") {
        match net::missing_tools() {
            None => results.network = Some(phase("network", || network::phase(&run))?),
            Some(why) => results.notes.push(format!("network skipped: {why}")),
        }
    }
    if wants("seccomp") {
        results.seccomp = Some(phase("seccomp", || seccomp::phase(&run))?);
    }
    if wants("probes") {
        results.probes = Some(phase("probes", || probes::phase(&run))?);
    }
    if wants("pods") {
        let r = phase("pods", || pods::phase(&run))?;
        results.notes.push(r.summary());
    }
    // Operator access (issue 18).
    if wants("ops") {
        let r = phase("operator access", || ops::phase(&run))?;
        results.notes.push(r.summary());
    }
    Ok(results)
}

fn preflight(args: &Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root: the agent and runc mount overlays and write cgroups");
    }
    for bin in ["rundmc", "rundmc-init", "rundmc-shim"] {
        if !args.bins.join(bin).is_file() {
            bail!(
                "{} not found; build with `cargo build --release --workspace`",
                args.bins.join(bin).display()
            );
        }
    }
    if !args.image.join("bin/sh").exists() {
        bail!(
            "{} is not an image; build it with scripts/mkrootfs.sh",
            args.image.display()
        );
    }
    Ok(())
}

fn phase<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("rundmc-bench: {name}...");
    let t0 = Instant::now();
    let out = f().with_context(|| format!("{name} phase"))?;
    eprintln!(
        "rundmc-bench: {name} done in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(out)
}
