//! `spec.securityContext` and its parts: how a container is confined, in
//! Kubernetes' field names and meanings (a pod's and a container's
//! securityContext folded into one, as a rundmc container is both). Pure
//! data; what each field does to the OCI config lives in the bundle rules.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the container's processes are confined. Every field is optional;
/// unset fields keep rundmc's defaults (containerd's: its capability set,
/// its seccomp profile, no_new_privs, masked /proc paths).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// Capabilities to add to or drop from the default set. `ALL` in
    /// `drop` drops every one, before `add` is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Whether a process may gain more privileges than its parent
    /// (setuid binaries, file capabilities). False sets no_new_privs.
    /// Defaults to false, unless the container is privileged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    /// Mount the container's root filesystem read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    /// The uid every process runs as, over the image's user and
    /// `process.user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    /// The gid every process runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    /// Refuse to start a process whose user is root (uid 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    /// Extra groups for every process, after its primary group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supplemental_groups: Vec<i64>,
    /// Default masks /proc paths (containerd's list); Unmasked does not.
    /// Unmasked needs `hostUsers: false`, as in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc_mount: Option<ProcMountType>,
    /// Namespaced kernel parameters to set in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysctls: Vec<Sysctl>,
    /// The seccomp filter. Defaults to RuntimeDefault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
}

/// Capabilities added to and dropped from the default set, by their
/// names without `CAP_` (`NET_ADMIN`), as in Kubernetes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Capabilities {
    /// Capabilities to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Capabilities to drop; `ALL` drops every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// Which /proc paths are masked.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ProcMountType {
    /// containerd's masked and read-only /proc paths.
    #[default]
    Default,
    /// No /proc path masked.
    Unmasked,
}

/// One kernel parameter.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Sysctl {
    /// Its name, `net.ipv4.ip_unprivileged_port_start` or with slashes.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A seccomp filter, as Kubernetes' `seccompProfile`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeccompProfile {
    /// RuntimeDefault, Unconfined or Localhost.
    #[serde(rename = "type")]
    pub type_: SeccompProfileType,
    /// For Localhost: the profile's path, relative to the agent's
    /// `--seccomp-profile-root`, in the OCI seccomp JSON format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

/// The kind of seccomp filter.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SeccompProfileType {
    /// rundmc's built-in profile, containerd's and Moby's default.
    #[default]
    RuntimeDefault,
    /// No filter. From a custom resource, needs `--allow-unconfined-seccomp`.
    Unconfined,
    /// A profile file on the node, named by `localhostProfile`.
    Localhost,
}
