//! The OCI runtime: a narrow trait over what rundmc asks of runc (or crun),
//! and its implementation that drives the runtime binary. This room knows
//! runc's command line, its state directory and its JSON logs; it knows
//! nothing of depots, specs or reconciling.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

pub mod argv;
pub mod command;
pub mod error;
pub mod output;
pub mod runc;
pub mod state_dir;

pub use command::{CommandRunner, TokioRunner};
pub use error::RuntimeError;
pub use runc::Runc;

/// Where and how to run the runtime binary.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The runtime binary: `runc`, `crun`, or a path.
    pub binary: PathBuf,
    /// The runtime's state root (`--root`).
    pub root: PathBuf,
    /// Upper bound on any one call; the child is killed when it passes.
    pub timeout: Duration,
}

/// A container's status as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `runc create` is in progress.
    Creating,
    /// Created, init not yet started.
    Created,
    /// Init is running.
    Running,
    /// Frozen.
    Paused,
    /// Init has exited.
    Stopped,
}

/// One container as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The container id (our handle).
    pub id: String,
    /// Host pid of the container's init, when it has one.
    pub pid: Option<i32>,
    /// Lifecycle status.
    pub status: Status,
    /// The bundle directory it was created from.
    pub bundle: PathBuf,
}

/// Resource usage as `runc events --stats` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Total CPU time in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory usage in bytes.
    pub memory_usage_bytes: u64,
    /// Memory limit in bytes (`u64::MAX`-ish when unlimited).
    pub memory_limit_bytes: u64,
    /// Current number of tasks.
    pub pids_current: u64,
    /// Task limit, 0 when unlimited.
    pub pids_limit: u64,
}

impl From<crate::cgroup::Metrics> for Stats {
    /// Usage read from the cgroup in-process, in `runc events --stats`
    /// terms: an unlimited memory limit is `u64::MAX`, unlimited pids 0.
    fn from(m: crate::cgroup::Metrics) -> Self {
        Stats {
            cpu_usage_ns: m.cpu_usage_ns,
            memory_usage_bytes: m.memory_usage_bytes,
            memory_limit_bytes: m.memory_limit_bytes.unwrap_or(u64::MAX),
            pids_current: m.pids_current,
            pids_limit: m.pids_limit.unwrap_or(0),
        }
    }
}

/// An event from `runc events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The kernel's OOM killer acted in the container.
    Oom {
        /// The container id.
        id: String,
    },
    /// Any other event type, by name.
    Other {
        /// The container id.
        id: String,
        /// The event's `type` field.
        kind: String,
    },
}

/// What rundmc asks of an OCI runtime. Every call is bounded by the
/// configured timeout. Errors carry the runtime's own message.
pub trait OciRuntime: Send + Sync + 'static {
    /// `create` the container from `bundle`, with stdout and stderr on
    /// /dev/null and stdin on `init_stdin` (the runtime passes its stdio on
    /// to the container's init), else /dev/null.
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        init_stdin: Option<std::os::fd::OwnedFd>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// `run --detach`: [`OciRuntime::create`] and [`OciRuntime::start`] in
    /// one runtime process, with the init's stdio as `create` gives it.
    /// One runtime process fewer per container: what the containerizer
    /// uses, since nothing has to happen between the two (the network
    /// namespace is pinned before, and attached beside it).
    fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        init_stdin: Option<std::os::fd::OwnedFd>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// `start` a created container.
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// `kill` with a signal; `all` signals every process in the container.
    fn kill(
        &self,
        id: &str,
        signal: i32,
        all: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// `delete`; `force` kills a running container first.
    fn delete(
        &self,
        id: &str,
        force: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// `state`; `RuntimeError::NotFound` when the runtime has no such container.
    fn state(&self, id: &str) -> impl Future<Output = Result<State, RuntimeError>> + Send;
    /// Every container under the root.
    fn list(&self) -> impl Future<Output = Result<Vec<State>, RuntimeError>> + Send;
    /// One `events --stats` sample.
    fn stats(&self, id: &str) -> impl Future<Output = Result<Stats, RuntimeError>> + Send;
    /// `update` the container's cgroup limits in place.
    fn update(
        &self,
        id: &str,
        resources: &LinuxResources,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Stream the container's events until it goes away or the receiver is dropped.
    fn events(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<Event>, RuntimeError>> + Send;
    /// The command line of a detached `exec` of `process_json` into `id`,
    /// writing the process's host pid to `pid_file` and runtime errors as
    /// JSON to `log_file`. Pure: the process supervisor runs it, so that the
    /// process is its child and not the agent's.
    fn exec_argv(
        &self,
        id: &str,
        process_json: &Path,
        pid_file: &Path,
        log_file: &Path,
    ) -> Vec<OsString>;
}
