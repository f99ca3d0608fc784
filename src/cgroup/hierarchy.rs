//! Where the cgroup controllers are mounted, read from mountinfo; the
//! cgroup a path names in that layout; and moving a process into a cgroup
//! of every mounted hierarchy.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::parse::{read, write};
use super::{Cgroup, CgroupError, MOUNT};
use crate::mountinfo;

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

    /// The machine's layout, detected once per process. Where detection
    /// fails, the standard layout under [`MOUNT`], as runtimes assume it.
    pub fn host() -> &'static Hierarchy {
        static HOST: OnceLock<Hierarchy> = OnceLock::new();
        HOST.get_or_init(|| {
            Self::detect().unwrap_or_else(|_| {
                if Path::new(MOUNT).join("cgroup.controllers").exists() {
                    Hierarchy::V2 { root: MOUNT.into() }
                } else {
                    let controllers = V1_CONTROLLERS
                        .iter()
                        .map(|c| (c.to_string(), Path::new(MOUNT).join(c)))
                        .collect();
                    Hierarchy::V1 { controllers }
                }
            })
        })
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
            if let Some(missing) = V1_CONTROLLERS
                .iter()
                .find(|c| !controllers.contains_key(**c))
            {
                return Err(CgroupError::MissingController(missing.to_string()));
            }
            return Ok(Hierarchy::V1 { controllers });
        }
        unified
            .map(|root| Hierarchy::V2 { root })
            .ok_or(CgroupError::NotMounted)
    }

    /// The cgroup at `path`, relative to each hierarchy's root (e.g.
    /// `/rundmc/web`, or crun's recorded `cgroup-path`).
    pub fn cgroup(&self, path: &str) -> Cgroup {
        let rel = path.trim_start_matches('/');
        match self {
            Hierarchy::V1 { controllers } => Cgroup::V1(
                controllers
                    .iter()
                    .map(|(c, root)| (c.clone(), root.join(rel)))
                    .collect(),
            ),
            Hierarchy::V2 { root } => Cgroup::V2(root.join(rel)),
        }
    }
}

/// The cgroup `rel` made in every mounted hierarchy.
#[derive(Debug, Default)]
pub struct Everywhere {
    /// The `cgroup.procs` file of each hierarchy where it exists.
    pub procs_files: Vec<PathBuf>,
    /// Why it could not be made in the others.
    pub errors: Vec<CgroupError>,
}

/// Make the cgroup `rel` in every mounted hierarchy (each v1 controller,
/// named ones like systemd's, and cgroup2) where it is missing. A process
/// that moves into all of them no longer belongs to whoever started it: a
/// service manager or container runtime that kills its own cgroup on stop
/// leaves it alone. Keeps going past a hierarchy that fails, since every
/// one left behind is one such a stop could reach.
pub fn make_everywhere(rel: &str) -> Result<Everywhere, CgroupError> {
    let rel = rel.trim_matches('/');
    let mut made = Everywhere::default();
    for root in mounted_roots()? {
        match make_dirs(&root, rel) {
            Ok(dir) => made.procs_files.push(dir.join("cgroup.procs")),
            Err(e) => made.errors.push(e),
        }
    }
    Ok(made)
}

/// The mount point of every cgroup hierarchy (each v1 controller, named
/// ones like systemd's, and cgroup2), once each.
pub fn mounted_roots() -> Result<Vec<PathBuf>, CgroupError> {
    let text = mountinfo::read().map_err(|source| CgroupError::Io {
        path: "/proc/self/mountinfo".into(),
        source,
    })?;
    let roots: BTreeSet<PathBuf> = mountinfo::parse(&text)
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| m.mount_point)
        .collect();
    Ok(roots.into_iter().collect())
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
        let cg = Hierarchy::from_mountinfo(HYBRID)
            .unwrap()
            .cgroup("/rundmc/web");
        assert_eq!(
            cg.dir("memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory/rundmc/web")
        );
        assert_eq!(
            cg.oom_counter_file().unwrap(),
            Path::new("/sys/fs/cgroup/memory/rundmc/web/memory.oom_control")
        );
        assert_eq!(cg.dirs().len(), 5);
    }

    #[test]
    fn comounted_and_unified() {
        let comounted = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
            35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
            37 31 0:34 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n\
            39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        let cg = Hierarchy::from_mountinfo(comounted).unwrap().cgroup("x");
        assert_eq!(
            cg.dir("cpuacct").unwrap(),
            Path::new("/sys/fs/cgroup/cpu,cpuacct/x")
        );
        assert_eq!(
            cg.dirs().len(),
            4,
            "co-mounted controllers share a directory"
        );

        let unified = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let cg = Hierarchy::from_mountinfo(unified)
            .unwrap()
            .cgroup("/rundmc/web");
        assert_eq!(cg, Cgroup::V2("/sys/fs/cgroup/rundmc/web".into()));
        assert_eq!(
            cg.oom_counter_file().unwrap(),
            Path::new("/sys/fs/cgroup/rundmc/web/memory.events")
        );
    }

    #[test]
    fn missing_controller_is_named() {
        let partial = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert!(matches!(
            Hierarchy::from_mountinfo(partial),
            Err(CgroupError::MissingController(c)) if c == "cpu"
        ));
        assert!(matches!(
            Hierarchy::from_mountinfo(""),
            Err(CgroupError::NotMounted)
        ));
    }
}
