//! The operator phase (issue 18): `rundmc exec NAME -- true` round trip
//! (the CLI, the agent's API, a supervisor, runc's exec, the exit back)
//! against `runc exec` of the same in the same container, sample by sample
//! with the order turning; and `rundmc logs` of a 100 MiB CRI log against
//! `cat` of the file piped through the parser a user would otherwise write
//! (`cut -d' ' -f4-`, which drops the time, stream and tag).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::latency::{agent_teardown, drop_manifest};
use crate::phases::{Run, WORKERS};
use crate::report::brief;
use crate::stats::{Samples, ratio};

/// The target: `rundmc exec` ≤ this × `runc exec`.
pub const EXEC_BOUND: f64 = 1.1;
/// Unmeasured rounds first.
const WARMUP: usize = 3;
/// The log `rundmc logs` reads.
const LOG_BYTES: usize = 100 << 20;
/// Rounds of the log comparison.
const LOG_ROUNDS: usize = 5;

/// What the phase measured, ms.
#[derive(Debug, Default)]
pub struct OpsResults {
    /// `rundmc exec NAME -- true`.
    pub rundmc_exec: Samples,
    /// `runc exec NAME true`.
    pub runc_exec: Samples,
    /// `rundmc logs` of the 100 MiB log to /dev/null.
    pub rundmc_logs: Samples,
    /// `cat | cut -d' ' -f4-` of it to /dev/null.
    pub cat_parse: Samples,
}

impl OpsResults {
    /// A paragraph for the report's notes.
    pub fn summary(&self) -> String {
        let exec = ratio(self.rundmc_exec.p50(), self.runc_exec.p50());
        let logs = ratio(self.rundmc_logs.p50(), self.cat_parse.p50());
        let met = |ok: bool| if ok { "met" } else { "missed" };
        format!(
            "Operator access (issue 18), p50 (p95) ms: `rundmc exec NAME -- true` {:.1} ({:.1}) against \
             `runc exec` {:.1} ({:.1}) over {} samples: {exec:.3}x (target {EXEC_BOUND}x: {}); \
             `rundmc logs` of a 100 MiB CRI log {:.0} ({:.0}) against `cat | cut -d' ' -f4-` {:.0} ({:.0}): \
             {logs:.3}x (target 1x: {}).",
            self.rundmc_exec.p50(),
            self.rundmc_exec.p95(),
            self.runc_exec.p50(),
            self.runc_exec.p95(),
            self.rundmc_exec.len(),
            met(exec <= EXEC_BOUND),
            self.rundmc_logs.p50(),
            self.rundmc_logs.p95(),
            self.cat_parse.p50(),
            self.cat_parse.p95(),
            met(logs <= 1.0),
        )
    }
}

/// The whole phase.
pub fn phase(run: &Run) -> Result<OpsResults> {
    let env = run.agent_env_on("ops-agent", "runc", run.image())?;
    let mut agent = env.start(&["--workers", &WORKERS.to_string()])?;
    drop_manifest(&env, "ops", &env.manifest("ops", "Always"))?;
    let socket = env.state.join("rundmc.sock");
    let rundmc = run.bins().join("rundmc");
    let rundmc_exec = || {
        let mut c = Command::new(&rundmc);
        c.arg("--api-socket")
            .arg(&socket)
            .args(["exec", "ops", "--", "true"]);
        c
    };
    let runc_exec = || {
        let mut c = Command::new(&env.runtime);
        c.arg("--root").arg(&env.root).args(["exec", "ops", "true"]);
        c
    };
    let n = run.sizes().net_samples;
    let mut r = OpsResults::default();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..WARMUP + n {
        let (a, b) = match i % 2 {
            0 => (timed(rundmc_exec())?, timed(runc_exec())?),
            _ => {
                let b = timed(runc_exec())?;
                (timed(rundmc_exec())?, b)
            }
        };
        if i >= WARMUP {
            ours.push(a);
            theirs.push(b);
        }
    }
    r.rundmc_exec = Samples::from_durations(&ours);
    r.runc_exec = Samples::from_durations(&theirs);
    let log = write_log(&env.bundle("ops").join("processes/bench-log"))?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..LOG_ROUNDS {
        let mut c = Command::new(&rundmc);
        c.arg("--api-socket")
            .arg(&socket)
            .args(["logs", "--process", "bench-log", "ops"]);
        ours.push(timed(c)?);
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("cat '{}' | cut -d' ' -f4-", log.display()));
        theirs.push(timed(c)?);
    }
    r.rundmc_logs = Samples::from_durations(&ours);
    r.cat_parse = Samples::from_durations(&theirs);
    agent_teardown(&env, "ops")?;
    agent.terminate();
    for (what, v) in [
        ("rundmc exec -- true", &r.rundmc_exec),
        ("runc exec true", &r.runc_exec),
        ("rundmc logs, 100 MiB", &r.rundmc_logs),
        ("cat | cut, 100 MiB", &r.cat_parse),
    ] {
        eprintln!("  {}", brief(what, v));
    }
    Ok(r)
}

/// Run `c` to the end with its output thrown away; how long it took.
fn timed(mut c: Command) -> Result<Duration> {
    let t0 = Instant::now();
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let status = crate::reaper::status(&mut c).with_context(|| format!("running {c:?}"))?;
    let took = t0.elapsed();
    if !status.success() {
        bail!("{c:?} failed: {status}");
    }
    Ok(took)
}

/// A process directory holding a 100 MiB CRI log of 100-byte lines, as a
/// chatty process's supervisor writes it; the log's path.
fn write_log(dir: &Path) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut text = Vec::with_capacity(LOG_BYTES + 128);
    let mut i = 0u64;
    while text.len() < LOG_BYTES {
        let stream = if i.is_multiple_of(7) {
            "stderr"
        } else {
            "stdout"
        };
        text.extend_from_slice(
            format!("2026-01-01T00:00:00.{:09}Z {stream} F line {i:08} of a chatty process, padded to about a hundred bytes\n", i % 1_000_000_000)
                .as_bytes(),
        );
        i += 1;
    }
    let path = dir.join("output.log");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
