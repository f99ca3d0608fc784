//! The `Container` resource: the one manifest that works both dropped into the
//! watched directory and applied with `kubectl`. Field names follow Kubernetes
//! conventions; doc comments become the CRD's `kubectl explain` text.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::pods::*;
pub use super::probe::*;
pub use super::security::*;

/// Desired state of a container on one node.
// The derive's repeated printcolumn(...) arguments trip this lint.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "rundmc.io",
    version = "v1alpha1",
    kind = "Container",
    namespaced,
    status = "ContainerStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "ctr",
    doc = "An OCI container that the rundmc agent on spec.nodeName keeps running.",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Restarts",
        type_ = "integer",
        json_path = ".status.restartCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Handle",
        type_ = "string",
        json_path = ".status.handle",
        priority = "1"
    ),
    printcolumn(
        name = "IP",
        type_ = "string",
        json_path = ".status.podIP",
        priority = "1"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        priority = "1"
    ),
    printcolumn(
        name = "Rootfs",
        type_ = "string",
        json_path = ".spec.rootfs",
        priority = "1"
    ),
    selectable = ".spec.nodeName"
)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// The node whose agent runs this container (custom resources only; ignored in files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// An OCI image to run, pulled from its registry: `busybox`,
    /// `ghcr.io/org/app:1.2`, `registry:5000/app@sha256:...`. Each container
    /// gets its own writable overlay on the image's layers. Exactly one of
    /// `image` and `rootfs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When to pull `image`: Always, IfNotPresent or Never. Defaults to
    /// Always for `:latest` or no tag, IfNotPresent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// `kubernetes.io/dockerconfigjson` Secrets in the resource's namespace
    /// with credentials for `image`'s registry (custom resources only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Absolute path of a read-only image directory on the node. Each container
    /// gets its own writable overlay on top of it. Exactly one of `image` and
    /// `rootfs`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rootfs: String,
    /// The container's hostname. Defaults to the handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Environment variables for every process in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// The main process. Without it the container idles on its init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSpec>,
    /// Processes run to completion, in order, before the main process; run
    /// again only when the container is made again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_processes: Vec<InitProcess>,
    /// Processes beside the main one, each restarted on its own: started
    /// before it (after the init processes), stopped after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<Sidecar>,
    /// Peas (sidecars with a rootfs of their own) join the container's PID
    /// namespace too, and see its processes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub share_process_namespace: bool,
    /// When to restart the main process after it exits: Always, OnFailure or Never.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Running, or Stopped: processes stopped, container kept.
    #[serde(default)]
    pub state: DesiredState,
    /// Bind mounts from the node into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Resource limits, applied in place when only they change.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// All capabilities and no masked paths. Needs --allow-privileged for custom resources.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// How the container's processes are confined: capabilities, seccomp,
    /// user and groups, read-only root, sysctls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Run in the node's user namespace (true), or in a user namespace of
    /// the container's own with a 65,536-id range the agent assigns (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_users: Option<bool>,
    /// Share the node's network namespace instead of a private one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    /// The CNI network to attach to: a network's name from the node's CNI
    /// configuration, or `none` for loopback only. Defaults to the node's
    /// default network (the first configuration by file name), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Ports of the container to publish on the node (CNI portmap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// DNS settings merged over the node's resolv.conf, as a pod's dnsConfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    /// Free key/values, reported back in status and info.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// Seconds between SIGTERM and SIGKILL when stopping. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
}

/// One environment variable.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Variable value.
    #[serde(default)]
    pub value: String,
}

/// A port of the container, published on the node when `hostPort` is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// A name for the port, unique in the container, that probes can
    /// refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port the container listens on.
    pub container_port: i32,
    /// The node's port mapped to it; none when only declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i32>,
    /// TCP, UDP or SCTP. Defaults to TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The node's address to bind `hostPort` on. Defaults to all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// A port's protocol.
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum Protocol {
    /// TCP.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

/// DNS settings, as a pod's `dnsConfig`: merged over the node's resolv.conf.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct DnsConfig {
    /// Name servers, after the node's (at most 3 in all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Search domains, after the node's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
    /// Resolver options; one of a name replaces the node's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<DnsOption>,
}

/// One resolver option, `ndots:2` as `{name: ndots, value: "2"}`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct DnsOption {
    /// Its name.
    pub name: String,
    /// Its value, for options that take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// An address of the container.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PodIp {
    /// The address.
    pub ip: String,
}

/// A Secret in the resource's own namespace, by name.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectReference {
    /// The Secret's name.
    pub name: String,
}

