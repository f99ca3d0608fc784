//! The probes phase (issue 16): what an exec probe costs, rundmc's way
//! against the kubelet's, and what a node of probed containers costs at
//! rest.
//!
//! - **Per exec probe.** One container of the agent's; the same command
//!   (`true`) run alternately by the container's init over its socket (the
//!   request the agent sends, written here by hand from the shared wire
//!   format) and by `runc exec`, which is what an exec probe is for the
//!   kubelet. Latency is the caller's wall time. CPU is everything the run
//!   cost: for rundmc's way the calling thread's own CPU (the agent's side)
//!   plus the container's cgroup (init's handler and the command); for
//!   `runc exec`, a cgroup of its own that the `runc` process runs in plus
//!   the container's cgroup (`runc init` and the command).
//! - **At rest.** One agent (default flags) with many containers, each with
//!   an exec liveness probe and an HTTP readiness probe every 10 s: the
//!   agent's CPU cgroup (the agent, its supervisors, any runtime call) and
//!   the containers' (init's handlers, the probe commands, and the HTTP
//!   server answering) over a window of several periods.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::agent::AgentEnv;
use crate::cleanup;
use crate::phases::Run;
use crate::procfs::CpuCgroup;
use crate::report::brief;
use crate::stats::Samples;
use crate::wait::{check_interrupted, pause, wait_for};

/// The target: CPU per exec probe ≤ this × a `runc exec`'s.
pub const CPU_BOUND: f64 = 0.1;
/// The target: probed containers at rest cost the agent and its
/// supervisors ≤ this % of one core.
pub const IDLE_BOUND_PCT: f64 = 5.0;
/// Unmeasured rounds first.
const WARMUP: usize = 3;
/// The probe period at rest.
const PERIOD_SECS: u64 = 10;

/// What the probes phase measured.
#[derive(Debug, Default)]
pub struct ProbeResults {
    /// Wall time per probe by the init, ms.
    pub init_ms: Samples,
    /// Wall time per `runc exec`, ms.
    pub runc_ms: Samples,
    /// CPU per probe by the init, ms.
    pub init_cpu_ms: Samples,
    /// CPU per `runc exec`, ms.
    pub runc_cpu_ms: Samples,
    /// The node of probed containers at rest.
    pub idle: Option<ProbedIdle>,
}

/// Probed containers at rest.
#[derive(Debug, Clone)]
pub struct ProbedIdle {
    /// Containers running, each with two probes.
    pub containers: usize,
    /// Seconds watched.
    pub seconds: f64,
    /// The agent's cgroup: agent, supervisors, runtime calls; % of a core.
    pub agent_pct: f64,
    /// The containers' cgroups: handlers, probe commands, the HTTP servers.
    pub containers_pct: f64,
}

impl ProbeResults {
    /// Mean CPU per probe by the init ÷ per `runc exec`.
    pub fn cpu_ratio(&self) -> f64 {
        mean(&self.init_cpu_ms) / mean(&self.runc_cpu_ms)
    }
}

/// The mean of `s`; NaN when empty.
pub fn mean(s: &Samples) -> f64 {
    s.0.iter().sum::<f64>() / s.0.len() as f64
}

/// Runs the phase.
pub fn phase(run: &Run) -> Result<ProbeResults> {
    let s = run.sizes();
    let mut results = per_probe(run, s.samples)?;
    eprintln!("  {}", brief("exec probe by init, ms", &results.init_ms));
    eprintln!("  {}", brief("runc exec, ms", &results.runc_ms));
    eprintln!(
        "  CPU per probe: init {:.2} ms, runc exec {:.2} ms ({:.3}×)",
        mean(&results.init_cpu_ms),
        mean(&results.runc_cpu_ms),
        results.cpu_ratio()
    );
    let idle = at_rest(run, s.steady[1], s.idle_secs + PERIOD_SECS)?;
    eprintln!(
        "  {} probed containers at rest: agent {:.2}% of a core, containers {:.2}%",
        idle.containers, idle.agent_pct, idle.containers_pct
    );
    results.idle = Some(idle);
    Ok(results)
}

/// The command both ways run, and the environment the agent would give it.
const ARGS: [&str; 1] = ["true"];
const ENV: [&str; 2] = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
];

