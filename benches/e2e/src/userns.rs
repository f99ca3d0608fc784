//! The user namespace phase (issue 15): drop to running of a container
//! with `hostUsers: false` against the same container without, on one
//! agent (runc), sample by sample with the order turning every sample; and
//! the same two by hand with the agent's own bundles (the raw baseline of
//! the private one idmaps the image under its overlay as the agent does).
//! Then the idmapped-mount step alone: a user namespace made, the image
//! cloned into it, and detached, as the agent's create does; and the
//! agent's own timing of its rootfs step (chown of the upper, idmap, the
//! overlay), read from its log.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::agent::AgentEnv;
use crate::cleanup;
use crate::latency::{agent_teardown, drop_manifest};
use crate::phases::{Run, WORKERS};
use crate::raw::Raw;
use crate::report::brief;
use crate::stats::{Samples, ratio};
use crate::wait::{pause, wait_for};

/// Unmeasured rounds first.
const WARMUP: usize = 2;
/// The target: drop to running with `hostUsers: false` ≤ this × without.
pub const BOUND: f64 = 1.05;
const TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_millis(20);

/// What the phase measured, ms.
#[derive(Debug, Default)]
pub struct UsernsResults {
    /// Agent, drop to running, the node's user namespace.
    pub drop_host: Samples,
    /// Agent, drop to running, `hostUsers: false`.
    pub drop_private: Samples,
    /// By hand, the agent's bundle without a user namespace.
    pub raw_host: Samples,
    /// By hand, the agent's bundle with one, the image idmapped.
    pub raw_private: Samples,
    /// The idmap step alone: user namespace, clone, detach.
    pub idmap_step: Samples,
    /// The agent's rootfs step of each private create, from its log.
    pub agent_rootfs_step: Samples,
}

impl UsernsResults {
    /// Drop to running with ÷ without, medians.
    pub fn agent_ratio(&self) -> f64 {
        ratio(self.drop_private.p50(), self.drop_host.p50())
    }

    /// The same, by hand.
    pub fn raw_ratio(&self) -> f64 {
        ratio(self.raw_private.p50(), self.raw_host.p50())
    }

    /// A paragraph for the report's notes.
    pub fn summary(&self) -> String {
        let verdict = match self.agent_ratio() <= BOUND {
            true => "met",
            false => "missed",
        };
        format!(
            "User namespaces (issue 15), runc, p50 (p95) ms over {} samples: drop to running with \
             hostUsers: false {:.1} ({:.1}), without {:.1} ({:.1}): {:.3}x (target {BOUND}x: {verdict}); \
             by hand on the agent's bundles: with {:.1} ({:.1}), without {:.1} ({:.1}): {:.3}x. \
             The idmapped mount alone (user namespace by a forked child, open_tree + mount_setattr + \
             move_mount of the image, detach): {:.2} ({:.2}) ms; the agent's rootfs step of a private \
             create (chown of the upper, idmap, overlay, detach), from its log: {:.2} ({:.2}) ms.",
            self.drop_private.len(),
            self.drop_private.p50(),
            self.drop_private.p95(),
            self.drop_host.p50(),
            self.drop_host.p95(),
            self.agent_ratio(),
            self.raw_private.p50(),
            self.raw_private.p95(),
            self.raw_host.p50(),
            self.raw_host.p95(),
            self.raw_ratio(),
            self.idmap_step.p50(),
            self.idmap_step.p95(),
            self.agent_rootfs_step.p50(),
            self.agent_rootfs_step.p95(),
        )
    }
}

fn private(env: &AgentEnv, name: &str) -> String {
    format!("{}  hostUsers: false\n", env.manifest(name, "Always"))
}

