//! Peers (issue 19): rundmc beside raw runc, `podman run --rootfs` (with
//! runc and with crun) and containerd's `ctr run --rootfs` (a private
//! containerd the phase starts and stops), interleaved sample by sample and
//! round by round, on the same busybox rootfs, with the same process and the
//! same detection for all: the process touches a file named for its
//! container on a bind mount of one host directory, and an inotify watch on
//! that directory timestamps it ([`Marks`]).
//!
//! Figures: start latency (from the command's start, or the manifest's
//! rename, until the mark), teardown of one (until the command returns, or
//! the depot directory is gone), burst and burst teardown of many (as many
//! threads as the agent has workers), and with the burst's containers
//! running: supervisor PSS, daemon RSS, and the CPU of daemon and
//! supervisors (process CPU clocks) over an idle window.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::agent::{Agent, AgentEnv};
use crate::phases::{Run, WORKERS};
use crate::raw::Raw;
use crate::stats::Samples;
use crate::sys::Inotify;
use crate::wait::{check_interrupted, pause, wait_for};
use crate::{burst, cleanup, procfs};

const TIMEOUT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_millis(20);

/// How much the phase does.
#[derive(Debug, Clone, Copy)]
pub struct PeerSizes {
    /// One-at-a-time samples per system.
    pub samples: usize,
    /// Containers per burst.
    pub burst: usize,
    /// Burst rounds per system.
    pub rounds: usize,
    /// Idle window with the burst running, seconds.
    pub idle_secs: u64,
}

/// One system's figures.
#[derive(Debug, Clone, Default)]
pub struct SystemResults {
    /// What it is, for the table.
    pub name: String,
    /// Start latency, ms.
    pub start: Samples,
    /// Teardown of one, ms.
    pub teardown: Samples,
    /// Burst, containers/s, one per round.
    pub burst: Samples,
    /// Burst teardown, containers/s, one per round.
    pub burst_down: Samples,
    /// Median PSS of one supervisor with the burst running, KiB.
    pub supervisor_pss_kib: Option<u64>,
    /// What the supervisor is.
    pub supervisor: &'static str,
    /// RSS of the daemon with the burst running, KiB.
    pub daemon_rss_kib: Option<u64>,
    /// What the daemon is.
    pub daemon: &'static str,
    /// CPU of daemon and supervisors with the burst running, % of a core.
    pub idle_cpu_pct: Option<f64>,
}

/// The whole phase.
#[derive(Debug, Clone, Default)]
pub struct PeerResults {
    /// By system, rundmc first.
    pub systems: Vec<SystemResults>,
    /// Containers per burst.
    pub burst: usize,
    /// Idle window, seconds.
    pub idle_secs: u64,
    /// Systems left out, and why.
    pub skipped: Vec<String>,
}

/// The process every system runs: it marks its start and sleeps.
const SCRIPT: &str = "touch /mark/${MARK:-$(hostname)}; exec sleep 100000";

