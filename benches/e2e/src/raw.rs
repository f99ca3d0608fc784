//! The raw baseline: the OCI runtime driven by hand on the agent's own
//! bundle. Each container gets what the agent gives it, where the agent
//! puts it: a bundle directory on the run directory's tmpfs with the
//! agent's `config.json` (hostname and cgroup path made its own), the
//! rootfs mount point, the process spec, the pid files and the runtime's
//! stderr, and a directory on disk with the overlay's upper and work and
//! the output. Then `run --detach` (create and start in one runtime
//! process, as the agent) and a detached `exec` of the agent's own `process.json`, its output going to a
//! file. Teardown is `kill KILL`, a wait for init, `delete` (never
//! `--force` on a live container), unmount, remove.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::sys::{self, PidFd};

/// How long init may take to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// runc or crun, by hand.
pub struct Raw {
    /// `runc` or `crun`.
    pub runtime: String,
    /// Its `--root`.
    pub root: PathBuf,
    /// Per container: upper, work, output (on disk).
    bundles: PathBuf,
    /// Per container: config.json, the rootfs mount point, process.json,
    /// the pid files, the runtime's stderr (tmpfs).
    run_bundles: PathBuf,
    cgroup_parent: String,
    image: PathBuf,
    config: Value,
    process: Value,
    /// The bundle's user namespace range (first host id, size), when it
    /// has one: the image is then idmapped under the overlay, as the agent does.
    idmap: Option<(u32, u32)>,
}

impl Raw {
    /// A baseline with its containers' directories under `dir`, and their
    /// bundles and its runtime root under `run_dir`, copying the agent's
    /// `config.json` and `process.json` at `(config, process)` (see
    /// `AgentEnv::template_files`).
    pub fn new(
        runtime: &str,
        dir: &Path,
        run_dir: &Path,
        cgroup_parent: String,
        image: &Path,
        (config, process): (PathBuf, PathBuf),
    ) -> Result<Raw> {
        let read = |p: PathBuf| -> Result<Value> {
            let text =
                fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
        };
        let config = read(config)?;
        let idmap = idmap_of(&config);
        let raw = Raw {
            runtime: runtime.to_owned(),
            root: run_dir.join("root"),
            bundles: dir.join("bundles"),
            run_bundles: run_dir.join("bundles"),
            cgroup_parent,
            image: image.to_owned(),
            config,
            process: read(process)?,
            idmap,
        };
        for dir in [&raw.bundles, &raw.run_bundles] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Placed on disk as the agent places its depot's directories.
        sys::spread_subdirectories(&raw.bundles);
        Ok(raw)
    }

    /// The agent's `config.json` it copies.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The same baseline (bundles, root, process) with its config edited:
    /// e.g. without `linux.seccomp`. Its ids must differ from this one's.
    pub fn with_config(&self, edit: impl FnOnce(&mut Value)) -> Raw {
        let mut config = self.config.clone();
        edit(&mut config);
        Raw {
            runtime: self.runtime.clone(),
            root: self.root.clone(),
            bundles: self.bundles.clone(),
            run_bundles: self.run_bundles.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
            image: self.image.clone(),
            idmap: idmap_of(&config),
            config,
            process: self.process.clone(),
        }
    }

    /// `id`'s directory on disk.
    fn bundle(&self, id: &str) -> PathBuf {
        self.bundles.join(id)
    }

    /// `id`'s OCI bundle, on the tmpfs.
    fn run_bundle(&self, id: &str) -> PathBuf {
        self.run_bundles.join(id)
    }

