//! Support for the runtime adapter's integration tests: a throwaway sandbox
//! per test (its own runtime root, bundle directory and cgroup parent) for
//! one runtime binary, bundles written from `runc spec` over the shared
//! busybox image, and a Drop guard that force-deletes every container of the
//! sandbox with the same binary, removes its cgroups and its directory, also
//! when the test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rundmc::runtime::{Runc, RuntimeConfig};
use serde_json::{Value, json};

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static CGROUP_SETUP: Once = Once::new();

/// 16 MiB, the memory limit of the tests' containers.
pub const MEMORY_LIMIT: i64 = 16 * 1024 * 1024;

pub use crate::common::image;

/// crun refuses a hybrid cgroup machine on which any controller is bound to
/// the v2 hierarchy ("cgroups in hybrid mode not supported, drop all
/// controllers from cgroupv2"). On Debian's hybrid layout that is hugetlb,
/// which no v1 hierarchy mounts; mounting it as v1 moves it off v2. Done
/// once per test run, only on a hybrid machine, only for controllers that
/// v2 holds and v1 lacks.
pub fn prepare_cgroups_for_crun() {
    CGROUP_SETUP.call_once(|| {
        let Ok(bound) = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers") else {
            return;
        };
        for controller in bound.split_whitespace() {
            let dir = Path::new("/sys/fs/cgroup").join(controller);
            std::fs::create_dir_all(&dir).unwrap();
            let status = Command::new("mount")
                .args(["-t", "cgroup", "-o", controller, "none"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "mounting the {controller} cgroup v1 controller failed"
            );
        }
    });
}

/// What a test bundle's config.json says.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    /// The init process.
    pub args: Vec<String>,
    /// `linux.resources.memory.limit`.
    pub memory_limit: Option<i64>,
    /// `linux.resources.memory.swap` (memory plus swap).
    pub memory_swap: Option<i64>,
    /// `root.path`; the shared image when `None`.
    pub rootfs: Option<PathBuf>,
}

impl Default for BundleSpec {
    fn default() -> Self {
        BundleSpec {
            args: vec!["sleep".into(), "1000".into()],
            memory_limit: Some(MEMORY_LIMIT),
            memory_swap: None,
            rootfs: None,
        }
    }
}

/// One test's runtime root, bundles and cgroup parent, for one binary.
pub struct Sandbox {
    /// `runc` or `crun`.
    pub binary: &'static str,
    /// Everything of the test lives under it.
    pub dir: PathBuf,
    /// The runtime's `--root`.
    pub root: PathBuf,
    /// The cgroup parent, relative to each hierarchy's root.
    pub cgroup_parent: String,
}

impl Sandbox {
    pub fn new(binary: &'static str, name: &str) -> Self {
        if binary == "crun" {
            prepare_cgroups_for_crun();
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let unique = format!("{name}-{binary}-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("rundmc-rt-{unique}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Sandbox {
            binary,
            root: dir.join("root"),
            cgroup_parent: format!("rundmc-test/{unique}"),
            dir,
        }
    }

    /// The adapter under test.
    pub fn runtime(&self) -> Runc {
        self.runtime_with_timeout(Duration::from_secs(30))
    }

    pub fn runtime_with_timeout(&self, timeout: Duration) -> Runc {
        Runc::new(RuntimeConfig {
            binary: self.binary.into(),
            root: self.root.clone(),
            timeout,
        })
    }

    /// Write `<dir>/bundles/<id>/config.json` from `runc spec`, edited.
    pub fn bundle(&self, id: &str, spec: &BundleSpec) -> PathBuf {
        let bundle = self.dir.join("bundles").join(id);
        let path = bundle.join("config.json");
        let mut config: Value = crate::common::runc_spec(&bundle);
        let rootfs = spec.rootfs.clone().unwrap_or_else(image);
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(spec.args);
        config["root"] = json!({"path": rootfs, "readonly": true});
        config["hostname"] = json!(id);
        config["linux"]["cgroupsPath"] = json!(format!("/{}/{id}", self.cgroup_parent));
        let mut memory = serde_json::Map::new();
        if let Some(limit) = spec.memory_limit {
            memory.insert("limit".into(), json!(limit));
        }
        if let Some(swap) = spec.memory_swap {
            memory.insert("swap".into(), json!(swap));
        }
        config["linux"]["resources"]["memory"] = Value::Object(memory);
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        bundle
    }

    /// `<binary> --root <root> ARGS...`
    pub fn raw(&self, args: &[&str]) -> Output {
        Command::new(self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .output()
            .unwrap()
    }

    /// The binary's own `state ID` document, or `None` when it fails.
    pub fn raw_state(&self, id: &str) -> Option<Value> {
        let out = self.raw(&["state", id]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// The binary's own `list --format json`, as documents.
    pub fn raw_list(&self) -> Vec<Value> {
        let out = self.raw(&["list", "--format", "json"]);
        assert!(
            out.status.success(),
            "{} list: {}",
            self.binary,
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Option<Vec<Value>> = serde_json::from_slice(&out.stdout).unwrap();
        list.unwrap_or_default()
    }

    /// A v1 controller's directory of container `id`.
    pub fn cgroup_dir(&self, controller: &str, id: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&self.cgroup_parent)
            .join(id)
    }

    /// Run `ARGS` in container `id` in the foreground: (exit code, stdout).
    pub fn exec(&self, id: &str, args: &[&str]) -> (i32, String) {
        let mut all = vec!["exec", id];
        all.extend_from_slice(args);
        let out = self.raw(&all);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn container_ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|name| !name.starts_with('.'))
            .collect()
    }

    fn remove_cgroups(&self) {
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for hierarchy in hierarchies.filter_map(|e| e.ok()) {
            let parent = hierarchy.path().join(&self.cgroup_parent);
            if let Ok(children) = std::fs::read_dir(&parent) {
                for child in children.filter_map(|e| e.ok()) {
                    if child.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        let _ = std::fs::remove_dir(child.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for id in self.container_ids() {
            let _ = self.raw(&["resume", &id]);
            let _ = self.raw(&["delete", "--force", &id]);
        }
        self.remove_cgroups();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wait until `check` holds, or panic with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of live processes whose command line contains every one of `words`
/// (zombies have an empty command line and so never match).
pub fn processes_with(words: &[&str]) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if words.iter().all(|w| args.iter().any(|a| a == w)) {
            pids.push(pid);
        }
    }
    pids
}
