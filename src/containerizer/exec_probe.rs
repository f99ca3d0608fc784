//! `exec_probe`: an exec probe's command run in the container as any
//! process is (its own supervisor, `runtime exec`, the container's
//! confinement, the main process's user), waited for within the probe's
//! timeout, judged by its exit code, and removed with its directory.

use std::time::Duration;

use super::Containerizer;
use super::rootfs::Mounter;
use super::run::RunSpec;
use crate::api::Handle;
use crate::process::ProcState;
use crate::runtime::OciRuntime;

/// At most this much of a failed command's output is kept.
const MAX_OUTPUT: usize = 1024;

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// Run `command` as `user` and wait up to `timeout`: `Ok` when it
    /// exits 0, otherwise its output (or why it did not run). A command
    /// still running at the timeout is killed.
    pub async fn exec_probe(
        &self,
        handle: &Handle,
        command: &[String],
        user: Option<String>,
        timeout: Duration,
    ) -> Result<(), String> {
        let id = probe_id();
        let spec = RunSpec {
            id: Some(id.clone()),
            args: command.to_vec(),
            user,
            log_max_bytes: Some(64 * 1024),
            log_max_files: Some(1),
            ..RunSpec::default()
        };
        let outcome = match self.run(handle, &spec).await {
            Err(e) => Err(e.to_string()),
            Ok(process) => match tokio::time::timeout(timeout, process.wait()).await {
                Err(_) => {
                    let _ = self.kill_lost(handle, &id).await;
                    Err(format!("command {command:?} timed out"))
                }
                Ok(_) => match process.state() {
                    Ok(ProcState::Exited(rec)) if rec.exit_code == 0 => Ok(()),
                    Ok(ProcState::Exited(rec)) => Err(output(&process.dir().join("output.log"))
                        .unwrap_or_else(|| {
                            format!("command {command:?} exited with {}", rec.exit_code)
                        })),
                    Ok(other) => Err(format!("command {command:?}: {other:?}")),
                    Err(e) => Err(e.to_string()),
                },
            },
        };
        let _ = std::fs::remove_dir_all(self.process_dir(handle, &id));
        outcome
    }
}

/// `probe-` and the time in nanoseconds, in hex.
fn probe_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("probe-{nanos:x}")
}

/// The text a process wrote (the log's records, without their framing),
/// trimmed and cut to [`MAX_OUTPUT`]; `None` when empty.
fn output(log: &std::path::Path) -> Option<String> {
    let dir = log.parent()?;
    let lines = crate::process::logs::read_all(dir).ok()?;
    let mut bytes = Vec::new();
    for line in &lines {
        bytes.extend_from_slice(&line.content);
        if !line.partial {
            bytes.push(b'\n');
        }
    }
    let mut text = String::from_utf8_lossy(&bytes).trim().to_string();
    if text.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    (!text.is_empty()).then_some(text)
}
