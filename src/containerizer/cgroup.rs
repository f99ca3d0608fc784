//! A container's cgroup, read and written in-process: metrics, the freezer
//! that makes stop race-free, the OOM counter, and removal. Works on cgroup
//! v1 (one directory per controller) and v2 (one unified directory). Parsing
//! is pure; the rest is plain file I/O on cgroupfs.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::mountinfo;

/// Cgroup failures.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// No cgroup filesystem found in /proc/self/mountinfo.
    #[error("no cgroup filesystem is mounted")]
    NotMounted,
    /// A cgroup v1 controller rundmc needs is not mounted.
    #[error("cgroup v1 controller {0} is not mounted")]
    MissingController(&'static str),
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

/// Where the cgroup controllers are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// Legacy or hybrid: each v1 controller has its own mount point.
    V1 {
        /// Controller name to mount point.
        controllers: BTreeMap<String, PathBuf>,
    },
    /// Unified: everything under one mount point.
    V2 {
        /// The cgroup2 mount point.
        root: PathBuf,
    },
}

/// Controllers rundmc reads or writes on v1.
const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

impl Hierarchy {
    /// Read the machine's layout from /proc/self/mountinfo.
    pub fn detect() -> Result<Self, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(|source| CgroupError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_mountinfo(&text)
    }

    /// The layout described by mountinfo text. A v1 controller mount wins
    /// over a cgroup2 mount (hybrid systems mount cgroup2 off to the side,
    /// and runc uses v1 there); cgroup2 alone means unified.
    pub fn from_mountinfo(text: &str) -> Result<Self, CgroupError> {
        let mut controllers = BTreeMap::new();
        let mut unified = None;
        for m in mountinfo::parse(text) {
            match m.fstype.as_str() {
                "cgroup2" => unified = unified.or(Some(m.mount_point)),
                "cgroup" => {
                    for opt in m
                        .super_options
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o))
                    {
                        controllers
                            .entry(opt.to_string())
                            .or_insert_with(|| m.mount_point.clone());
                    }
                }
                _ => {}
            }
        }
        if !controllers.is_empty() {
            for c in V1_CONTROLLERS {
                if !controllers.contains_key(c) {
                    return Err(CgroupError::MissingController(c));
                }
            }
            return Ok(Hierarchy::V1 { controllers });
        }
        unified
            .map(|root| Hierarchy::V2 { root })
            .ok_or(CgroupError::NotMounted)
    }
}

/// Move `pid` into the cgroup `rel` of every mounted hierarchy (each v1
/// controller, named ones like systemd's, and cgroup2), creating it where
/// needed. A process moved so no longer belongs to whoever started it: a
/// service manager or container runtime that kills its own cgroup on stop
/// leaves it alone.
pub fn move_everywhere(pid: i32, rel: &str) -> Result<(), CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = mountinfo::read().map_err(|source| CgroupError::Io {
        path: path.into(),
        source,
    })?;
    let rel = rel.trim_matches('/');
    let mut done = std::collections::BTreeSet::new();
    let mut first_error = None;
    for m in mountinfo::parse(&text).filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2") {
        if !done.insert(m.mount_point.clone()) {
            continue;
        }
        // Keep going on failure: every hierarchy left behind is one a stop
        // of the agent's cgroup could reach, so move into all that can be.
        let moved = make_dirs(&m.mount_point, rel)
            .and_then(|dir| write(&dir.join("cgroup.procs"), &pid.to_string()));
        if let Err(e) = moved {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Create `rel` under a hierarchy's `root`, one level at a time. A v1
/// cpuset cgroup takes no task until it has cpus and mems, so those are
/// copied from its parent, as runc does.
fn make_dirs(root: &Path, rel: &str) -> Result<PathBuf, CgroupError> {
    let mut dir = root.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        let parent = dir.clone();
        dir.push(part);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Io { path: dir, source }),
        }
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = dir.join(file);
            if fs::read_to_string(&own).is_ok_and(|v| v.trim().is_empty()) {
                write(&own, read(&parent.join(file))?.trim())?;
            }
        }
    }
    Ok(dir)
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

/// One container's cgroup, e.g. `/rundmc/web`.
#[derive(Debug, Clone)]
pub struct Cgroup {
    hierarchy: Hierarchy,
    path: String,
}

