//! The real `rundmc agent` binary on a throwaway directory, driven as a user
//! drives it: manifests written atomically into the watched directory, and
//! read back from what it writes (status files, event log, process logs)
//! and from the runtime's own state.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::procfs::CpuCgroup;
use crate::wait::wait_for;

/// The manifests, depot, state and runtime root of one agent, and how to
/// start it.
pub struct AgentEnv {
    /// `runc` or `crun`.
    pub runtime: String,
    /// Everything of this environment lives under it.
    pub dir: PathBuf,
    /// The watched manifest directory.
    pub manifests: PathBuf,
    /// The depot.
    pub depot: PathBuf,
    /// Status files and the event log.
    pub state: PathBuf,
    /// The runtime's `--root`.
    pub root: PathBuf,
    /// The cgroup parent of its containers.
    pub cgroup_parent: String,
    bins: PathBuf,
    image: PathBuf,
    cpu: CpuCgroup,
}

/// A running agent process.
pub struct Agent {
    child: Child,
    /// Its pid.
    pub pid: i32,
    /// When it was spawned.
    pub started: Instant,
    /// Its `/metrics` endpoint, on loopback.
    pub metrics: std::net::SocketAddr,
}

/// What a status file says, as far as the benchmarks look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    /// `status.phase`.
    pub phase: String,
    /// `status.restartCount`.
    pub restart_count: i64,
    /// `status.lastTermination.exitCode`, when there is one.
    pub last_exit_code: Option<i64>,
}

impl AgentEnv {
    /// An environment under `dir` (its state directory and runtime root
    /// under `run_dir`) whose agent runs `runtime`, counting its CPU in `cpu`.
    pub fn new(
        dir: PathBuf,
        run_dir: &Path,
        runtime: &str,
        cgroup_parent: String,
        bins: &Path,
        image: &Path,
        cpu: CpuCgroup,
    ) -> Result<AgentEnv> {
        let env = AgentEnv {
            runtime: runtime.to_owned(),
            manifests: dir.join("manifests"),
            depot: dir.join("depot"),
            state: run_dir.join("state"),
            root: run_dir.join("root"),
            dir,
            cgroup_parent,
            bins: bins.to_owned(),
            image: image.to_owned(),
            cpu,
        };
        fs::create_dir_all(&env.manifests)
            .with_context(|| format!("creating {}", env.manifests.display()))?;
        Ok(env)
    }

    /// The rootfs directory its manifests name.
    pub fn rootfs(&self) -> &Path {
        &self.image
    }

    /// The CPU cgroup the agent runs in.
    pub fn cpu(&self) -> &CpuCgroup {
        &self.cpu
    }

