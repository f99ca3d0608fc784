//! The pods phase (issue 17): drop to running of a container with one
//! sidecar and one pea (a sidecar with a rootfs of its own) against raw
//! runc doing the same on the agent's own bundles: two containers (the
//! pea's joining the first's network, IPC and UTS namespaces by path) and
//! three detached execs (the main process, the sidecar, the pea's
//! process), until all three have written their first line. Sample by
//! sample, the order turns.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::agent::AgentEnv;
use crate::cleanup;
use crate::latency::agent_teardown;
use crate::phases::{Run, WORKERS};
use crate::raw::path_str;
use crate::report::brief;
use crate::stats::{Samples, ratio};
use crate::sys::{self, PidFd};
use crate::wait::{pause, wait_for};

/// Unmeasured rounds first.
const WARMUP: usize = 2;
/// The targets, as for a single container: agent ÷ raw.
pub const BOUND_P50: f64 = 1.15;
/// The p95 target.
pub const BOUND_P95: f64 = 1.3;
const TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(1);
const SETTLE: Duration = Duration::from_millis(20);
const KILL_WAIT: Duration = Duration::from_secs(10);

/// What the phase measured, ms.
#[derive(Debug, Default)]
pub struct PodsResults {
    /// Agent, drop to running of the pod.
    pub agent: Samples,
    /// By hand, the same on the agent's bundles.
    pub raw: Samples,
}

impl PodsResults {
    /// A paragraph for the report's notes.
    pub fn summary(&self) -> String {
        let p50 = ratio(self.agent.p50(), self.raw.p50());
        let p95 = ratio(self.agent.p95(), self.raw.p95());
        let met = |r: f64, bound: f64| if r <= bound { "met" } else { "missed" };
        format!(
            "Pods (issue 17), runc, p50 (p95) ms over {} samples: drop to running of a container \
             with one sidecar and one pea until all three processes wrote their first line, agent \
             {:.1} ({:.1}), by hand on the agent's bundles (two containers, the pea joining the \
             first's namespaces, three execs) {:.1} ({:.1}): p50 {p50:.3}x (target {BOUND_P50}x: {}), \
             p95 {p95:.3}x (target {BOUND_P95}x: {}).",
            self.agent.len(),
            self.agent.p50(),
            self.agent.p95(),
            self.raw.p50(),
            self.raw.p95(),
            met(p50, BOUND_P50),
            met(p95, BOUND_P95),
        )
    }
}

/// The pod's manifest: a main process, a sidecar, and a pea on the same image.
fn pod(env: &AgentEnv, name: &str, image: &Path) -> String {
    format!(
        "{}  sidecars:\n  - name: side\n    args: [\"/bin/sh\", \"-c\", \"echo side; exec sleep 100000\"]\n  - name: pea\n    rootfs: {}\n    args: [\"/bin/sh\", \"-c\", \"echo pea; exec sleep 100000\"]\n",
        env.manifest(name, "Always"),
        image.display()
    )
}

/// Where each of the pod's processes logs, in the depot.
fn logs(env: &AgentEnv, name: &str) -> [PathBuf; 3] {
    let p = env.depot.join(name).join("processes");
    [
        p.join("main-1/output.log"),
        p.join("sidecar-side-1/output.log"),
        p.join("sidecar-pea-1/output.log"),
    ]
}

fn landed(files: &[PathBuf]) -> bool {
    files
        .iter()
        .all(|f| fs::metadata(f).is_ok_and(|m| m.len() > 0))
}