    fn command(&self, id: &str, args: &[&str]) -> Result<Command> {
        let errors = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run_bundles.join(format!("{id}.stderr")))
            .context("opening the runtime's stderr file")?;
        let mut cmd = Command::new(&self.runtime);
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errors);
        Ok(cmd)
    }

    fn run(&self, id: &str, mut cmd: Command, verb: &str) -> Result<()> {
        let status =
            crate::reaper::status(&mut cmd).with_context(|| format!("running {}", self.runtime))?;
        if !status.success() {
            let stderr = fs::read_to_string(self.run_bundles.join(format!("{id}.stderr")))
                .unwrap_or_default();
            bail!("{} {verb} {id}: {status}: {}", self.runtime, stderr.trim());
        }
        Ok(())
    }

    /// Makes the bundle and rootfs of `id`, then `run --detach` (create and
    /// start in one runtime process, as the agent) and exec.
    /// Returns once the runtime's exec has returned.
    pub fn create_and_run(&self, id: &str) -> Result<()> {
        let (dir, run) = (self.bundle(id), self.run_bundle(id));
        for sub in [dir.join("upper"), dir.join("work"), run.join("rootfs")] {
            fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        self.mount_rootfs(&dir, &run.join("rootfs"))
            .with_context(|| format!("mounting the overlay of {id}"))?;
        let mut config = self.config.clone();
        config["hostname"] = Value::from(id);
        config["linux"]["cgroupsPath"] = Value::from(format!("/{}/{id}", self.cgroup_parent));
        fs::write(run.join("config.json"), serde_json::to_vec(&config)?)?;
        fs::write(run.join("process.json"), serde_json::to_vec(&self.process)?)?;
        let run_init = run_init_args(&run, id)?;
        let run_init: Vec<&str> = run_init.iter().map(String::as_str).collect();
        self.run(id, self.command(id, &run_init)?, "run")?;
        self.exec(id, &dir, &run)
    }

    /// The overlay of the image; in a user namespace, over an idmapped
    /// clone of it, the upper owned by the container's root.
    fn mount_rootfs(&self, dir: &Path, rootfs: &Path) -> std::io::Result<()> {
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        let Some((host_id, size)) = self.idmap else {
            return sys::mount_overlay(&self.image, &upper, &work, rootfs);
        };
        std::os::unix::fs::chown(&upper, Some(host_id), Some(host_id))?;
        let lower = dir.join("lower");
        fs::create_dir_all(&lower)?;
        let userns = crate::idmap::userns_fd(host_id, size)?;
        crate::idmap::mount_idmapped(&self.image, &lower, &userns)?;
        let mounted = sys::mount_overlay(&lower, &upper, &work, rootfs);
        sys::unmount(&lower)?;
        mounted
    }

    /// The detached exec: its spec and pid file in the bundle `run`, its
    /// output in `dir`.
    fn exec(&self, id: &str, dir: &Path, run: &Path) -> Result<()> {
        let (process, main_pid) = (
            path_str(&run.join("process.json"))?,
            path_str(&run.join("main.pid"))?,
        );
        let output = fs::File::create(dir.join("output.log"))?;
        let mut cmd = self.command(
            id,
            &[
                "exec",
                "--detach",
                "--pid-file",
                &main_pid,
                "--process",
                &process,
                id,
            ],
        )?;
        cmd.stdout(output.try_clone()?).stderr(output);
        self.run(id, cmd, "exec")
    }

    /// The process's first output line has landed in its file.
    pub fn output_landed(&self, id: &str) -> bool {
        fs::metadata(self.bundle(id).join("output.log")).is_ok_and(|m| m.len() > 0)
    }

    /// kill KILL, wait for init, delete, unmount, remove.
    pub fn destroy(&self, id: &str) -> Result<()> {
        let (dir, run) = (self.bundle(id), self.run_bundle(id));
        let init = fs::read_to_string(run.join("init.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .and_then(|pid| PidFd::open(pid).ok());
        self.run(id, self.command(id, &["kill", id, "KILL"])?, "kill")?;
        if let Some(fd) = init
            && !fd.exited_within(KILL_WAIT)
        {
            bail!("{id}: init survived SIGKILL for {KILL_WAIT:?}");
        }
        self.run(id, self.command(id, &["delete", id])?, "delete")?;
        sys::unmount(&run.join("rootfs")).with_context(|| format!("unmounting {id}"))?;
        for d in [&run, &dir] {
            fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
        let _ = fs::remove_file(self.run_bundles.join(format!("{id}.stderr")));
        Ok(())
    }
}

/// `run --detach --bundle RUN --pid-file RUN/init.pid ID`: the init of
/// `id` from the bundle `run`, made as the agent makes it.
pub fn run_init_args(run: &Path, id: &str) -> Result<Vec<String>> {
    let words = ["run", "--detach", "--bundle"].map(str::to_owned);
    Ok(words
        .into_iter()
        .chain([path_str(run)?, "--pid-file".to_owned()])
        .chain([path_str(&run.join("init.pid"))?, id.to_owned()])
        .collect())
}

/// `p` as a string, or an error naming it.
pub fn path_str(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// The first uid mapping of `config`, (host id, size), if it has one.
fn idmap_of(config: &Value) -> Option<(u32, u32)> {
    let first = &config["linux"]["uidMappings"][0];
    let host = u32::try_from(first["hostID"].as_u64()?).ok()?;
    let size = u32::try_from(first["size"].as_u64()?).ok()?;
    Some((host, size))
}
