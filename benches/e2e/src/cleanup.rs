//! Leaving nothing behind. Everything the run makes is registered here as
//! it is made: its directory, runtime roots, cgroup parents, CPU cgroups,
//! cgroup v1 mounts, helper processes (the registry), network namespaces
//! and bridges. [`sweep`] ends helpers, agents, containers (kill, wait,
//! delete), supervisors, mounts, the network phase's namespaces, veths,
//! portmap rules and bridges, and cgroups, removes the directory, and says
//! what, if anything, it could not remove. It runs at the end of every
//! run, after an error, and from the panic hook.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::agent::runtime_init_pid;
use crate::reaper;
use crate::sys::{self, PidFd};

/// What the run has made so far.
#[derive(Debug, Default)]
pub struct Registry {
    /// The run's directories.
    pub bases: Vec<PathBuf>,
    /// (runtime binary, `--root`) of every runtime used.
    pub roots: Vec<(String, PathBuf)>,
    /// Cgroup parents of containers.
    pub cgroup_parents: Vec<String>,
    /// CPU cgroups the agents ran in.
    pub cpu_cgroups: Vec<PathBuf>,
    /// cgroup v1 hierarchies mounted for crun, to unmount when done.
    pub v1_mounts: Vec<PathBuf>,
    /// Long-running helpers the harness spawned (the images phase's
    /// registry): SIGKILLed first.
    pub children: Vec<i32>,
    /// Directories outside the run's that a tool made (podman's in /run),
    /// deepest first: removed if empty.
    pub empty_dirs: Vec<PathBuf>,
    /// Network namespaces the network phase made with `ip netns add`.
    pub netns: Vec<String>,
    /// Bridges the network phase made (also its networks' names, which
    /// portmap's rules carry).
    pub bridges: Vec<String>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// Changes the registry.
pub fn register(f: impl FnOnce(&mut Registry)) {
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Registry::default));
}

/// Removes everything registered; returns what could not be removed.
pub fn sweep() -> Vec<String> {
    let taken = REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(reg) = taken else {
        return Vec::new();
    };
    for &pid in &reg.children {
        if let Ok(fd) = PidFd::open(pid) {
            let _ = sys::kill(pid, libc::SIGKILL);
            fd.exited_within(Duration::from_secs(5));
        }
    }
    kill_in_cgroups(&reg.cpu_cgroups, |exe| exe.ends_with("/rundmc"));
    for (runtime, root) in &reg.roots {
        remove_containers(runtime, root);
    }
    kill_in_cgroups(&reg.cpu_cgroups, |_| true);
    for base in &reg.bases {
        for m in mounts_under(base) {
            let _ = sys::unmount(&m);
        }
    }
    // Pinned namespaces are unmounted and their containers dead: the
    // veths, rules and bridges of the network phase can go.
    crate::net::sweep(&reg.netns, &reg.bridges);
    for parent in &reg.cgroup_parents {
        for h in hierarchies() {
            remove_cgroup_tree(&h.join(parent));
            // The agent's supervisors' cgroup beside its containers'.
            remove_cgroup_tree(&h.join(format!("{parent}-shims")));
        }
    }
    for c in &reg.cpu_cgroups {
        let _ = fs::remove_dir(c);
    }
    for base in &reg.bases {
        let _ = fs::remove_dir_all(base);
    }
    for m in &reg.v1_mounts {
        unmount_v1_if_empty(m);
    }
    for d in &reg.empty_dirs {
        let _ = fs::remove_dir(d);
    }
    left_behind(&reg)
}

/// Every container under `root`: kill, wait for init, delete. Only a
/// container whose init would not die is deleted with `--force`.
fn remove_containers(runtime: &str, root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let id = e.file_name().to_string_lossy().into_owned();
        if id.starts_with('.') || !e.path().is_dir() {
            continue;
        }
        let init = runtime_init_pid(root, &id).and_then(|p| PidFd::open(p).ok());
        let run = |args: &[&str]| {
            let mut cmd = Command::new(runtime);
            cmd.arg("--root")
                .arg(root)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            reaper::status(&mut cmd).is_ok_and(|s| s.success())
        };
        run(&["kill", &id, "KILL"]);
        let died = init.is_none_or(|fd| fd.exited_within(Duration::from_secs(10)));
        if !run(&["delete", &id]) || !died {
            run(&["delete", "--force", &id]);
        }
    }
}

/// SIGKILLs the processes of the CPU cgroups whose executable matches, and
/// waits for them.
fn kill_in_cgroups(cgroups: &[PathBuf], matches: impl Fn(&str) -> bool) {
    for c in cgroups {
        let pids: Vec<i32> = fs::read_to_string(c.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        for pid in pids {
            let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            if !matches(&exe.to_string_lossy()) {
                continue;
            }
            if let Ok(fd) = PidFd::open(pid) {
                let _ = sys::kill(pid, libc::SIGKILL);
                fd.exited_within(Duration::from_secs(5));
            }
        }
    }
}

/// Mount points under `base`, deepest first.
pub fn mounts_under(base: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(base))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

/// Every cgroup hierarchy's root directory.
fn hierarchies() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        dirs.extend(
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink()),
        );
    }
    dirs
}

/// rmdir a cgroup and its children, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

fn unmount_v1_if_empty(mount: &Path) {
    let children = fs::read_dir(mount)
        .map(|es| es.filter_map(|e| e.ok()).any(|e| e.path().is_dir()))
        .unwrap_or(false);
    if !children && sys::unmount(mount).is_ok() {
        let _ = fs::remove_dir(mount);
    }
}

/// What is still there after the sweep.
fn left_behind(reg: &Registry) -> Vec<String> {
    let mut left = Vec::new();
    for base in &reg.bases {
        left.extend(
            mounts_under(base)
                .into_iter()
                .map(|m| format!("mount {}", m.display())),
        );
        if base.exists() {
            left.push(format!("directory {}", base.display()));
        }
    }
    for parent in &reg.cgroup_parents {
        for h in hierarchies() {
            let dir = h.join(parent);
            if dir.exists() {
                left.push(format!("cgroup {}", dir.display()));
            }
        }
    }
    left.extend(
        reg.cpu_cgroups
            .iter()
            .filter(|c| c.exists())
            .map(|c| format!("cgroup {}", c.display())),
    );
    left.extend(crate::net::left(&reg.netns, &reg.bridges));
    left.extend(
        reg.empty_dirs
            .iter()
            .filter(|d| d.exists())
            .map(|d| format!("directory {}", d.display())),
    );
    left
}