/// The whole phase.
pub fn phase(run: &Run) -> Result<PodsResults> {
    let env = run.agent_env_on("pods-agent", "runc", run.image())?;
    let mut agent = env.start(&["--workers", &WORKERS.to_string()])?;
    let raw = RawPod::from_template(run, &env)?;
    let n = run.sizes().net_samples;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..WARMUP + n {
        let mut took = [Duration::ZERO; 2];
        for k in 0..2 {
            let which = (k + i) % 2;
            took[which] = match which {
                0 => agent_round(&env, &format!("pod{i}"), run.image())?,
                _ => raw.round(&format!("raw{i}"))?,
            };
        }
        if i >= WARMUP {
            a.push(took[0]);
            b.push(took[1]);
        }
    }
    agent.terminate();
    let r = PodsResults {
        agent: Samples::from_durations(&a),
        raw: Samples::from_durations(&b),
    };
    for (what, v) in [("agent, pod", &r.agent), ("by hand, pod", &r.raw)] {
        eprintln!("  {}", brief(what, v));
    }
    Ok(r)
}

fn agent_round(env: &AgentEnv, name: &str, image: &Path) -> Result<Duration> {
    let files = logs(env, name);
    let t0 = Instant::now();
    env.write(name, &pod(env, name, image))?;
    wait_for(&format!("{name}'s three outputs"), TIMEOUT, POLL, || {
        landed(&files)
    })
    .with_context(|| env.log_tail())?;
    let took = t0.elapsed();
    wait_for(&format!("{name} Running"), TIMEOUT, POLL, || {
        env.status(name).is_some_and(|s| s.phase == "Running")
    })?;
    pause(SETTLE)?;
    agent_teardown(env, name)?;
    Ok(took)
}

/// runc by hand on copies of the agent's bundles of a template pod.
struct RawPod {
    root: PathBuf,
    /// Per container: upper and work (on disk).
    bundles: PathBuf,
    /// Per container: config.json, the rootfs mount point, the process
    /// specs and pid files (tmpfs), as the agent keeps them.
    run_bundles: PathBuf,
    cgroup_parent: String,
    image: PathBuf,
    main_config: Value,
    pea_config: Value,
    /// process.json of the main process, the sidecar and the pea's process.
    processes: [Value; 3],
}

impl RawPod {
    /// Made from the bundles of a template pod the agent runs, then tears down.
    fn from_template(run: &Run, env: &AgentEnv) -> Result<RawPod> {
        let template = "tpl-pod";
        let files = logs(env, template);
        env.write(template, &pod(env, template, run.image()))?;
        wait_for("the template pod", TIMEOUT, POLL, || landed(&files))
            .with_context(|| env.log_tail())?;
        let bundle = env.bundle(template);
        let read = |p: PathBuf| -> Result<Value> {
            let text =
                fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
        };
        let process = |id: &str| read(bundle.join("processes").join(id).join("process.json"));
        let dir = run.base.join("pods-raw");
        let raw = RawPod {
            root: run.run_base.join("pods-raw").join("root"),
            bundles: dir.join("bundles"),
            run_bundles: run.run_base.join("pods-raw").join("bundles"),
            cgroup_parent: format!("{}-pods-raw", env.cgroup_parent),
            image: run.image().to_owned(),
            main_config: read(bundle.join("config.json"))?,
            pea_config: read(bundle.join("peas/pea/config.json"))?,
            processes: [
                process("main-1")?,
                process("sidecar-side-1")?,
                process("sidecar-pea-1")?,
            ],
        };
        for dir in [&raw.bundles, &raw.run_bundles] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        sys::spread_subdirectories(&raw.bundles);
        cleanup::register(|r| {
            r.roots.push((env.runtime.clone(), raw.root.clone()));
            r.cgroup_parents.push(raw.cgroup_parent.clone());
            r.cgroup_parents.push(format!("{}-peas", raw.cgroup_parent));
        });
        agent_teardown(env, template)?;
        Ok(raw)
    }

