//! Steady state on one agent as containers accumulate (0, then 100, then
//! 300): its CPU while idle, its memory, one supervisor's and one init's
//! memory; restarts with everything running; and the CPU cost of a resync.
//!
//! CPU is read two ways: the agent's CPU cgroup (the agent, every runtime
//! call it spawned, and the supervisors, to the nanosecond) and the agent
//! process's own /proc/<pid>/stat (its threads only, in clock ticks).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::agent::{Agent, AgentEnv};
use crate::procfs::{self, Mem};
use crate::stats::Samples;
use crate::wait::{pause, wait_for};

/// Resyncs averaged over in one resync measurement.
pub const RESYNC_TICKS: u32 = 10;

/// The agent at rest with some containers.
#[derive(Debug, Clone)]
pub struct Idle {
    /// Containers running.
    pub containers: usize,
    /// Seconds watched.
    pub seconds: f64,
    /// CPU of the agent's cgroup, % of one core.
    pub cgroup_pct: f64,
    /// CPU of the agent process alone, % of one core.
    pub process_pct: f64,
    /// Its memory at the end.
    pub mem: Mem,
}

/// CPU of one full resync.
#[derive(Debug, Clone)]
pub struct Resync {
    /// Containers running.
    pub containers: usize,
    /// The resync period used.
    pub period: Duration,
    /// Agent cgroup CPU per resync, ms.
    pub cgroup_ms: f64,
    /// Agent process CPU per resync, ms (10 ms clock ticks, averaged).
    pub process_ms: f64,
}

/// Restarts of an agent with everything running.
#[derive(Debug, Clone, Default)]
pub struct Restarts {
    /// Containers running.
    pub containers: usize,
    /// From spawn until it holds a pidfd on every main supervisor, ms.
    pub ready: Samples,
    /// What was checked after each restart; empty when all held.
    pub violations: Vec<String>,
}

/// The pids that must not change across a restart, by container.
type Pids = BTreeMap<String, (Option<i32>, Option<i32>, Option<i32>)>;

fn pids(env: &AgentEnv, names: &[String]) -> Pids {
    names
        .iter()
        .map(|n| {
            let p = (env.init_pid(n), env.shim_pid(n), env.main_pid(n));
            (n.clone(), p)
        })
        .collect()
}

/// Watches the agent for `seconds` with `containers` running.
pub fn idle(env: &AgentEnv, agent: &Agent, containers: usize, seconds: u64) -> Result<Idle> {
    let (u0, (p0, _)) = (env.cpu().usage_ns()?, procfs::cpu_seconds(agent.pid)?);
    let t0 = Instant::now();
    pause(Duration::from_secs(seconds))?;
    let (u1, (p1, _)) = (env.cpu().usage_ns()?, procfs::cpu_seconds(agent.pid)?);
    let wall = t0.elapsed().as_secs_f64();
    Ok(Idle {
        containers,
        seconds: wall,
        cgroup_pct: (u1 - u0) as f64 / 1e9 / wall * 100.0,
        process_pct: (p1 - p0) / wall * 100.0,
        mem: procfs::mem(agent.pid)?,
    })
}

/// Memory of the first container's supervisor and init.
pub fn shim_and_init(env: &AgentEnv, name: &str) -> Result<(Mem, Mem)> {
    let shim = env.shim_pid(name).context("no supervisor pid")?;
    let init = env.init_pid(name).context("no init pid")?;
    Ok((procfs::mem(shim)?, procfs::mem(init)?))
}

/// SIGKILLs `agent` and starts it again with `flags`; returns the new agent
/// once it holds a pidfd on every main supervisor, and how long that took.
pub fn restart(
    env: &AgentEnv,
    agent: &mut Agent,
    names: &[String],
    flags: &[&str],
    out: &mut Restarts,
) -> Result<Agent> {
    let before = pids(env, names);
    let events = (env.event_count("Created"), env.event_count("Started"));
    agent.kill9();
    let fresh = env.start(flags)?;
    let shims: HashSet<i32> = before.values().filter_map(|p| p.1).collect();
    if shims.len() != names.len() {
        bail!("{} of {} supervisors found", shims.len(), names.len());
    }
    // Reading every fd's fdinfo costs the harness about 10 µs a container:
    // polled less often with many, so as not to slow the agent it watches.
    let poll = Duration::from_micros(5000.max(names.len() as u64 * 20));
    wait_for(
        "every supervisor watched",
        Duration::from_secs(120),
        poll,
        || procfs::pidfd_targets(fresh.pid).is_superset(&shims),
    )
    .with_context(|| env.log_tail())?;
    out.ready
        .0
        .push(fresh.started.elapsed().as_secs_f64() * 1e3);
    pause(Duration::from_millis(500))?;
    check_nothing_restarted(env, names, &before, events, out);
    Ok(fresh)
}

fn check_nothing_restarted(
    env: &AgentEnv,
    names: &[String],
    before: &Pids,
    events: (usize, usize),
    out: &mut Restarts,
) {
    let after = pids(env, names);
    for (name, was) in before {
        if after.get(name) != Some(was) {
            out.violations.push(format!(
                "{name}: pids (init, supervisor, main) {was:?} -> {:?}",
                after.get(name)
            ));
        }
        match env.status(name) {
            Some(s) if s.phase == "Running" && s.restart_count == 0 => {}
            other => out.violations.push(format!("{name}: status {other:?}")),
        }
    }
    let now = (env.event_count("Created"), env.event_count("Started"));
    if now != events {
        out.violations
            .push(format!("events (Created, Started) {events:?} -> {now:?}"));
    }
}

/// Restarts the agent with `--resync-period period` (relisting off) and
/// measures the CPU of [`RESYNC_TICKS`] resyncs, in a window whose edges
/// fall half-way between ticks.
pub fn resync(
    env: &AgentEnv,
    agent: &mut Agent,
    names: &[String],
    period: Duration,
    restarts: &mut Restarts,
) -> Result<(Agent, Resync)> {
    let p = humantime_secs(period);
    let flags = ["--resync-period", &p, "--relist-period", "1h"];
    let fresh = restart(env, agent, names, &flags, restarts)?;
    let since = fresh.started.elapsed();
    let k = ((since.as_secs_f64() / period.as_secs_f64()) - 0.5)
        .ceil()
        .max(1.0);
    let start = fresh.started + period.mul_f64(k + 0.5);
    pause(start.saturating_duration_since(Instant::now()))?;
    let (u0, (p0, _)) = (env.cpu().usage_ns()?, procfs::cpu_seconds(fresh.pid)?);
    let end = start + period * RESYNC_TICKS;
    pause(end.saturating_duration_since(Instant::now()))?;
    let (u1, (p1, _)) = (env.cpu().usage_ns()?, procfs::cpu_seconds(fresh.pid)?);
    let per = f64::from(RESYNC_TICKS);
    let r = Resync {
        containers: names.len(),
        period,
        cgroup_ms: (u1 - u0) as f64 / 1e6 / per,
        process_ms: (p1 - p0) * 1e3 / per,
    };
    Ok((fresh, r))
}

fn humantime_secs(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}
