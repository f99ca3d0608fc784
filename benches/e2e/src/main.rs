//! `rundmc-bench`: the end-to-end benchmarks of issue 6. It drives the
//! release `rundmc agent` binary and the raw OCI runtime (runc, then crun)
//! in the same run on the same image, writes `BENCHMARKS.md`, and leaves
//! nothing behind. `make bench` runs it; as root:
//!
//! ```text
//! rundmc-bench --image DIR [--bin-dir DIR] [--out FILE] [--quick] [--samples N] [--phases runc,crun,steady]
//! ```
//!
//! `--quick` runs every figure with a handful of samples, to try changes.

mod agent;
mod burst;
mod cleanup;
mod exit;
mod latency;
mod machine;
mod procfs;
mod raw;
mod reaper;
mod report;
mod stats;
mod steady;
mod sys;
mod wait;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use agent::{Agent, AgentEnv};
use procfs::CpuCgroup;
use raw::Raw;
use report::{Results, RuntimeResults, brief};
use steady::Restarts;
use wait::pause;

/// Agent workers, and raw threads in the bursts.
const WORKERS: usize = 4;

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
}

const FULL: Sizes = Sizes {
    samples: 30,
    warmup: 2,
    burst: 100,
    rounds: 3,
    crun_rounds: 2,
    exits: 30,
    idle_secs: 30,
    steady: [100, 300],
    restarts: 5,
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
};

struct Args {
    image: PathBuf,
    bins: PathBuf,
    out: PathBuf,
    sizes: Sizes,
    /// Which phases to run: runc, crun, steady.
    phases: Vec<String>,
}

const USAGE: &str = "rundmc-bench --image DIR [--bin-dir DIR] [--out FILE] [--quick] [--samples N] [--phases runc,crun,steady]";

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
        phases: vec!["runc".into(), "crun".into(), "steady".into()],
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().map(PathBuf::from).context("flag needs a value");
        match a.to_str() {
            Some("--image") => args.image = value()?,
            Some("--bin-dir") => args.bins = value()?,
            Some("--out") => args.out = value()?,
            Some("--quick") => args.sizes = QUICK,
            Some("--samples") => args.sizes.samples = number(value()?)?,
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
    match outcome {
        Ok((args, mut results)) => {
            results.took = started.elapsed();
            results.notes.push(cleanup_note(&left));
            if let Err(e) = std::fs::write(&args.out, report::render(&results)) {
                eprintln!("rundmc-bench: writing {}: {e}", args.out.display());
                std::process::exit(1);
            }
            eprintln!(
                "rundmc-bench: wrote {} in {:.1} min",
                args.out.display(),
                results.took.as_secs_f64() / 60.0
            );
            if !left.is_empty() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("rundmc-bench: {e:#}");
            std::process::exit(1);
        }
    }
}

fn cleanup_note(left: &[String]) -> String {
    if left.is_empty() {
        "Cleanup: no container, mount, cgroup, supervisor or directory of the run was left behind (checked after the sweep).".into()
    } else {
        format!("Cleanup left behind: {}", left.join(", "))
    }
}

/// Where one run puts things and what it names them.
struct Run<'a> {
    args: &'a Args,
    /// Depots and bundles: on disk, as /var/lib is.
    base: PathBuf,
    /// State directories and runtime roots: on a tmpfs, as /run is.
    run_base: PathBuf,
    tag: String,
    cpu: CpuCgroup,
}

