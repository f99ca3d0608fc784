//! The process directory. One per process, at
//! `<depot>/<handle>/processes/<id>/`. Everything an agent needs to attach to
//! a process is in it, so a freshly started agent can rebuild its view from
//! the files alone.
//!
//! | file           | written by | holds                                                   |
//! |----------------|------------|---------------------------------------------------------|
//! | `process.json` | agent      | the OCI process spec handed to `runc exec --process`    |
//! | `shim.json`    | shim       | [`ShimRecord`]: the supervisor's pid and start time     |
//! | `pid`          | runtime    | the process's host pid (`runc exec --pid-file`)          |
//! | `output.log`   | shim       | stdout and stderr in the CRI log format, rotated to `.1`.. |
//! | `stdin`        | shim       | a fifo feeding the process's stdin, when asked for      |
//! | `control`      | shim       | a fifo taking [`Command`] lines from the agent          |
//! | `runtime.log`  | runtime    | the runtime's JSON log for the exec                     |
//! | `exit.json`    | shim       | [`ExitRecord`], written atomically as the last act      |
//!
//! The shim is started as `rundmc-shim [OPTIONS] --dir DIR -- RUNTIME-ARGV...`.
//! It detaches (a new session, reparented away from the agent), becomes a
//! child subreaper, runs the runtime's detached exec and adopts the process.
//! It then writes one [`Ready`] line as JSON to its original stdout and
//! closes it. The agent reads that line to learn the pid or why it failed.

use serde::{Deserialize, Serialize};

/// The OCI process spec, written by the agent.
pub const PROCESS_JSON: &str = "process.json";
/// The supervisor's [`ShimRecord`].
pub const SHIM_JSON: &str = "shim.json";
/// The process's host pid, written by the runtime.
pub const PID_FILE: &str = "pid";
/// The current log file; rotated files are `output.log.1`, `output.log.2`, ...
pub const OUTPUT_LOG: &str = "output.log";
/// The stdin fifo.
pub const STDIN_FIFO: &str = "stdin";
/// The control fifo.
pub const CONTROL_FIFO: &str = "control";
/// The runtime's JSON log.
pub const RUNTIME_LOG: &str = "runtime.log";
/// The [`ExitRecord`].
pub const EXIT_JSON: &str = "exit.json";

/// Default size at which `output.log` is rotated.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 << 20;
/// Default number of log files kept, the current one included.
pub const DEFAULT_LOG_MAX_FILES: u32 = 5;

/// Who supervises the process. The start time (field 22 of
/// `/proc/<pid>/stat`, in clock ticks since boot) tells a live supervisor
/// from an unrelated process that reused its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShimRecord {
    /// The supervisor's pid.
    pub pid: i32,
    /// The supervisor's start time in clock ticks since boot.
    pub start_time: u64,
}

/// The line the shim writes to its original stdout once the process runs, or
/// once it knows it cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Ready {
    /// The process runs with this host pid.
    Started {
        /// Host pid of the process.
        pid: i32,
    },
    /// The runtime could not start it; the message is the runtime's own.
    Failed {
        /// Why.
        message: String,
    },
}

/// A command the agent writes to the control fifo, one JSON object a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Command {
    /// Send this signal to the process, through its pidfd.
    Signal {
        /// Signal number.
        signal: i32,
    },
}

/// How the process ended, written by the shim after it reaped the process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// The exit code, or 128 + the signal number when a signal killed it.
    pub exit_code: i32,
    /// The signal that killed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// That signal's name, e.g. `SIGTERM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_name: Option<String>,
    /// The container's OOM-kill count rose while the process ran and it died of SIGKILL.
    #[serde(default)]
    pub oom_killed: bool,
    /// When it ended, RFC 3339 with nanoseconds, UTC.
    pub finished_at: String,
}
