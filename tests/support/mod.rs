//! Shared support for integration tests: the busybox image, the workspace's
//! binaries, and a throwaway environment (depot, runc root, cgroup parent)
//! that is torn down with plain runc and umount even when a test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rundmc::api::{ContainerSpec, Handle};
use rundmc::containerizer::{Config, Containerizer};
use rundmc::runtime::{Runc, RuntimeConfig};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

#[path = "common.rs"]
mod common;
#[allow(unused_imports)]
pub use common::{binary, image, runc_spec, workspace};

/// A throwaway place for one test: its own depot, runc root and cgroup parent.
pub struct Env {
    pub dir: PathBuf,
    pub depot: PathBuf,
    pub runc_root: PathBuf,
    pub cgroup_parent: String,
}

impl Env {
    pub fn new(name: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{name}-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("rundmc-test-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Env {
            depot: dir.join("depot"),
            runc_root: dir.join("runc"),
            cgroup_parent: format!("rundmc-test/{id}"),
            dir,
        }
    }

    pub fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            binary: "runc".into(),
            root: self.runc_root.clone(),
            timeout: Duration::from_secs(30),
        }
    }

    pub fn config(&self) -> Config {
        Config {
            depot: self.depot.clone(),
            bundles: None,
            init_binary: binary("rundmc-init"),
            cgroup_parent: self.cgroup_parent.clone(),
            nstar_binary: binary("rundmc"),
            shim_binary: binary("rundmc-shim"),
            shim_cgroup: Some(self.shim_cgroup()),
        }
    }

    /// Where this environment's supervisors are moved.
    pub fn shim_cgroup(&self) -> String {
        format!("{}-shims", self.cgroup_parent)
    }

    pub fn containerizer(&self) -> Containerizer<Runc> {
        Containerizer::new(self.config(), Runc::new(self.runtime_config())).unwrap()
    }

    /// `runc --root <ours> ARGS...`
    pub fn runc(&self, args: &[&str]) -> Output {
        Command::new("runc")
            .arg("--root")
            .arg(&self.runc_root)
            .args(args)
            .output()
            .unwrap()
    }

    /// The runc status of `id` ("running", ...), or None when runc has no such container.
    pub fn runc_status(&self, id: &str) -> Option<String> {
        let out = self.runc(&["state", id]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        Some(v["status"].as_str().unwrap().to_string())
    }

    /// The init pid runc reports for `id`.
    pub fn init_pid(&self, id: &str) -> i32 {
        let out = self.runc(&["state", id]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["pid"].as_i64().unwrap() as i32
    }

    /// `runc exec` in the foreground: (exit code, stdout, stderr).
    pub fn exec(&self, id: &str, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["exec", id];
        all.extend_from_slice(args);
        let out = self.runc(&all);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `runc exec --detach`: start a background process in the container.
    /// Its stdio is /dev/null: the process would hold captured pipes open.
    pub fn exec_detached(&self, id: &str, args: &[&str]) {
        let err_path = self.dir.join("exec-detached.err");
        let err = std::fs::File::create(&err_path).unwrap();
        let status = Command::new("runc")
            .arg("--root")
            .arg(&self.runc_root)
            .args(["exec", "--detach", id])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .status()
            .unwrap();
        let msg = std::fs::read_to_string(&err_path).unwrap_or_default();
        assert!(status.success(), "runc exec -d failed: {msg}");
    }

    /// The container's directory in a v1 controller (or the v2 unified dir).
    pub fn cgroup_dir(&self, controller: &str, handle: &str) -> PathBuf {
        let rel = format!("{}/{handle}", self.cgroup_parent);
        let v1 = Path::new("/sys/fs/cgroup").join(controller);
        if v1.is_dir() {
            v1.join(rel)
        } else {
            Path::new("/sys/fs/cgroup").join(rel)
        }
    }
}

impl Drop for Env {
    /// Tear down whatever a failed test left: containers, mounts, cgroups, files.
    fn drop(&mut self) {
        // A test that failed mid-stop may leave a container frozen.
        let freezer = Path::new("/sys/fs/cgroup/freezer").join(&self.cgroup_parent);
        if let Ok(entries) = std::fs::read_dir(&freezer) {
            for e in entries.flatten() {
                let _ = std::fs::write(e.path().join("freezer.state"), "THAWED");
            }
        }
        // Each runtime lists only the containers it made (runc reads
        // `state.json`, crun `status`): a test on crun leaves crun's.
        for runtime in ["runc", "crun"] {
            let on_root = |args: &[&str]| {
                Command::new(runtime)
                    .arg("--root")
                    .arg(&self.runc_root)
                    .args(args)
                    .output()
            };
            if let Ok(out) = on_root(&["list", "-q"]) {
                for id in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = on_root(&["delete", "--force", id]);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.depot) {
            for e in entries.flatten() {
                let _ =
                    nix::mount::umount2(&e.path().join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let mounts = rundmc::mountinfo::read().unwrap_or_default();
        let hierarchies: Vec<PathBuf> = rundmc::mountinfo::parse(&mounts)
            .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
            .map(|m| m.mount_point)
            .collect();
        for base in &hierarchies {
            let parent = base.join(&self.cgroup_parent);
            if let Ok(entries) = std::fs::read_dir(&parent) {
                for e in entries.flatten().filter(|e| e.path().is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&parent);
            let _ = std::fs::remove_dir(base.join(self.shim_cgroup()));
        }
        // Whatever else is mounted below the test's directory (pinned
        // network namespaces and their directory), deepest first.
        let mut below: Vec<PathBuf> = rundmc::mountinfo::parse(&mounts)
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&self.dir))
            .collect();
        below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for path in below {
            let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A spec on the test image.
pub fn spec() -> ContainerSpec {
    ContainerSpec {
        rootfs: image().to_string_lossy().into_owned(),
        ..Default::default()
    }
}

/// A handle, panicking on a bad one (tests only).
pub fn handle(s: &str) -> Handle {
    Handle::new(s).unwrap()
}

/// The pids a `cgroup.procs` file lists.
pub fn cgroup_pids(procs: &Path) -> Vec<i32> {
    std::fs::read_to_string(procs)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Whether `pid` has ended: gone, or a zombie not yet reaped (this
/// machine's PID 1 reaps late).
pub fn ended(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z ")
}

/// Processes in state Z whose parent is `ppid`.
pub fn zombie_children(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut f = rest.split(' ');
        let (state, parent) = (f.next(), f.next().and_then(|p| p.parse::<i32>().ok()));
        if state == Some("Z") && parent == Some(ppid) {
            out.push(pid);
        }
    }
    out
}

/// Whether anything is mounted at `path` in the test's mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .any(|l| l.split(' ').nth(4).map(Path::new) == Some(path))
}

/// The lines of a spawned child's stdout, as they come (taken from it).
pub fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Poll `f` until true or `timeout` (tests only; the code under test never polls).
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

pub mod agent;
