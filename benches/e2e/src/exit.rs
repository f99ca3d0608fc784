//! Exit detection: containers whose main process must not be restarted
//! (`restartPolicy: Never`); each main process is SIGKILLed from the host in
//! turn, and inotify tells the moment its supervisor renames `exit.json`
//! into place and the moment the agent renames a status file recording the
//! termination into place.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::agent::AgentEnv;
use crate::stats::Samples;
use crate::sys::{self, Inotify};
use crate::wait::{check_interrupted, pause};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Per kill: until the supervisor's `exit.json`, until the status file.
#[derive(Debug, Default, Clone)]
pub struct Exits {
    /// Kill until `exit.json` is in place, ms.
    pub recorded_by_supervisor: Samples,
    /// Kill until the status file records the termination, ms.
    pub in_status: Samples,
}

/// Kills the main process of `n` fresh containers one by one.
pub fn measure(env: &AgentEnv, n: usize) -> Result<Exits> {
    let names: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
    env.create_all(&names, "Never", Duration::from_secs(300))?;
    let ino = Inotify::new()?;
    let status_wd = ino.watch(&env.state.join("status"))?;
    let mut out = Exits::default();
    for name in &names {
        let (by_shim, in_status) = kill_one(env, &ino, status_wd, name)?;
        out.recorded_by_supervisor.0.push(ms(by_shim));
        out.in_status.0.push(ms(in_status));
        pause(Duration::from_millis(30))?;
    }
    env.remove_all(&names, Duration::from_secs(300))?;
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn kill_one(
    env: &AgentEnv,
    ino: &Inotify,
    status_wd: i32,
    name: &str,
) -> Result<(Duration, Duration)> {
    let dir = env.main_dir(name);
    let main_wd = ino.watch(&dir)?;
    let pid = env
        .main_pid(name)
        .with_context(|| format!("no main pid for {name}"))?;
    ino.drain()?;
    let status_file = format!("{name}.yaml");
    let t0 = Instant::now();
    sys::kill(pid, libc::SIGKILL).with_context(|| format!("killing {name}'s main process"))?;
    let mut by_shim = None;
    loop {
        check_interrupted()?;
        let left = TIMEOUT.saturating_sub(t0.elapsed());
        if left.is_zero() {
            bail!("{name}: no status with the termination after {TIMEOUT:?}");
        }
        for ev in ino.wait(left)? {
            let now = t0.elapsed();
            if ev.watch == main_wd && ev.name == "exit.json" {
                by_shim.get_or_insert(now);
            }
            let recorded = ev.watch == status_wd
                && ev.name == status_file
                && env.status(name).is_some_and(|s| s.last_exit_code.is_some());
            if recorded {
                ino.unwatch(main_wd);
                return Ok((by_shim.unwrap_or(now), now));
            }
        }
    }
}