/// The init's request for [`ARGS`] as root in `/`, as the agent encodes it.
fn request() -> Vec<u8> {
    let mut body = Vec::new();
    for v in [0u32, 0, 0, 10_000, ARGS.len() as u32, ENV.len() as u32] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    for s in std::iter::once("/").chain(ARGS).chain(ENV) {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut out = rundmc_init::MAGIC.to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// One probe by the init: it must exit 0.
fn by_init(socket: &Path, request: &[u8]) -> Result<()> {
    let mut c = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    c.write_all(request)?;
    c.shutdown(std::net::Shutdown::Write)?;
    let mut reply = Vec::new();
    c.read_to_end(&mut reply)?;
    let tail: [u8; rundmc_init::TRAILER_LEN] = reply
        .get(reply.len().saturating_sub(rundmc_init::TRAILER_LEN)..)
        .and_then(|t| t.try_into().ok())
        .context("a reply without a trailer")?;
    match rundmc_init::read_trailer(&tail) {
        Some((rundmc_init::Kind::Exited, 0)) => Ok(()),
        other => bail!("the probe by init ended {other:?}"),
    }
}

/// One `runc exec` of the same command, its `runc` in `caller`.
fn by_runc(env: &AgentEnv, id: &str, caller: &CpuCgroup) -> Result<()> {
    let caller = caller.clone();
    let mut cmd = Command::new(&env.runtime);
    cmd.arg("--root")
        .arg(&env.root)
        .args(["exec", id])
        .args(ARGS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: join_from_child is async-signal-safe (open, write, close).
    unsafe { cmd.pre_exec(move || caller.join_from_child()) };
    let status = crate::reaper::status(&mut cmd).context("running runc exec")?;
    match status.success() {
        true => Ok(()),
        false => bail!("runc exec ended {status}"),
    }
}

/// This thread's CPU time, in ms.
fn thread_cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` outlives the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

/// A CPU cgroup named after the run, registered for the sweep.
fn cgroup(run: &Run, name: &str) -> Result<CpuCgroup> {
    let tag = run
        .base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cg = CpuCgroup::create(&format!("{tag}-{name}"))?;
    cleanup::register(|r| r.cpu_cgroups.push(cg.dir().to_owned()));
    Ok(cg)
}

/// The per-probe figures, the two ways alternating.
fn per_probe(run: &Run, samples: usize) -> Result<ProbeResults> {
    let env = run.agent_env_on("probes", "runc", run.image())?;
    let mut agent = env.start(&[])?;
    let id = "target".to_string();
    env.create_all(std::slice::from_ref(&id), "Always", Duration::from_secs(60))?;
    let container = CpuCgroup::create(&format!("{}/{id}", env.cgroup_parent))?;
    let caller = cgroup(run, "runc-exec")?;
    let socket = env.bundle(&id).join("init.sock");
    let request = request();
    let mut r = ProbeResults::default();
    for i in 0..WARMUP + samples {
        check_interrupted()?;
        let keep = i >= WARMUP;
        let init_first = i % 2 == 0;
        for init in [init_first, !init_first] {
            let c0 = container.usage_ns()? as f64 / 1e6;
            let (t0, own0, caller0) = (
                Instant::now(),
                thread_cpu_ms(),
                caller.usage_ns()? as f64 / 1e6,
            );
            match init {
                true => by_init(&socket, &request)?,
                false => by_runc(&env, &id, &caller)?,
            }
            let wall = t0.elapsed().as_secs_f64() * 1e3;
            let own = thread_cpu_ms() - own0;
            let caller_ms = caller.usage_ns()? as f64 / 1e6 - caller0;
            let in_container = container.usage_ns()? as f64 / 1e6 - c0;
            if !keep {
                continue;
            }
            match init {
                true => {
                    r.init_ms.0.push(wall);
                    r.init_cpu_ms.0.push(own + in_container);
                }
                false => {
                    r.runc_ms.0.push(wall);
                    r.runc_cpu_ms.0.push(caller_ms + in_container);
                }
            }
        }
    }
    env.remove_all(std::slice::from_ref(&id), Duration::from_secs(60))?;
    agent.terminate();
    Ok(r)
}

/// A container serving HTTP on its loopback, with an exec liveness probe
/// and an HTTP readiness probe every [`PERIOD_SECS`].
fn probed_manifest(env: &AgentEnv, name: &str) -> String {
    format!(
        "apiVersion: rundmc.io/v1alpha1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  rootfs: {}\n  process:\n    args: [\"/bin/sh\", \"-c\", \"mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n    livenessProbe:\n      exec: {{command: [\"cat\", \"/www/index.html\"]}}\n      periodSeconds: {PERIOD_SECS}\n    readinessProbe:\n      httpGet: {{path: /index.html, port: 8080}}\n      periodSeconds: {PERIOD_SECS}\n",
        env.rootfs().display()
    )
}

fn ready(env: &AgentEnv, name: &str) -> bool {
    std::fs::read_to_string(env.status_path(name))
        .ok()
        .and_then(|t| serde_yaml::from_str::<serde_yaml::Value>(&t).ok())
        .and_then(|v| {
            let conditions = v.get("status")?.get("conditions")?.as_sequence()?.clone();
            let ready = conditions
                .iter()
                .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Ready"))?;
            Some(ready.get("status")?.as_str()? == "True")
        })
        .unwrap_or(false)
}

/// `containers` probed containers at rest for `seconds`.
fn at_rest(run: &Run, containers: usize, seconds: u64) -> Result<ProbedIdle> {
    let env = run.agent_env_on("probed", "runc", run.image())?;
    let mut agent = env.start(&[])?;
    let names: Vec<String> = (0..containers).map(|i| format!("p{i:03}")).collect();
    for n in &names {
        env.write(n, &probed_manifest(&env, n))?;
    }
    wait_for(
        "probed containers ready",
        Duration::from_secs(600),
        Duration::from_millis(200),
        || names.iter().all(|n| ready(&env, n)),
    )
    .with_context(|| env.log_tail())?;
    // Every prober past its first period, so the window sees steady state.
    pause(Duration::from_secs(PERIOD_SECS + 2))?;
    let kids = CpuCgroup::create(&env.cgroup_parent)?;
    let (a0, k0, t0) = (env.cpu().usage_ns()?, kids.usage_ns()?, Instant::now());
    pause(Duration::from_secs(seconds))?;
    let (a1, k1) = (env.cpu().usage_ns()?, kids.usage_ns()?);
    let wall = t0.elapsed().as_secs_f64();
    let pct = |ns: u64| ns as f64 / 1e9 / wall * 100.0;
    let idle = ProbedIdle {
        containers,
        seconds: wall,
        agent_pct: pct(a1.saturating_sub(a0)),
        containers_pct: pct(k1.saturating_sub(k0)),
    };
    env.remove_all(&names, Duration::from_secs(600))?;
    agent.terminate();
    Ok(idle)
}