/// A process to run in the container. Its argv follows Kubernetes'
/// command/args rules: `command` replaces the image's Entrypoint and `args`
/// its Cmd; `args` alone runs after the Entrypoint; neither runs
/// Entrypoint + Cmd. Without an image, the argv is `command` + `args`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessSpec {
    /// The executable and its first arguments, in place of the image's
    /// Entrypoint; looked up in the container's PATH.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments, in place of the image's Cmd. Without `command` or an image,
    /// the first is the executable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Working directory inside the container. Defaults to `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `uid:gid`, `uid`, or a user name from the rootfs' /etc/passwd. Defaults to root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Extra environment for this process, after the container's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Until it first succeeds, the other probes wait; when it fails
    /// `failureThreshold` times, the process is restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    /// When it fails `failureThreshold` times in a row, the process is
    /// killed and restarted as the restart policy says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// The container is Ready only while it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Hooks run after the process starts and before it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// Keep the process's stdin open for `rundmc attach -i` (Kubernetes'
    /// `stdin`). Without it the process's stdin is `/dev/null`. Main
    /// process only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// With `stdin`: close the process's stdin (it reads end of file) when
    /// the first attach session that sent stdin detaches, until the next
    /// run (Kubernetes' `stdinOnce`). Without it stdin stays open across
    /// attach sessions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_once: bool,
    /// A terminal for the process (Kubernetes' `tty`): not supported, and
    /// refused by validation; `rundmc exec -t` gives an interactive one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
}

/// When the main process is restarted after it exits.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestartPolicy {
    /// Always restart, with crash-loop backoff.
    #[default]
    Always,
    /// Restart only after a non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

/// What the container should be doing.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DesiredState {
    /// The main process runs.
    #[default]
    Running,
    /// Every process but init is stopped; the container and its files are kept.
    Stopped,
}

/// A bind mount from the node.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Absolute path on the node.
    pub source: String,
    /// Absolute path in the container.
    pub destination: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// Resource limits. Quantities use Kubernetes notation (`64Mi`, `500m`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Limits {
    /// Memory limit in bytes, e.g. `64Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// CPU limit in cores, e.g. `500m` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Maximum number of processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

impl Limits {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpu.is_none() && self.pids.is_none()
    }
}

/// Observed state, written by rundmc only.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// Pending, Creating, Running, Stopped, Succeeded, Failed or Terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready and friends, Kubernetes-style.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The container's handle: its runc id and depot directory name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// How many times the main process was restarted.
    #[serde(default)]
    pub restart_count: i64,
    /// How the main process last ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_termination: Option<Termination>,
    /// The main process's run that is running now. Events say that the
    /// main process started; this says which run, and its pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_process: Option<MainProcess>,
    /// Every process of a container with init processes or sidecars: its
    /// state, restarts, last termination and readiness.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessStatus>,
    /// The container's first address on its network.
    #[serde(rename = "podIP", default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// Every address of the container on its network (IPv4 and IPv6).
    #[serde(rename = "podIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIp>,
    /// The image the container runs, as its spec named it, normalised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image's id: the digest of the manifest it was made from.
    #[serde(rename = "imageID", default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Human-readable detail about the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The spec's properties, reported back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// The container's lifecycle phase.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Declared, not yet acted on.
    Pending,
    /// Being created.
    Creating,
    /// The main process (or the idle init) is running.
    Running,
    /// Stopped on request; the container is kept.
    Stopped,
    /// The main process exited 0 and will not be restarted.
    Succeeded,
    /// The main process failed and will not be restarted, or the container cannot be made.
    Failed,
    /// Being destroyed.
    Terminating,
}

/// A Kubernetes-style condition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. Ready.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// One-word CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// The main process's current run.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MainProcess {
    /// The run's process id in the container: `main-<n>` for run n.
    pub id: String,
    /// Its pid on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

/// How a process ended.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Termination {
    /// Exit code; 128+signal when killed by a signal.
    pub exit_code: i32,
    /// Signal name when killed by a signal, e.g. SIGKILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Completed, Error, OOMKilled, StartError or Lost.
    pub reason: String,
    /// Detail, e.g. the runtime's message when the process never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

impl ContainerStatus {
    /// This status as observed at `generation`: the status and every
    /// condition. A mirror's generation is the API server's count of its
    /// spec changes, which a restarted agent cannot derive from the file.
    pub fn at_generation(&self, generation: i64) -> ContainerStatus {
        let mut status = self.clone();
        status.observed_generation = Some(generation);
        for condition in &mut status.conditions {
            condition.observed_generation = Some(generation);
        }
        status
    }
}

/// When the agent pulls a container's image, as Kubernetes' `imagePullPolicy`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum PullPolicy {
    /// Resolve the reference against the registry at every create.
    Always,
    /// Pull only when no image of that name is on the node.
    IfNotPresent,
    /// Never pull: the image must be on the node (`rundmc image import`).
    Never,
}