/// v1 reports "no limit" as a huge page-aligned number.
const V1_UNLIMITED: u64 = 1 << 62;

impl Cgroup {
    /// The cgroup at `path` (relative to each hierarchy's root).
    pub fn new(hierarchy: Hierarchy, path: impl Into<String>) -> Self {
        Self {
            hierarchy,
            path: path.into(),
        }
    }

    /// The directory of `controller` (v1), or the unified directory (v2).
    pub fn dir(&self, controller: &str) -> PathBuf {
        let rel = self.path.trim_start_matches('/');
        match &self.hierarchy {
            Hierarchy::V1 { controllers } => controllers
                .get(controller)
                .map(|root| root.join(rel))
                .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup").join(controller).join(rel)),
            Hierarchy::V2 { root } => root.join(rel),
        }
    }

    /// Every directory this cgroup has, one per v1 controller or the one v2 dir.
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.hierarchy {
            Hierarchy::V1 { controllers } => {
                let mut dirs: Vec<PathBuf> = controllers.keys().map(|c| self.dir(c)).collect();
                dirs.dedup();
                dirs
            }
            Hierarchy::V2 { .. } => vec![self.dir("")],
        }
    }

    /// True when any of its directories exists.
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.is_dir())
    }

    /// The file whose `oom_kill` line counts OOM kills.
    pub fn oom_counter_file(&self) -> PathBuf {
        match self.hierarchy {
            Hierarchy::V1 { .. } => self.dir("memory").join("memory.oom_control"),
            Hierarchy::V2 { .. } => self.dir("").join("memory.events"),
        }
    }

    /// Pids of every process in the cgroup.
    pub fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let path = self.dir("freezer").join("cgroup.procs");
        let text = read(&path)?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().parse().map_err(|_| parse_err(&path, l)))
            .collect()
    }

    /// Freeze every task, waiting until the kernel says they are frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    /// Thaw every task.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    /// The freezer's control file, the value for `frozen`, the file that
    /// reports the state, and the line that says it was reached.
    fn freezer_files(&self, frozen: bool) -> (PathBuf, &'static str, PathBuf, &'static str) {
        match self.hierarchy {
            Hierarchy::V1 { .. } => {
                let f = self.dir("freezer").join("freezer.state");
                let v = if frozen { "FROZEN" } else { "THAWED" };
                (f.clone(), v, f, v)
            }
            Hierarchy::V2 { .. } => {
                let d = self.dir("");
                let (v, w) = if frozen {
                    ("1", "frozen 1")
                } else {
                    ("0", "frozen 0")
                };
                (d.join("cgroup.freeze"), v, d.join("cgroup.events"), w)
            }
        }
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let (file, value, state_file, want) = self.freezer_files(frozen);
        write(&file, value)?;
        // The kernel offers no event for "frozen" on v1, and a v1 freeze can
        // stick in FREEZING (a task in vfork, say): like runc, wait briefly,
        // and every so often thaw for a moment to unstick it and try again.
        for attempt in 1..=1000u32 {
            if read(&state_file)?.lines().any(|l| l.trim() == want) {
                return Ok(());
            }
            if frozen && attempt % 50 == 0 {
                let (thaw_file, thaw, _, _) = self.freezer_files(false);
                write(&thaw_file, thaw)?;
                std::thread::sleep(Duration::from_micros(100));
                write(&file, value)?;
            }
            std::thread::sleep(Duration::from_micros(if attempt < 100 {
                100
            } else {
                1000
            }));
        }
        if frozen {
            // Never leave a container half-frozen behind an error.
            let (thaw_file, thaw, _, _) = self.freezer_files(false);
            let _ = write(&thaw_file, thaw);
        }
        Err(CgroupError::FreezeTimeout {
            path: state_file,
            want: if frozen { "FROZEN" } else { "THAWED" },
        })
    }

    /// Read cpu, memory, pids and OOM counters.
    pub fn metrics(&self) -> Result<Metrics, CgroupError> {
        let oom_kills = kv_value(&read(&self.oom_counter_file())?, "oom_kill").unwrap_or(0);
        let pids_dir = self.dir("pids");
        let pids_current = read_u64(&pids_dir.join("pids.current"))?;
        let pids_limit = read_max(&pids_dir.join("pids.max"))?;
        match self.hierarchy {
            Hierarchy::V1 { .. } => {
                let mem = self.dir("memory");
                let limit = read_u64(&mem.join("memory.limit_in_bytes"))?;
                Ok(Metrics {
                    cpu_usage_ns: read_u64(&self.dir("cpuacct").join("cpuacct.usage"))?,
                    memory_usage_bytes: read_u64(&mem.join("memory.usage_in_bytes"))?,
                    memory_limit_bytes: (limit < V1_UNLIMITED).then_some(limit),
                    pids_current,
                    pids_limit,
                    oom_kills,
                })
            }
            Hierarchy::V2 { .. } => {
                let d = self.dir("");
                let cpu_path = d.join("cpu.stat");
                let usage_us = kv_value(&read(&cpu_path)?, "usage_usec").unwrap_or(0);
                Ok(Metrics {
                    cpu_usage_ns: usage_us.saturating_mul(1000),
                    memory_usage_bytes: read_u64(&d.join("memory.current"))?,
                    memory_limit_bytes: read_max(&d.join("memory.max"))?,
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

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Io {
        path: path.into(),
        source,
    })
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Io {
        path: path.into(),
        source,
    })
}

fn parse_err(path: &Path, content: &str) -> CgroupError {
    CgroupError::Parse {
        path: path.into(),
        content: content.to_string(),
    }
}

fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| parse_err(path, &text))
}

