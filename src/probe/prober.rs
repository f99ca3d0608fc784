//! The prober: one task per running main process that declares probes,
//! running each probe on its own schedule and keeping its [`RunHealth`].
//! It decides nothing: on a failure, or when a result changes, it wakes
//! the handle's reconcile, which reads [`Prober::health`] and plans (a
//! restart, the Ready condition, events). A new run gets new trackers, as
//! the kubelet's probe workers start again with a new container.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::time::Instant;

use super::check::{self, Target};
use super::health::{Health, RunHealth, Saved};
use crate::api::{Handle, Probe, ProbeKind, ProcessSpec, Scheme, resolve_port};
use crate::sync::lock;

/// Runs an exec probe's command in a container, within a time limit:
/// `Err` carries the failure's output.
pub trait ExecProbe: Send + Sync + 'static {
    /// Run `command` in `handle`'s container as its main process's user.
    fn exec<'a>(
        &'a self,
        handle: &'a Handle,
        command: &'a [String],
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// Wakes a handle's reconcile.
pub type Wake = Arc<dyn Fn(&Handle) + Send + Sync>;

/// What is probed: one run of a container's main process.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The run, `main-<n>`.
    pub run: String,
    /// Its pid on the node: whose network namespace probes enter.
    pub pid: i32,
    /// How long ago it started (initial delays count from then).
    pub running_for: Duration,
    /// Where network probes go when they name no host.
    pub host: IpAddr,
    /// The spec's ports, `(name, containerPort)`, for named ports.
    pub ports: Vec<(Option<String>, i32)>,
    /// The process and its probes.
    pub process: ProcessSpec,
    /// Where the run's probe results are kept for a restarted agent.
    pub saved: Option<PathBuf>,
}

/// Probing of every running main process.
pub struct Prober {
    runs: Mutex<HashMap<Handle, Running>>,
    wake: Wake,
    exec: Arc<dyn ExecProbe>,
}

