//! [`Runc`]: the [`OciRuntime`] that drives runc or crun through their
//! command line, spawned by a [`CommandRunner`].
//!
//! Every spawned call runs with `--log <root>/.rundmc-<verb>-<pid>-<n>.log
//! --log-format json`: a fresh file per call, named with a leading dot so
//! that neither runtime's `list` (runc skips plain files, crun dot-names)
//! nor ours takes it for a container, and removed as soon as the call ends.
//! On failure the last `"level":"error"` line of that log is the message
//! (stderr when the log has none).
//!
//! `state` and `list` read the state directory in-process (see
//! [`state_dir`]) and spawn the binary only when they do not recognise what
//! they find; `stats` reads the cgroup files the state directory names, for
//! runc and crun alike (a spawned `runc events --stats` costs milliseconds
//! of CPU, the files microseconds). crun 1.8 has no `events` verb: for a
//! container in crun's layout, `events` watches the cgroup for OOM kills
//! in-process (see [`cgroup`]).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;
use tokio::sync::mpsc;

use super::command::{
    Capture, CommandRunner, Finished, Input, Invocation, LineStream, RunError, TokioRunner,
};
use super::state_dir::{self, Layout, Lookup, Record};
use super::{Event, OciRuntime, RuntimeConfig, RuntimeError, State, Stats, argv, output};
use crate::cgroup::{Cgroup, OomWatch};

/// How many events may wait for a slow receiver.
const EVENTS_BUFFER: usize = 16;

/// Numbers the per-call log files of this process.
static LOG_SEQ: AtomicU64 = AtomicU64::new(0);

/// runc or crun, driven through its command line. Cloning shares the
/// runner.
#[derive(Debug)]
pub struct Runc<R = TokioRunner> {
    binary: PathBuf,
    root: PathBuf,
    timeout: Duration,
    runner: Arc<R>,
}

impl<R> Clone for Runc<R> {
    fn clone(&self) -> Self {
        Runc {
            binary: self.binary.clone(),
            root: self.root.clone(),
            timeout: self.timeout,
            runner: Arc::clone(&self.runner),
        }
    }
}

/// A per-call log file, removed when dropped (also when the call is
/// cancelled half-way).
struct CallLog(PathBuf);

impl CallLog {
    fn new(root: &Path, verb: &str) -> Self {
        let n = LOG_SEQ.fetch_add(1, Ordering::Relaxed);
        CallLog(root.join(format!(".rundmc-{verb}-{}-{n}.log", std::process::id())))
    }

    fn error(&self) -> Option<String> {
        output::last_logged_error(&fs::read_to_string(&self.0).ok()?)
    }
}

impl Drop for CallLog {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl Runc<TokioRunner> {
    /// Drive `config.binary`, spawning it with tokio. A relative root is
    /// made absolute against the current directory (crun changes into the
    /// bundle before opening its log).
    pub fn new(config: RuntimeConfig) -> Self {
        Self::with_runner(config, TokioRunner)
    }
}

/// Only a plain name can be joined to the root without escaping it; any
/// other id goes to the binary, which rejects it in its own words.
fn plain_id(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && !id.contains('/') && !id.contains('\0')
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

impl<R: CommandRunner> Runc<R> {
    /// Drive `config.binary` through `runner`.
    pub fn with_runner(config: RuntimeConfig, runner: R) -> Self {
        Runc {
            binary: config.binary,
            root: absolute(&config.root),
            timeout: config.timeout,
            runner: Arc::new(runner),
        }
    }

    /// The runtime's state root, absolute.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A verb that makes the init (`create`, `run`): its stdin is `fd`,
    /// else /dev/null; its stdout and stderr are /dev/null.
    async fn make_init(
        &self,
        verb: &'static str,
        id: &str,
        words: Vec<OsString>,
        fd: Option<std::os::fd::OwnedFd>,
    ) -> Result<(), RuntimeError> {
        let input = match fd {
            Some(fd) => Input::Fd(std::sync::Arc::new(fd)),
            None => Input::Null,
        };
        self.call(verb, id, words, input, Capture::Discard)
            .await
            .map(drop)
    }

    fn ensure_root(&self) -> Result<(), RuntimeError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|source| RuntimeError::Io {
                path: self.root.clone(),
                source,
            })
    }

