//! Starting supervised processes ([`Tracker::spawn`]), listing those of a
//! container ([`list`]) and ending them all when the container is gone
//! ([`cleanup`]).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rundmc_shim::protocol::{DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_MAX_FILES, Ready, SHIM_LOG};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::shim::{open_live, read_record};
use super::{ProcState, Process, ProcessError};
use crate::pidfd::PidFd;

/// How long [`Tracker::spawn`] waits for the supervisor's ready line by default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts processes under `rundmc-shim`.
#[derive(Debug, Clone)]
pub struct Tracker {
    shim: PathBuf,
    ready_timeout: Duration,
}

/// One process to start. The caller has written `process.json` into `dir`
/// and built `runtime_argv`: a complete *detached* exec, e.g.
/// `runc --root R --log DIR/runtime.log --log-format json exec --detach
/// --pid-file DIR/pid --process DIR/process.json CONTAINER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The process id; by convention the name of `dir`.
    pub id: String,
    /// The process directory, `<bundle>/processes/<id>/` (a tmpfs).
    pub dir: PathBuf,
    /// Where `output.log` goes when not in `dir`: `<depot>/<handle>/processes/<id>/`.
    /// The caller makes it.
    pub log_dir: Option<PathBuf>,
    /// The runtime's detached exec command line.
    pub runtime_argv: Vec<OsString>,
    /// Give the process a `stdin` fifo (else `/dev/null`); the first
    /// writer's close is its end of file.
    pub stdin: bool,
    /// With `stdin`: the fifo outlives its writers (the supervisor holds it
    /// read-write), so attach sessions come and go; a spec's `stdin: true`
    /// without `stdinOnce`.
    pub keep_stdin_open: bool,
    /// Rotate `output.log` when it would pass this size.
    pub log_max_bytes: u64,
    /// Keep this many log files, the current one included.
    pub log_max_files: u32,
    /// The container's `memory.oom_control` (v1) or `memory.events` (v2).
    pub oom_file: Option<PathBuf>,
    /// `cgroup.procs` files the supervisor moves itself into before it
    /// starts anything, out of the agent's cgroup.
    pub join_cgroups: Vec<PathBuf>,
}

impl Launch {
    /// A launch with default log limits, no stdin and no OOM file.
    pub fn new(
        id: impl Into<String>,
        dir: impl Into<PathBuf>,
        runtime_argv: Vec<OsString>,
    ) -> Self {
        Launch {
            id: id.into(),
            dir: dir.into(),
            log_dir: None,
            runtime_argv,
            stdin: false,
            keep_stdin_open: false,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            log_max_files: DEFAULT_LOG_MAX_FILES,
            oom_file: None,
            join_cgroups: Vec::new(),
        }
    }

    /// The supervisor's arguments.
    pub fn shim_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        match (self.stdin, self.keep_stdin_open) {
            (true, true) => args.push("--keep-stdin-open".into()),
            (true, false) => args.push("--stdin".into()),
            (false, _) => {}
        }
        args.extend([
            "--log-max-bytes".into(),
            self.log_max_bytes.to_string().into(),
        ]);
        args.extend([
            "--log-max-files".into(),
            self.log_max_files.to_string().into(),
        ]);
        if let Some(oom) = &self.oom_file {
            args.extend(["--oom-file".into(), oom.clone().into_os_string()]);
        }
        for procs in &self.join_cgroups {
            args.extend(["--join-cgroup".into(), procs.clone().into_os_string()]);
        }
        if let Some(logs) = &self.log_dir {
            args.extend(["--log-dir".into(), logs.clone().into_os_string()]);
        }
        args.extend([
            "--dir".into(),
            self.dir.clone().into_os_string(),
            "--".into(),
        ]);
        args.extend(self.runtime_argv.iter().cloned());
        args
    }
}

impl Tracker {
    /// A tracker running the supervisor binary `shim`.
    pub fn new(shim: impl Into<PathBuf>) -> Self {
        Tracker {
            shim: shim.into(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }

    /// Sets how long to wait for the ready line.
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts the process under a supervisor and returns once it runs, or
    /// with [`ProcessError::StartFailed`] carrying the runtime's message.
    pub async fn spawn(&self, launch: Launch) -> Result<Process, ProcessError> {
        let log_path = launch.dir.join(SHIM_LOG);
        let shim_log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(ProcessError::io(&log_path))?;
        let mut launcher = tokio::process::Command::new(&self.shim)
            .args(launch.shim_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(shim_log)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                shim: self.shim.clone(),
                source,
            })?;
        let Some(line) = self.read_ready(&mut launcher).await else {
            // Not a launcher that forks at once: do not wait on it forever.
            let _ = launcher.start_kill();
            let _ = launcher.wait().await;
            return Err(self.give_up(&launch));
        };
        let line = line.map_err(ProcessError::io(&launch.dir))?;
        // The launcher exits as soon as it has forked: reap it.
        let status = launcher
            .wait()
            .await
            .map_err(ProcessError::io(&self.shim))?;
        if line.trim().is_empty() {
            let detail = tail(&log_path);
            return Err(ProcessError::NoReady {
                id: launch.id,
                status,
                detail,
            });
        }
        match serde_json::from_str::<Ready>(&line) {
            Ok(Ready::Started { .. }) => Process::attach(&launch.dir),
            Ok(Ready::Failed { message }) => Err(ProcessError::StartFailed {
                id: launch.id,
                message,
            }),
            Err(source) => Err(ProcessError::BadReady {
                id: launch.id,
                line,
                source,
            }),
        }
    }

    /// The ready line, or `None` when none came within the timeout.
    async fn read_ready(
        &self,
        launcher: &mut tokio::process::Child,
    ) -> Option<std::io::Result<String>> {
        let stdout = launcher.stdout.take()?;
        let read = async {
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .await
                .map(|_| line)
        };
        tokio::time::timeout(self.ready_timeout, read).await.ok()
    }

    /// A supervisor that never said ready is killed, so nothing runs unseen.
    fn give_up(&self, launch: &Launch) -> ProcessError {
        if let Ok(Some(rec)) = read_record(&launch.dir)
            && let Some(shim) = open_live(&rec)
        {
            let _ = shim.send_signal(libc::SIGKILL);
        }
        ProcessError::ReadyTimeout {
            id: launch.id.clone(),
            after: self.ready_timeout,
        }
    }
}

/// The last lines of a small diagnostic file, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    let joined = lines.into_iter().rev().collect::<Vec<_>>().join("; ");
    if joined.is_empty() {
        "no diagnostics".to_owned()
    } else {
        joined
    }
}

