//! Killing every task of a cgroup through the cgroup alone, for tasks no
//! runtime accounts for: a round freezes the cgroup (so nothing forks
//! between the listing and the signal), SIGKILLs every task listed in any of
//! its directories, and thaws it. The caller awaits the returned pidfds and
//! repeats until a round finds nothing.

use std::collections::BTreeSet;
use std::io;

use super::parse::{pids, read};
use super::{Cgroup, CgroupError};
use crate::pidfd::PidFd;

impl Cgroup {
    /// Pids of every task in any of the cgroup's directories (on v1 each
    /// hierarchy has its own `cgroup.procs`); a missing directory holds none.
    pub fn all_procs(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = BTreeSet::new();
        for dir in self.dirs() {
            let path = dir.join("cgroup.procs");
            match read(&path) {
                Ok(text) => all.extend(pids(&path, &text)?),
                Err(CgroupError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                }
                Err(e) => return Err(e),
            }
        }
        Ok(all.into_iter().collect())
    }

    /// One round: freeze (where the freezer is there to take), SIGKILL every
    /// task, thaw. Returns a pidfd per task signalled, opened while frozen,
    /// so none is a reused pid; empty when the cgroup held no task.
    pub fn kill_round(&self) -> Result<Vec<PidFd>, CgroupError> {
        if self.all_procs()?.is_empty() {
            return Ok(Vec::new());
        }
        // A freeze that will not take (no freezer directory left, say) still
        // gets its round unfrozen: the caller's next round catches a fork.
        let frozen = self.freeze();
        if let Err(e) = &frozen {
            tracing::debug!(error = %e, "killing a cgroup's tasks without the freezer");
        }
        let victims = self.all_procs().map(|procs| {
            procs
                .into_iter()
                .filter_map(|pid| PidFd::open(pid).ok())
                .filter(|fd| fd.send_signal(libc::SIGKILL).is_ok())
                .collect::<Vec<PidFd>>()
        });
        let thawed = if frozen.is_ok() { self.thaw() } else { Ok(()) };
        let victims = victims?;
        thawed.map(|()| victims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_that_is_not_there_holds_no_task() {
        let gone = Cgroup::V2("/nonexistent/rundmc-test/cgroup".into());
        assert_eq!(gone.all_procs().unwrap(), Vec::<i32>::new());
        assert!(gone.kill_round().unwrap().is_empty());
    }
}