    fn run_error(&self, verb: &'static str, id: &str, error: RunError) -> RuntimeError {
        match error {
            RunError::TimedOut { after, .. } => RuntimeError::Timeout {
                verb,
                id: id.to_owned(),
                after,
            },
            RunError::Spawn { source, .. } => RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            },
            RunError::Io { source, .. } => RuntimeError::Io {
                path: self.binary.clone(),
                source,
            },
            RunError::Empty => RuntimeError::Spawn {
                binary: self.binary.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command line"),
            },
        }
    }

    /// Run one verb to completion; a non-zero exit becomes `NotFound` or
    /// `Failed` with the runtime's own message.
    async fn call(
        &self,
        verb: &'static str,
        id: &str,
        words: Vec<OsString>,
        input: Input,
        capture: Capture,
    ) -> Result<Finished, RuntimeError> {
        self.ensure_root()?;
        let log = CallLog::new(&self.root, verb);
        let argv = argv::command(&self.binary, &self.root, &log.0, words);
        let invocation = Invocation {
            argv,
            input,
            capture,
            timeout: self.timeout,
        };
        let finished = self
            .runner
            .run(invocation)
            .await
            .map_err(|e| self.run_error(verb, id, e))?;
        if finished.status.success() {
            return Ok(finished);
        }
        let message = log
            .error()
            .or_else(|| output::last_stderr_line(&finished.stderr))
            .unwrap_or_else(|| {
                format!("{} exited with {}", self.binary.display(), finished.status)
            });
        // What makes a container may fail for a file it cannot find; only
        // the other verbs' "not found" is about the container.
        if !matches!(verb, "create" | "run") && output::says_not_found(&message, id) {
            return Err(RuntimeError::NotFound { id: id.to_owned() });
        }
        Err(RuntimeError::Failed {
            verb,
            id: id.to_owned(),
            message,
            code: finished.status.code(),
        })
    }

    async fn simple(
        &self,
        verb: &'static str,
        id: &str,
        words: Vec<OsString>,
    ) -> Result<(), RuntimeError> {
        self.call(verb, id, words, Input::Null, Capture::Pipes)
            .await
            .map(drop)
    }

    /// `state ID` asked of the binary, bypassing the state directory.
    pub async fn state_spawned(&self, id: &str) -> Result<State, RuntimeError> {
        let finished = self
            .call("state", id, argv::state(id), Input::Null, Capture::Pipes)
            .await?;
        output::parse_state(&finished.stdout).map_err(|source| RuntimeError::Decode {
            verb: "state",
            id: id.to_owned(),
            source,
        })
    }

    /// `list --format json` asked of the binary, bypassing the state
    /// directory. Sorted by id.
    pub async fn list_spawned(&self) -> Result<Vec<State>, RuntimeError> {
        let finished = self
            .call("list", "", argv::list(), Input::Null, Capture::Pipes)
            .await?;
        let mut states =
            output::parse_list(&finished.stdout).map_err(|source| RuntimeError::Decode {
                verb: "list",
                id: String::new(),
                source,
            })?;
        states.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(states)
    }

    /// The state directory's record of `id`; `Ok(None)` when it is not in a
    /// shape this adapter reads and the binary must be asked.
    fn record(&self, id: &str) -> Result<Option<Record>, RuntimeError> {
        if !plain_id(id) {
            return Ok(None);
        }
        match state_dir::lookup(&self.root, id) {
            Lookup::Found(record) => Ok(Some(record)),
            Lookup::Missing => Err(RuntimeError::NotFound { id: id.to_owned() }),
            Lookup::Empty | Lookup::Unparsable => Ok(None),
        }
    }

    async fn stats_spawned(&self, id: &str) -> Result<Stats, RuntimeError> {
        let finished = self
            .call("stats", id, argv::stats(id), Input::Null, Capture::Pipes)
            .await?;
        output::parse_stats(&finished.stdout).map_err(|source| RuntimeError::Decode {
            verb: "stats",
            id: id.to_owned(),
            source,
        })
    }

    fn cgroup_of(&self, record: &Record) -> Result<Cgroup, RuntimeError> {
        record.cgroup.clone().ok_or_else(|| RuntimeError::Io {
            path: self.root.join(&record.id),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the runtime recorded no cgroup",
            ),
        })
    }

    fn events_spawned(&self, id: &str) -> Result<mpsc::Receiver<Event>, RuntimeError> {
        self.ensure_root()?;
        let log = CallLog::new(&self.root, "events");
        let argv = argv::command(&self.binary, &self.root, &log.0, argv::events(id));
        let stream = self
            .runner
            .stream(argv)
            .map_err(|e| self.run_error("events", id, e))?;
        let (tx, rx) = mpsc::channel(EVENTS_BUFFER);
        tokio::spawn(forward_events(id.to_owned(), stream, log, tx));
        Ok(rx)
    }

    fn events_in_process(&self, record: &Record) -> Result<mpsc::Receiver<Event>, RuntimeError> {
        let cgroup = self.cgroup_of(record)?;
        let watch = OomWatch::new(&cgroup).map_err(|source| RuntimeError::Cgroup {
            id: record.id.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::channel(EVENTS_BUFFER);
        tokio::spawn(forward_ooms(record.id.clone(), watch, tx));
        Ok(rx)
    }
}

/// Relay `runc events` lines until the runtime stops or the receiver goes;
/// dropping the line stream kills the runtime.
async fn forward_events(id: String, stream: LineStream, log: CallLog, tx: mpsc::Sender<Event>) {
    let LineStream { mut lines, exit } = stream;
    loop {
        let line = tokio::select! {
            () = tx.closed() => break,
            line = lines.recv() => line,
        };
        let Some(line) = line else { break };
        match output::parse_event(&line) {
            Ok(Some(event)) => {
                if tx.send(event).await.is_err() {
                    break;
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%id, %error, %line, "undecodable runtime event"),
        }
    }
    drop(lines);
    if let Ok(Some(status)) = exit.await
        && !status.success()
        && !tx.is_closed()
    {
        let message = log.error().unwrap_or_default();
        tracing::warn!(%id, %status, %message, "runtime events stream ended");
    }
    // The log goes before the receiver learns that the stream ended.
    drop(log);
    drop(tx);
}

/// Relay in-process OOM notifications until the cgroup goes away or the
/// receiver does.
async fn forward_ooms(id: String, mut watch: OomWatch, tx: mpsc::Sender<Event>) {
    loop {
        let oom = tokio::select! {
            () = tx.closed() => return,
            oom = watch.next() => oom,
        };
        if oom.is_none() || tx.send(Event::Oom { id: id.clone() }).await.is_err() {
            return;
        }
    }
}

impl<R: CommandRunner> OciRuntime for Runc<R> {
    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        init_stdin: Option<std::os::fd::OwnedFd>,
    ) -> Result<(), RuntimeError> {
        let words = argv::create(id, &absolute(bundle));
        self.make_init("create", id, words, init_stdin).await
    }

    async fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        init_stdin: Option<std::os::fd::OwnedFd>,
    ) -> Result<(), RuntimeError> {
        let words = argv::run_detached(id, &absolute(bundle));
        self.make_init("run", id, words, init_stdin).await
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.simple("start", id, argv::start(id)).await
    }

    async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        self.simple("kill", id, argv::kill(id, signal, all)).await
    }

    async fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        self.simple("delete", id, argv::delete(id, force)).await
    }

    async fn state(&self, id: &str) -> Result<State, RuntimeError> {
        match self.record(id)? {
            Some(record) => Ok(state_dir::observe(&self.root, &record)),
            None => self.state_spawned(id).await,
        }
    }

    async fn list(&self) -> Result<Vec<State>, RuntimeError> {
        let root = self.root.clone();
        match tokio::task::spawn_blocking(move || state_dir::list(&root)).await {
            Ok(Some(states)) => Ok(states),
            Ok(None) | Err(_) => self.list_spawned().await,
        }
    }

    async fn stats(&self, id: &str) -> Result<Stats, RuntimeError> {
        match self.record(id)? {
            Some(Record {
                cgroup: Some(cgroup),
                ..
            }) => cgroup
                .metrics()
                .map(Stats::from)
                .map_err(|source| RuntimeError::Cgroup {
                    id: id.to_owned(),
                    source,
                }),
            _ => self.stats_spawned(id).await,
        }
    }

    async fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), RuntimeError> {
        let json = serde_json::to_vec(resources).map_err(|source| RuntimeError::Decode {
            verb: "update",
            id: id.to_owned(),
            source,
        })?;
        self.call(
            "update",
            id,
            argv::update(id),
            Input::Bytes(json),
            Capture::Pipes,
        )
        .await
        .map(drop)
    }

    async fn events(&self, id: &str) -> Result<mpsc::Receiver<Event>, RuntimeError> {
        match self.record(id)? {
            Some(record) if record.layout == Layout::Crun => self.events_in_process(&record),
            _ => self.events_spawned(id),
        }
    }

    fn exec_argv(
        &self,
        id: &str,
        process_json: &Path,
        pid_file: &Path,
        log_file: &Path,
    ) -> Vec<OsString> {
        argv::command(
            &self.binary,
            &self.root,
            log_file,
            argv::exec(id, process_json, pid_file),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_are_joined_to_the_root() {
        assert!(plain_id("web-1.a_b"));
        assert!(!plain_id(""));
        assert!(!plain_id("."));
        assert!(!plain_id(".."));
        assert!(!plain_id("../etc"));
        assert!(!plain_id("a/b"));
    }

    #[test]
    fn exec_argv_is_a_complete_command_line() {
        let runc = Runc::new(RuntimeConfig {
            binary: "/usr/sbin/runc".into(),
            root: "/run/rundmc/runc".into(),
            timeout: Duration::from_secs(5),
        });
        let argv = runc.exec_argv(
            "web",
            Path::new("/depot/web/processes/p1/process.json"),
            Path::new("/depot/web/processes/p1/pid"),
            Path::new("/depot/web/processes/p1/runc.log"),
        );
        let words: Vec<&str> = argv.iter().map(|w| w.to_str().unwrap()).collect();
        assert_eq!(
            words,
            [
                "/usr/sbin/runc",
                "--root",
                "/run/rundmc/runc",
                "--log",
                "/depot/web/processes/p1/runc.log",
                "--log-format",
                "json",
                "exec",
                "--detach",
                "--pid-file",
                "/depot/web/processes/p1/pid",
                "--process",
                "/depot/web/processes/p1/process.json",
                "web",
            ]
        );
    }

    #[test]
    fn call_logs_are_dot_files_under_the_root() {
        let log = CallLog::new(Path::new("/run/r"), "state");
        let name = log.0.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with(".rundmc-state-"), "{name}");
        assert_eq!(log.0.parent(), Some(Path::new("/run/r")));
    }
}
