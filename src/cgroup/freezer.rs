//! The freezer: freezing a cgroup so that no task in it can fork while it
//! is listed and signalled, thawing it, and reading its state the way the
//! runtimes do (for the in-process `paused` status).

use std::path::PathBuf;
use std::time::Duration;

use super::parse::{read, write};
use super::{Cgroup, CgroupError};
use crate::fsutil;

/// The files that drive and report one freezer transition.
struct Transition {
    /// The control file.
    control: PathBuf,
    /// What to write to it.
    value: &'static str,
    /// The file that reports the state.
    state: PathBuf,
    /// The line of `state` that says the transition is done.
    done: &'static str,
}

impl Cgroup {
    /// Freeze every task, waiting until the kernel says they are frozen.
    /// On failure the cgroup is left thawed.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    /// Thaw every task.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    /// Is the cgroup frozen? With `self_only` (runc's rule), a v1 cgroup
    /// frozen only through an ancestor does not count. Unreadable freezer
    /// files read as not frozen, as runc treats a missing freezer.
    pub fn frozen(&self, self_only: bool) -> bool {
        match self {
            Cgroup::V2(dir) => {
                fsutil::read_small_string(&dir.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
            }
            Cgroup::V1(_) => {
                let Ok(dir) = self.dir("freezer") else {
                    return false;
                };
                let Ok(state) = fsutil::read_small_string(&dir.join("freezer.state")) else {
                    return false;
                };
                let self_freezing =
                    fsutil::read_small_string(&dir.join("freezer.self_freezing")).ok();
                v1_frozen(&state, self_freezing.as_deref(), self_only)
            }
        }
    }

    fn transition(&self, frozen: bool) -> Result<Transition, CgroupError> {
        Ok(match self {
            Cgroup::V1(_) => {
                let file = self.file("freezer", "freezer.state")?;
                let value = if frozen { "FROZEN" } else { "THAWED" };
                Transition {
                    control: file.clone(),
                    value,
                    state: file,
                    done: value,
                }
            }
            Cgroup::V2(dir) => Transition {
                control: dir.join("cgroup.freeze"),
                value: if frozen { "1" } else { "0" },
                state: dir.join("cgroup.events"),
                done: if frozen { "frozen 1" } else { "frozen 0" },
            },
        })
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let to = self.transition(frozen)?;
        let thaw = self.transition(false)?;
        write(&to.control, to.value)?;
        // The kernel offers no event for "frozen" on v1, and a v1 freeze can
        // stick in FREEZING (a task in vfork, say): like runc, wait briefly,
        // and every so often thaw for a moment to unstick it and try again.
        for attempt in 1..=1000u32 {
            if read(&to.state)?.lines().any(|l| l.trim() == to.done) {
                return Ok(());
            }
            if frozen && attempt % 50 == 0 {
                write(&thaw.control, thaw.value)?;
                std::thread::sleep(Duration::from_micros(100));
                write(&to.control, to.value)?;
            }
            std::thread::sleep(Duration::from_micros(if attempt < 100 {
                100
            } else {
                1000
            }));
        }
        if frozen {
            // Never leave a container half-frozen behind an error.
            let _ = write(&thaw.control, thaw.value);
        }
        Err(CgroupError::FreezeTimeout {
            path: to.state,
            want: if frozen { "FROZEN" } else { "THAWED" },
        })
    }
}

/// runc's reading of v1 `freezer.state` (and `freezer.self_freezing`).
/// `FREEZING` is a freeze in progress, which runc waits out; it counts as
/// frozen here.
pub fn v1_frozen(state: &str, self_freezing: Option<&str>, self_only: bool) -> bool {
    match state.trim() {
        "FROZEN" if self_only => self_freezing.is_none_or(|s| s.trim() == "1"),
        "FROZEN" | "FREEZING" => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_freezer_states_read_as_runc_and_crun_read_them() {
        assert!(!v1_frozen("THAWED\n", Some("0\n"), true));
        assert!(v1_frozen("FROZEN\n", Some("1\n"), true));
        // Frozen through a parent only: runc says not paused, crun paused.
        assert!(!v1_frozen("FROZEN\n", Some("0\n"), true));
        assert!(v1_frozen("FROZEN\n", Some("0\n"), false));
        assert!(v1_frozen("FROZEN\n", None, true));
        assert!(v1_frozen("FREEZING\n", None, false));
    }
}
