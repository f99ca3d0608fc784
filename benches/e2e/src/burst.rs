//! Many containers at once. Burst: every manifest written together (raw:
//! the same containers made by as many threads as the agent has workers),
//! until every main process has put out its first line. Teardown: every
//! manifest removed together (raw: kill + delete by as many threads) until
//! every container's directory is gone. Each container's time counts from
//! the start of the round; rounds alternate which side goes first.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::agent::AgentEnv;
use crate::cpu::{self, Meter};
use crate::raw::Raw;
use crate::stats::Samples;
use crate::wait::{check_interrupted, pause, wait_for};

const POLL: Duration = Duration::from_millis(2);
const TIMEOUT: Duration = Duration::from_secs(300);

/// One side's rounds.
#[derive(Debug, Default, Clone)]
pub struct Side {
    /// Containers per second, one per round.
    pub rates: Samples,
    /// Each container's time from the round's start, every round, ms.
    pub each: Samples,
}

/// Burst and teardown, agent and raw.
#[derive(Debug, Default, Clone)]
pub struct Bursts {
    /// Containers per round.
    pub size: usize,
    /// Raw threads (= agent workers).
    pub parallelism: usize,
    /// Agent burst.
    pub agent_up: Side,
    /// Raw burst.
    pub raw_up: Side,
    /// Agent teardown.
    pub agent_down: Side,
    /// Raw teardown.
    pub raw_down: Side,
    /// CPU per container, burst.
    pub cpu_up: CpuSide,
    /// CPU per container, teardown.
    pub cpu_down: CpuSide,
}

/// CPU per container of one direction, one sample per round, ms.
#[derive(Debug, Default, Clone)]
pub struct CpuSide {
    /// The agent process alone (its threads, by its CPU clock), from the manifests' writes
    /// until every status says so and the agent has settled.
    pub agent: Samples,
    /// Of `agent`, what computing and writing statuses and events took
    /// (the agent's `rundmc_report_cpu_seconds_total`).
    pub report: Samples,
    /// The harness's own threads making (or removing) the raw containers:
    /// directories, the overlay mount, the bundle's files, spawning and
    /// reaping the runtime. What any driver of the runtime pays.
    pub raw_driver: Samples,
    /// The agent's cgroup: agent, runtime processes and supervisors.
    pub cgroup: Samples,
    /// The raw runtime's processes (reaped by the harness).
    pub raw: Samples,
    /// The agent's threads by name, averaged over rounds.
    pub threads: std::collections::BTreeMap<String, f64>,
}

/// The agent under measurement: its pid and its metrics endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Its pid.
    pub pid: i32,
    /// Its `/metrics`.
    pub metrics: SocketAddr,
}

/// `rounds` rounds of `size` containers each way.
pub fn measure(
    env: &AgentEnv,
    agent: Measured,
    raw: &Raw,
    size: usize,
    parallelism: usize,
    rounds: usize,
) -> Result<Bursts> {
    let mut b = Bursts {
        size,
        parallelism,
        ..Bursts::default()
    };
    for r in 0..rounds {
        let names: Vec<String> = (0..size).map(|i| format!("b{r}-{i}")).collect();
        let agent_first = r % 2 == 0;
        if agent_first {
            agent_round(env, agent, &names, &mut b, rounds)?;
        }
        raw_round(env, raw, &names, parallelism, &mut b)?;
        if !agent_first {
            agent_round(env, agent, &names, &mut b, rounds)?;
        }
    }
    Ok(b)
}

fn record(side: &mut Side, each: Vec<Duration>) {
    let total = each.iter().max().copied().unwrap_or_default();
    side.rates
        .0
        .push(each.len() as f64 / total.as_secs_f64().max(1e-9));
    side.each.0.extend(Samples::from_durations(&each).0);
}

/// The agent's report CPU so far, ms; scraped outside the CPU windows,
/// since a scrape reads every container's cgroup.
fn report_ms(agent: Measured) -> Result<f64> {
    Ok(crate::metrics::report_cpu_seconds(agent.metrics)? * 1e3)
}

fn agent_round(
    env: &AgentEnv,
    agent: Measured,
    names: &[String],
    b: &mut Bursts,
    rounds: usize,
) -> Result<()> {
    let pid = agent.pid;
    let n = names.len() as f64;
    let yamls: Vec<String> = names.iter().map(|n| env.manifest(n, "Always")).collect();
    let report0 = report_ms(agent)?;
    let meter = Meter::start(Some(pid), env.cpu());
    let t0 = Instant::now();
    for (n, y) in names.iter().zip(&yamls) {
        env.write(n, y)?;
    }
    let up = until_each(names, t0, |n| env.output_landed(n)).with_context(|| env.log_tail())?;
    record(&mut b.agent_up, up);
    wait_for("every status Running", TIMEOUT, POLL, || {
        env.all_running(names)
    })?;
    pause(Duration::from_millis(200))?;
    let cost = meter.per_container(env.cpu(), names.len());
    let report1 = report_ms(agent)?;
    agent_cost(&mut b.cpu_up, &cost, (report1 - report0) / n, rounds);
    let meter = Meter::start(Some(pid), env.cpu());
    let t0 = Instant::now();
    for n in names {
        env.remove(n)?;
    }
    let down = until_each(names, t0, |n| env.gone(n)).with_context(|| env.log_tail())?;
    record(&mut b.agent_down, down);
    wait_for("every status file gone", TIMEOUT, POLL, || {
        names.iter().all(|n| !env.status_path(n).exists())
    })?;
    pause(Duration::from_millis(200))?;
    let cost = meter.per_container(env.cpu(), names.len());
    let report2 = report_ms(agent)?;
    agent_cost(&mut b.cpu_down, &cost, (report2 - report1) / n, rounds);
    Ok(())
}

