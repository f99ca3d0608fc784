//! A container's cgroup, read and written in-process, on cgroup v1 (one
//! directory per controller) and v2 (one unified directory). One type serves
//! both its users: the containerizer, which names the cgroup under its
//! parent, freezes it to stop without races, reads its metrics and removes
//! it; and the runtime adapter, which finds the cgroup the runtime recorded
//! and reads the freezer state and OOM events from it without spawning the
//! runtime. It never writes a limit: that is the runtime's job.
//!
//! - [`hierarchy`]: where the controllers are mounted, and moving a process
//!   into a cgroup of every hierarchy.
//! - [`freezer`]: freeze, thaw, and reading the freezer state as runc does.
//! - [`kill`]: killing every task through the cgroup, for tasks no runtime
//!   knows of.
//! - [`oom`]: OOM kills as events, through an eventfd (v1) or inotify (v2).
//! - [`parse`]: the pure reading of cgroup files.

pub mod freezer;
pub mod hierarchy;
pub mod kill;
pub mod oom;
pub mod parse;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use hierarchy::{Everywhere, Hierarchy, make_everywhere, mounted_roots};
pub use oom::OomWatch;
use parse::{kv_value, read, read_max, read_u64};

/// Where cgroupfs is mounted on a standard machine.
pub const MOUNT: &str = "/sys/fs/cgroup";

/// Cgroup failures.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// No cgroup filesystem found in /proc/self/mountinfo.
    #[error("no cgroup filesystem is mounted")]
    NotMounted,
    /// A cgroup v1 controller rundmc needs is not mounted (or, for a cgroup
    /// the runtime recorded, not among its paths).
    #[error("cgroup v1 controller {0} is not mounted")]
    MissingController(String),
    /// A cgroup file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A cgroup file held something unexpected.
    #[error("{path}: unexpected content {content:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// The freezer did not reach the wanted state in time.
    #[error("{path}: cgroup did not reach {want} in time")]
    FreezeTimeout {
        /// The freezer file.
        path: PathBuf,
        /// FROZEN or THAWED.
        want: &'static str,
    },
}

/// Resource usage read from a container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// CPU time used, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, bytes.
    pub memory_usage_bytes: u64,
    /// Memory limit, bytes; `None` when unlimited.
    pub memory_limit_bytes: Option<u64>,
    /// Tasks in the cgroup.
    pub pids_current: u64,
    /// Task limit; `None` when unlimited.
    pub pids_limit: Option<u64>,
    /// Times the OOM killer acted in the cgroup.
    pub oom_kills: u64,
}

/// v1 reports "no limit" as a huge page-aligned number.
const V1_UNLIMITED: u64 = 1 << 62;

/// One container's cgroup: its directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// v1: a directory per controller, by controller name.
    V1(BTreeMap<String, PathBuf>),
    /// v2: one directory.
    V2(PathBuf),
}

impl Cgroup {
    /// From runc's `cgroup_paths`: v2 records the single directory under
    /// the key `""`; v1 records one entry per controller (and, on a hybrid
    /// machine, the unused unified directory under `""` too).
    pub fn from_runc_paths(paths: &HashMap<String, PathBuf>) -> Option<Cgroup> {
        match paths.get("") {
            Some(dir) if paths.len() == 1 => Some(Cgroup::V2(dir.clone())),
            _ if paths.is_empty() => None,
            _ => Some(Cgroup::V1(
                paths
                    .iter()
                    .filter(|(k, _)| !k.is_empty())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )),
        }
    }

    /// The directory of `controller` (v1), or the unified directory (v2).
    pub fn dir(&self, controller: &str) -> Result<&Path, CgroupError> {
        match self {
            Cgroup::V1(dirs) => dirs
                .get(controller)
                .map(PathBuf::as_path)
                .ok_or_else(|| CgroupError::MissingController(controller.to_owned())),
            Cgroup::V2(dir) => Ok(dir),
        }
    }

    /// `file` in the directory of `controller`.
    pub fn file(&self, controller: &str, file: &str) -> Result<PathBuf, CgroupError> {
        self.dir(controller).map(|dir| dir.join(file))
    }

