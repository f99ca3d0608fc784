//! A container's cgroup as the runtime recorded it, and what rundmc reads
//! from it directly: the freezer (for the in-process status), and, for a
//! runtime without an `events` verb (crun), the stats and OOM notifications
//! that `runc events` would give. Works on cgroup v1 (one directory per
//! controller) and v2 (one directory); it never writes a limit.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use thiserror::Error;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::Stats;

/// Where cgroupfs is mounted.
pub const MOUNT: &str = "/sys/fs/cgroup";

/// The v1 controllers rundmc reads.
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpuacct", "pids", "freezer"];

/// A cgroup file could not be read or watched.
#[derive(Debug, Error)]
#[error("{path}: {source}")]
pub struct CgroupError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// A container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// v1: a directory per controller, by controller name.
    V1(BTreeMap<String, PathBuf>),
    /// v2: one directory.
    V2(PathBuf),
}

/// Are cgroups unified (pure v2) on this machine?
pub fn unified() -> bool {
    static UNIFIED: OnceLock<bool> = OnceLock::new();
    *UNIFIED.get_or_init(|| Path::new(MOUNT).join("cgroup.controllers").exists())
}

impl Cgroup {
    /// From runc's `cgroup_paths`: v2 records the single directory under
    /// the key `""`; v1 records one entry per controller (and, on a hybrid
    /// machine, the unused unified directory under `""` too).
    pub fn from_runc_paths(paths: &std::collections::HashMap<String, PathBuf>) -> Option<Cgroup> {
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

    /// From a cgroup path relative to the hierarchy root (crun's
    /// `cgroup-path`), under the standard mount point.
    pub fn from_path(unified: bool, path: &str) -> Cgroup {
        let relative = path.trim_start_matches('/');
        if unified {
            return Cgroup::V2(Path::new(MOUNT).join(relative));
        }
        let dirs = V1_CONTROLLERS
            .iter()
            .map(|c| (c.to_string(), Path::new(MOUNT).join(c).join(relative)))
            .collect();
        Cgroup::V1(dirs)
    }

    fn v1_file(&self, controller: &str, file: &str) -> Option<PathBuf> {
        match self {
            Cgroup::V1(dirs) => dirs.get(controller).map(|dir| dir.join(file)),
            Cgroup::V2(_) => None,
        }
    }

    /// Is the cgroup frozen? With `self_only` (runc's rule), a v1 cgroup
    /// frozen only through an ancestor does not count. Unreadable freezer
    /// files read as not frozen, as runc treats a missing freezer.
    pub fn frozen(&self, self_only: bool) -> bool {
        match self {
            Cgroup::V2(dir) => {
                fs::read_to_string(dir.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
            }
            Cgroup::V1(_) => {
                let Some(state) = self.v1_file("freezer", "freezer.state") else {
                    return false;
                };
                let Ok(state) = fs::read_to_string(state) else {
                    return false;
                };
                let self_freezing = self
                    .v1_file("freezer", "freezer.self_freezing")
                    .and_then(|path| fs::read_to_string(path).ok());
                v1_frozen(&state, self_freezing.as_deref(), self_only)
            }
        }
    }

    /// Current usage and limits, read from the cgroup's files.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        match self {
            Cgroup::V1(_) => {
                let read = |controller: &str, file: &str| match self.v1_file(controller, file) {
                    Some(path) => read_number(&path, 0),
                    None => Ok(0),
                };
                Ok(Stats {
                    cpu_usage_ns: read("cpuacct", "cpuacct.usage")?,
                    memory_usage_bytes: read("memory", "memory.usage_in_bytes")?,
                    memory_limit_bytes: read("memory", "memory.limit_in_bytes")?,
                    pids_current: read("pids", "pids.current")?,
                    pids_limit: read("pids", "pids.max")?,
                })
            }
            Cgroup::V2(dir) => {
                let cpu_stat = dir.join("cpu.stat");
                let text = fs::read_to_string(&cpu_stat).map_err(|source| CgroupError {
                    path: cpu_stat,
                    source,
                })?;
                Ok(Stats {
                    cpu_usage_ns: cpu_stat_usage_usec(&text).saturating_mul(1000),
                    memory_usage_bytes: read_number(&dir.join("memory.current"), 0)?,
                    memory_limit_bytes: read_number(&dir.join("memory.max"), u64::MAX)?,
                    pids_current: read_number(&dir.join("pids.current"), 0)?,
                    pids_limit: read_number(&dir.join("pids.max"), 0)?,
                })
            }
        }
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

/// A cgroup number file: a decimal, or `max` which reads as `max`.
pub fn parse_number(text: &str, max: u64) -> Option<u64> {
    match text.trim() {
        "max" => Some(max),
        number => number.parse().ok(),
    }
}

fn read_number(path: &Path, max: u64) -> Result<u64, CgroupError> {
    let text = fs::read_to_string(path).map_err(|source| CgroupError {
        path: path.to_owned(),
        source,
    })?;
    parse_number(&text, max).ok_or_else(|| CgroupError {
        path: path.to_owned(),
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a number: {:?}", text.trim()),
        ),
    })
}

/// The `usage_usec` line of v2 `cpu.stat`.
pub fn cpu_stat_usage_usec(text: &str) -> u64 {
    keyed_value(text, "usage_usec")
}

/// The `oom_kill` counter of v2 `memory.events`.
pub fn memory_events_oom_kills(text: &str) -> u64 {
    keyed_value(text, "oom_kill")
}

fn keyed_value(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Watches a cgroup for OOM kills without a runtime process: v1 through an
/// eventfd registered on `memory.oom_control` (the kernel also signals it
/// when the cgroup is removed), v2 through inotify on `memory.events`.
pub enum OomWatch {
    /// v1 registration.
    V1 {
        /// Signalled on each OOM and on the cgroup's removal.
        eventfd: AsyncFd<EventFd>,
        /// Gone once the cgroup is removed.
        event_control: PathBuf,
        /// The file the eventfd is registered on, kept open with it.
        _oom_control: File,
    },
    /// v2 watch.
    V2 {
        /// IN_MODIFY on `memory.events`.
        inotify: AsyncFd<InotifyFd>,
        /// `memory.events`.
        events: PathBuf,
        /// The `oom_kill` count already reported.
        seen: u64,
    },
}

/// An inotify instance, as a raw fd for [`AsyncFd`].
pub struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Register an fd-owning value with the reactor, for readability only.
fn register<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: both callers pass a value that owns its descriptor (an
    // `EventFd` owns an `OwnedFd`, an `InotifyFd` its `Inotify`), which
    // stays open and returns the same raw fd until the `AsyncFd` drops it.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(io::Error::from)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError {
        path: path.to_owned(),
        source,
    }
}

impl OomWatch {
    /// Start watching. Must be called within a tokio runtime.
    pub fn new(cgroup: &Cgroup) -> Result<OomWatch, CgroupError> {
        match cgroup {
            Cgroup::V1(_) => {
                let Some(oom_control) = cgroup.v1_file("memory", "memory.oom_control") else {
                    let path = PathBuf::from("memory");
                    let source =
                        io::Error::new(io::ErrorKind::NotFound, "no memory controller recorded");
                    return Err(CgroupError { path, source });
                };
                Self::v1(&oom_control)
            }
            Cgroup::V2(dir) => Self::v2(&dir.join("memory.events")),
        }
    }

