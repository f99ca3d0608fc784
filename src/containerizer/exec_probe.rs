//! `exec_probe`: an exec probe's (or hook's) command run in the container,
//! judged by its exit code within the probe's timeout.
//!
//! It is run by the container's own init ([`super::init_exec`]): no runtime,
//! no supervisor, the container's confinement inherited, the main process's
//! user, and every process it started killed when it ends. A container whose
//! init does not serve (made by an older agent), or whose init cannot take
//! the user asked for, gets the runtime's exec instead, as any process is
//! run: its own supervisor, its output logged, removed with its directory.

use std::time::Duration;

use super::Containerizer;
use super::init_exec::{self, End, InitExecError, MAX_OUTPUT, Reply};
use super::rootfs::Mounter;
use super::run::RunSpec;
use crate::api::Handle;
use crate::process::ProcState;
use crate::runtime::OciRuntime;
use rundmc_init::Stage;

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
        match self
            .exec_by_init(handle, command, user.clone(), timeout)
            .await
        {
            Ok(outcome) => return outcome,
            Err(why) => tracing::debug!(%handle, %why,
                "exec probe: the init cannot run it; using the runtime's exec"),
        }
        self.exec_by_runtime(handle, None, command, user, timeout)
            .await
    }

    /// [`Self::exec_probe`] in pea `pea` of `handle`, by the runtime's exec
    /// in the pea's container: its rootfs, its cgroup, the namespaces it
    /// joined. (A pea's init does not serve commands.)
    pub async fn exec_probe_in_pea(
        &self,
        handle: &Handle,
        pea: &str,
        command: &[String],
        user: Option<String>,
        timeout: Duration,
    ) -> Result<(), String> {
        self.exec_by_runtime(handle, Some(pea), command, user, timeout)
            .await
    }

    /// The command run by the container's init: `Err` when the init cannot
    /// run it (the caller falls back to the runtime's exec).
    async fn exec_by_init(
        &self,
        handle: &Handle,
        command: &[String],
        user: Option<String>,
        timeout: Duration,
    ) -> Result<Result<(), String>, InitExecError> {
        let socket = self.depot.paths(handle).init_socket();
        let record = match self.depot.record(handle) {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(Err(format!("container {handle} does not exist"))),
            Err(e) => return Ok(Err(e.to_string())),
        };
        let spec = RunSpec {
            args: command.to_vec(),
            user,
            ..RunSpec::default()
        };
        let rootfs = self.depot.paths(handle).rootfs();
        let process = match self.process_spec_for(handle, &rootfs, &record.spec, &spec) {
            Ok(process) => process,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let request = init_exec::encode(&process, timeout)?;
        let reply = init_exec::call(&socket, &request, timeout).await?;
        judge(command, reply)
    }

    /// The command run as any process: its own supervisor and the runtime's
    /// exec.
    async fn exec_by_runtime(
        &self,
        handle: &Handle,
        pea: Option<&str>,
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
            pea: pea.map(str::to_string),
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
        let _ = self.remove_process(handle, &id);
        outcome
    }
}

/// What a reply from the init means for the probe; `Err` for a setup the
/// init could not do with its own privileges (the runtime's exec can).
fn judge(command: &[String], reply: Reply) -> Result<Result<(), String>, InitExecError> {
    let output = trimmed(&reply.output);
    Ok(match reply.end {
        End::Exited(0) => Ok(()),
        End::Exited(code) => {
            Err(output.unwrap_or_else(|| format!("command {command:?} exited with {code}")))
        }
        End::Signaled(signal) => {
            Err(output
                .unwrap_or_else(|| format!("command {command:?} was killed by signal {signal}")))
        }
        End::TimedOut => Err(format!("command {command:?} timed out")),
        End::ExecFailed(errno) => Err(format!(
            "exec {:?}: {}",
            command.first().map(String::as_str).unwrap_or_default(),
            std::io::Error::from_raw_os_error(errno)
        )),
        End::SetupFailed {
            stage: Some(Stage::Cwd),
            errno,
        } => Err(format!(
            "working directory: {}",
            std::io::Error::from_raw_os_error(errno)
        )),
        End::SetupFailed { stage, errno } => {
            return Err(InitExecError::Io {
                source: std::io::Error::other(format!(
                    "setup {stage:?}: {}",
                    std::io::Error::from_raw_os_error(errno)
                )),
            });
        }
        End::BadRequest => {
            return Err(InitExecError::Io {
                source: std::io::Error::other("the init refused the request"),
            });
        }
    })
}

/// `bytes` as text, trimmed and cut to [`MAX_OUTPUT`]; `None` when empty.
fn trimmed(bytes: &[u8]) -> Option<String> {
    let mut text = String::from_utf8_lossy(bytes).trim().to_string();
    if text.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    (!text.is_empty()).then_some(text)
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
    trimmed(&bytes)
}
