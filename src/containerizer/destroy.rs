//! `destroy`: idempotent and retriable. It first marks the bundle half-made,
//! then kills everything, deletes the runtime's container, kills whatever
//! is still in the cgroup (processes whose runtime state was lost), unmounts
//! the rootfs, removes the cgroup, and removes the bundle last. A crash at
//! any step leaves a half-made bundle that the next destroy finishes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::depot::Depot;
use super::lifecycle::{needs_delete, needs_kill, needs_thaw};
use super::rootfs::Mounter;
use super::{Containerizer, ContainerizerError, ErrorKind, Result};
use crate::api::Handle;
use crate::cgroup::Cgroup;
use crate::pidfd::PidFd;
use crate::runtime::{OciRuntime, RuntimeError, Status};

/// How long init may take to die after SIGKILL before we give up waiting
/// and let `delete --force` have its turn.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long supervisors get to record their processes' exits.
const SHIM_GRACE: Duration = Duration::from_secs(5);

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// Destroy `handle`: processes, runtime container, rootfs mount, cgroup
    /// and bundle. Destroying what is already gone succeeds.
    pub async fn destroy(&self, handle: &Handle) -> Result<()> {
        self.depot.unmark(handle)?;
        // Peas first: they joined the container's namespaces.
        self.destroy_peas(handle).await?;
        let recorded = self.delete_from_runtime(handle).await?;
        // With the runtime's container gone, anything left in the cgroup is
        // a process whose state was lost: it would keep the cgroup busy.
        let leftovers = self.kill_leftovers(handle).await?;
        if leftovers > 0 {
            tracing::warn!(%handle, count = leftovers, "killed processes no runtime state accounted for");
        }
        let paths = self.depot.paths(handle);
        // Every process died with init: let their supervisors record it and
        // go, so no supervisor outlives the bundle.
        crate::process::cleanup(&paths.processes(), SHIM_GRACE)
            .await
            .map_err(|source| ContainerizerError::at(handle, ErrorKind::Process { source }))?;
        // Every process is gone: the network can go, while the rootfs is
        // unmounted and the cgroup removed, and before the bundle (a crash
        // from here leaves a half-made bundle, whose next destroy comes
        // back here; DEL works from the CNI cache). Unmounting and removing
        // a tree wait on the disk: on a blocking thread, so that other
        // reconciles keep the async workers.
        let mounter = Arc::clone(&self.mounter);
        let cgroup = self.cgroup_everywhere(handle);
        let (depot, owned) = (self.depot.clone(), handle.clone());
        let unmounted = off_the_workers(move || {
            unmount_and_uncgroup(&*mounter, &depot, &cgroup, &owned)?;
            match recorded {
                Some(bundle) => remove_elsewhere(&*mounter, &depot, &owned, &bundle),
                None => Ok(()),
            }
        });
        let (detached, unmounted) = tokio::join!(self.detach_network(handle), unmounted);
        detached?;
        unmounted?;
        let (depot, owned) = (self.depot.clone(), handle.clone());
        off_the_workers(move || depot.remove(&owned).map_err(Into::into)).await?;
        // The bundle, and with it the record of the range, is gone.
        self.userns.release(handle);
        Ok(())
    }

    /// Kill init (which ends every process in the pid namespace), wait for
    /// it, and delete the container from the runtime. Returns the bundle
    /// directory the runtime had recorded, if it had the container.
    async fn delete_from_runtime(&self, handle: &Handle) -> Result<Option<PathBuf>> {
        let state = self.runtime_state(handle).await?;
        let status = state.as_ref().map(|s| s.status);
        if needs_thaw(status) {
            self.cgroup(handle)
                .thaw()
                .map_err(Self::cgroup_err(handle))?;
        }
        let mut died = true;
        if needs_kill(status) {
            died = self
                .kill_init(handle, state.as_ref().and_then(|s| s.pid))
                .await?;
        }
        if needs_delete(status) {
            // `delete --force` of a live container polls in 100 ms steps:
            // use it only when init would not die.
            let force = !died || status == Some(Status::Creating);
            match self.runtime.delete(handle.as_str(), force).await {
                Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
                Err(source) => {
                    return Err(ContainerizerError::at(
                        handle,
                        ErrorKind::Runtime { source },
                    ));
                }
            }
        }
        Ok(state.map(|s| s.bundle))
    }

    /// SIGKILL init and wait for it to exit; false if it did not in time.
    async fn kill_init(&self, handle: &Handle, pid: Option<i32>) -> Result<bool> {
        // Init, proven to be the container's by its place in the container's
        // cgroup, is killed through a pidfd: no `runc kill` to spawn.
        let pidfd = pid.and_then(|p| PidFd::open(p).ok());
        let ours = pid.is_some_and(|p| {
            self.cgroup(handle)
                .procs()
                .is_ok_and(|procs| procs.contains(&p))
        });
        let signalled = match (&pidfd, ours) {
            (Some(fd), true) => fd.send_signal(libc::SIGKILL).is_ok(),
            _ => false,
        };
        if !signalled {
            match self
                .runtime
                .kill(handle.as_str(), libc::SIGKILL, false)
                .await
            {
                Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
                // Init already gone between state and kill: nothing to wait for.
                Err(RuntimeError::Failed { .. }) if pidfd.is_none() => return Ok(true),
                Err(source) => {
                    return Err(ContainerizerError::at(
                        handle,
                        ErrorKind::Runtime { source },
                    ));
                }
            }
        }
        match pidfd {
            Some(fd) => Ok(fd.exited_within(KILL_WAIT).await.unwrap_or(false)),
            None => Ok(true),
        }
    }
}

/// Unmount the rootfs, then remove the cgroup and the bundle directory.
fn unmount_and_uncgroup<M: Mounter>(
    mounter: &M,
    depot: &Depot,
    cgroup: &Cgroup,
    handle: &Handle,
) -> Result<()> {
    let rootfs_err = |source| ContainerizerError::at(handle, ErrorKind::Rootfs { source });
    let paths = depot.paths(handle);
    // Idmapped layers a crashed create left mounted under lower/, then
    // the rootfs.
    let lower = std::fs::read_dir(paths.lower())
        .map(|dir| dir.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    for point in lower.into_iter().chain(paths.rootfs_mounts()) {
        mounter.unmount_fully(&point).map_err(rootfs_err)?;
    }
    cgroup
        .remove()
        .map_err(|source| ContainerizerError::at(handle, ErrorKind::Cgroup { source }))
}

/// The bundle the runtime recorded for `handle`, when it is not where this
/// agent keeps bundles (an agent started on another state directory than
/// the one that made the container): its rootfs unmounted and the
/// directory removed, so no overlay is left mounted there. Only a directory
/// named by the handle is touched, and never one still mounted.
fn remove_elsewhere<M: Mounter>(
    mounter: &M,
    depot: &Depot,
    handle: &Handle,
    recorded: &Path,
) -> Result<()> {
    let ours = depot.paths(handle);
    let named = recorded.file_name() == Some(std::ffi::OsStr::new(handle.as_str()));
    if recorded == ours.bundle || recorded == ours.dir || !named || recorded.as_os_str().is_empty()
    {
        return Ok(());
    }
    mounter
        .unmount_fully(&recorded.join("rootfs"))
        .map_err(|source| ContainerizerError::at(handle, ErrorKind::Rootfs { source }))?;
    crate::fsutil::remove_dir_all_if_exists(recorded)
        .map_err(|source| ContainerizerError::at(handle, ErrorKind::Fs { source }))
}

/// Run `work` on a blocking thread.
async fn off_the_workers(work: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}
