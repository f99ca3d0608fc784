//! The phases of a run: one runtime against its raw self (one at a time,
//! many at once, exits), and the steady state of one agent as containers
//! pile up (idle, memory, restarts, resyncs). [`Run`] holds where a run
//! puts things and registers each for the sweep as it is made.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::agent::{Agent, AgentEnv};
use crate::procfs::CpuCgroup;
use crate::raw::Raw;
use crate::report::{Results, RuntimeResults, brief};
use crate::steady::{self, Restarts};
use crate::wait::pause;
use crate::{Args, Sizes, burst, cleanup, exit, hog, latency, machine};

/// Agent workers, and raw threads in the bursts.
pub const WORKERS: usize = 4;

/// Where one run puts things and what it names them.
pub struct Run {
    sizes: Sizes,
    bins: PathBuf,
    image: PathBuf,
    /// Depots (records, writable layers, logs): on disk, as /var/lib is.
    pub base: PathBuf,
    /// State directories, OCI bundles and runtime roots: on a tmpfs, as
    /// /run is.
    pub run_base: PathBuf,
    tag: String,
    cpu: CpuCgroup,
}

impl Run {
    /// Makes the run's directories and CPU cgroup.
    pub fn set_up(args: &Args) -> Result<Run> {
        let tag = format!("rundmc-bench-{}", std::process::id());
        let base = std::env::temp_dir().join(&tag);
        let run_base = machine::tmpfs_run_dir()?.join(&tag);
        for dir in [&base, &run_base] {
            cleanup::register(|r| r.bases.push(dir.clone()));
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let cpu = CpuCgroup::create(&tag)?;
        cleanup::register(|r| r.cpu_cgroups.push(cpu.dir().to_owned()));
        Ok(Run {
            sizes: args.sizes,
            bins: args.bins.clone(),
            image: args.image.clone(),
            base,
            run_base,
            tag,
            cpu,
        })
    }

    /// How much of everything to do.
    pub fn sizes(&self) -> Sizes {
        self.sizes
    }

    /// The directory holding the release binaries.
    pub fn bins(&self) -> &Path {
        &self.bins
    }

    /// The rootfs given by `--image`.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// `rundmc-bench-<pid>`: what every name of the run starts with.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// An agent environment on the run's image, registered for the sweep.
    pub fn agent_env(&self, name: &str, runtime: &str) -> Result<AgentEnv> {
        self.agent_env_on(name, runtime, &self.image)
    }

    /// An agent environment whose containers run from the rootfs `rootfs`,
    /// registered for the sweep.
    pub fn agent_env_on(&self, name: &str, runtime: &str, rootfs: &Path) -> Result<AgentEnv> {
        let parent = format!("{}-{name}", self.tag);
        let env = AgentEnv::new(
            self.base.join(name),
            &self.run_base.join(name),
            runtime,
            parent.clone(),
            &self.bins,
            rootfs,
            self.cpu.clone(),
        )?;
        cleanup::register(|r| {
            r.roots.push((runtime.to_owned(), env.root.clone()));
            r.cgroup_parents.push(parent);
        });
        Ok(env)
    }

    /// A raw baseline copying the bundle of a container the agent makes.
    pub fn raw_beside(&self, env: &AgentEnv, name: &str) -> Result<Raw> {
        let template = vec!["template".to_string()];
        env.create_all(&template, "Always", Duration::from_secs(60))?;
        let raw = self.raw_from(env, name, env.template_files("template"))?;
        env.remove_all(&template, Duration::from_secs(60))?;
        Ok(raw)
    }

    /// A raw baseline named `name` copying the agent's bundle at `bundle`.
    pub fn raw_from(&self, env: &AgentEnv, name: &str, files: (PathBuf, PathBuf)) -> Result<Raw> {
        let parent = format!("{}-{name}", self.tag);
        let raw = Raw::new(
            &env.runtime,
            &self.base.join(name),
            &self.run_base.join(name),
            parent.clone(),
            &self.image,
            files,
        )?;
        cleanup::register(|r| {
            r.roots.push((env.runtime.clone(), raw.root.clone()));
            r.cgroup_parents.push(parent);
        });
        Ok(raw)
    }
}

/// `runtime` under the agent against itself by hand: one at a time, then
/// `rounds` bursts; with `exits`, exit detection too.
pub fn runtime_phase(
    run: &Run,
    runtime: &str,
    rounds: usize,
    exits: bool,
) -> Result<(RuntimeResults, Option<exit::Exits>)> {
    let s = run.sizes;
    let env = run.agent_env(&format!("{runtime}-agent"), runtime)?;
    let mut agent = env.start(&["--workers", &WORKERS.to_string()])?;
    let raw = run.raw_beside(&env, &format!("{runtime}-raw"))?;
    let latency = latency::measure(&env, &raw, s.samples, s.warmup)?;
    eprintln!("  {}", brief("drop to running, agent", &latency.agent_drop));
    eprintln!("  {}", brief("drop to running, raw", &latency.raw_drop));
    let measured = burst::Measured {
        pid: agent.pid,
        metrics: agent.metrics,
    };
    let bursts = burst::measure(&env, measured, &raw, s.burst, WORKERS, rounds)?;
    eprintln!("  {}", brief("burst /s, agent", &bursts.agent_up.rates));
    eprintln!("  {}", brief("burst /s, raw", &bursts.raw_up.rates));
    eprintln!("  {}", burst::cpu_brief(&bursts));
    let saturated = saturated_bursts(&env, measured, &raw, s)?;
    let exits = match exits {
        true => Some(exit::measure(&env, s.exits)?),
        false => None,
    };
    agent.terminate();
    let runtime = runtime.to_owned();
    let results = RuntimeResults {
        runtime,
        latency,
        bursts,
        saturated,
    };
    Ok((results, exits))
}

/// The bursts again beside [`hog::WHAT`]; `None` without stress-ng.
fn saturated_bursts(
    env: &AgentEnv,
    agent: burst::Measured,
    raw: &Raw,
    s: Sizes,
) -> Result<Option<burst::Bursts>> {
    if let Some(why) = hog::missing() {
        eprintln!("  saturated bursts skipped: {why}");
        return Ok(None);
    }
    let hog = hog::Hog::start(2)?;
    let bursts = burst::measure(env, agent, raw, s.sat_burst, WORKERS, s.sat_rounds);
    drop(hog);
    let bursts = bursts?;
    eprintln!(
        "  {}",
        brief("saturated burst /s, agent", &bursts.agent_up.rates)
    );
    eprintln!(
        "  {}",
        brief("saturated burst /s, raw", &bursts.raw_up.rates)
    );
    eprintln!("  saturated {}", burst::cpu_brief(&bursts));
    Ok(Some(bursts))
}

fn names(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("s{i:03}")).collect()
}