struct Running {
    health: Arc<Mutex<RunHealth>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Prober {
    /// A prober that wakes reconciles through `wake` and runs exec probes
    /// through `exec`.
    pub fn new(wake: Wake, exec: Arc<dyn ExecProbe>) -> Prober {
        Prober {
            runs: Mutex::new(HashMap::new()),
            wake,
            exec,
        }
    }

    /// Probe `subject` if it is not probed yet; a previous run of the
    /// handle stops being probed. Nothing for a process without probes.
    pub fn ensure(self: &Arc<Self>, handle: &Handle, subject: Subject) {
        let mut runs = lock(&self.runs);
        if runs
            .get(handle)
            .is_some_and(|r| lock(&r.health).run == subject.run)
        {
            return;
        }
        runs.remove(handle);
        let health = match subject.saved.as_deref().and_then(load) {
            Some(saved) => RunHealth::resume(&subject.run, &subject.process, &saved),
            None => RunHealth::new(&subject.run, &subject.process),
        };
        if [
            ProbeKind::Startup,
            ProbeKind::Liveness,
            ProbeKind::Readiness,
        ]
        .iter()
        .all(|k| health.tracker(*k).is_none())
        {
            return;
        }
        let health = Arc::new(Mutex::new(health));
        let me = Arc::clone(self);
        let (h, owned) = (Arc::clone(&health), handle.clone());
        let task = tokio::spawn(async move { me.work(owned, h, subject).await });
        let task = task.abort_handle();
        runs.insert(handle.clone(), Running { health, task });
    }

    /// Stop probing `handle`.
    pub fn stop(&self, handle: &Handle) {
        lock(&self.runs).remove(handle);
    }

    /// What the probes of `run` say; before its probing starts, the
    /// initial state of what `process` declares.
    pub fn health(&self, handle: &Handle, run: &str, process: &ProcessSpec) -> Health {
        let runs = lock(&self.runs);
        match runs.get(handle).map(|r| lock(&r.health)) {
            Some(h) if h.run == run => h.health(),
            _ => RunHealth::new(run, process).health(),
        }
    }

    /// The failures of `handle`'s probes not yet announced.
    pub fn take_unannounced(&self, handle: &Handle) -> Vec<(ProbeKind, String)> {
        let runs = lock(&self.runs);
        runs.get(handle)
            .map(|r| lock(&r.health).take_unannounced())
            .unwrap_or_default()
    }

    async fn work(
        self: Arc<Self>,
        handle: Handle,
        health: Arc<Mutex<RunHealth>>,
        subject: Subject,
    ) {
        let started = Instant::now()
            .checked_sub(subject.running_for)
            .unwrap_or_else(Instant::now);
        let mut schedule: Vec<(ProbeKind, Probe, Instant)> = probes(&subject.process)
            .map(|(kind, probe)| {
                let first = started + probe.timing().initial_delay;
                (kind, probe.clone(), first)
            })
            .collect();
        loop {
            let Some(next) = schedule.iter_mut().min_by_key(|(_, _, at)| *at) else {
                return;
            };
            tokio::time::sleep_until(next.2).await;
            let (kind, probe) = (next.0, next.1.clone());
            let timing = probe.timing();
            // The next tick, a period on; one that fell behind (a slow
            // probe) is not run twice to catch up.
            let now = Instant::now();
            let behind = now.checked_sub(timing.period).unwrap_or(now);
            next.2 = next.2.max(behind) + timing.period;
            if !lock(&health).due(kind) {
                if kind == ProbeKind::Startup {
                    schedule.retain(|(k, _, _)| *k != ProbeKind::Startup);
                }
                continue;
            }
            let outcome = self.run(&handle, &subject, &probe, timing.timeout).await;
            let failed = outcome.is_err();
            let (changed, now_started, kill, saved) = {
                let mut h = lock(&health);
                let changed = h.record(kind, outcome);
                (changed, h.started(), h.health().kill, h.saved())
            };
            if changed && let Some(path) = &subject.saved {
                save(path, &saved);
            }
            if changed && now_started && kind == ProbeKind::Startup {
                // The others start at once rather than at their next tick.
                let now = Instant::now();
                schedule.iter_mut().for_each(|s| s.2 = s.2.min(now));
            }
            if changed || failed {
                (self.wake)(&handle);
            }
            if kill.is_some() {
                return; // held until the run ends and a new one is probed
            }
        }
    }

    async fn run(
        &self,
        handle: &Handle,
        subject: &Subject,
        probe: &Probe,
        timeout: Duration,
    ) -> Result<(), String> {
        let ports: Vec<(Option<&str>, i32)> = subject
            .ports
            .iter()
            .map(|(n, p)| (n.as_deref(), *p))
            .collect();
        let target = |host: Option<&str>, port| -> Result<Target, String> {
            let port = resolve_port(port, &ports).ok_or("the probe's port is unknown")?;
            let ip = match host {
                Some(h) => h
                    .parse()
                    .map_err(|_| format!("host {h:?} is not an IP address"))?,
                None => subject.host,
            };
            Ok(Target {
                pid: subject.pid,
                addr: SocketAddr::new(ip, port),
            })
        };
        if let Some(tcp) = &probe.tcp_socket {
            return check::tcp(target(tcp.host.as_deref(), &tcp.port)?, timeout).await;
        }
        if let Some(http) = &probe.http_get {
            let to = target(http.host.as_deref(), &http.port)?;
            let path = http
                .path
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or("/");
            let host = http
                .http_headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"));
            let host = host.map(|h| h.value.as_str()).or(http.host.as_deref());
            let get = check::HttpGet {
                tls: http.scheme == Some(Scheme::Https),
                host,
                path,
                headers: &http.http_headers,
            };
            return check::http(to, get, timeout).await;
        }
        if let Some(grpc) = &probe.grpc {
            let to = target(None, &IntOrString::Int(grpc.port))?;
            let service = grpc.service.as_deref().unwrap_or_default();
            return check::grpc(to, service, timeout).await;
        }
        if let Some(exec) = &probe.exec {
            return self.exec.exec(handle, &exec.command, timeout).await;
        }
        Err("the probe has no handler this agent runs".into())
    }
}

/// The results kept for a run, if readable.
fn load(path: &Path) -> Option<Saved> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Keep a run's results (best effort: without them a restarted agent
/// starts from the kubelet's initial results).
fn save(path: &Path, saved: &Saved) {
    let written = crate::fsutil::write_json_with(path, saved, crate::fsutil::Durability::Volatile);
    if let Err(error) = written {
        tracing::debug!(%error, "keeping probe results");
    }
}

/// The probes `process` declares.
fn probes(process: &ProcessSpec) -> impl Iterator<Item = (ProbeKind, &Probe)> {
    [
        (ProbeKind::Startup, &process.startup_probe),
        (ProbeKind::Liveness, &process.liveness_probe),
        (ProbeKind::Readiness, &process.readiness_probe),
    ]
    .into_iter()
    .filter_map(|(kind, probe)| probe.as_ref().map(|p| (kind, p)))
}