    /// Every directory this cgroup has: one per v1 hierarchy (co-mounted
    /// controllers share one), or the one v2 directory.
    pub fn dirs(&self) -> Vec<PathBuf> {
        match self {
            Cgroup::V1(dirs) => {
                let mut dirs: Vec<PathBuf> = dirs.values().cloned().collect();
                dirs.sort();
                dirs.dedup();
                dirs
            }
            Cgroup::V2(dir) => vec![dir.clone()],
        }
    }

    /// True when any of its directories exists.
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.is_dir())
    }

    /// The file whose `oom_kill` line counts OOM kills.
    pub fn oom_counter_file(&self) -> Result<PathBuf, CgroupError> {
        match self {
            Cgroup::V1(_) => self.file("memory", "memory.oom_control"),
            Cgroup::V2(dir) => Ok(dir.join("memory.events")),
        }
    }

    /// Pids of every process in the cgroup.
    pub fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let path = self.file("freezer", "cgroup.procs")?;
        parse::pids(&path, &read(&path)?)
    }

    /// Read cpu, memory, pids and OOM counters.
    pub fn metrics(&self) -> Result<Metrics, CgroupError> {
        let oom_kills = kv_value(&read(&self.oom_counter_file()?)?, "oom_kill").unwrap_or(0);
        let pids_current = read_u64(&self.file("pids", "pids.current")?)?;
        let pids_limit = read_max(&self.file("pids", "pids.max")?)?;
        match self {
            Cgroup::V1(_) => {
                let limit = read_u64(&self.file("memory", "memory.limit_in_bytes")?)?;
                Ok(Metrics {
                    cpu_usage_ns: read_u64(&self.file("cpuacct", "cpuacct.usage")?)?,
                    memory_usage_bytes: read_u64(&self.file("memory", "memory.usage_in_bytes")?)?,
                    memory_limit_bytes: (limit < V1_UNLIMITED).then_some(limit),
                    pids_current,
                    pids_limit,
                    oom_kills,
                })
            }
            Cgroup::V2(dir) => {
                let usage_us = kv_value(&read(&dir.join("cpu.stat"))?, "usage_usec").unwrap_or(0);
                Ok(Metrics {
                    cpu_usage_ns: usage_us.saturating_mul(1000),
                    memory_usage_bytes: read_u64(&dir.join("memory.current"))?,
                    memory_limit_bytes: read_max(&dir.join("memory.max"))?,
                    pids_current,
                    pids_limit,
                    oom_kills,
                })
            }
        }
    }

    /// Remove every directory of the cgroup; missing ones are fine. Fails
    /// (EBUSY) while tasks remain.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            match fs::remove_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(CgroupError::Io {
                        path: dir,
                        source: e,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_paths_with_only_the_unified_key_are_v2() {
        let paths = HashMap::from([(String::new(), PathBuf::from("/sys/fs/cgroup/web"))]);
        assert_eq!(
            Cgroup::from_runc_paths(&paths),
            Some(Cgroup::V2("/sys/fs/cgroup/web".into()))
        );
        assert_eq!(Cgroup::from_runc_paths(&HashMap::new()), None);
    }

    #[test]
    fn runc_hybrid_paths_are_v1_without_the_unified_key() {
        let paths = HashMap::from([
            (String::new(), PathBuf::from("/sys/fs/cgroup/unified/web")),
            (
                "memory".to_string(),
                PathBuf::from("/sys/fs/cgroup/memory/web"),
            ),
        ]);
        let cgroup = Cgroup::from_runc_paths(&paths).unwrap();
        assert_eq!(cgroup.dirs(), [Path::new("/sys/fs/cgroup/memory/web")]);
        assert_eq!(
            cgroup.oom_counter_file().unwrap(),
            Path::new("/sys/fs/cgroup/memory/web/memory.oom_control")
        );
        assert!(matches!(
            cgroup.procs(),
            Err(CgroupError::MissingController(c)) if c == "freezer"
        ));
    }
}