    /// Starts the agent with `extra` flags, serving metrics on a free
    /// loopback port; its log goes to `agent.log`.
    pub fn start(&self, extra: &[&str]) -> Result<Agent> {
        let metrics = crate::metrics::free_loopback()?;
        let log_path = self.dir.join("agent.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut cmd = Command::new(self.bins.join("rundmc"));
        cmd.arg("agent")
            .args(["--manifests".as_ref(), self.manifests.as_os_str()])
            .args(["--depot".as_ref(), self.depot.as_os_str()])
            .args(["--state-dir".as_ref(), self.state.as_os_str()])
            .args([
                "--image-store".as_ref(),
                self.dir.join("images").as_os_str(),
            ])
            // The node's own CNI configuration is not the benchmark's.
            .args(["--cni-conf-dir".as_ref(), self.dir.join("cni").as_os_str()])
            .args([
                "--cni-cache-dir".as_ref(),
                self.dir.join("cni-cache").as_os_str(),
            ])
            .args(["--runtime-root".as_ref(), self.root.as_os_str()])
            .args(["--runtime", &self.runtime])
            .args(["--cgroup-parent", &self.cgroup_parent])
            .args(["--metrics-addr", &metrics.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let cpu = self.cpu.clone();
        // SAFETY: the closure only makes async-signal-safe system calls.
        unsafe { cmd.pre_exec(move || cpu.join_from_child()) };
        let started = Instant::now();
        let child = crate::reaper::spawn(&mut cmd).context("starting rundmc agent")?;
        let pid = child.id() as i32;
        Ok(Agent {
            child,
            pid,
            started,
            metrics,
        })
    }

    /// A manifest of `name` whose main process says `ready` and sleeps.
    pub fn manifest(&self, name: &str, restart_policy: &str) -> String {
        format!(
            "apiVersion: rundmc.io/v1alpha1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  rootfs: {}\n  process:\n    args: [\"/bin/sh\", \"-c\", \"echo ready; exec sleep 100000\"]\n  restartPolicy: {restart_policy}\n",
            self.image.display()
        )
    }

    /// Writes `<name>.yaml` atomically (temp file, rename), as tools should.
    pub fn write(&self, name: &str, yaml: &str) -> Result<()> {
        let tmp = self.manifests.join(format!(".{name}.yaml.tmp"));
        fs::write(&tmp, yaml).with_context(|| format!("writing {}", tmp.display()))?;
        let path = self.manifests.join(format!("{name}.yaml"));
        fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
    }

    /// Removes `<name>.yaml`.
    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.manifests.join(format!("{name}.yaml"));
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }

    /// `name`'s OCI bundle directory: the agent keeps it in
    /// `<state-dir>/bundles`.
    pub fn bundle(&self, name: &str) -> PathBuf {
        self.state.join("bundles").join(name)
    }

    /// The files a raw baseline copies from `name`: its `config.json` and
    /// its first main process's OCI process spec.
    pub fn template_files(&self, name: &str) -> (PathBuf, PathBuf) {
        let bundle = self.bundle(name);
        (
            bundle.join("config.json"),
            bundle.join("processes/main-1/process.json"),
        )
    }

    /// The first main process's directory (in the bundle): its
    /// supervisor's record, pid and exit.
    pub fn main_dir(&self, name: &str) -> PathBuf {
        self.bundle(name).join("processes/main-1")
    }

    /// The first main process's log directory (in the depot).
    pub fn main_log_dir(&self, name: &str) -> PathBuf {
        self.depot.join(name).join("processes/main-1")
    }

    /// The main process's first output line has landed in its log.
    pub fn output_landed(&self, name: &str) -> bool {
        fs::metadata(self.main_log_dir(name).join("output.log")).is_ok_and(|m| m.len() > 0)
    }

    /// Nothing of `name` is left in the depot.
    pub fn gone(&self, name: &str) -> bool {
        !self.depot.join(name).exists()
    }

    /// The status file of `name`.
    pub fn status_path(&self, name: &str) -> PathBuf {
        self.state.join("status").join(format!("{name}.yaml"))
    }

    /// What `name`'s status file says.
    pub fn status(&self, name: &str) -> Option<StatusView> {
        parse_status(&fs::read_to_string(self.status_path(name)).ok()?)
    }

    /// Every named container's status says Running.
    pub fn all_running(&self, names: &[String]) -> bool {
        names
            .iter()
            .all(|n| self.status(n).is_some_and(|s| s.phase == "Running"))
    }

    /// Host pid of `name`'s main process.
    pub fn main_pid(&self, name: &str) -> Option<i32> {
        read_int(&self.main_dir(name).join("pid"))
    }

    /// Pid of the supervisor of `name`'s main process.
    pub fn shim_pid(&self, name: &str) -> Option<i32> {
        let text = fs::read_to_string(self.main_dir(name).join("shim.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    }

    /// Host pid of `name`'s init, from the runtime's state directory.
    pub fn init_pid(&self, name: &str) -> Option<i32> {
        runtime_init_pid(&self.root, name)
    }

    /// How many events in events.jsonl have `reason`.
    pub fn event_count(&self, reason: &str) -> usize {
        let text = fs::read_to_string(self.state.join("events.jsonl")).unwrap_or_default();
        let needle = format!("\"reason\":\"{reason}\"");
        text.lines().filter(|l| l.contains(&needle)).count()
    }

    /// The last lines of the agent's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(15).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Writes every manifest, waits until each main process has put out its
    /// first line and its status says Running.
    pub fn create_all(&self, names: &[String], policy: &str, timeout: Duration) -> Result<()> {
        for n in names {
            self.write(n, &self.manifest(n, policy))?;
        }
        let what = format!("{} containers running", names.len());
        wait_for(&what, timeout, Duration::from_millis(20), || {
            names.iter().all(|n| self.output_landed(n)) && self.all_running(names)
        })
        .with_context(|| self.log_tail())
        .map(drop)
    }

    /// Removes every manifest and waits until the depot and the status
    /// files have let go of them.
    pub fn remove_all(&self, names: &[String], timeout: Duration) -> Result<()> {
        for n in names {
            self.remove(n)?;
        }
        let what = format!("{} containers gone", names.len());
        wait_for(&what, timeout, Duration::from_millis(20), || {
            names
                .iter()
                .all(|n| self.gone(n) && !self.status_path(n).exists())
        })
        .with_context(|| self.log_tail())
        .map(drop)
    }
}

/// The init pid the runtime recorded: runc's `state.json`, crun's `status`.
pub fn runtime_init_pid(root: &Path, id: &str) -> Option<i32> {
    let dir = root.join(id);
    let (text, key) = match fs::read_to_string(dir.join("state.json")) {
        Ok(t) => (t, "init_process_pid"),
        Err(_) => (fs::read_to_string(dir.join("status")).ok()?, "pid"),
    };
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v[key].as_i64().map(|p| p as i32)
}

fn read_int(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn parse_status(text: &str) -> Option<StatusView> {
    let v: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    let s = v.get("status")?;
    Some(StatusView {
        phase: s.get("phase")?.as_str()?.to_owned(),
        restart_count: s.get("restartCount").and_then(|c| c.as_i64()).unwrap_or(0),
        last_exit_code: s
            .get("lastTermination")
            .and_then(|t| t.get("exitCode"))
            .and_then(|c| c.as_i64()),
    })
}

impl Agent {
    /// SIGKILL, as a crash would, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::reaper::forget(self.child.id());
    }

    /// SIGTERM, and wait for it to exit (SIGKILL after 15 s).
    pub fn terminate(&mut self) {
        let _ = crate::sys::kill(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                crate::reaper::forget(self.child.id());
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill9();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_status_file() {
        let text = "source: /m/web.yaml#0\nstatus:\n  phase: Failed\n  restartCount: 2\n  lastTermination:\n    exitCode: 137\n    reason: Error\n";
        assert_eq!(
            parse_status(text),
            Some(StatusView {
                phase: "Failed".into(),
                restart_count: 2,
                last_exit_code: Some(137)
            })
        );
        let running = parse_status("source: x\nstatus:\n  phase: Running\n").unwrap();
        assert_eq!((running.restart_count, running.last_exit_code), (0, None));
    }
}
