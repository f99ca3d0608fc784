//! One container at a time: drop to running and teardown of one, agent and
//! raw runtime interleaved sample by sample (the order flips every sample)
//! so that drift on a shared machine hits both alike.
//!
//! Drop to running: from the manifest's rename into the watched directory
//! (raw: from the first `mkdir` of the bundle) until the main process's
//! first output line is in its log file. Teardown: from the manifest's
//! removal (raw: from `kill`) until the container's directory is gone.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::agent::AgentEnv;
use crate::raw::Raw;
use crate::stats::Samples;
use crate::wait::{pause, wait_for};

const POLL: Duration = Duration::from_millis(1);
const TIMEOUT: Duration = Duration::from_secs(60);
/// Time for the agent to finish what follows a measured step (status and
/// event writes) before the next sample starts.
const SETTLE: Duration = Duration::from_millis(20);

/// The four sample sets of [`measure`].
#[derive(Debug, Default)]
pub struct Latencies {
    /// Agent, drop to running.
    pub agent_drop: Samples,
    /// Raw, run --detach + exec until output.
    pub raw_drop: Samples,
    /// Agent, manifest removed until the depot directory is gone.
    pub agent_teardown: Samples,
    /// Raw, kill + wait + delete + unmount + remove.
    pub raw_teardown: Samples,
}

/// `warmup` unmeasured rounds, then `n` measured ones.
pub fn measure(env: &AgentEnv, raw: &Raw, n: usize, warmup: usize) -> Result<Latencies> {
    let mut out = Latencies::default();
    let mut durations = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for i in 0..warmup + n {
        let name = format!("d{i}");
        let id = format!("r{i}");
        let (ad, rd, at, rt) = if i % 2 == 0 {
            let ad = agent_drop(env, &name)?;
            let rd = raw_drop(raw, &id)?;
            let at = agent_teardown(env, &name)?;
            (ad, rd, at, raw_teardown(raw, &id)?)
        } else {
            let rd = raw_drop(raw, &id)?;
            let ad = agent_drop(env, &name)?;
            let rt = raw_teardown(raw, &id)?;
            (ad, rd, agent_teardown(env, &name)?, rt)
        };
        if i >= warmup {
            for (v, d) in durations.iter_mut().zip([ad, rd, at, rt]) {
                v.push(d);
            }
        }
    }
    let [a, b, c, d] = durations;
    out.agent_drop = Samples::from_durations(&a);
    out.raw_drop = Samples::from_durations(&b);
    out.agent_teardown = Samples::from_durations(&c);
    out.raw_teardown = Samples::from_durations(&d);
    Ok(out)
}

fn agent_drop(env: &AgentEnv, name: &str) -> Result<Duration> {
    drop_manifest(env, name, &env.manifest(name, "Always"))
}

/// Drop to running of the container `name` that `yaml` declares; returns
/// once its status says Running and the agent has settled.
pub fn drop_manifest(env: &AgentEnv, name: &str, yaml: &str) -> Result<Duration> {
    let t0 = Instant::now();
    env.write(name, yaml)?;
    wait_for(&format!("{name}'s output"), TIMEOUT, POLL, || {
        env.output_landed(name)
    })
    .with_context(|| env.log_tail())?;
    let took = t0.elapsed();
    wait_for(&format!("{name} Running"), TIMEOUT, POLL, || {
        env.status(name).is_some_and(|s| s.phase == "Running")
    })?;
    pause(SETTLE)?;
    Ok(took)
}

/// Teardown of `name`: its manifest removed until its depot directory is
/// gone; returns once its status file is gone too.
pub fn agent_teardown(env: &AgentEnv, name: &str) -> Result<Duration> {
    let t0 = Instant::now();
    env.remove(name)?;
    wait_for(&format!("{name} gone"), TIMEOUT, POLL, || env.gone(name))
        .with_context(|| env.log_tail())?;
    let took = t0.elapsed();
    wait_for(&format!("{name}'s status gone"), TIMEOUT, POLL, || {
        !env.status_path(name).exists()
    })?;
    pause(SETTLE)?;
    Ok(took)
}

fn raw_drop(raw: &Raw, id: &str) -> Result<Duration> {
    let t0 = Instant::now();
    raw.create_and_run(id)?;
    wait_for(&format!("{id}'s output"), TIMEOUT, POLL, || {
        raw.output_landed(id)
    })?;
    let took = t0.elapsed();
    pause(SETTLE)?;
    Ok(took)
}

fn raw_teardown(raw: &Raw, id: &str) -> Result<Duration> {
    let t0 = Instant::now();
    raw.destroy(id)?;
    let took = t0.elapsed();
    pause(SETTLE)?;
    Ok(took)
}
