//! Errors from the OCI runtime adapter. Each names the verb and the container
//! id, and a failure carries the runtime's own last error message.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// What went wrong talking to the runtime.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The runtime binary could not be started.
    #[error("cannot run {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The call took longer than the configured timeout and was killed.
    #[error("{verb} {id}: runtime did not answer within {after:?}")]
    Timeout {
        /// The runtime verb, e.g. `create`.
        verb: &'static str,
        /// The container id.
        id: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// The runtime has no container with this id.
    #[error("container {id} does not exist in the runtime")]
    NotFound {
        /// The container id.
        id: String,
    },
    /// The runtime exited non-zero; `message` is its last logged error.
    #[error("{verb} {id}: {message}")]
    Failed {
        /// The runtime verb.
        verb: &'static str,
        /// The container id.
        id: String,
        /// The runtime's own message.
        message: String,
        /// Its exit code, when it exited.
        code: Option<i32>,
    },
    /// The runtime's output was not what its documentation says.
    #[error("{verb} {id}: cannot decode the runtime's output: {source}")]
    Decode {
        /// The runtime verb.
        verb: &'static str,
        /// The container id.
        id: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The container's cgroup, read in-process, could not be read.
    #[error("container {id}: {source}")]
    Cgroup {
        /// The container id.
        id: String,
        /// The cgroup failure, naming the file.
        #[source]
        source: crate::cgroup::CgroupError,
    },
    /// A file of the runtime's (state or log) could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// True when the container does not exist in the runtime, which makes
    /// destroy-like operations a success.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::NotFound { .. })
    }
}
