//! Bundle rules: the pure pipeline that turns a `ContainerSpec` into an OCI
//! runtime config, one rule per concern, applied in order. Everything the
//! rules need from the machine (mount flags of bind sources, resolved user)
//! is gathered beforehand into [`BundleInput`], so this room does no I/O and
//! is tested by pinning its output.

use std::path::PathBuf;

use oci_spec::runtime::Spec;
use serde_json::Value;

use crate::api::{ContainerSpec, Handle, Resources};

mod caps;
mod config;
mod process;
mod rules;
mod seccomp;
mod seccomp_table;

pub use caps::CapSet;
pub use config::{config_json, generate_without_seccomp};
pub use process::{ExecUser, ProcessInput, process_spec};
pub use rules::{
    DEFAULT_CAPABILITIES, DEFAULT_DEVICES, INIT_PATH, MASKED_PATHS, READONLY_PATHS, RULES,
    all_capabilities, hostname, limit_resources, wanted_capabilities,
};
pub use seccomp::{Profile as SeccompProfile, ProfileError as SeccompProfileError};

/// Everything the rules read. Built by the containerizer from the spec and
/// a few facts about the machine.
#[derive(Debug, Clone)]
pub struct BundleInput<'a> {
    /// The container's handle.
    pub handle: &'a Handle,
    /// The validated spec.
    pub spec: &'a ContainerSpec,
    /// The spec's parsed limits.
    pub resources: Resources,
    /// Host path of `rundmc-init`, bind-mounted read-only as PID 1.
    pub init_binary: PathBuf,
    /// The cgroup under which every container's cgroup is made, e.g. `rundmc`.
    pub cgroup_parent: String,
    /// For each of `spec.mounts`, the flags of the mount holding its source
    /// that the bind must keep (`nosuid`, `nodev`, `noexec`).
    pub bind_flags: Vec<Vec<String>>,
    /// The hard open-files limit (the agent's own; a container cannot exceed it).
    pub nofile_hard: u64,
    /// The agent's bounding set: no container gets a capability beyond it.
    pub bounding_set: CapSet,
    /// The container's pinned network namespace, when it has a network of
    /// its own (CNI); `None`: a fresh one from the runtime, or the host's.
    pub netns: Option<PathBuf>,
    /// Files written for the container, bind-mounted over the image's:
    /// (path in the container, path on the host).
    pub etc_files: Vec<(String, PathBuf)>,
    /// The host ids of the container's own user namespace
    /// (`hostUsers: false`); `None`: the host's.
    pub userns: Option<crate::containerizer::userns::IdRange>,
    /// The spec's Localhost seccomp profile, read from the node; `None`
    /// for the other profile types.
    pub seccomp_localhost: Option<SeccompProfile>,
}

/// A bundle rule: one concern's part of the config.
pub type Rule = fn(&BundleInput<'_>, &mut Spec);

/// Run every rule, in order, over an empty config.
pub fn generate(input: &BundleInput<'_>) -> Spec {
    let mut spec = rules::empty_spec();
    for (_, rule) in RULES {
        rule(input, &mut spec);
    }
    spec
}

/// The config as JSON with every set-valued array sorted, so that the same
/// input always gives the same bytes (oci-spec keeps capabilities in
/// hash sets).
pub fn canonical_json(spec: &Spec) -> Value {
    let mut value = serde_json::to_value(spec).unwrap_or(Value::Null);
    sort_capability_sets(&mut value);
    value
}

fn sort_capability_sets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "capabilities" {
                    if let Value::Object(sets) = v {
                        for set in sets.values_mut() {
                            if let Value::Array(items) = set {
                                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                            }
                        }
                    }
                } else {
                    sort_capability_sets(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sort_capability_sets),
        _ => {}
    }
}

#[cfg(test)]
mod secctx_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod userns_tests;