fn run(args: &Args) -> Result<Results> {
    preflight(args)?;
    let tag = format!("rundmc-bench-{}", std::process::id());
    let base = std::env::temp_dir().join(&tag);
    let run_base = machine::tmpfs_run_dir()?.join(&tag);
    for dir in [&base, &run_base] {
        cleanup::register(|r| r.bases.push(dir.clone()));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let cpu = CpuCgroup::create(&tag)?;
    cleanup::register(|r| r.cpu_cgroups.push(cpu.dir().to_owned()));
    let run = Run {
        args,
        base,
        run_base,
        tag,
        cpu,
    };
    let mut results = Results {
        machine: machine::describe(&run.base, &run.run_base),
        ..Results::default()
    };
    let wants = |p: &str| args.phases.iter().any(|x| x == p);
    if wants("runc") {
        let (runc, exits) = phase("runc", || {
            runtime_phase(&run, "runc", args.sizes.rounds, true)
        })?;
        results.runtimes.push(runc);
        results.exits = exits;
    }
    if wants("crun") {
        match machine::prepare_crun() {
            Ok(()) => {
                let (crun, _) = phase("crun", || {
                    runtime_phase(&run, "crun", args.sizes.crun_rounds, false)
                })?;
                results.runtimes.push(crun);
            }
            Err(why) => results.notes.push(format!("crun skipped: {why}")),
        }
    }
    if wants("steady") {
        phase("steady state", || steady_phase(&run, &mut results))?;
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

impl Run<'_> {
    fn agent_env(&self, name: &str, runtime: &str) -> Result<AgentEnv> {
        let parent = format!("{}-{name}", self.tag);
        let env = AgentEnv::new(
            self.base.join(name),
            &self.run_base.join(name),
            runtime,
            parent.clone(),
            &self.args.bins,
            &self.args.image,
            self.cpu.clone(),
        )?;
        cleanup::register(|r| {
            r.roots.push((runtime.to_owned(), env.root.clone()));
            r.cgroup_parents.push(parent);
        });
        Ok(env)
    }

    /// A raw baseline copying the bundle of a container the agent makes.
    fn raw_beside(&self, env: &AgentEnv, name: &str) -> Result<Raw> {
        let template = vec!["template".to_string()];
        env.create_all(&template, "Always", Duration::from_secs(60))?;
        let parent = format!("{}-{name}", self.tag);
        let raw = Raw::new(
            &env.runtime,
            &self.base.join(name),
            &self.run_base.join(name),
            parent.clone(),
            &self.args.image,
            &env.depot.join("template"),
        )?;
        cleanup::register(|r| {
            r.roots.push((env.runtime.clone(), raw.root.clone()));
            r.cgroup_parents.push(parent);
        });
        env.remove_all(&template, Duration::from_secs(60))?;
        Ok(raw)
    }
}

fn runtime_phase(
    run: &Run,
    runtime: &str,
    rounds: usize,
    exits: bool,
) -> Result<(RuntimeResults, Option<exit::Exits>)> {
    let s = run.args.sizes;
    let env = run.agent_env(&format!("{runtime}-agent"), runtime)?;
    let mut agent = env.start(&["--workers", &WORKERS.to_string()])?;
    let raw = run.raw_beside(&env, &format!("{runtime}-raw"))?;
    let latency = latency::measure(&env, &raw, s.samples, s.warmup)?;
    eprintln!("  {}", brief("drop to running, agent", &latency.agent_drop));
    eprintln!("  {}", brief("drop to running, raw", &latency.raw_drop));
    let bursts = burst::measure(&env, &raw, s.burst, WORKERS, rounds)?;
    eprintln!(
        "  {}",
        brief("burst containers/s, agent", &bursts.agent_up.rates)
    );
    eprintln!(
        "  {}",
        brief("burst containers/s, raw", &bursts.raw_up.rates)
    );
    let exits = if exits {
        Some(exit::measure(&env, s.exits)?)
    } else {
        None
    };
    if let Some(e) = &exits {
        eprintln!("  {}", brief("exit detection", &e.in_status));
    }
    agent.terminate();
    let runtime = runtime.to_owned();
    Ok((
        RuntimeResults {
            runtime,
            latency,
            bursts,
        },
        exits,
    ))
}

fn steady_phase(run: &Run, results: &mut Results) -> Result<()> {
    let s = run.args.sizes;
    let env = run.agent_env("steady", "runc")?;
    let mut agent = env.start(&[])?;
    pause(Duration::from_secs(3))?;
    results
        .idle
        .push(steady::idle(&env, &agent, 0, s.idle_secs)?);
    let names = |from: usize, to: usize| -> Vec<String> {
        (from..to).map(|i| format!("s{i:03}")).collect()
    };
    let [small, large] = s.steady;
    let first = names(0, small);
    env.create_all(&first, "Always", Duration::from_secs(600))?;
    pause(Duration::from_secs(2))?;
    results
        .idle
        .push(steady::idle(&env, &agent, small, s.idle_secs)?);
    results.shim_init = Some(steady::shim_and_init(&env, &first[0])?);
    let mut restarts = Restarts {
        containers: small,
        ..Restarts::default()
    };
    for _ in 0..s.restarts {
        agent = steady::restart(&env, &mut agent, &first, &[], &mut restarts)?;
    }
    let (a, r) = steady::resync(
        &env,
        &mut agent,
        &first,
        Duration::from_secs(2),
        &mut restarts,
    )?;
    agent = steady::restart(&env, &mut { a }, &first, &[], &mut restarts)?;
    results.resyncs.push(r);
    results.restarts.push(restarts);
    let mut restarts = Restarts {
        containers: large,
        ..Restarts::default()
    };
    let all = names(0, large);
    env.create_all(&names(small, large), "Always", Duration::from_secs(600))?;
    pause(Duration::from_secs(2))?;
    results
        .idle
        .push(steady::idle(&env, &agent, large, s.idle_secs)?);
    for _ in 0..s.restarts.min(2) {
        agent = steady::restart(&env, &mut agent, &all, &[], &mut restarts)?;
    }
    let (a, r) = steady::resync(
        &env,
        &mut agent,
        &all,
        Duration::from_secs(3),
        &mut restarts,
    )?;
    agent = a;
    results.resyncs.push(r);
    results.restarts.push(restarts);
    eprintln!("  idle: {:?}", results.idle);
    eprintln!("  resyncs: {:?}", results.resyncs);
    env.remove_all(&all, Duration::from_secs(600))?;
    finish(agent);
    Ok(())
}

fn finish(mut agent: Agent) {
    agent.terminate();
}
