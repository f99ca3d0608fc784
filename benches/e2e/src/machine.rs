//! The machine a run happened on, for the report; and the one change crun
//! needs on a hybrid cgroup machine, registered so the sweep undoes it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{cleanup, reaper};

/// (what, value) rows describing this machine and checkout.
pub fn describe(base: &Path, run_base: &Path) -> Vec<(String, String)> {
    vec![
        (
            "Date (UTC)".into(),
            first_line("date", &["-u", "+%Y-%m-%d %H:%M"]),
        ),
        (
            "Commit".into(),
            first_line("git", &["describe", "--always", "--dirty"]),
        ),
        ("CPU".into(), cpu()),
        ("Memory".into(), memory()),
        ("OS".into(), os_name()),
        ("Kernel".into(), read_trim("/proc/sys/kernel/osrelease")),
        ("runc".into(), first_line("runc", &["--version"])),
        ("crun".into(), first_line("crun", &["--version"])),
        ("cgroups".into(), cgroup_layout()),
        (
            "Depots (records, writable layers, logs)".into(),
            format!("{} ({})", base.display(), fs_type(base)),
        ),
        (
            "State dirs, OCI bundles and runtime roots".into(),
            format!("{} ({})", run_base.display(), fs_type(run_base)),
        ),
        ("Load average at start".into(), read_trim("/proc/loadavg")),
    ]
}

fn cpu() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    format!("{cores} × {model}")
}

fn memory() -> String {
    fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_default()
}

fn read_trim(path: &str) -> String {
    fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    reaper::output(Command::new(cmd).args(args).stderr(Stdio::null()))
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "not found".into())
}

fn os_name() -> String {
    fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default()
}

fn cgroup_layout() -> String {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return "v2 (unified)".into();
    }
    let bound = read_trim("/sys/fs/cgroup/unified/cgroup.controllers");
    format!(
        "v1, hybrid (cgroup2 at /sys/fs/cgroup/unified, controllers on it: {})",
        if bound.is_empty() { "none" } else { &bound }
    )
}

/// The type of the filesystem `path` is on, from /proc/self/mountinfo.
fn fs_type(path: &Path) -> String {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let point = PathBuf::from(l.split(' ').nth(4)?);
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?.to_owned();
            path.starts_with(&point).then_some((point, fstype))
        })
        .max_by_key(|(p, _)| p.components().count())
        .map(|(_, t)| t)
        .unwrap_or_default()
}

/// A tmpfs for state directories and runtime roots, standing in for /run
/// (a tmpfs on every systemd machine, and where the agent's defaults put
/// them): /run itself when it is a tmpfs, else /dev/shm.
pub fn tmpfs_run_dir() -> anyhow::Result<PathBuf> {
    for dir in ["/run", "/dev/shm"] {
        if fs_type(Path::new(dir)) == "tmpfs" && is_mount_point(dir) {
            return Ok(PathBuf::from(dir));
        }
    }
    anyhow::bail!("neither /run nor /dev/shm is a tmpfs")
}

fn is_mount_point(dir: &str) -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(dir))
}

/// Makes crun usable here, or says why it cannot be. crun refuses a hybrid
/// machine whose cgroup2 hierarchy holds any controller ("cgroups in hybrid
/// mode not supported, drop all controllers from cgroupv2"); mounting each
/// such controller (hugetlb on Debian 12) as a v1 hierarchy moves it off
/// cgroup2. The mount is registered and undone by the sweep. Says what it
/// did.
pub fn prepare_crun() -> Result<String, String> {
    let found = reaper::status(Command::new("crun").arg("--version").stdout(Stdio::null()))
        .is_ok_and(|s| s.success());
    if !found {
        return Err("crun is not installed".into());
    }
    let Ok(bound) = fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers") else {
        return Ok("crun: not a hybrid cgroup machine; nothing to prepare.".into());
    };
    if bound.trim().is_empty() {
        return Ok("crun: no controller is bound to cgroup2 here (each is mounted as v1); nothing to prepare.".into());
    }
    for controller in bound.split_whitespace() {
        let dir = Path::new("/sys/fs/cgroup").join(controller);
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let status = reaper::status(
            Command::new("mount")
                .args(["-t", "cgroup", "-o", controller, "none"])
                .arg(&dir),
        )
        .map_err(|e| format!("running mount: {e}"))?;
        if !status.success() {
            return Err(format!(
                "cgroup2 holds the {controller} controller and mounting it as cgroup v1 failed ({status})"
            ));
        }
        cleanup::register(|r| r.v1_mounts.push(dir.clone()));
    }
    Ok(format!(
        "crun: cgroup2 held `{}`; the run mounted each as a cgroup v1 hierarchy under /sys/fs/cgroup, and unmounted it after.",
        bound.trim()
    ))
}
