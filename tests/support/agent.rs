//! Running the real `rundmc agent` binary as a subprocess on a throwaway
//! directory, and reading back what a user would: status files, the event
//! log, logs, and runc's own view.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Env, binary, eventually, image};

/// An agent environment: manifests, state dir, and the [`Env`] beneath.
pub struct AgentEnv {
    pub env: Env,
    pub manifests: PathBuf,
    pub state: PathBuf,
    pub extra: Vec<String>,
}

/// A running agent process.
pub struct Agent {
    pub child: Child,
}

impl AgentEnv {
    pub fn new(name: &str) -> Self {
        let env = Env::new(name);
        let manifests = env.dir.join("manifests");
        let state = env.dir.join("state");
        std::fs::create_dir_all(&manifests).unwrap();
        AgentEnv {
            env,
            manifests,
            state,
            extra: Vec::new(),
        }
    }

    /// `name`'s OCI bundle directory (config.json, the rootfs mount point,
    /// init.sock): the agent keeps it in `<state-dir>/bundles`.
    pub fn bundle(&self, name: &str) -> PathBuf {
        self.state.join("bundles").join(name)
    }

    /// Start `rundmc agent` on this environment.
    pub fn start(&self) -> Agent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.env.dir.join("agent.log"))
            .unwrap();
        let child = self
            .command(&self.manifests, &self.env.depot)
            .args(&self.extra)
            .stderr(log)
            .spawn()
            .unwrap();
        Agent { child }
    }

    /// `rundmc agent` with this environment's flags, on `manifests` and
    /// `depot`; the caller adds its own flags and stderr.
    pub fn command(&self, manifests: &std::path::Path, depot: &std::path::Path) -> Command {
        let mut command = Command::new(binary("rundmc"));
        command
            .arg("agent")
            .arg("--manifests")
            .arg(manifests)
            .arg("--depot")
            .arg(depot)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--image-store")
            .arg(self.env.dir.join("images"))
            .args(self.cni_defaults())
            .arg("--runtime-root")
            .arg(&self.env.runc_root)
            .arg("--cgroup-parent")
            .arg(&self.env.cgroup_parent)
            .arg("--shim-cgroup")
            .arg(self.env.shim_cgroup())
            .arg("--init-binary")
            .arg(binary("rundmc-init"))
            .arg("--shim-binary")
            .arg(binary("rundmc-shim"))
            .args([
                "--resync-period",
                "2s",
                "--crash-loop-initial",
                "300ms",
                "--crash-loop-max",
                "3s",
            ])
            .env("RUST_LOG", "info,rundmc=debug")
            .stdout(Stdio::null());
        command
    }

    /// The node's own CNI configuration is not the test's: an empty one,
    /// unless the test gives its own.
    fn cni_defaults(&self) -> Vec<std::ffi::OsString> {
        if self.extra.iter().any(|a| a == "--cni-conf-dir") {
            return Vec::new();
        }
        vec![
            "--cni-conf-dir".into(),
            self.env.dir.join("cni").into(),
            "--cni-cache-dir".into(),
            self.env.dir.join("cni-cache").into(),
        ]
    }

    /// Write a manifest atomically (temp file, then rename), as tools should.
    pub fn write(&self, file: &str, yaml: &str) {
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.manifests.join(file)).unwrap();
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.manifests.join(file)).unwrap();
    }

    /// The status file of `name`, parsed.
    pub fn status(&self, name: &str) -> Option<serde_yaml::Value> {
        let text =
            std::fs::read_to_string(self.state.join("status").join(format!("{name}.yaml"))).ok()?;
        serde_yaml::from_str(&text).ok()
    }

    /// `status.<field>` of `name` as a string.
    pub fn status_field(&self, name: &str, field: &str) -> Option<String> {
        let v = self.status(name)?;
        let f = v.get("status")?.get(field)?;
        Some(match f {
            serde_yaml::Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other).ok()?.trim().to_string(),
        })
    }

    /// The condition `type_` of `name`: (status, reason, message).
    pub fn condition(&self, name: &str, type_: &str) -> Option<(String, String, String)> {
        let v = self.status(name)?;
        let conds = v.get("status")?.get("conditions")?.as_sequence()?;
        let c = conds
            .iter()
            .find(|c| c.get("type").and_then(|t| t.as_str()) == Some(type_))?;
        let s = |k: &str| c.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        Some((s("status"), s("reason"), s("message")))
    }

    /// Every event in events.jsonl.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.state.join("events.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The current main process's id, `main-<run>`.
    fn main_id(&self, name: &str) -> Option<String> {
        let main: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.env.depot.join(name).join("main.json")).ok()?,
        )
        .ok()?;
        Some(format!("main-{}", main["runs"].as_u64()?))
    }

    /// The current main process's directory of `name` (in the bundle, on
    /// the state directory): its supervisor's record, pid, fifos and exit.
    pub fn main_dir(&self, name: &str) -> Option<PathBuf> {
        let id = self.main_id(name)?;
        Some(self.bundle(name).join("processes").join(id))
    }

    /// The current main process's log directory (in the depot).
    pub fn main_log_dir(&self, name: &str) -> Option<PathBuf> {
        let id = self.main_id(name)?;
        Some(self.env.depot.join(name).join("processes").join(id))
    }

    /// The main process's host pid.
    pub fn main_pid(&self, name: &str) -> Option<i32> {
        let dir = self.main_dir(name)?;
        std::fs::read_to_string(dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Its output log so far.
    pub fn main_log(&self, name: &str) -> String {
        self.main_log_dir(name)
            .and_then(|d| std::fs::read_to_string(d.join("output.log")).ok())
            .unwrap_or_default()
    }

    /// The agent's own log, for failure messages.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.env.dir.join("agent.log")).unwrap_or_default()
    }

    /// Wait for `cond`, failing with the agent's log when it never holds.
    pub fn wait(&self, what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
        assert!(
            eventually(timeout, cond),
            "timed out waiting for {what}\n--- agent log ---\n{}",
            self.agent_log()
        );
    }

    /// Whether `name` is running in runc with a live main process.
    pub fn running(&self, name: &str) -> bool {
        self.env.runc_status(name).as_deref() == Some("running")
            && self
                .main_pid(name)
                .is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            && self.status_field(name, "phase").as_deref() == Some("Running")
    }
}

impl Agent {
    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A manifest on the test image.
pub fn manifest(name: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: rundmc.io/v1alpha1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  rootfs: {}\n{spec_extra}",
        image().display()
    )
}
