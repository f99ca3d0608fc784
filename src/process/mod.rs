//! Per-process supervision from the agent's side. Each process a container
//! runs beyond its init is started under a `rundmc-shim` supervisor that
//! outlives the agent; this room starts supervisors ([`Tracker::spawn`]),
//! rebuilds its view of a process from its directory alone
//! ([`Process::attach`]), awaits exits on the supervisor's pidfd
//! ([`Process::wait`]), signals through the supervisor ([`Process::signal`]),
//! reads and follows logs ([`logs`]) and ends every supervisor of a destroyed
//! container ([`cleanup`]).
//!
//! The files of a process directory and who writes them are defined in
//! [`rundmc_shim::protocol`]. This room never runs the runtime itself (the
//! supervisor does, with the argv the caller built), never writes
//! `process.json` (the containerizer does), and keeps no state of its own:
//! everything is read back from the directory.

mod error;
mod files;
mod handle;
pub mod logs;
mod shim;
mod tracker;

pub use error::ProcessError;
pub use handle::Process;
pub use logs::{FollowFrom, Follower, LogLine};
pub use rundmc_shim::cri::Stream;
pub use rundmc_shim::protocol::ExitRecord;
pub use tracker::{
    CleanupReport, DEFAULT_READY_TIMEOUT, Launch, ProcessInfo, Tracker, cleanup, list,
};

/// How a process ended, as [`Process::wait`] learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The supervisor recorded its exit (or that it never started).
    Exited(ExitRecord),
    /// The supervisor is gone and recorded nothing.
    Lost {
        /// Why it is lost, naming the supervisor.
        reason: String,
    },
}

/// Where a process is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcState {
    /// Its supervisor runs and has recorded no exit.
    Running,
    /// It ended; see the record.
    Exited(ExitRecord),
    /// Its supervisor is gone and recorded nothing.
    Lost {
        /// Why it is lost.
        reason: String,
    },
}

impl Process {
    /// Every record kept in its log, oldest first.
    pub fn logs(&self) -> Result<Vec<LogLine>, ProcessError> {
        logs::read_all(self.dir())
    }

    /// Follows its log; see [`Follower`].
    pub fn follow(&self, from: FollowFrom) -> Result<Follower, ProcessError> {
        Follower::new(self.dir(), from)
    }
}