/// Timestamps of the marks files as they appear, from a thread of its own.
struct Marks {
    dir: PathBuf,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Marks {
    fn new(dir: PathBuf) -> Result<Marks> {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ino = Inotify::new()?;
        ino.watch(&dir)?;
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok(events) = ino.wait(Duration::from_millis(100)) else {
                    return;
                };
                let now = Instant::now();
                let mut map = s.lock().unwrap_or_else(|e| e.into_inner());
                for e in events {
                    map.entry(e.name).or_insert(now);
                }
            }
        });
        Ok(Marks {
            dir,
            seen,
            stop,
            thread: Some(thread),
        })
    }

    fn when(&self, name: &str) -> Option<Instant> {
        let map = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        map.get(name).copied()
    }

    /// Waits until every name is marked; each one's time from `t0`.
    fn wait(&self, names: &[String], t0: Instant) -> Result<Vec<Duration>> {
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            wait_for(
                &format!("{n}'s mark"),
                TIMEOUT,
                Duration::from_millis(1),
                || self.when(n).is_some(),
            )?;
            let at = self.when(n).unwrap_or(t0);
            out.push(at.saturating_duration_since(t0));
        }
        Ok(out)
    }

    /// Forgets `names` and removes their files.
    fn clear(&self, names: &[String]) {
        let mut map = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for n in names {
            map.remove(n);
            let _ = fs::remove_file(self.dir.join(n));
        }
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One system under test.
enum System<'a> {
    Rundmc { env: &'a AgentEnv, agent: &'a Agent },
    Raw(&'a Raw),
    Podman(Podman),
    Containerd(&'a Containerd),
}

impl System<'_> {
    fn name(&self) -> String {
        match self {
            System::Rundmc { .. } => "rundmc + runc".into(),
            System::Raw(_) => "raw runc".into(),
            System::Podman(p) => format!("podman run --rootfs + {}", p.runtime),
            System::Containerd(_) => "containerd (ctr run --rootfs) + runc".into(),
        }
    }

    fn labels(&self) -> (&'static str, &'static str) {
        match self {
            System::Rundmc { .. } => ("rundmc-shim", "rundmc agent"),
            System::Raw(_) => ("none", "none"),
            System::Podman(_) => ("conmon", "none"),
            System::Containerd(_) => ("containerd-shim-runc-v2", "containerd"),
        }
    }

    /// Issues the start of `id` (rundmc: writes its manifest).
    fn start(&self, id: &str, marks: &Path) -> Result<()> {
        match self {
            System::Rundmc { env, .. } => env.write(id, &manifest(env, id, marks)),
            System::Raw(raw) => raw.create_and_run(id),
            System::Podman(p) => p.run(id, marks),
            System::Containerd(c) => c.run(id, marks),
        }
    }

    /// Tears `id` down, returning once it is gone.
    fn stop(&self, id: &str) -> Result<()> {
        match self {
            System::Rundmc { env, .. } => {
                env.remove(id)?;
                wait_for(
                    &format!("{id} gone"),
                    TIMEOUT,
                    Duration::from_millis(1),
                    || env.gone(id),
                )
                .with_context(|| env.log_tail())
                .map(drop)
            }
            System::Raw(raw) => raw.destroy(id),
            System::Podman(p) => p.rm(id),
            System::Containerd(c) => c.rm(id),
        }
    }

    /// Waits for what follows a start or stop (status files).
    fn settle(&self, ids: &[String], up: bool) -> Result<()> {
        if let System::Rundmc { env, .. } = self {
            wait_for("statuses", TIMEOUT, Duration::from_millis(2), || match up {
                true => env.all_running(ids),
                false => ids.iter().all(|n| !env.status_path(n).exists()),
            })?;
        }
        pause(SETTLE)
    }

    fn daemon(&self) -> Option<i32> {
        match self {
            System::Rundmc { agent, .. } => Some(agent.pid),
            System::Containerd(c) => Some(c.child.id() as i32),
            _ => None,
        }
    }

    fn supervisors(&self, ids: &[String]) -> Vec<i32> {
        match self {
            System::Rundmc { env, .. } => ids.iter().filter_map(|n| env.shim_pid(n)).collect(),
            System::Raw(_) => Vec::new(),
            System::Podman(p) => pids_of("conmon", &p.run_root.to_string_lossy()),
            System::Containerd(c) => pids_of("containerd-shim", &c.socket.to_string_lossy()),
        }
    }
}

/// The rundmc manifest of `id`: the shared script, the marks directory
/// bound at /mark, its hostname its name.
fn manifest(env: &AgentEnv, id: &str, marks: &Path) -> String {
    format!(
        "apiVersion: rundmc.io/v1alpha1\nkind: Container\nmetadata:\n  name: {id}\nspec:\n  rootfs: {}\n  hostname: {id}\n  mounts:\n  - source: {}\n    destination: /mark\n  process:\n    args: [\"/bin/sh\", \"-c\", {:?}]\n  restartPolicy: Always\n",
        env.rootfs().display(),
        marks.display(),
        format!("echo ready; {SCRIPT}")
    )
}

/// Pids whose `comm` starts with `comm` and whose command line holds `needle`.
fn pids_of(comm: &str, needle: &str) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let c = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let line = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            c.starts_with(comm) && String::from_utf8_lossy(&line).contains(needle)
        })
        .collect()
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<()> {
    let out = crate::reaper::output(cmd.stderr(Stdio::piped()))
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `podman` with its own root, run root and configuration.
struct Podman {
    runtime: String,
    root: PathBuf,
    run_root: PathBuf,
    conf: PathBuf,
    rootfs: PathBuf,
    cgroup_parent: String,
}

impl Podman {
    fn new(run: &Run, runtime: &str) -> Result<Podman> {
        let dir = run.base.join(format!("podman-{runtime}"));
        let run_root = run.run_base.join(format!("podman-{runtime}"));
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(&run_root)?;
        // Root here lacks CAP_SYS_RESOURCE: podman's default nproc ulimit
        // cannot be set, so none is asked for.
        let conf = dir.join("containers.conf");
        fs::write(
            &conf,
            "[containers]\ndefault_ulimits = []\nlog_driver = \"k8s-file\"\n[engine]\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n",
        )?;
        let cgroup_parent = format!("{}-podman-{runtime}", run.tag());
        cleanup::register(|r| r.cgroup_parents.push(cgroup_parent.clone()));
        Ok(Podman {
            runtime: runtime.to_owned(),
            root: dir.join("root"),
            run_root,
            conf,
            rootfs: run.image().to_owned(),
            cgroup_parent,
        })
    }

    fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.run_root)
            .args(["--runtime", &self.runtime, "--storage-driver", "overlay"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    }

    fn run(&self, id: &str, marks: &Path) -> Result<()> {
        let mut c = self.command();
        c.args([
            "run",
            "-d",
            "--name",
            id,
            "--hostname",
            id,
            "--network",
            "none",
        ])
        .args(["--cgroup-parent", &format!("/{}", self.cgroup_parent)])
        .arg("-v")
        .arg(format!("{}:/mark", marks.display()))
        .arg("--rootfs")
        .arg(&self.rootfs)
        .args(["/bin/sh", "-c", SCRIPT]);
        run_ok(&mut c, "podman run")
    }

    fn rm(&self, id: &str) -> Result<()> {
        run_ok(
            self.command().args(["rm", "-f", "-t", "0", id]),
            "podman rm",
        )
    }

    /// Removes whatever is left (after an error).
    fn rm_all(&self) {
        let _ = crate::reaper::status(
            self.command()
                .args(["rm", "-af", "-t", "0"])
                .stderr(Stdio::null()),
        );
    }
}

/// A private containerd: its own config, root, state and socket.
struct Containerd {
    child: Child,
    socket: PathBuf,
    namespace: String,
    cgroup_parent: String,
    rootfs: PathBuf,
}

impl Containerd {
    fn start(run: &Run) -> Result<Containerd> {
        let dir = run.base.join("containerd");
        let state = run.run_base.join("containerd");
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(&state)?;
        let socket = state.join("c.sock");
        let config = dir.join("config.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = {:?}\n[ttrpc]\n  address = {:?}\n",
                dir.join("root"),
                state.join("state"),
                socket,
                state.join("c.sock.ttrpc")
            ),
        )?;
        let log = fs::File::create(dir.join("containerd.log"))?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = crate::reaper::spawn(&mut cmd).context("starting containerd")?;
        let pid = child.id() as i32;
        cleanup::register(|r| r.children.push(pid));
        let namespace = run.tag().to_owned();
        // The runc v2 shim keeps its containers under runc's default root
        // for the namespace: the sweep ends them there.
        let runc_root = PathBuf::from("/run/containerd/runc").join(&namespace);
        // Shims put their sockets under /run/containerd/s whatever the state.
        for d in [
            PathBuf::from("/run/containerd"),
            PathBuf::from("/run/containerd/s"),
            PathBuf::from("/run/containerd/runc"),
            runc_root.clone(),
        ] {
            if !d.exists() {
                cleanup::register(|r| r.empty_dirs.insert(0, d));
            }
        }
        let cgroup_parent = format!("{}-containerd", run.tag());
        cleanup::register(|r| {
            r.roots.push(("runc".into(), runc_root));
            r.cgroup_parents.push(cgroup_parent.clone());
        });
        let c = Containerd {
            child,
            socket,
            namespace,
            cgroup_parent,
            rootfs: run.image().to_owned(),
        };
        wait_for(
            "containerd's socket",
            Duration::from_secs(30),
            Duration::from_millis(20),
            || c.socket.exists(),
        )
        .with_context(|| fs::read_to_string(dir.join("containerd.log")).unwrap_or_default())?;
        Ok(c)
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a")
            .arg(&self.socket)
            .args(["-n", &self.namespace])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    }

    fn run(&self, id: &str, marks: &Path) -> Result<()> {
        let mut c = self.ctr();
        c.args(["run", "-d", "--null-io", "--env", &format!("MARK={id}")])
            .args(["--cgroup", &format!("/{}/{id}", self.cgroup_parent)])
            .arg("--mount")
            .arg(format!(
                "type=bind,src={},dst=/mark,options=rbind:rw",
                marks.display()
            ))
            .arg("--rootfs")
            .arg(&self.rootfs)
            .args([id, "/bin/sh", "-c", SCRIPT]);
        run_ok(&mut c, "ctr run")
    }

    fn rm(&self, id: &str) -> Result<()> {
        run_ok(
            self.ctr().args(["task", "delete", "-f", id]),
            "ctr task delete",
        )?;
        run_ok(
            self.ctr().args(["container", "delete", id]),
            "ctr container delete",
        )
    }

    fn stop(mut self) {
        let _ = crate::sys::kill(self.child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                crate::reaper::forget(self.child.id());
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::reaper::forget(self.child.id());
    }
}

/// Runs the phase: every system that is installed, interleaved.
pub fn phase(run: &Run, sizes: PeerSizes) -> Result<PeerResults> {
    let marks_dir = run.base.join("peers-marks");
    let marks = Marks::new(marks_dir.clone())?;
    let env = run.agent_env("peers-agent", "runc")?;
    let agent = env.start(&["--workers", &WORKERS.to_string()])?;
    let raw = raw_beside(run, &env, &marks_dir)?;
    let mut out = PeerResults {
        burst: sizes.burst,
        idle_secs: sizes.idle_secs,
        ..PeerResults::default()
    };
    let mut systems = vec![
        System::Rundmc {
            env: &env,
            agent: &agent,
        },
        System::Raw(&raw),
    ];
    let podman_ok = crate::cold_pull::installed("podman") && crate::cold_pull::installed("conmon");
    for runtime in ["runc", "crun"] {
        if !podman_ok {
            out.skipped.push(format!(
                "podman + {runtime}: podman or conmon is not installed"
            ));
            continue;
        }
        if runtime == "crun"
            && let Err(why) = crate::machine::prepare_crun()
        {
            out.skipped.push(format!("podman + crun: {why}"));
            continue;
        }
        systems.push(System::Podman(Podman::new(run, runtime)?));
    }
    let containerd =
        match crate::cold_pull::installed("containerd") && crate::cold_pull::installed("ctr") {
            true => Some(Containerd::start(run)?),
            false => {
                out.skipped
                    .push("containerd: containerd or ctr is not installed".into());
                None
            }
        };
    if let Some(c) = &containerd {
        systems.push(System::Containerd(c));
    }
    let measured = measure(&systems, &marks, &marks_dir, sizes);
    for s in &systems {
        if let System::Podman(p) = s {
            p.rm_all();
        }
    }
    drop(systems);
    if let Some(c) = containerd {
        c.stop();
    }
    out.systems = measured?;
    Ok(out)
}

/// A raw runc baseline on the bundle of a container of the peers' manifest.
fn raw_beside(run: &Run, env: &AgentEnv, marks: &Path) -> Result<Raw> {
    let names = vec!["template".to_string()];
    env.write("template", &manifest(env, "template", marks))?;
    wait_for(
        "the template running",
        TIMEOUT,
        Duration::from_millis(5),
        || env.output_landed("template") && env.all_running(&names),
    )
    .with_context(|| env.log_tail())?;
    let raw = run.raw_from(env, "peers-raw", env.template_files("template"))?;
    env.remove_all(&names, TIMEOUT)?;
    let _ = fs::remove_file(marks.join("template"));
    Ok(raw)
}

fn measure(
    systems: &[System],
    marks: &Marks,
    dir: &Path,
    s: PeerSizes,
) -> Result<Vec<SystemResults>> {
    let mut results: Vec<SystemResults> = systems
        .iter()
        .map(|sys| {
            let (supervisor, daemon) = sys.labels();
            SystemResults {
                name: sys.name(),
                supervisor,
                daemon,
                ..SystemResults::default()
            }
        })
        .collect();
    let k = systems.len();
    for i in 0..s.samples + 1 {
        for j in 0..k {
            let at = (i + j) % k;
            let id = format!("p{i}-{at}");
            let (up, down) = one(&systems[at], marks, dir, &id)?;
            if i > 0 {
                results[at].start.0.push(up);
                results[at].teardown.0.push(down);
            }
        }
    }
    for round in 0..s.rounds {
        for j in 0..k {
            let at = (round + j) % k;
            let r = &mut results[at];
            many(&systems[at], marks, dir, round, at, s, r)?;
            eprintln!(
                "    {}: burst {:.1}/s",
                r.name,
                r.burst.0.last().copied().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(results)
}

/// One container up, then down: ms each.
fn one(sys: &System, marks: &Marks, dir: &Path, id: &str) -> Result<(f64, f64)> {
    check_interrupted()?;
    let ids = [id.to_string()];
    let t0 = Instant::now();
    sys.start(id, dir)?;
    let up = marks.wait(&ids, t0).with_context(|| sys.name())?[0];
    sys.settle(&ids, true)?;
    let t0 = Instant::now();
    sys.stop(id)?;
    let down = t0.elapsed();
    sys.settle(&ids, false)?;
    marks.clear(&ids);
    Ok((up.as_secs_f64() * 1e3, down.as_secs_f64() * 1e3))
}

/// One burst round of `sys`; in the first round, the steady figures with
/// the burst running.
fn many(
    sys: &System,
    marks: &Marks,
    dir: &Path,
    round: usize,
    at: usize,
    s: PeerSizes,
    r: &mut SystemResults,
) -> Result<()> {
    let ids: Vec<String> = (0..s.burst).map(|i| format!("m{round}-{at}-{i}")).collect();
    let t0 = Instant::now();
    match sys {
        System::Rundmc { .. } => ids.iter().try_for_each(|id| sys.start(id, dir))?,
        _ => drop(burst::in_parallel(&ids, WORKERS, |id| sys.start(id, dir))?),
    }
    let each = marks.wait(&ids, t0).with_context(|| sys.name())?;
    let last = each.iter().max().copied().unwrap_or_default();
    r.burst
        .0
        .push(ids.len() as f64 / last.as_secs_f64().max(1e-9));
    sys.settle(&ids, true)?;
    if round == 0 {
        steady(sys, &ids, s.idle_secs, r)?;
    }
    let t0 = Instant::now();
    match sys {
        System::Rundmc { env, .. } => {
            ids.iter().try_for_each(|id| env.remove(id))?;
            wait_for(
                "every depot directory gone",
                TIMEOUT,
                Duration::from_millis(2),
                || ids.iter().all(|id| env.gone(id)),
            )
            .with_context(|| env.log_tail())?;
        }
        _ => drop(burst::in_parallel(&ids, WORKERS, |id| sys.stop(id))?),
    }
    r.burst_down
        .0
        .push(ids.len() as f64 / t0.elapsed().as_secs_f64().max(1e-9));
    sys.settle(&ids, false)?;
    marks.clear(&ids);
    Ok(())
}

/// With `ids` running: supervisor PSS, daemon RSS, CPU over an idle window.
fn steady(sys: &System, ids: &[String], secs: u64, r: &mut SystemResults) -> Result<()> {
    pause(Duration::from_secs(1))?;
    let sups = sys.supervisors(ids);
    let mut pss: Vec<u64> = sups
        .iter()
        .filter_map(|p| procfs::mem(*p).ok())
        .map(|m| m.pss_kib)
        .collect();
    pss.sort_unstable();
    r.supervisor_pss_kib = pss.get(pss.len() / 2).copied();
    let daemon = sys.daemon();
    r.daemon_rss_kib = daemon.and_then(|p| procfs::mem(p).ok()).map(|m| m.rss_kib);
    let watched: Vec<i32> = daemon.into_iter().chain(sups).collect();
    if watched.is_empty() {
        r.idle_cpu_pct = Some(0.0);
        return Ok(());
    }
    let cpu =
        |pids: &[i32]| -> u64 { pids.iter().filter_map(|p| procfs::process_cpu_ns(*p)).sum() };
    let (c0, t0) = (cpu(&watched), Instant::now());
    pause(Duration::from_secs(secs))?;
    let (c1, wall) = (cpu(&watched), t0.elapsed().as_secs_f64());
    r.idle_cpu_pct = Some(c1.saturating_sub(c0) as f64 / 1e9 / wall * 100.0);
    if sups_missing(sys, ids) {
        return Err(anyhow!(
            "{}: supervisors ended during the idle window",
            sys.name()
        ));
    }
    Ok(())
}

fn sups_missing(sys: &System, ids: &[String]) -> bool {
    match sys {
        System::Raw(_) => false,
        _ => sys.supervisors(ids).len() < ids.len(),
    }
}
