//! What can go wrong starting, attaching to, signalling or reading a
//! supervised process. Each error names the process (id or directory) and
//! the file or step involved.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use thiserror::Error;

/// An error of the process tracker.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// A file of the process directory could not be read, written or opened.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor binary could not be started.
    #[error("cannot run supervisor {shim}: {source}")]
    Spawn {
        /// The `rundmc-shim` binary.
        shim: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime refused to start the process; `message` is its own.
    #[error("process {id} did not start: {message}")]
    StartFailed {
        /// The process id.
        id: String,
        /// The runtime's last logged error.
        message: String,
    },
    /// The supervisor ended without saying whether the process started.
    #[error("supervisor of process {id} exited ({status}) without a ready line: {detail}")]
    NoReady {
        /// The process id.
        id: String,
        /// The launcher's exit status.
        status: ExitStatus,
        /// The end of the supervisor's own log, `shim.log`.
        detail: String,
    },
    /// No ready line came in time; the supervisor was killed.
    #[error("supervisor of process {id} gave no ready line within {after:?}")]
    ReadyTimeout {
        /// The process id.
        id: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// A ready line that is not a `Ready` document.
    #[error("supervisor of process {id} wrote a bad ready line {line:?}: {source}")]
    BadReady {
        /// The process id.
        id: String,
        /// The line as read.
        line: String,
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// A JSON record of the process directory does not parse.
    #[error("{path}: {source}")]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The runtime's pid file does not hold a pid.
    #[error("{path}: not a pid: {text:?}")]
    BadPid {
        /// The pid file.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
    /// The directory has no `shim.json`: no supervisor was ever started in it.
    #[error("{dir} is not a process directory (no shim.json)")]
    NotAProcessDir {
        /// The directory.
        dir: PathBuf,
    },
    /// No supervisor holds the process's fifo open: the process has ended
    /// (or never started), so nothing was signalled or written.
    #[error("process {id} is not running: no supervisor reads {fifo}")]
    NotRunning {
        /// The process id.
        id: String,
        /// The fifo that nobody reads.
        fifo: PathBuf,
    },
    /// Watching the log directory for new lines failed.
    #[error("watching {path}: {source}")]
    Watch {
        /// The watched directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
}

impl ProcessError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ProcessError {
        let path = path.into();
        move |source| ProcessError::Io { path, source }
    }
}