/// A number, or "max" for no limit.
fn read_max(path: &Path) -> Result<Option<u64>, CgroupError> {
    let text = read(path)?;
    parse_max(text.trim()).ok_or_else(|| parse_err(path, &text))
}

/// `"max"` → `Some(None)`, a number → `Some(Some(n))`, else `None`.
pub fn parse_max(s: &str) -> Option<Option<u64>> {
    if s == "max" {
        Some(None)
    } else {
        s.parse().ok().map(Some)
    }
}

/// The value of `key` in "key value" lines (memory.events, cpu.stat, oom_control).
pub fn kv_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_is_v1() {
        let h = Hierarchy::from_mountinfo(HYBRID).unwrap();
        let cg = Cgroup::new(h, "/rundmc/web");
        assert_eq!(
            cg.dir("memory"),
            PathBuf::from("/sys/fs/cgroup/memory/rundmc/web")
        );
        assert_eq!(
            cg.oom_counter_file(),
            PathBuf::from("/sys/fs/cgroup/memory/rundmc/web/memory.oom_control")
        );
        assert_eq!(cg.dirs().len(), 5);
    }

    #[test]
    fn comounted_and_unified() {
        let comounted = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
            35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
            37 31 0:34 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n\
            39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        let cg = Cgroup::new(Hierarchy::from_mountinfo(comounted).unwrap(), "x");
        assert_eq!(
            cg.dir("cpuacct"),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/x")
        );
        assert_eq!(
            cg.dirs().len(),
            4,
            "co-mounted controllers share a directory"
        );

        let unified = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let cg = Cgroup::new(Hierarchy::from_mountinfo(unified).unwrap(), "/rundmc/web");
        assert_eq!(cg.dir("memory"), PathBuf::from("/sys/fs/cgroup/rundmc/web"));
        assert_eq!(
            cg.oom_counter_file(),
            PathBuf::from("/sys/fs/cgroup/rundmc/web/memory.events")
        );
    }

    #[test]
    fn missing_controller_is_named() {
        let partial = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert!(matches!(
            Hierarchy::from_mountinfo(partial),
            Err(CgroupError::MissingController("cpu"))
        ));
        assert!(matches!(
            Hierarchy::from_mountinfo(""),
            Err(CgroupError::NotMounted)
        ));
    }

    #[test]
    fn parsers() {
        assert_eq!(
            kv_value("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
        assert_eq!(
            kv_value("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
        assert_eq!(
            kv_value("usage_usec 1500\nuser_usec 1000\n", "usage_usec"),
            Some(1500)
        );
        assert_eq!(parse_max("max"), Some(None));
        assert_eq!(parse_max("100"), Some(Some(100)));
        assert_eq!(parse_max("x"), None);
    }
}