/// The whole phase.
pub fn phase(run: &Run) -> Result<UsernsResults> {
    let env = run.agent_env_on("userns-agent", "runc", run.image())?;
    let mut agent = env.start(&["--workers", &WORKERS.to_string()])?;
    let raw_host = raw_from(
        run,
        &env,
        "userns-raw-host",
        &env.manifest("tpl-host", "Always"),
    )?;
    let raw_private = raw_from(
        run,
        &env,
        "userns-raw-private",
        &private(&env, "tpl-private"),
    )?;
    let n = run.sizes().net_samples;
    let mut r = UsernsResults::default();
    let mut sets: [Vec<Duration>; 4] = Default::default();
    for i in 0..WARMUP + n {
        let mut took = [Duration::ZERO; 4];
        for k in 0..4 {
            let which = (k + i) % 4;
            took[which] = match which {
                0 => agent_round(
                    &env,
                    &format!("h{i}"),
                    &env.manifest(&format!("h{i}"), "Always"),
                )?,
                1 => agent_round(&env, &format!("p{i}"), &private(&env, &format!("p{i}")))?,
                2 => raw_round(&raw_host, &format!("rh{i}"))?,
                _ => raw_round(&raw_private, &format!("rp{i}"))?,
            };
        }
        if i >= WARMUP {
            for (set, d) in sets.iter_mut().zip(took) {
                set.push(d);
            }
        }
    }
    let [a, b, c, d] = sets;
    r.drop_host = Samples::from_durations(&a);
    r.drop_private = Samples::from_durations(&b);
    r.raw_host = Samples::from_durations(&c);
    r.raw_private = Samples::from_durations(&d);
    r.idmap_step = idmap_step(run, n)?;
    r.agent_rootfs_step = agent_rootfs_steps(&env)?;
    agent.terminate();
    for (what, v) in [
        ("drop to running, hostUsers: false", &r.drop_private),
        ("drop to running, host users", &r.drop_host),
        ("by hand, user namespace", &r.raw_private),
        ("by hand, host users", &r.raw_host),
        ("idmapped mount step", &r.idmap_step),
        ("agent rootfs step, private", &r.agent_rootfs_step),
    ] {
        eprintln!("  {}", brief(what, v));
    }
    eprintln!(
        "  with ÷ without: agent {:.3}x (target {BOUND}x), by hand {:.3}x",
        r.agent_ratio(),
        r.raw_ratio()
    );
    Ok(r)
}

/// A raw baseline copying the bundle of the container `yaml` declares.
fn raw_from(run: &Run, env: &AgentEnv, name: &str, yaml: &str) -> Result<Raw> {
    let template = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("name: "))
        .context("the template manifest has no name")?
        .to_owned();
    drop_manifest(env, &template, yaml)?;
    let parent = format!("{}-{name}", env.cgroup_parent);
    let raw = Raw::new(
        &env.runtime,
        &run.base.join(name),
        &run.run_base.join(name),
        parent.clone(),
        run.image(),
        env.template_files(&template),
    )?;
    cleanup::register(|r| {
        r.roots.push((env.runtime.clone(), raw.root.clone()));
        r.cgroup_parents.push(parent);
    });
    agent_teardown(env, &template)?;
    Ok(raw)
}

fn agent_round(env: &AgentEnv, name: &str, yaml: &str) -> Result<Duration> {
    let took = drop_manifest(env, name, yaml)?;
    agent_teardown(env, name)?;
    Ok(took)
}

fn raw_round(raw: &Raw, id: &str) -> Result<Duration> {
    let t0 = Instant::now();
    raw.create_and_run(id)?;
    wait_for(
        &format!("{id}'s output"),
        TIMEOUT,
        Duration::from_millis(1),
        || raw.output_landed(id),
    )?;
    let took = t0.elapsed();
    pause(SETTLE)?;
    raw.destroy(id)?;
    pause(SETTLE)?;
    Ok(took)
}

/// `n` times: a user namespace, the image cloned into it at a scratch
/// directory, detached.
fn idmap_step(run: &Run, n: usize) -> Result<Samples> {
    let target = run.base.join("userns-idmap-step");
    std::fs::create_dir_all(&target).context("creating the idmap step's directory")?;
    let mut took = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        let userns = crate::idmap::userns_fd(65_536, 65_536).context("making a user namespace")?;
        crate::idmap::mount_idmapped(run.image(), &target, &userns)
            .context("idmapping the image")?;
        crate::sys::unmount(&target).context("detaching the idmapped image")?;
        took.push(t0.elapsed());
    }
    Ok(Samples::from_durations(&took))
}

/// Every `micros=` of the agent's "rootfs layers idmapped" lines, as ms.
fn agent_rootfs_steps(env: &AgentEnv) -> Result<Samples> {
    let log = std::fs::read_to_string(env.dir.join("agent.log")).context("reading agent.log")?;
    let took: Vec<Duration> = log
        .lines()
        .filter(|l| l.contains("rootfs layers idmapped"))
        .filter_map(micros)
        .map(Duration::from_micros)
        .collect();
    Ok(Samples::from_durations(&took))
}

/// The number of `micros=N` in a log line, its colour codes taken out.
fn micros(line: &str) -> Option<u64> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An escape runs to its final letter.
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let after = &plain[plain.find("micros=")? + "micros=".len()..];
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn micros_are_read_through_colours() {
        let line = "\u{1b}[32m INFO\u{1b}[0m rootfs layers idmapped \u{1b}[3mmicros\u{1b}[0m\u{1b}[2m=\u{1b}[0m1234 x";
        assert_eq!(super::micros(line), Some(1234));
        assert_eq!(super::micros("micros=56 layers=1"), Some(56));
        assert_eq!(super::micros("nothing"), None);
    }
}
