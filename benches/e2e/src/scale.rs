//! Scale (issue 19): one agent with 1,000 containers. The time to converge
//! from an empty node (every manifest written at once, until every main
//! process has put out its first line and every status says Running), the
//! agent's RSS and open files then, restarts with everything running (ready
//! and nothing restarted, as [`steady::restart`] checks), the CPU of a full
//! resync ([`steady::resync`]), and the teardown of all.
//!
//! A node with this many containers needs limits above some defaults; the
//! phase raises what it must for the run (and puts it back) and reports
//! each: see [`node_limits`].

use std::collections::HashSet;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::agent::AgentEnv;
use crate::phases::Run;
use crate::procfs::{self, Mem};
use crate::steady::{self, Restarts, Resync};
use crate::wait::{check_interrupted, pause};

const TIMEOUT: Duration = Duration::from_secs(900);
/// The harness's own polling must not compete with the agent for the cores.
const POLL: Duration = Duration::from_millis(100);

/// How much the phase does.
#[derive(Debug, Clone, Copy)]
pub struct ScaleSizes {
    /// Containers.
    pub containers: usize,
    /// Restarts with everything running.
    pub restarts: usize,
    /// The resync period of the resync measurement.
    pub resync_period: Duration,
}

/// What the phase measured.
#[derive(Debug, Clone, Default)]
pub struct ScaleResults {
    /// Containers.
    pub containers: usize,
    /// From the first manifest's write until all run and say so, s.
    pub converge_s: f64,
    /// The agent's memory with all running.
    pub mem: Mem,
    /// The agent's open files with all running.
    pub fds: usize,
    /// The agent's memory after a restart with all running.
    pub mem_restarted: Mem,
    /// Restarts, with the proof nothing restarted.
    pub restarts: Restarts,
    /// One full resync.
    pub resync: Option<Resync>,
    /// From the manifests' removal until every depot directory is gone, s.
    pub teardown_s: f64,
    /// (limit, value, why) of the node as the run had it.
    pub limits: Vec<(String, String, String)>,
}

/// The inotify instance limit the run raises to, when lower.
fn inotify_instances_needed(containers: usize) -> u64 {
    (containers as u64 + 128).next_power_of_two()
}

const INOTIFY_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";

/// Puts the node's limits where `containers` containers need them, and
/// says what each is. Returns the inotify limit to restore, if raised.
fn node_limits(
    containers: usize,
    out: &mut Vec<(String, String, String)>,
) -> Result<Option<String>> {
    let n = containers as u64;
    let read = |p: &str| {
        fs::read_to_string(p)
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    };
    let was = read(INOTIFY_INSTANCES);
    let need = inotify_instances_needed(containers);
    let restore = match was.parse::<u64>() {
        Ok(v) if v >= need => None,
        _ => {
            fs::write(INOTIFY_INSTANCES, need.to_string())
                .with_context(|| format!("raising {INOTIFY_INSTANCES} to {need}"))?;
            Some(was.clone())
        }
    };
    out.push((
        "fs.inotify.max_user_instances".into(),
        format!("{} (was {was})", read(INOTIFY_INSTANCES)),
        format!("on cgroup v2 each running container's OOM watch is an inotify instance: at least containers + 128 ({})", n + 128),
    ));
    let pid_max: u64 = read("/proc/sys/kernel/pid_max").parse().unwrap_or(0);
    if pid_max < 4 * n + 4096 {
        bail!(
            "kernel.pid_max is {pid_max}: {containers} containers need at least {}",
            4 * n + 4096
        );
    }
    out.push((
        "kernel.pid_max".into(),
        pid_max.to_string(),
        format!("each container holds 3 processes (init, supervisor, main) and more while starting: at least 4 × containers + 4096 ({})", 4 * n + 4096),
    ));
    let (_, hard) = nofile();
    if hard < 4 * n + 1024 {
        bail!(
            "RLIMIT_NOFILE's hard limit is {hard}: {containers} containers need at least {}",
            4 * n + 1024
        );
    }
    out.push((
        "RLIMIT_NOFILE (hard) of the agent".into(),
        hard.to_string(),
        "the agent raises its soft limit to the hard one; it holds a pidfd per supervisor and OOM watch files per container: at least 4 × containers + 1024".into(),
    ));
    Ok(restore)
}

