//! The seccomp phase (issue 15): what the default seccomp profile costs a
//! container's start. One agent runs two kinds of container side by side,
//! the default (the built-in profile, `RuntimeDefault`) and the same with
//! `securityContext.seccompProfile.type: Unconfined`; the raw runtime runs
//! the agent's own bundle of the default container twice, as it is (the
//! same `linux.seccomp`) and with `linux.seccomp` taken out. Each sample
//! drops all four, in one order and the reverse on every other sample, so
//! drift hits all alike; teardowns are not timed.

use std::time::Duration;

use anyhow::{Result, bail};

use crate::agent::AgentEnv;
use crate::latency::{agent_teardown, drop_manifest};
use crate::phases::{Run, WORKERS};
use crate::raw::Raw;
use crate::report::brief;
use crate::stats::{Samples, ratio};
use crate::wait::{check_interrupted, wait_for};

/// Unmeasured rounds first.
const WARMUP: usize = 2;
/// The target: drop to running with the default profile ≤ this × without.
pub const BOUND: f64 = 1.05;
const TIMEOUT: Duration = Duration::from_secs(60);

/// What the seccomp phase measured, ms.
#[derive(Debug, Default)]
pub struct SeccompResults {
    /// Agent, default profile.
    pub agent_default: Samples,
    /// Agent, Unconfined.
    pub agent_unconfined: Samples,
    /// Raw runtime, the agent's bundle with its seccomp.
    pub raw_default: Samples,
    /// Raw runtime, the same bundle without `linux.seccomp`.
    pub raw_unconfined: Samples,
    /// Syscall rules in the default container's `linux.seccomp`.
    pub rules: usize,
    /// Syscall names in them.
    pub names: usize,
}

impl SeccompResults {
    /// Agent drop with the default profile ÷ without, medians.
    pub fn agent_ratio(&self) -> f64 {
        ratio(self.agent_default.p50(), self.agent_unconfined.p50())
    }

    /// The same for the raw runtime.
    pub fn raw_ratio(&self) -> f64 {
        ratio(self.raw_default.p50(), self.raw_unconfined.p50())
    }

    /// Agent with the default profile ÷ raw with the same bundle.
    pub fn agent_to_raw(&self) -> f64 {
        ratio(self.agent_default.p50(), self.raw_default.p50())
    }
}

/// The whole phase, on runc.
pub fn phase(run: &Run) -> Result<SeccompResults> {
    let env = run.agent_env_on("seccomp-agent", "runc", run.image())?;
    let mut agent = env.start(&["--workers", &WORKERS.to_string()])?;
    let filtered = run.raw_beside(&env, "seccomp-raw")?;
    let syscalls = filtered.config()["linux"]["seccomp"]["syscalls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let rules = syscalls.len();
    let names = syscalls
        .iter()
        .filter_map(|r| r["names"].as_array().map(Vec::len))
        .sum();
    if rules == 0 {
        bail!("the agent's default bundle has no seccomp filter");
    }
    let unfiltered = filtered.with_config(|c| {
        if let Some(linux) = c["linux"].as_object_mut() {
            linux.remove("seccomp");
        }
    });
    let sides = Sides {
        env: &env,
        filtered: &filtered,
        unfiltered: &unfiltered,
    };
    let mut r = sides.measure(run.sizes().samples)?;
    (r.rules, r.names) = (rules, names);
    agent.terminate();
    for (what, v) in [
        ("drop to running, agent, default profile", &r.agent_default),
        ("drop to running, agent, unconfined", &r.agent_unconfined),
        ("drop to running, raw, default profile", &r.raw_default),
        ("drop to running, raw, unconfined", &r.raw_unconfined),
    ] {
        eprintln!("  {}", brief(what, v));
    }
    eprintln!(
        "  default ÷ unconfined: agent {:.3}×, raw {:.3}×; agent ÷ raw (default): {:.2}×",
        r.agent_ratio(),
        r.raw_ratio(),
        r.agent_to_raw()
    );
    Ok(r)
}

struct Sides<'a> {
    env: &'a AgentEnv,
    filtered: &'a Raw,
    unfiltered: &'a Raw,
}

impl Sides<'_> {
    fn measure(&self, n: usize) -> Result<SeccompResults> {
        let mut d: [Vec<Duration>; 4] = Default::default();
        for i in 0..WARMUP + n {
            check_interrupted()?;
            let times = self.sample(i)?;
            if i >= WARMUP {
                for (v, t) in d.iter_mut().zip(times) {
                    v.push(t);
                }
            }
        }
        let [ad, au, rd, ru] = d.map(|v| Samples::from_durations(&v));
        Ok(SeccompResults {
            agent_default: ad,
            agent_unconfined: au,
            raw_default: rd,
            raw_unconfined: ru,
            rules: 0,
            names: 0,
        })
    }

    /// The four drops, in one order or its reverse; then every teardown.
    fn sample(&self, i: usize) -> Result<[Duration; 4]> {
        let (d, u, rd, ru) = (
            format!("d{i}"),
            format!("u{i}"),
            format!("rd{i}"),
            format!("ru{i}"),
        );
        let mut out = [Duration::ZERO; 4];
        let mut order = [0, 1, 2, 3];
        if i % 2 == 1 {
            order.reverse();
        }
        for which in order {
            out[which] = match which {
                0 => drop_manifest(self.env, &d, &self.env.manifest(&d, "Always"))?,
                1 => drop_manifest(self.env, &u, &unconfined(self.env, &u))?,
                2 => raw_drop(self.filtered, &rd)?,
                _ => raw_drop(self.unfiltered, &ru)?,
            };
        }
        agent_teardown(self.env, &d)?;
        agent_teardown(self.env, &u)?;
        self.filtered.destroy(&rd)?;
        self.unfiltered.destroy(&ru)?;
        Ok(out)
    }
}

/// The default manifest with no seccomp filter.
fn unconfined(env: &AgentEnv, name: &str) -> String {
    let mut yaml = env.manifest(name, "Always");
    yaml.push_str("  securityContext:\n    seccompProfile:\n      type: Unconfined\n");
    yaml
}

/// Create, start and exec until the first output line, as the latency
/// phase's raw drop.
fn raw_drop(raw: &Raw, id: &str) -> Result<Duration> {
    let t0 = std::time::Instant::now();
    raw.create_and_run(id)?;
    wait_for(
        &format!("{id}'s output"),
        TIMEOUT,
        Duration::from_millis(1),
        || raw.output_landed(id),
    )?;
    Ok(t0.elapsed())
}
