//! Reading the runtime's own state directory in-process, so that `state`
//! and `list` cost a few file reads instead of a runtime process each.
//!
//! Both runc and crun keep one directory per container under `--root`:
//! runc writes `<root>/<id>/state.json` (its libcontainer state: `id`,
//! `init_process_pid`, `init_process_start`, `config.labels` holding
//! `bundle=<dir>`, `cgroup_paths`), crun writes `<root>/<id>/status` (`pid`,
//! `process-start-time`, `cgroup-path`, `bundle`). Both write these files
//! atomically (temporary file, then rename), keep `<root>/<id>/exec.fifo`
//! between `create` and `start`, and derive the status the same way, which
//! [`derive_status`] repeats: the init is alive when `/proc/<pid>/stat`
//! exists, shows the recorded start time (field 22) and is not a zombie;
//! alive with `exec.fifo` present is created; a frozen cgroup is paused.
//!
//! Whenever a directory is not in one of these shapes the caller is told so
//! ([`Lookup::Empty`], [`Lookup::Unparsable`], `None` from [`list`]) and
//! asks the runtime binary instead.

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use rundmc_shim::procstat::{self, ProcStat};
use serde::Deserialize;

use super::{State, Status};
use crate::cgroup::{Cgroup, Hierarchy};
use crate::fsutil;

/// Which runtime wrote a container's state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `state.json`.
    Runc,
    /// `status`.
    Crun,
}

/// What a state directory records about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The container id.
    pub id: String,
    /// Who wrote it.
    pub layout: Layout,
    /// The init's host pid.
    pub pid: i32,
    /// The init's start time in clock ticks since boot, as in
    /// `/proc/<pid>/stat` field 22 (0: unknown, crun only).
    pub start_time: u64,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The container's cgroup, when recorded.
    pub cgroup: Option<Cgroup>,
}

/// The outcome of looking for one container's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A recognised record.
    Found(Record),
    /// No directory `<root>/<id>`: the runtime has no such container.
    Missing,
    /// A directory without a state file (a `create` in progress, or a
    /// runtime of another layout).
    Empty,
    /// A state file that is not in a known shape.
    Unparsable,
}

#[derive(Deserialize)]
struct RuncStateFile {
    id: String,
    init_process_pid: i32,
    init_process_start: u64,
    config: RuncConfig,
    #[serde(default)]
    cgroup_paths: HashMap<String, PathBuf>,
}

#[derive(Deserialize)]
struct RuncConfig {
    #[serde(default)]
    labels: Option<Vec<String>>,
}

/// Parse runc's `state.json`. The bundle comes from the `bundle=` label.
pub fn parse_runc_state(bytes: &[u8]) -> Result<Record, serde_json::Error> {
    let file: RuncStateFile = serde_json::from_slice(bytes)?;
    let bundle = file
        .config
        .labels
        .unwrap_or_default()
        .iter()
        .find_map(|label| label.strip_prefix("bundle="))
        .map(PathBuf::from)
        .unwrap_or_default();
    Ok(Record {
        id: file.id,
        layout: Layout::Runc,
        pid: file.init_process_pid,
        start_time: file.init_process_start,
        bundle,
        cgroup: Cgroup::from_runc_paths(&file.cgroup_paths),
    })
}

#[derive(Deserialize)]
struct CrunStatusFile {
    pid: i32,
    #[serde(rename = "process-start-time", default)]
    start_time: u64,
    #[serde(rename = "cgroup-path", default)]
    cgroup_path: String,
    bundle: PathBuf,
}

/// Parse crun's `status` file; crun does not record the id in it, the
/// directory's name is the id. crun records the cgroup path relative to
/// the roots of `hierarchy`.
pub fn parse_crun_status(
    id: &str,
    bytes: &[u8],
    hierarchy: &Hierarchy,
) -> Result<Record, serde_json::Error> {
    let file: CrunStatusFile = serde_json::from_slice(bytes)?;
    let cgroup = (!file.cgroup_path.is_empty()).then(|| hierarchy.cgroup(&file.cgroup_path));
    Ok(Record {
        id: id.to_owned(),
        layout: Layout::Crun,
        pid: file.pid,
        start_time: file.start_time,
        bundle: file.bundle,
        cgroup,
    })
}