fn agent_cost(side: &mut CpuSide, cost: &cpu::Cost, report_ms: f64, rounds: usize) {
    side.agent.0.push(cost.agent_ms);
    side.report.0.push(report_ms);
    side.cgroup.0.push(cost.cgroup_ms);
    cpu::add_threads(&mut side.threads, cost, rounds);
}

/// Polls each pending name until `done` holds for it; returns each one's
/// time from `t0`.
fn until_each(names: &[String], t0: Instant, done: impl Fn(&str) -> bool) -> Result<Vec<Duration>> {
    let mut when: Vec<Option<Duration>> = vec![None; names.len()];
    while when.iter().any(Option::is_none) {
        for (i, n) in names.iter().enumerate() {
            if when[i].is_none() && done(n) {
                when[i] = Some(t0.elapsed());
            }
        }
        check_interrupted()?;
        if t0.elapsed() > TIMEOUT {
            let left = when.iter().filter(|w| w.is_none()).count();
            return Err(anyhow!(
                "{left} of {} not done after {TIMEOUT:?}",
                names.len()
            ));
        }
        std::thread::sleep(POLL);
    }
    Ok(when.into_iter().flatten().collect())
}

fn raw_round(
    env: &AgentEnv,
    raw: &Raw,
    names: &[String],
    parallelism: usize,
    b: &mut Bursts,
) -> Result<()> {
    let ids: Vec<String> = names.iter().map(|n| format!("r{n}")).collect();
    let driver = Mutex::new(0.0);
    let meter = Meter::start(None, env.cpu());
    let up = in_parallel(&ids, parallelism, |id| {
        charge(&driver, || raw.create_and_run(id))?;
        wait_for(id, TIMEOUT, Duration::from_millis(1), || {
            raw.output_landed(id)
        })
        .map(drop)
    })?;
    record(&mut b.raw_up, up);
    pause(Duration::from_millis(200))?;
    let n = ids.len();
    b.cpu_up
        .raw
        .0
        .push(meter.per_container(env.cpu(), n).children_ms);
    b.cpu_up.raw_driver.0.push(take_ms(&driver) / n as f64);
    let meter = Meter::start(None, env.cpu());
    let down = in_parallel(&ids, parallelism, |id| charge(&driver, || raw.destroy(id)))?;
    record(&mut b.raw_down, down);
    pause(Duration::from_millis(200))?;
    b.cpu_down
        .raw
        .0
        .push(meter.per_container(env.cpu(), n).children_ms);
    b.cpu_down.raw_driver.0.push(take_ms(&driver) / n as f64);
    Ok(())
}

/// Runs `job`, adding the CPU the calling thread spent in it to `total` (s).
fn charge<T>(total: &Mutex<f64>, job: impl FnOnce() -> T) -> T {
    let start = crate::procfs::thread_cpu_seconds();
    let out = job();
    *lock(total) += crate::procfs::thread_cpu_seconds() - start;
    out
}

/// What `total` holds, in ms, leaving it 0.
fn take_ms(total: &Mutex<f64>) -> f64 {
    std::mem::take(&mut *lock(total)) * 1e3
}

/// Runs `job` on every id with `parallelism` threads; returns each id's
/// finishing time from the start.
pub fn in_parallel(
    ids: &[String],
    parallelism: usize,
    job: impl Fn(&str) -> Result<()> + Sync,
) -> Result<Vec<Duration>> {
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::with_capacity(ids.len()));
    let errors = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallelism.max(1) {
            s.spawn(|| {
                while let Some(id) = ids.get(next.fetch_add(1, Ordering::SeqCst)) {
                    match job(id) {
                        Ok(()) => lock(&done).push(t0.elapsed()),
                        Err(e) => lock(&errors).push(format!("{id}: {e:#}")),
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(first) = errors.first() {
        return Err(anyhow!("{} raw jobs failed; first: {first}", errors.len()));
    }
    Ok(done.into_inner().unwrap_or_else(|e| e.into_inner()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The CPU figures of `b`, for the terminal.
pub fn cpu_brief(b: &Bursts) -> String {
    format!(
        "CPU ms/container: agent up {:.2} (status and events {:.2}) down {:.2}; raw driver up {:.2}; agent cgroup up {:.1}; raw runtime up {:.1}; threads up: {}",
        b.cpu_up.agent.p50(),
        b.cpu_up.report.p50(),
        b.cpu_down.agent.p50(),
        b.cpu_up.raw_driver.p50(),
        b.cpu_up.cgroup.p50(),
        b.cpu_up.raw.p50(),
        cpu::top_threads(&b.cpu_up.threads, 6)
    )
}
