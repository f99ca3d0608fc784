//! A child's process group, killed whole when its guard drops: the runtime
//! adapter's runc calls and the CNI plugins each run in a group of their
//! own, so a timeout or a dropped call leaves none of their children
//! behind. A leaf: imports nothing of the crate.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Child;

/// Kills a child's whole process group when dropped, unless disarmed once
/// the child was reaped: its pid, and so its group id, may be reused then.
pub(crate) struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    /// A guard of `child`'s group (it was spawned with `process_group(0)`).
    pub(crate) fn new(child: &Child) -> Self {
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);
        GroupGuard { pgid }
    }

    /// Kill the group now.
    pub(crate) fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH: the group is already empty, which is what we want.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// The child was reaped: leave its (reusable) group id alone.
    pub(crate) fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