/// Is the recorded init still alive? `proc` is its `/proc/<pid>/stat`, if
/// that exists. crun skips the start time check when none was recorded.
pub fn init_alive(record: &Record, proc: Option<&ProcStat>) -> bool {
    let Some(proc) = proc else { return false };
    if record.layout == Layout::Crun && record.start_time == 0 {
        return true;
    }
    proc.start_time == record.start_time && !matches!(proc.state, 'Z' | 'X' | 'x')
}

/// The status, as each runtime derives it: runc looks at the freezer
/// first, crun at the liveness of init and the exec fifo first.
pub fn derive_status(layout: Layout, alive: bool, exec_fifo: bool, frozen: bool) -> Status {
    match layout {
        Layout::Runc if frozen => Status::Paused,
        _ if !alive => Status::Stopped,
        _ if exec_fifo => Status::Created,
        _ if frozen => Status::Paused,
        _ => Status::Running,
    }
}

/// Above this many entries the cache of parsed `state.json` files starts
/// over, so ids that are never looked up again cannot grow it for ever.
const PARSED_MAX: usize = 16_384;

/// Records parsed from runc's `state.json` files, by path, with the version
/// of the file each came from. runc replaces the file by rename, so an
/// unchanged key is an unchanged record. The file carries the container's
/// whole config (seccomp filters and all, tens of KiB), and parsing it was
/// the largest user-space cost of the agent per container in a burst
/// (issue 19): every observation of a container read it again.
static PARSED: Mutex<Option<HashMap<PathBuf, (fsutil::FileVersion, Record)>>> = Mutex::new(None);

fn parsed() -> MutexGuard<'static, Option<HashMap<PathBuf, (fsutil::FileVersion, Record)>>> {
    PARSED.lock().unwrap_or_else(|e| e.into_inner())
}

/// runc's `state.json` at `path`, parsed, or from the cache when the file
/// is the version parsed before. The key is taken from the opened file, so
/// a rename racing the read cannot pair one version's key with another's
/// record.
fn read_runc_state(path: &Path) -> std::io::Result<Lookup> {
    let mut file = fs::File::open(path)?;
    let key = fsutil::FileVersion::of(&file.metadata()?);
    if let Some((k, record)) = parsed().as_ref().and_then(|m| m.get(path))
        && *k == key
    {
        return Ok(Lookup::Found(record.clone()));
    }
    let mut bytes = Vec::with_capacity(key.size() as usize);
    file.read_to_end(&mut bytes)?;
    let Ok(record) = parse_runc_state(&bytes) else {
        return Ok(Lookup::Unparsable);
    };
    let mut cache = parsed();
    let map = cache.get_or_insert_with(HashMap::new);
    if map.len() >= PARSED_MAX {
        map.clear();
    }
    map.insert(path.to_owned(), (key, record.clone()));
    Ok(Lookup::Found(record))
}

fn forget_runc_state(path: &Path) {
    if let Some(map) = parsed().as_mut() {
        map.remove(path);
    }
}

/// Set once a crun `status` file has been found: lookups then try it
/// first, and a crun container's look costs no failed open of a
/// `state.json` (one runtime writes a state directory, so the order
/// changes nothing found).
static CRUN_SEEN: AtomicBool = AtomicBool::new(false);

