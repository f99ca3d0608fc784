//! The process directory. One per process: everything an agent needs to
//! attach to a process is in it, so a freshly started agent can rebuild its
//! view from the files alone. The agent keeps it on a tmpfs, at
//! `<state-dir>/bundles/<handle>/processes/<id>/`: nothing in it outlives
//! the process's supervisor in any use, and a disk's inode allocator would
//! pay for every file made and removed (issue 19). The process's output,
//! which outlives it (`kubectl logs --previous`), goes to a log directory of
//! its own on disk (`--log-dir`, `<depot>/<handle>/processes/<id>/`), named
//! in `shim.json`; without `--log-dir` it stays in the process directory.
//!
//! | file           | written by | holds                                                    |
//! |----------------|------------|----------------------------------------------------------|
//! | `process.json` | agent      | the OCI process spec handed to `runc exec --process`     |
//! | `shim.json`    | shim       | [`ShimRecord`]: the supervisor's pid and start time      |
//! | `shim.log`     | agent opens, shim writes | the supervisor's own stderr (diagnostics) |
//! | `pid`          | runtime    | the process's host pid (`runc exec --pid-file`)           |
//! | `output.log`   | shim       | stdout and stderr in the CRI log format ([`crate::cri`]), rotated to `.1`..; in the log directory |
//! | `stdin`        | shim       | a fifo feeding the process's stdin, with `--stdin` or `--keep-stdin-open` |
//! | `control`      | shim       | a fifo taking [`Command`] lines from the agent           |
//! | `runtime.log`  | runtime    | the runtime's JSON log for the exec                      |
//! | `exit.json`    | shim       | [`ExitRecord`], written atomically as the last act       |
//!
//! # The supervisor's life
//!
//! The shim is started as
//! `rundmc-shim [--stdin] [--keep-stdin-open] [--log-max-bytes N] [--log-max-files N] [--oom-file PATH] [--log-dir DIR] --dir DIR -- RUNTIME-ARGV...`
//! where the runtime argv is a complete *detached* exec, e.g.
//! `runc --root R --log DIR/runtime.log --log-format json exec --detach --pid-file DIR/pid --process DIR/process.json ID`.
//!
//! 1. It forks; the original process (the launcher) exits at once. The child
//!    calls `setsid`, becomes a child subreaper and writes `shim.json`
//!    (temp file, rename; no fsync: it cannot outlive a reboot).
//! 2. It makes the stdout/stderr pipes, the `control` fifo and, with
//!    `--stdin`, the `stdin` fifo (else the process's stdin is `/dev/null`),
//!    and runs the runtime argv with the process's stdio on those pipes.
//! 3. When the runtime exits the process is re-parented to the shim (it is
//!    the subreaper). The shim reads `pid`, opens a pidfd on it and writes one
//!    [`Ready`] JSON line to its original stdout, then closes it. When the
//!    runtime failed, the line is [`Ready::Failed`] with the runtime's last
//!    logged error, `exit.json` says [`ExitRecord::start_error`], and the
//!    shim exits.
//! 4. It drains the pipes into `output.log` for as long as the process runs,
//!    whether anybody reads or not, carries out [`Command`]s from `control`
//!    through the pidfd, and copies what writers put into `stdin` to the
//!    process; when the first writer of `stdin` closes, the process sees EOF.
//!    With `--keep-stdin-open` (a spec's `stdin: true` without `stdinOnce`)
//!    the shim opens the fifo read-write, so it is a writer itself: writers
//!    (attach sessions, an agent restarted meanwhile) come and go, and the
//!    process never sees EOF while it runs.
//! 5. When the process exits the shim reaps it, drains what output is left
//!    (without waiting for end of file: the process's own children may hold
//!    the pipes), closes `control` and `stdin`, writes `exit.json` atomically (temp file, rename; no fsync:
//!    like the process, it cannot outlive a reboot), reaps any other child it
//!    adopted and exits 0.
//!
//! The agent's side: `control` and `stdin` are opened `O_WRONLY|O_NONBLOCK`;
//! `ENXIO` means no shim holds them open, i.e. the process has ended (once
//! `exit.json` is there, `control` is always closed). The
//! shim's liveness is its pid *and* start time from `shim.json`, checked
//! against `/proc/<pid>/stat` ([`crate::procstat`]).

use serde::{Deserialize, Serialize};

/// The OCI process spec, written by the agent.
pub const PROCESS_JSON: &str = "process.json";
/// The supervisor's [`ShimRecord`].
pub const SHIM_JSON: &str = "shim.json";
/// The supervisor's own stderr; the agent opens it for the shim.
pub const SHIM_LOG: &str = "shim.log";
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

/// The exit code recorded when the runtime could not start the process,
/// as containerd and the kubelet report a start error.
pub const START_ERROR_EXIT_CODE: i32 = 128;

/// Who supervises the process. The start time (field 22 of
/// `/proc/<pid>/stat`, in clock ticks since boot) tells a live supervisor
/// from an unrelated process that reused its pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShimRecord {
    /// The supervisor's pid.
    pub pid: i32,
    /// The supervisor's start time in clock ticks since boot.
    pub start_time: u64,
    /// Where `output.log` is, when not in the process directory
    /// (`--log-dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<std::path::PathBuf>,
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
    /// Send this signal to the process, through its pidfd: a process that
    /// has exited (even one whose pid was reused) is never signalled.
    Signal {
        /// Signal number.
        signal: i32,
    },
}