/// One process of a container, as [`list`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process id (its directory's name).
    pub id: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its host pid, when it started.
    pub pid: Option<i32>,
    /// Its state.
    pub state: ProcState,
}

/// Every process under `processes_dir` (`<depot>/<handle>/processes`),
/// sorted by id. A missing directory is an empty list. A directory without
/// `shim.json` is [`ProcState::Lost`]; while a spawn into it is in flight
/// that is transient (the supervisor writes it before it says ready).
pub fn list(processes_dir: &Path) -> Result<Vec<ProcessInfo>, ProcessError> {
    let mut infos = Vec::new();
    for dir in process_dirs(processes_dir)? {
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let info = match Process::attach(&dir) {
            Ok(p) => ProcessInfo {
                id,
                pid: p.pid(),
                state: p.state()?,
                dir,
            },
            Err(ProcessError::NotAProcessDir { .. }) => {
                let reason = "no supervisor record (shim.json missing)".to_owned();
                ProcessInfo {
                    id,
                    dir,
                    pid: None,
                    state: ProcState::Lost { reason },
                }
            }
            Err(e) => return Err(e),
        };
        infos.push(info);
    }
    infos.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(infos)
}

fn process_dirs(processes_dir: &Path) -> Result<Vec<PathBuf>, ProcessError> {
    let entries = match std::fs::read_dir(processes_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ProcessError::Io {
                path: processes_dir.to_owned(),
                source,
            });
        }
    };
    Ok(entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect())
}

/// What [`cleanup`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Process directories removed.
    pub removed: usize,
    /// Supervisors that had not exited within the grace period and were
    /// SIGKILLed (through a pidfd on their verified pid).
    pub killed_supervisors: Vec<i32>,
}

/// Ends every supervisor of a container whose processes are gone (call it
/// after the container was killed) and removes `processes_dir`. Supervisors
/// get `grace` to record their exits; the rest are SIGKILLed.
pub async fn cleanup(processes_dir: &Path, grace: Duration) -> Result<CleanupReport, ProcessError> {
    let dirs = process_dirs(processes_dir)?;
    let shims: Vec<PidFd> = dirs
        .iter()
        .filter_map(|d| read_record(d).ok().flatten())
        .filter_map(|r| open_live(&r))
        .collect();
    let deadline = tokio::time::Instant::now() + grace;
    let mut report = CleanupReport::default();
    for shim in &shims {
        if tokio::time::timeout_at(deadline, shim.exited())
            .await
            .is_err()
        {
            if shim.send_signal(libc::SIGKILL).is_ok() {
                report.killed_supervisors.push(shim.pid());
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), shim.exited()).await;
        }
    }
    // Removing trees waits on the disk: on a blocking thread.
    let processes_dir = processes_dir.to_owned();
    report.removed = tokio::task::spawn_blocking(move || remove_all(&dirs, &processes_dir))
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))?;
    Ok(report)
}

/// Removes each process directory, then `processes_dir` (a link to where
/// an earlier version kept them, for an adopted container); how many were
/// removed.
fn remove_all(dirs: &[PathBuf], processes_dir: &Path) -> Result<usize, ProcessError> {
    for dir in dirs {
        std::fs::remove_dir_all(dir).map_err(ProcessError::io(dir))?;
    }
    let linked = std::fs::symlink_metadata(processes_dir).is_ok_and(|m| m.is_symlink());
    let removed = match linked {
        true => std::fs::remove_file(processes_dir),
        false => std::fs::remove_dir(processes_dir),
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ProcessError::Io {
            path: processes_dir.to_owned(),
            source: e,
        }),
        _ => Ok(dirs.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_supervisor_command_line() {
        let mut launch = Launch::new(
            "p1",
            "/run/bundles/web/processes/p1",
            vec!["runc".into(), "exec".into()],
        );
        launch.log_dir = Some("/depot/web/processes/p1".into());
        launch.stdin = true;
        launch.log_max_bytes = 1024;
        launch.log_max_files = 3;
        launch.oom_file = Some("/sys/fs/cgroup/memory/x/memory.oom_control".into());
        let args: Vec<String> = launch
            .shim_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--stdin",
                "--log-max-bytes",
                "1024",
                "--log-max-files",
                "3",
                "--oom-file",
                "/sys/fs/cgroup/memory/x/memory.oom_control",
                "--log-dir",
                "/depot/web/processes/p1",
                "--dir",
                "/run/bundles/web/processes/p1",
                "--",
                "runc",
                "exec",
            ]
        );
        let plain = Launch::new("p", "/d", vec!["runc".into()]);
        assert_eq!(plain.shim_args()[0], "--log-max-bytes");
        launch.keep_stdin_open = true;
        assert_eq!(launch.shim_args()[0], "--keep-stdin-open");
        launch.stdin = false;
        assert_eq!(
            launch.shim_args()[0],
            "--log-max-bytes",
            "no stdin: /dev/null"
        );
    }
}
