//! The OCI process spec of a process run in a container with `runc exec`:
//! the container's env and capabilities, then the process's own.

use std::path::PathBuf;

use oci_spec::runtime::{Process, User};

use super::caps::CapSet;
use super::rules::{DEFAULT_PATH, capability_sets, nofile_rlimits, wanted_capabilities};
use crate::api::{ContainerSpec, EnvVar, secctx};

/// A user resolved to ids (from `uid:gid`, or from the rootfs' /etc/passwd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Home directory, for `HOME`, when known.
    pub home: Option<String>,
}

impl ExecUser {
    /// root, home /root.
    pub fn root() -> Self {
        Self {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            home: Some("/root".into()),
        }
    }

    /// This user with `runAsGroup` as its group and `supplementalGroups`
    /// after its own; `runAsUser` is applied before, as the user resolved.
    pub fn with_context(mut self, container: &ContainerSpec) -> Self {
        let (_, gid, groups) = secctx::ids(container);
        if let Some(gid) = gid {
            self.gid = gid;
        }
        for g in groups {
            if !self.additional_gids.contains(&g) {
                self.additional_gids.push(g);
            }
        }
        self
    }
}

/// What one process needs beyond its container's spec.
#[derive(Debug, Clone)]
pub struct ProcessInput<'a> {
    /// The container's spec (env, privileged).
    pub container: &'a ContainerSpec,
    /// Command and arguments.
    pub args: &'a [String],
    /// The process's own env, after the container's.
    pub env: &'a [EnvVar],
    /// Working directory, `/` when unset.
    pub working_dir: Option<&'a str>,
    /// The resolved user, `securityContext`'s ids applied
    /// ([`ExecUser::with_context`]).
    pub user: ExecUser,
    /// The hard open-files limit to give it.
    pub nofile_hard: u64,
    /// The agent's bounding set, which caps the process's capabilities.
    pub bounding_set: CapSet,
}

/// The process.json for `runc exec --process`.
pub fn process_spec(input: &ProcessInput<'_>) -> Process {
    let mut p = Process::default();
    p.set_terminal(Some(false));
    p.set_args(Some(input.args.to_vec()));
    p.set_env(Some(env(input)));
    p.set_cwd(PathBuf::from(input.working_dir.unwrap_or("/")));
    let mut user = User::default();
    user.set_uid(input.user.uid);
    user.set_gid(input.user.gid);
    if !input.user.additional_gids.is_empty() {
        user.set_additional_gids(Some(input.user.additional_gids.clone()));
    }
    p.set_user(user);
    // The same set as init's in the container's config, which the
    // seccomp rules read for capability-conditional syscalls.
    let (caps, _) = wanted_capabilities(input.container, input.bounding_set);
    p.set_capabilities(Some(capability_sets(&caps)));
    p.set_no_new_privileges(Some(secctx::no_new_privileges(input.container)));
    p.set_rlimits(Some(nofile_rlimits(input.nofile_hard)));
    p
}

/// PATH and HOME defaults, then the container's env, then the process's;
/// a later value of a name replaces an earlier one in place.
fn env(input: &ProcessInput<'_>) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match out.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value.to_string(),
        None => out.push((name.to_string(), value.to_string())),
    };
    if let Some((name, value)) = DEFAULT_PATH.split_once('=') {
        set(name, value);
    }
    if let Some(home) = &input.user.home {
        set("HOME", home);
    }
    for var in input.container.env.iter().chain(input.env) {
        set(&var.name, &var.value);
    }
    out.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
}