/// One agent, idle with 0 containers, then with the two steady sizes.
pub fn steady_phase(run: &Run, results: &mut Results) -> Result<()> {
    let s = run.sizes;
    let env = run.agent_env("steady", "runc")?;
    let agent = env.start(&[])?;
    pause(Duration::from_secs(3))?;
    results
        .idle
        .push(steady::idle(&env, &agent, 0, s.idle_secs)?);
    let [small, large] = s.steady;
    let first = names(0, small);
    let stage = Stage {
        all: &first,
        new: &first,
        restarts: s.restarts,
        period: Duration::from_secs(2),
    };
    let agent = stage.run(&env, agent, s.idle_secs, results)?;
    let all = names(0, large);
    let stage = Stage {
        all: &all,
        new: &all[small..],
        restarts: s.restarts.min(2),
        period: Duration::from_secs(3),
    };
    let mut agent = stage.run(&env, agent, s.idle_secs, results)?;
    env.remove_all(&all, Duration::from_secs(600))?;
    agent.terminate();
    Ok(())
}

/// Containers added to the steady agent, and what is measured then.
struct Stage<'a> {
    /// Every container running once the new ones are.
    all: &'a [String],
    /// The ones to add.
    new: &'a [String],
    /// Restarts with default flags.
    restarts: usize,
    /// The resync period for the resync measurement.
    period: Duration,
}

impl Stage<'_> {
    /// Adds the new containers; measures idle, memory, restarts and a
    /// resync; returns the agent, restarted once more with default flags.
    fn run(&self, env: &AgentEnv, mut agent: Agent, idle: u64, r: &mut Results) -> Result<Agent> {
        env.create_all(self.new, "Always", Duration::from_secs(600))?;
        pause(Duration::from_secs(2))?;
        let n = self.all.len();
        r.idle.push(steady::idle(env, &agent, n, idle)?);
        if r.shim_init.is_none() {
            r.shim_init = Some(steady::shim_and_init(env, &self.all[0])?);
        }
        let mut restarts = Restarts {
            containers: n,
            ..Restarts::default()
        };
        for _ in 0..self.restarts {
            agent = steady::restart(env, &mut agent, self.all, &[], &mut restarts)?;
        }
        let (mut resyncing, resync) =
            steady::resync(env, &mut agent, self.all, self.period, &mut restarts)?;
        let agent = steady::restart(env, &mut resyncing, self.all, &[], &mut restarts)?;
        eprintln!("  {n} containers: {:?}", r.idle.last());
        eprintln!("  {n} containers: {resync:?}");
        r.resyncs.push(resync);
        r.restarts.push(restarts);
        Ok(agent)
    }
}