/// Look up container `id` under `root`.
pub fn lookup(root: &Path, id: &str) -> Lookup {
    let dir = root.join(id);
    let crun_first = CRUN_SEEN.load(Ordering::Relaxed);
    if crun_first && let Some(found) = lookup_crun(&dir, id) {
        return found;
    }
    let state = dir.join("state.json");
    match read_runc_state(&state) {
        Ok(found) => return found,
        Err(e) if e.kind() == ErrorKind::NotFound => forget_runc_state(&state),
        Err(_) => return Lookup::Unparsable,
    }
    if !crun_first && let Some(found) = lookup_crun(&dir, id) {
        return found;
    }
    match dir.try_exists() {
        Ok(true) => Lookup::Empty,
        Ok(false) => Lookup::Missing,
        Err(_) => Lookup::Unparsable,
    }
}

/// crun's `status` in `dir`; `None` when there is none.
fn lookup_crun(dir: &Path, id: &str) -> Option<Lookup> {
    match fsutil::read_small(&dir.join("status")) {
        Ok(bytes) => {
            CRUN_SEEN.store(true, Ordering::Relaxed);
            Some(
                parse_crun_status(id, &bytes, Hierarchy::host())
                    .map_or(Lookup::Unparsable, Lookup::Found),
            )
        }
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(_) => Some(Lookup::Unparsable),
    }
}

/// Read what the kernel says about a recorded container: its init's
/// `/proc` entry, the exec fifo, the freezer.
pub fn observe(root: &Path, record: &Record) -> State {
    let proc = fsutil::read_small_string(Path::new(&format!("/proc/{}/stat", record.pid)))
        .ok()
        .and_then(|text| procstat::parse(&text));
    let alive = record.pid > 0 && init_alive(record, proc.as_ref());
    let exec_fifo = root.join(&record.id).join("exec.fifo").exists();
    let frozen = record
        .cgroup
        .as_ref()
        .is_some_and(|cg| cg.frozen(record.layout == Layout::Runc));
    let status = derive_status(record.layout, alive, exec_fifo, frozen);
    State {
        id: record.id.clone(),
        pid: (status != Status::Stopped).then_some(record.pid),
        status,
        bundle: record.bundle.clone(),
    }
}