    fn v1(oom_control: &Path) -> Result<OomWatch, CgroupError> {
        let event_control = oom_control.with_file_name("cgroup.event_control");
        let file = File::open(oom_control).map_err(io_err(oom_control))?;
        let eventfd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| io_err(oom_control)(e.into()))?;
        let line = format!("{} {}", eventfd.as_raw_fd(), file.as_raw_fd());
        fs::write(&event_control, line).map_err(io_err(&event_control))?;
        let eventfd = register(eventfd).map_err(io_err(oom_control))?;
        Ok(OomWatch::V1 {
            eventfd,
            event_control,
            _oom_control: file,
        })
    }

    fn v2(events: &Path) -> Result<OomWatch, CgroupError> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| io_err(events)(e.into()))?;
        inotify
            .add_watch(events, AddWatchFlags::IN_MODIFY)
            .map_err(|e| io_err(events)(e.into()))?;
        let text = fs::read_to_string(events).map_err(io_err(events))?;
        let inotify = register(InotifyFd(inotify)).map_err(io_err(events))?;
        Ok(OomWatch::V2 {
            inotify,
            events: events.to_owned(),
            seen: memory_events_oom_kills(&text),
        })
    }

    /// Wait for the next OOM kill; `None` once the cgroup is gone (or the
    /// watch fails).
    pub async fn next(&mut self) -> Option<()> {
        match self {
            OomWatch::V1 {
                eventfd,
                event_control,
                ..
            } => loop {
                let mut ready = eventfd.readable().await.ok()?;
                match ready.try_io(|fd| fd.get_ref().read().map_err(io::Error::from)) {
                    Ok(Ok(_)) if event_control.exists() => return Some(()),
                    Ok(_) => return None,
                    Err(_would_block) => continue,
                }
            },
            OomWatch::V2 {
                inotify,
                events,
                seen,
            } => loop {
                let mut ready = inotify.readable().await.ok()?;
                let read = ready.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from));
                let Ok(read) = read else { continue };
                if read
                    .ok()?
                    .iter()
                    .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                {
                    return None;
                }
                let kills = memory_events_oom_kills(&fs::read_to_string(&*events).ok()?);
                if kills > *seen {
                    *seen = kills;
                    return Some(());
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
        let Some(Cgroup::V1(dirs)) = Cgroup::from_runc_paths(&paths) else {
            panic!("v1 expected")
        };
        assert_eq!(dirs.len(), 1);
        assert_eq!(dirs["memory"], Path::new("/sys/fs/cgroup/memory/web"));
    }

    #[test]
    fn a_cgroup_path_maps_under_the_mount() {
        assert_eq!(
            Cgroup::from_path(true, "/rundmc/web"),
            Cgroup::V2("/sys/fs/cgroup/rundmc/web".into())
        );
        let Cgroup::V1(dirs) = Cgroup::from_path(false, "/rundmc/web") else {
            panic!("v1 expected")
        };
        assert_eq!(
            dirs["freezer"],
            Path::new("/sys/fs/cgroup/freezer/rundmc/web")
        );
        assert_eq!(
            dirs["cpuacct"],
            Path::new("/sys/fs/cgroup/cpuacct/rundmc/web")
        );
    }

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

    #[test]
    fn numbers_and_max_are_parsed() {
        assert_eq!(parse_number("16777216\n", 0), Some(16777216));
        assert_eq!(parse_number("max\n", u64::MAX), Some(u64::MAX));
        assert_eq!(parse_number("max\n", 0), Some(0));
        assert_eq!(parse_number("lots", 0), None);
    }

    #[test]
    fn v2_keyed_files_are_parsed() {
        let cpu = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(cpu_stat_usage_usec(cpu), 123456);
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(memory_events_oom_kills(events), 2);
        assert_eq!(memory_events_oom_kills(""), 0);
    }
}
