//! Image vocabulary every room shares: what an image's config gives its
//! containers ([`ImageDefaults`]), which image a container was made from
//! ([`ImageUse`]), and how a spec's `command`/`args` combine with the
//! image's Entrypoint and Cmd, as Kubernetes does. Pure data.

use serde::{Deserialize, Serialize};

/// The defaults an image's config gives its containers (OCI image config:
/// `Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageDefaults {
    /// `Entrypoint`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `WorkingDir`; `None` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `User`; `None` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The image a container was made from, as its depot record keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageUse {
    /// The normalised reference the spec named (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The image's id: its manifest's digest, `sha256:<hex>`.
    pub id: String,
    /// What its config gives the container.
    #[serde(default)]
    pub defaults: ImageDefaults,
}
