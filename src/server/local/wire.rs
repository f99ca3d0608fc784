//! What the local API sends and takes, as JSON (docs/api.md). The CLI reads
//! the same types, so both ends agree by construction.

use serde::{Deserialize, Serialize};

use crate::api::{ContainerSpec, ContainerStatus};

/// The API's version prefix.
pub const V1: &str = "/v1";

/// One row of `GET /v1/containers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// What `get`, `logs` and `exec` take: the handle of a file-sourced
    /// container, `namespace/name` of a resource.
    pub name: String,
    /// The container's handle (its runc id).
    pub handle: String,
    /// Where it was declared: `file:<path>#<document>`, `kube:<ns>/<name>`,
    /// or `-` for a container in the depot that nothing declares.
    pub source: String,
    /// The reported phase (`Unknown` before the first report).
    pub phase: String,
    /// The Ready condition, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Restarts of the main process.
    pub restarts: i64,
    /// When the container was made (RFC 3339), when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The image reference, or the rootfs directory.
    pub image: String,
    /// The container's first address, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `GET /v1/containers/{name}`: everything `get` and `describe` show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    /// The row `ps` shows.
    pub summary: Summary,
    /// The declared spec (the depot's when nothing declares it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ContainerSpec>,
    /// The status last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ContainerStatus>,
    /// Why the declaration cannot be applied, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The runtime's status (`running`, `stopped`, ...), when it knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_status: Option<String>,
    /// Host pid of the container's init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_pid: Option<i32>,
    /// Every process the container has run and keeps a record of.
    #[serde(default)]
    pub processes: Vec<ProcessRow>,
    /// The newest events about it (file-sourced containers: the event log).
    #[serde(default)]
    pub events: Vec<EventRow>,
}

/// One process of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRow {
    /// Its id (`main-3`, `p-...` for an exec).
    pub id: String,
    /// Host pid, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// `Running`, `Exited` or `Lost`.
    pub state: String,
    /// Exit code, once exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When it ended, or why it is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    /// RFC 3339.
    pub time: String,
    /// The container's handle, or a manifest path.
    pub handle: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// One CamelCase word.
    pub reason: String,
    /// Detail.
    pub message: String,
}

/// Why a request failed; the body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    /// What kind of failure (see [`ErrorKind`]).
    pub kind: ErrorKind,
    /// What went wrong, naming the container or parameter.
    pub message: String,
}

/// The kinds of failure the API reports, each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// No such container (404).
    NotFound,
    /// A bad parameter or body (400).
    BadRequest,
    /// The container cannot do it in its state (409).
    Conflict,
    /// The runtime could not start the process (422): the message is the runtime's.
    StartFailed,
    /// The agent failed (500).
    Internal,
}

impl ErrorKind {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::BadRequest => 400,
            ErrorKind::Conflict => 409,
            ErrorKind::StartFailed => 422,
            ErrorKind::Internal => 500,
        }
    }
}

impl ApiError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// No container called `name`.
    pub fn not_found(name: &str) -> Self {
        Self::new(ErrorKind::NotFound, format!("no such container: {name}"))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The protocol named in `Upgrade:` for exec and attach streams.
pub const STREAM_PROTOCOL: &str = "rundmc-stream.v1";

/// `POST /v1/containers/{name}/exec`: what to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRequest {
    /// Command and arguments.
    pub args: Vec<String>,
    /// A terminal (stdout and stderr then arrive as one stream).
    #[serde(default)]
    pub tty: bool,
    /// Pass the client's stdin.
    #[serde(default)]
    pub stdin: bool,
    /// `uid`, `uid:gid` or a name from the image's /etc/passwd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `NAME=VALUE` pairs after the container's env.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// The terminal's rows, with `tty`.
    #[serde(default)]
    pub rows: u16,
    /// The terminal's columns, with `tty`.
    #[serde(default)]
    pub cols: u16,
}

/// How a process ended: the payload of the last frame of an exec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitStatus {
    /// The exit code (128 + the signal's number when a signal ended it).
    pub exit_code: i32,
    /// The process's id in the container (`describe` lists it).
    pub process: String,
    /// Why the code is not the process's own (its supervisor was lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One row of `GET /v1/stats`: what a container uses now, read from its
/// cgroup and network namespace in-process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsRow {
    /// As `ps` names it.
    pub name: String,
    /// When it was read, nanoseconds since the epoch (CPU % is the growth
    /// of `cpuUsageNs` over the growth of this between two reads).
    pub read_at_ns: u64,
    /// CPU time used, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes; none when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// Tasks.
    pub pids: u64,
    /// Task limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u64>,
    /// Bytes received and sent on its network, when it has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rx_tx: Option<(u64, u64)>,
    /// Bytes read from and written to block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_read_write: Option<(u64, u64)>,
}
