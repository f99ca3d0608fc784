//! Leftovers: processes in a container's cgroup that no runtime state
//! accounts for. An operator's `runc delete -f` that races the agent's
//! re-create removes the *new* container's state and leaves its init and
//! main process running; a runtime root wiped under live containers does
//! the same. Without state the runtime can neither kill them nor delete
//! the container, and the cgroup cannot be removed while they live, so
//! they are killed through the cgroup itself (see [`crate::cgroup::kill`]),
//! by create and destroy alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::join_all;

use super::bundle::INIT_PATH;
use super::rootfs::Mounter;
use super::{Containerizer, ContainerizerError, ErrorKind, Result};
use crate::api::Handle;
use crate::cgroup::Cgroup;
use crate::pidfd::PidFd;
use crate::runtime::OciRuntime;

/// Rounds before what is left counts as unkillable.
const ROUNDS: usize = 10;
/// How long each round waits for its victims.
const ROUND_WAIT: Duration = Duration::from_secs(1);

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// Kill every process in `handle`'s cgroup (in every hierarchy), init
    /// included, and wait until none is left; how many were killed. Call it
    /// only where the runtime's container is gone (deleted, or never made):
    /// anything still in the cgroup then belongs to no one.
    pub async fn kill_leftovers(&self, handle: &Handle) -> Result<usize> {
        let mut killed = 0;
        for _ in 0..ROUNDS {
            let victims = self.kill_round(handle).await?;
            if victims.is_empty() {
                return Ok(killed);
            }
            killed += victims.len();
            wait_all(&victims).await;
        }
        let left = self
            .cgroup_everywhere(handle)
            .all_procs()
            .map_err(Self::cgroup_err(handle))?;
        if left.is_empty() {
            return Ok(killed);
        }
        Err(ContainerizerError::at(
            handle,
            ErrorKind::Unkillable { count: left.len() },
        ))
    }

    /// Handles of the cgroups under the cgroup parent, in any hierarchy:
    /// with the depot, where a restarted agent finds what to clean up. None
    /// when the parent is the root, whose cgroups are everyone's.
    pub fn cgroup_handles(&self) -> Vec<Handle> {
        let rel = self.config.cgroup_parent.trim_matches('/');
        if rel.is_empty() {
            return Vec::new();
        }
        let parent = self.with_all_roots(self.hierarchy.cgroup(rel), rel);
        // Each name once (it has a directory in every hierarchy): one look
        // at the depot per name, and at the processes only for strangers.
        let mut found: BTreeMap<Handle, Vec<PathBuf>> = BTreeMap::new();
        let dirs = parent.dirs();
        let entries = dirs
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
        for e in entries {
            if let Ok(handle) = Handle::new(e.file_name().to_string_lossy()) {
                found.entry(handle).or_default().push(e.path());
            }
        }
        found
            .into_iter()
            .filter(|(handle, dirs)| {
                self.depot_dir(handle).exists() || dirs.iter().any(|d| looks_like_a_container(d))
            })
            .map(|(handle, _)| handle)
            .collect()
    }

    async fn kill_round(&self, handle: &Handle) -> Result<Vec<PidFd>> {
        let cgroup: Cgroup = self.cgroup_everywhere(handle);
        match tokio::task::spawn_blocking(move || cgroup.kill_round()).await {
            Ok(r) => r.map_err(Self::cgroup_err(handle)),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
}

/// Wait for every victim, each up to a round's wait.
async fn wait_all(victims: &[PidFd]) {
    join_all(victims.iter().map(|fd| fd.exited_within(ROUND_WAIT))).await;
}

/// Whether a cgroup the depot does not know can be a lost container's: it
/// is empty, or one of its processes is a container's init, run as
/// [`INIT_PATH`] (a container's processes die with its init, so a live lost
/// container always has one). A cgroup of anything else that a
/// misconfigured `--cgroup-parent` puts in reach (a system service's) is
/// never taken for a leftover.
fn looks_like_a_container(dir: &Path) -> bool {
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return false;
    };
    let mut pids = procs.lines().filter(|l| !l.trim().is_empty()).peekable();
    if pids.peek().is_none() {
        return true;
    }
    pids.any(|pid| {
        std::fs::read(format!("/proc/{}/cmdline", pid.trim()))
            .is_ok_and(|argv| argv.split(|b| *b == 0).next() == Some(INIT_PATH.as_bytes()))
    })
}