/// How the process ended, written by the shim after it reaped the process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// The exit code, or 128 + the signal number when a signal killed it,
    /// or [`START_ERROR_EXIT_CODE`] when it never started.
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
    /// Set when the process never started: the runtime's error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_error: Option<String>,
}

impl ExitRecord {
    /// Whether the runtime ever started the process.
    pub fn started(&self) -> bool {
        self.start_error.is_none()
    }
}

/// The name of the `n`th rotated log file (`n` ≥ 1): `output.log.n`.
pub fn rotated_log_name(n: u32) -> String {
    format!("{OUTPUT_LOG}.{n}")
}

/// All log file names that may exist with `max_files` kept, oldest first:
/// `output.log.{max_files-1}` .. `output.log.1`, `output.log`.
pub fn log_names_oldest_first(max_files: u32) -> Vec<String> {
    let mut names: Vec<String> = (1..max_files.max(1)).rev().map(rotated_log_name).collect();
    names.push(OUTPUT_LOG.to_owned());
    names
}

/// The renames that rotate the logs when `max_files` are kept, in the order
/// to perform them: the oldest kept file is overwritten by the one before
/// it, and so on down to `output.log` → `output.log.1`. Empty when only one
/// file is kept (the current file is then truncated instead).
pub fn rotation_renames(max_files: u32) -> Vec<(String, String)> {
    let oldest = max_files.saturating_sub(1);
    let mut renames: Vec<(String, String)> = (1..oldest)
        .rev()
        .map(|n| (rotated_log_name(n), rotated_log_name(n + 1)))
        .collect();
    if oldest >= 1 {
        renames.push((OUTPUT_LOG.to_owned(), rotated_log_name(1)));
    }
    renames
}

/// Whether a record of `incoming` bytes must go to a fresh file, given the
/// current file's `size` and the limit. A record larger than the limit still
/// goes whole into a file of its own.
pub fn must_rotate(size: u64, incoming: u64, max_bytes: u64) -> bool {
    size > 0 && size.saturating_add(incoming) > max_bytes
}

/// The message of the last `"level":"error"` line of a runtime JSON log
/// (runc's and crun's `--log-format json`), if any.
pub fn last_runtime_error(log: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Line {
        level: Option<String>,
        msg: Option<String>,
    }
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .find(|l| matches!(l.level.as_deref(), Some("error" | "fatal" | "panic")))
        .and_then(|l| l.msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_shifts_oldest_first() {
        let r = rotation_renames(4);
        let names: Vec<(&str, &str)> = r.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            names,
            [
                ("output.log.2", "output.log.3"),
                ("output.log.1", "output.log.2"),
                ("output.log", "output.log.1"),
            ]
        );
        assert_eq!(
            rotation_renames(2),
            [("output.log".into(), "output.log.1".into())]
        );
        assert!(rotation_renames(1).is_empty());
        assert!(rotation_renames(0).is_empty());
    }

    #[test]
    fn log_names_are_oldest_first() {
        assert_eq!(
            log_names_oldest_first(3),
            ["output.log.2", "output.log.1", "output.log"]
        );
        assert_eq!(log_names_oldest_first(1), ["output.log"]);
        assert_eq!(log_names_oldest_first(0), ["output.log"]);
    }

    #[test]
    fn rotates_only_when_the_limit_would_pass() {
        assert!(!must_rotate(0, 500, 100), "an empty file takes any record");
        assert!(!must_rotate(50, 50, 100), "exactly at the limit stays");
        assert!(must_rotate(50, 51, 100));
        assert!(!must_rotate(u64::MAX - 1, 0, u64::MAX));
    }

    #[test]
    fn finds_the_last_runtime_error() {
        let log = concat!(
            r#"{"level":"info","msg":"starting","time":"t"}"#,
            "\n",
            r#"{"level":"error","msg":"first","time":"t"}"#,
            "\n",
            "not json\n",
            r#"{"level":"error","msg":"exec failed: container not running","time":"t"}"#,
            "\n",
            r#"{"level":"debug","msg":"after","time":"t"}"#,
            "\n",
        );
        assert_eq!(
            last_runtime_error(log).as_deref(),
            Some("exec failed: container not running")
        );
        assert_eq!(
            last_runtime_error("{\"level\":\"info\",\"msg\":\"x\"}"),
            None
        );
    }

    #[test]
    fn exit_record_round_trips_and_marks_start_errors() {
        let rec = ExitRecord {
            exit_code: START_ERROR_EXIT_CODE,
            signal: None,
            signal_name: None,
            oom_killed: false,
            finished_at: "2024-01-01T00:00:00.000000000Z".into(),
            start_error: Some("no such container".into()),
        };
        let json = serde_json::to_string(&rec).unwrap();
        assert!(
            json.contains("\"startError\":\"no such container\""),
            "{json}"
        );
        let back: ExitRecord = serde_json::from_str(&json).unwrap();
        assert!(!back.started());
        let old: ExitRecord = serde_json::from_str(r#"{"exitCode":0,"finishedAt":"x"}"#).unwrap();
        assert!(old.started());
    }
}