    /// One pod by hand: both containers made, the three processes run
    /// until each wrote a line; then torn down.
    fn round(&self, id: &str) -> Result<Duration> {
        let pea = format!("{id}-pea");
        let t0 = Instant::now();
        let mut config = self.main_config.clone();
        config["hostname"] = Value::from(id);
        config["linux"]["cgroupsPath"] = Value::from(format!("/{}/{id}", self.cgroup_parent));
        let init = self.container(id, &config)?;
        let mut config = self.pea_config.clone();
        config["linux"]["cgroupsPath"] = Value::from(format!("/{}-peas/{pea}", self.cgroup_parent));
        if let Some(namespaces) = config["linux"]["namespaces"].as_array_mut() {
            for ns in namespaces {
                let file = match ns["type"].as_str() {
                    Some("network") => "net",
                    Some("ipc") => "ipc",
                    Some("uts") => "uts",
                    _ => continue,
                };
                ns["path"] = Value::from(format!("/proc/{init}/ns/{file}"));
            }
        }
        self.container(&pea, &config)?;
        let outputs = [
            self.exec(id, "main", &self.processes[0])?,
            self.exec(id, "side", &self.processes[1])?,
            self.exec(&pea, "pea", &self.processes[2])?,
        ];
        wait_for(&format!("{id}'s three outputs"), TIMEOUT, POLL, || {
            landed(&outputs)
        })?;
        let took = t0.elapsed();
        pause(SETTLE)?;
        self.destroy(&pea)?;
        self.destroy(id)?;
        pause(SETTLE)?;
        Ok(took)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<()> {
        let status = crate::reaper::status(&mut cmd).context("running runc")?;
        if !status.success() {
            bail!("runc {what}: {status}");
        }
        Ok(())
    }

    /// Bundle, overlay and `run --detach` of `id` from `config`; its init's pid.
    fn container(&self, id: &str, config: &Value) -> Result<i32> {
        let (dir, run) = (self.bundles.join(id), self.run_bundles.join(id));
        for sub in [dir.join("upper"), dir.join("work"), run.join("rootfs")] {
            fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        sys::mount_overlay(
            &self.image,
            &dir.join("upper"),
            &dir.join("work"),
            &run.join("rootfs"),
        )
        .with_context(|| format!("mounting the overlay of {id}"))?;
        fs::write(run.join("config.json"), serde_json::to_vec(config)?)?;
        let run_init = crate::raw::run_init_args(&run, id)?;
        let run_init: Vec<&str> = run_init.iter().map(String::as_str).collect();
        self.run(self.command(&run_init), &format!("run {id}"))?;
        fs::read_to_string(run.join("init.pid"))?
            .trim()
            .parse()
            .with_context(|| format!("{id}'s init pid"))
    }

    /// A detached exec of `process` in `id`, its output to a file of its
    /// own on disk, its spec and pid file in the bundle (tmpfs), as the
    /// agent keeps them.
    fn exec(&self, id: &str, what: &str, process: &Value) -> Result<PathBuf> {
        let (dir, run) = (self.bundles.join(id), self.run_bundles.join(id));
        let json = run.join(format!("{what}.json"));
        fs::write(&json, serde_json::to_vec(process)?)?;
        let output = dir.join(format!("{what}.log"));
        let file = fs::File::create(&output)?;
        let (json, pid) = (
            path_str(&json)?,
            path_str(&run.join(format!("{what}.pid")))?,
        );
        let mut cmd = self.command(&[
            "exec",
            "--detach",
            "--pid-file",
            &pid,
            "--process",
            &json,
            id,
        ]);
        cmd.stdout(file.try_clone()?).stderr(file);
        self.run(cmd, &format!("exec in {id}"))?;
        Ok(output)
    }

    /// kill KILL, wait for init, delete, unmount, remove.
    fn destroy(&self, id: &str) -> Result<()> {
        let (dir, run) = (self.bundles.join(id), self.run_bundles.join(id));
        let init = fs::read_to_string(run.join("init.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .and_then(|pid| PidFd::open(pid).ok());
        self.run(self.command(&["kill", id, "KILL"]), &format!("kill {id}"))?;
        if let Some(fd) = init
            && !fd.exited_within(KILL_WAIT)
        {
            bail!("{id}: init survived SIGKILL for {KILL_WAIT:?}");
        }
        self.run(self.command(&["delete", id]), &format!("delete {id}"))?;
        sys::unmount(&run.join("rootfs")).with_context(|| format!("unmounting {id}"))?;
        for d in [&run, &dir] {
            fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
        Ok(())
    }
}
