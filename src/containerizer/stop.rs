//! `stop`: end every process in the container but init, and keep the
//! container. Each round freezes the cgroup, lists its tasks, signals all
//! but init and thaws it, so a forking process cannot slip a child past the
//! list. TERM first, then KILL once the grace period is over.

use std::time::Duration;

use futures_util::future::join_all;

use super::lifecycle::can_stop;
use super::rootfs::Mounter;
use super::{Containerizer, ContainerizerError, ErrorKind, Result};
use crate::api::Handle;
use crate::cgroup::CgroupError;
use crate::pidfd::PidFd;
use crate::runtime::OciRuntime;
use rundmc_shim::protocol::PID_FILE;

/// Rounds of SIGKILL before processes count as unkillable.
const KILL_ROUNDS: usize = 10;
/// How long each SIGKILL round waits for its victims.
const KILL_ROUND_WAIT: Duration = Duration::from_secs(1);

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// Stop every process but init: SIGTERM, then SIGKILL after `grace`
    /// (at once when `grace` is zero).
    pub async fn stop(&self, handle: &Handle, grace: Duration) -> Result<()> {
        let state = self
            .runtime
            .state(handle.as_str())
            .await
            .map_err(Self::runtime_err(handle))?;
        if !can_stop(Some(state.status)) {
            return Err(ContainerizerError::at(
                handle,
                ErrorKind::WrongState {
                    verb: "stop",
                    status: Some(state.status),
                },
            ));
        }
        let init = state.pid.unwrap_or(0);
        if !grace.is_zero() {
            let victims = self
                .signal_all_but(handle, init, libc::SIGTERM, true)
                .await?;
            // Whatever is left after it, a child forked on TERM included,
            // meets the KILL rounds; none left is the usual end.
            wait_all(victims, grace).await;
        }
        for _ in 0..KILL_ROUNDS {
            let victims = self
                .signal_all_but(handle, init, libc::SIGKILL, true)
                .await?;
            if victims.is_empty() || wait_all(victims, KILL_ROUND_WAIT).await {
                return Ok(());
            }
        }
        let left = self
            .cgroup(handle)
            .procs()
            .map_err(Self::cgroup_err(handle))?;
        Err(ContainerizerError::at(
            handle,
            ErrorKind::Unkillable {
                count: left.len().saturating_sub(1),
            },
        ))
    }

    /// Give every process but init SIGTERM and up to `grace` to exit, before
    /// a destroy, whose SIGKILL of init ends whatever is left: one round, and
    /// no freezer, since no escapee outlives its pid namespace.
    pub async fn terminate(&self, handle: &Handle, grace: Duration) -> Result<()> {
        let Some(state) = self.runtime_state(handle).await? else {
            return Ok(());
        };
        if !can_stop(Some(state.status)) || grace.is_zero() {
            return Ok(());
        }
        let victims = self
            .signal_all_but(handle, state.pid.unwrap_or(0), libc::SIGTERM, false)
            .await?;
        wait_all(victims, grace).await;
        Ok(())
    }

    /// Freeze (when `freeze`), list, signal every task but `init`, thaw.
    /// Returns a pidfd per task signalled, opened while frozen so none can
    /// be a reused pid.
    async fn signal_all_but(
        &self,
        handle: &Handle,
        init: i32,
        signal: i32,
        freeze: bool,
    ) -> Result<Vec<PidFd>> {
        let cgroup = self.cgroup(handle);
        let result = tokio::task::spawn_blocking(move || {
            // Signal while frozen: no task can fork between list and signal.
            // A freeze that will not take (it thaws itself on failure) still
            // gets its round, unfrozen; the next round catches escapees.
            let frozen = if freeze {
                cgroup.freeze()
            } else {
                Err(CgroupError::NotMounted)
            };
            let victims = cgroup.procs().map(|pids| {
                pids.into_iter()
                    .filter(|pid| *pid != init)
                    .filter_map(|pid| PidFd::open(pid).ok())
                    .filter(|fd| fd.send_signal(signal).is_ok())
                    .collect::<Vec<PidFd>>()
            });
            if let (true, Err(e)) = (freeze, &frozen) {
                tracing::warn!(error = %e, "signalling without the freezer");
            }
            let thawed = if frozen.is_ok() {
                cgroup.thaw()
            } else {
                Ok(())
            };
            let victims = victims?;
            thawed.map(|()| victims)
        })
        .await;
        match result {
            Ok(r) => r.map_err(Self::cgroup_err(handle)),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
}

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// End process `id` where nothing watches it: its supervisor was lost
    /// while it ran on, or the runtime reported a failed start after
    /// starting it. Left alone it would run, unsupervised and unlogged,
    /// beside its restart.
    /// Its pid (from the runtime's pid file) is killed through a pidfd, and
    /// only while it is in the container's cgroup. True when one was.
    pub async fn kill_lost(&self, handle: &Handle, id: &str) -> Result<bool> {
        let pid_file = self.process_dir(handle, id).join(PID_FILE);
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        else {
            return Ok(false);
        };
        let Ok(fd) = PidFd::open(pid) else {
            return Ok(false);
        };
        // Opened first, checked after: the pidfd is the container's process.
        let procs = self
            .cgroup(handle)
            .procs()
            .map_err(Self::cgroup_err(handle))?;
        if !procs.contains(&pid) || fd.send_signal(libc::SIGKILL).is_err() {
            return Ok(false);
        }
        Ok(fd.exited_within(KILL_ROUND_WAIT).await.unwrap_or(false))
    }
}

/// Wait for every process to exit; false if any is left after `timeout`.
async fn wait_all(victims: Vec<PidFd>, timeout: Duration) -> bool {
    let waits = victims.iter().map(|fd| fd.exited_within(timeout));
    join_all(waits).await.into_iter().all(|r| r.unwrap_or(true))
}