/// Every container under `root`, sorted by id; `None` when some directory
/// holds a state file this module cannot read, and the runtime must be
/// asked. Directories without a state file are skipped, as runc and crun
/// skip them, and so are dot-names (rundmc's per-call log files).
pub fn list(root: &Path) -> Option<Vec<State>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Some(Vec::new()),
        Err(_) => return None,
    };
    let mut states = Vec::new();
    for entry in entries {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let Some(id) = name.to_str() else { continue };
        if id.starts_with('.') || !entry.file_type().ok()?.is_dir() {
            continue;
        }
        match lookup(root, id) {
            Lookup::Found(record) => states.push(observe(root, &record)),
            Lookup::Missing | Lookup::Empty => {}
            Lookup::Unparsable => return None,
        }
    }
    states.sort_by(|a, b| a.id.cmp(&b.id));
    Some(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNC_STATE: &[u8] = include_bytes!("testdata/runc-state-running.json");
    const CRUN_RUNNING: &[u8] = include_bytes!("testdata/crun-status-running");
    const CRUN_CREATED: &[u8] = include_bytes!("testdata/crun-status-created");
    const PROC_STAT: &str = include_str!("testdata/proc-stat-sleep");

    #[test]
    fn runc_state_json_gives_pid_start_bundle_and_cgroups() {
        let record = parse_runc_state(RUNC_STATE).unwrap();
        assert_eq!(record.id, "x-runc");
        assert_eq!(record.layout, Layout::Runc);
        assert_eq!((record.pid, record.start_time), (12265, 74190));
        assert_eq!(record.bundle, Path::new("/tmp/rt-exp/b"));
        let Some(Cgroup::V1(dirs)) = record.cgroup else {
            panic!("v1 cgroup expected")
        };
        assert_eq!(
            dirs.get("freezer").unwrap(),
            Path::new("/sys/fs/cgroup/freezer/rundmc-exp/c1")
        );
        assert_eq!(
            dirs.get("memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory/rundmc-exp/c1")
        );
    }

    #[test]
    fn runc_v2_state_has_one_unified_cgroup_dir() {
        let mut json: serde_json::Value = serde_json::from_slice(RUNC_STATE).unwrap();
        json["cgroup_paths"] = serde_json::json!({"": "/sys/fs/cgroup/rundmc/web"});
        let record = parse_runc_state(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(
            record.cgroup,
            Some(Cgroup::V2("/sys/fs/cgroup/rundmc/web".into()))
        );
    }

    #[test]
    fn runc_state_without_labels_has_an_empty_bundle() {
        let mut json: serde_json::Value = serde_json::from_slice(RUNC_STATE).unwrap();
        json["config"]["labels"] = serde_json::Value::Null;
        let record = parse_runc_state(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(record.bundle, PathBuf::new());
    }

    #[test]
    fn a_state_json_is_parsed_once_per_version() {
        let root = std::env::temp_dir().join(format!("rundmc-statedir-{}", std::process::id()));
        let dir = root.join("x-runc");
        fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state.json");
        fs::write(&state, RUNC_STATE).unwrap();
        let Lookup::Found(first) = lookup(&root, "x-runc") else {
            panic!("state.json not read")
        };
        assert_eq!(first.pid, 12265);
        let cached = parsed().as_ref().and_then(|m| m.get(&state).cloned());
        assert_eq!(cached.map(|(_, r)| r), Some(first));
        // runc replaces the file by rename: the new version is read.
        let mut json: serde_json::Value = serde_json::from_slice(RUNC_STATE).unwrap();
        json["init_process_pid"] = 4242.into();
        let tmp = dir.join("state-tmp");
        fs::write(&tmp, serde_json::to_vec(&json).unwrap()).unwrap();
        fs::rename(&tmp, &state).unwrap();
        let Lookup::Found(second) = lookup(&root, "x-runc") else {
            panic!("state.json not read")
        };
        assert_eq!(second.pid, 4242);
        // Gone, and forgotten.
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(lookup(&root, "x-runc"), Lookup::Missing);
        assert!(parsed().as_ref().is_none_or(|m| !m.contains_key(&state)));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn both_layouts_are_found_whichever_was_seen_first() {
        let root = std::env::temp_dir().join(format!("rundmc-layouts-{}", std::process::id()));
        for (dir, file, bytes) in [
            ("a-crun", "status", CRUN_RUNNING),
            ("b-runc", "state.json", RUNC_STATE),
        ] {
            fs::create_dir_all(root.join(dir)).unwrap();
            fs::write(root.join(dir).join(file), bytes).unwrap();
        }
        fs::create_dir_all(root.join("c-empty")).unwrap();
        for _ in 0..2 {
            let layouts: Vec<_> = ["a-crun", "b-runc"]
                .iter()
                .map(|id| match lookup(&root, id) {
                    Lookup::Found(r) => Some(r.layout),
                    _ => None,
                })
                .collect();
            assert_eq!(layouts, vec![Some(Layout::Crun), Some(Layout::Runc)]);
            assert_eq!(lookup(&root, "c-empty"), Lookup::Empty);
            assert_eq!(lookup(&root, "d-missing"), Lookup::Missing);
        }
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_foreign_state_json_is_an_error() {
        assert!(parse_runc_state(br#"{"id":"x","status":"running","pid":3}"#).is_err());
    }

    #[test]
    fn crun_status_gives_pid_start_bundle_and_cgroup() {
        let v1 = Hierarchy::V1 {
            controllers: ["freezer", "memory"]
                .map(|c| (c.to_string(), Path::new("/sys/fs/cgroup").join(c)))
                .into(),
        };
        let v2 = Hierarchy::V2 {
            root: "/sys/fs/cgroup".into(),
        };
        let record = parse_crun_status("x-crun", CRUN_RUNNING, &v1).unwrap();
        assert_eq!(record.id, "x-crun");
        assert_eq!(record.layout, Layout::Crun);
        assert_eq!((record.pid, record.start_time), (12354, 74321));
        assert_eq!(record.bundle, Path::new("/tmp/rt-exp/b"));
        let Some(Cgroup::V1(dirs)) = record.cgroup else {
            panic!("v1 cgroup expected")
        };
        assert_eq!(
            dirs.get("freezer").unwrap(),
            Path::new("/sys/fs/cgroup/freezer/rundmc-exp/c1")
        );
        let created = parse_crun_status("k1", CRUN_CREATED, &v2).unwrap();
        assert_eq!(
            created.cgroup,
            Some(Cgroup::V2("/sys/fs/cgroup/rundmc-exp/k1".into()))
        );
        assert_eq!(created.bundle, Path::new("/tmp/rt-exp/k"));
    }

    #[test]
    fn proc_stat_gives_state_and_start_time() {
        let stat = procstat::parse(PROC_STAT).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                state: 'S',
                start_time: 74190
            }
        );
    }

    #[test]
    fn proc_stat_survives_parentheses_and_spaces_in_the_name() {
        let text = "42 (we ird) (x) Z 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 999 0 0";
        assert_eq!(
            procstat::parse(text),
            Some(ProcStat {
                state: 'Z',
                start_time: 999
            })
        );
        assert_eq!(procstat::parse("42 (short) S 1 2"), None);
        assert_eq!(procstat::parse(""), None);
    }

    fn record(layout: Layout, start_time: u64) -> Record {
        Record {
            id: "c".into(),
            layout,
            pid: 7,
            start_time,
            bundle: "/b".into(),
            cgroup: None,
        }
    }

    #[test]
    fn init_is_alive_only_with_matching_start_and_not_a_zombie() {
        let runc = record(Layout::Runc, 100);
        assert!(init_alive(
            &runc,
            Some(&ProcStat {
                state: 'S',
                start_time: 100
            })
        ));
        assert!(!init_alive(
            &runc,
            Some(&ProcStat {
                state: 'S',
                start_time: 101
            })
        ));
        assert!(!init_alive(
            &runc,
            Some(&ProcStat {
                state: 'Z',
                start_time: 100
            })
        ));
        assert!(!init_alive(
            &runc,
            Some(&ProcStat {
                state: 'X',
                start_time: 100
            })
        ));
        assert!(!init_alive(&runc, None));
    }

    #[test]
    fn crun_without_a_recorded_start_time_trusts_the_pid() {
        let crun = record(Layout::Crun, 0);
        assert!(init_alive(
            &crun,
            Some(&ProcStat {
                state: 'S',
                start_time: 5
            })
        ));
        assert!(!init_alive(&crun, None));
        let runc = record(Layout::Runc, 0);
        assert!(!init_alive(
            &runc,
            Some(&ProcStat {
                state: 'S',
                start_time: 5
            })
        ));
    }

    #[test]
    fn status_derivation_follows_each_runtime() {
        use Layout::{Crun, Runc};
        // (alive, exec_fifo, frozen)
        assert_eq!(derive_status(Runc, true, false, false), Status::Running);
        assert_eq!(derive_status(Runc, true, true, false), Status::Created);
        assert_eq!(derive_status(Runc, true, false, true), Status::Paused);
        assert_eq!(derive_status(Runc, false, false, false), Status::Stopped);
        assert_eq!(derive_status(Runc, false, true, false), Status::Stopped);
        // runc asks the freezer first, crun the exec fifo.
        assert_eq!(derive_status(Runc, true, true, true), Status::Paused);
        assert_eq!(derive_status(Crun, true, true, true), Status::Created);
        assert_eq!(derive_status(Runc, false, false, true), Status::Paused);
        assert_eq!(derive_status(Crun, false, false, true), Status::Stopped);
        assert_eq!(derive_status(Crun, true, false, true), Status::Paused);
        assert_eq!(derive_status(Crun, true, false, false), Status::Running);
    }
}