fn nofile() -> (u64, u64) {
    // SAFETY: an all-zero rlimit is valid; getrlimit fills it.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (r.rlim_cur, r.rlim_max)
}

/// Runs the phase.
pub fn phase(run: &Run, s: ScaleSizes) -> Result<ScaleResults> {
    let mut out = ScaleResults {
        containers: s.containers,
        ..ScaleResults::default()
    };
    let restore = node_limits(s.containers, &mut out.limits)?;
    let measured = measure(run, s, &mut out);
    if let Some(was) = restore {
        let _ = fs::write(INOTIFY_INSTANCES, was);
    }
    measured.map(|()| out)
}

fn measure(run: &Run, s: ScaleSizes, out: &mut ScaleResults) -> Result<()> {
    let env = run.agent_env("scale", "runc")?;
    let mut agent = env.start(&[])?;
    pause(Duration::from_secs(2))?;
    let names: Vec<String> = (0..s.containers).map(|i| format!("k{i:04}")).collect();
    let t0 = Instant::now();
    for n in &names {
        env.write(n, &env.manifest(n, "Always"))?;
    }
    until_all(&env, &names, |n| env.output_landed(n) && running(&env, n))?;
    out.converge_s = t0.elapsed().as_secs_f64();
    eprintln!("  {} converged in {:.1} s", s.containers, out.converge_s);
    pause(Duration::from_secs(2))?;
    out.mem = procfs::mem(agent.pid)?;
    out.fds = fs::read_dir(format!("/proc/{}/fd", agent.pid)).map_or(0, |d| d.count());
    out.restarts.containers = s.containers;
    for _ in 0..s.restarts {
        agent = steady::restart(&env, &mut agent, &names, &[], &mut out.restarts)?;
    }
    eprintln!("  restarts: {:?}", out.restarts.ready.0);
    pause(Duration::from_secs(1))?;
    out.mem_restarted = procfs::mem(agent.pid)?;
    eprintln!(
        "  RSS {:?} after converging, {:?} after a restart",
        out.mem, out.mem_restarted
    );
    let (mut resyncing, resync) =
        steady::resync(&env, &mut agent, &names, s.resync_period, &mut out.restarts)?;
    eprintln!("  {resync:?}");
    out.resync = Some(resync);
    let mut agent = steady::restart(&env, &mut resyncing, &names, &[], &mut out.restarts)?;
    let t0 = Instant::now();
    for n in &names {
        env.remove(n)?;
    }
    until_all(&env, &names, |n| env.gone(n))?;
    out.teardown_s = t0.elapsed().as_secs_f64();
    eprintln!("  torn down in {:.1} s", out.teardown_s);
    until_all(&env, &names, |n| !env.status_path(n).exists())?;
    agent.terminate();
    Ok(())
}

fn running(env: &AgentEnv, name: &str) -> bool {
    env.status(name).is_some_and(|s| s.phase == "Running")
}

/// Polls the names not yet done every [`POLL`] until `done` holds for all.
fn until_all(env: &AgentEnv, names: &[String], done: impl Fn(&str) -> bool) -> Result<()> {
    let t0 = Instant::now();
    let mut pending: HashSet<&str> = names.iter().map(String::as_str).collect();
    while !pending.is_empty() {
        pending.retain(|n| !done(n));
        check_interrupted()?;
        if t0.elapsed() > TIMEOUT {
            bail!(
                "{} of {} not done after {TIMEOUT:?}\n{}",
                pending.len(),
                names.len(),
                env.log_tail()
            );
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}
