//! The controller's side of probes: which run is probed and with what
//! (the prober is told at every look, so a restarted agent resumes
//! probing the run it finds), what its health is before planning, the
//! `Unhealthy` events, and the kill of a main process whose liveness or
//! startup probe failed; and the lifecycle hooks (postStart after a start,
//! preStop before a stop, within the grace period). The prober only
//! reports; the rules are here and in the planner.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::controller::{Controller, grace_period};
use super::observe::Observation;
use super::ops::{ContainerOps, MainRun};
use super::plan::MainObs;
use super::reporting::ReportOps;
use super::store::Desired;
use crate::api::{
    ContainerSpec, Handle, Lifecycle, LifecycleHandler, ProbeKind, ProcessSpec, Reason, Scheme,
    resolve_port,
};
use crate::containerizer::ContainerizerError;
use crate::probe::check::{self, Target, default_host};
use crate::probe::{ExecProbe, Subject, failure_message};
use crate::report::events::EventType;

/// The file in a run's directory that keeps its probes' results.
const PROBES_FILE: &str = "probes.json";

/// Exec probes through the containerizer, as the main process's user.
pub struct ContainerExec<C>(pub Arc<C>);

impl<C: ContainerOps> ExecProbe for ContainerExec<C> {
    fn exec<'a>(
        &'a self,
        handle: &'a Handle,
        command: &'a [String],
        timeout: Duration,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let user = main_user(&*self.0, handle);
            self.0.exec_probe(handle, command, user, timeout).await
        })
    }
}

/// The main process's user: its own, or its image's.
fn main_user<C: ContainerOps>(c: &C, handle: &Handle) -> Option<String> {
    let record = c.record(handle).ok()??;
    let defaults = record.image.map(|i| i.defaults).unwrap_or_default();
    let process = crate::api::image::main_process(&record.spec, &defaults).ok()??;
    process.user
}

/// The probes `spec` declares for its main process.
fn declared(spec: &ContainerSpec) -> ProcessSpec {
    spec.process.clone().unwrap_or_default()
}

impl<C: ContainerOps, P: ReportOps> Controller<C, P> {
    /// Fill in what the probes of the running main process say.
    /// The probes are those of the spec the container was made from.
    pub(super) fn read_health(&self, handle: &Handle, obs: &mut Observation<C::Run>) {
        let spec = obs.record.as_ref().map(|r| &r.spec);
        let (Some(spec), Some(p), MainObs::Running) = (spec, &obs.main_process, obs.main) else {
            return;
        };
        obs.health = self.prober.health(handle, p.id(), &declared(spec));
    }

    /// Probe the run that is running now, or nothing.
    pub(super) fn keep_probing(&self, handle: &Handle, obs: &Observation<C::Run>) {
        let spec = obs.record.as_ref().map(|r| &r.spec);
        let running = (spec, &obs.main_process, obs.main);
        let (Some(spec), Some(p), MainObs::Running) = running else {
            self.prober.stop(handle);
            return;
        };
        let Some(pid) = p.pid() else {
            return;
        };
        let ips = obs
            .record
            .as_ref()
            .and_then(|r| r.network.as_ref())
            .map(|n| n.ips.clone());
        let subject = Subject {
            run: p.id().to_string(),
            pid,
            running_for: SystemTime::now()
                .duration_since(p.started_at())
                .unwrap_or_default(),
            host: default_host(&ips.unwrap_or_default()),
            ports: spec
                .ports
                .iter()
                .map(|p| (p.name.clone(), p.container_port))
                .collect(),
            process: declared(spec),
            saved: self.containerizer.run_file(handle, p.id(), PROBES_FILE),
        };
        self.prober.ensure(handle, subject);
    }

    /// One `Unhealthy` event per failed probe, as the kubelet records them.
    pub(super) async fn announce_probe_failures(&self, handle: &Handle, desired: Option<&Desired>) {
        for (kind, output) in self.prober.take_unannounced(handle) {
            let msg = failure_message(kind, &output);
            self.event(desired, handle, EventType::Warning, Reason::Unhealthy, msg)
                .await;
        }
    }

    /// Kill the main process that failed `probe`, within its grace period.
    pub(super) async fn kill_unhealthy(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
        probe: ProbeKind,
    ) -> Result<(), ContainerizerError> {
        let grace = self
            .before_unhealthy_kill(handle, desired, spec, probe)
            .await;
        self.containerizer.stop(handle, grace).await
    }

    /// What comes before the main process that failed `probe` is killed:
    /// the failures announced, its preStop hook, `Killing`, its probes
    /// stopped. Returns the grace period left for SIGTERM.
    pub(super) async fn before_unhealthy_kill(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
        probe: ProbeKind,
    ) -> Duration {
        self.announce_probe_failures(handle, desired).await;
        let grace = self
            .pre_stop(handle, desired, spec, grace_period(spec))
            .await;
        let msg = format!(
            "Main process failed {} probe, will be restarted",
            probe.as_str().to_lowercase()
        );
        self.event(desired, handle, EventType::Normal, Reason::Killing, msg)
            .await;
        self.prober.stop(handle);
        grace
    }
}

/// How long a postStart hook may run. Kubernetes sets no bound; one that
/// never returned would hold a reconcile worker for good.
const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

/// What the kubelet leaves for SIGTERM after a preStop hook that used the
/// whole grace period.
const MIN_GRACE_AFTER_PRE_STOP: Duration = Duration::from_secs(2);

/// `spec`'s lifecycle hooks.
fn lifecycle(spec: &ContainerSpec) -> Lifecycle {
    declared(spec).lifecycle.unwrap_or_default()
}

impl<C: ContainerOps, P: ReportOps> Controller<C, P> {
    /// Run `hook` in `handle`'s container within `timeout`.
    async fn run_hook(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        hook: &LifecycleHandler,
        timeout: Duration,
    ) -> Result<(), String> {
        if let Some(sleep) = &hook.sleep {
            let wanted = Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0));
            tokio::time::sleep(wanted.min(timeout)).await;
            return Ok(());
        }
        if let Some(exec) = &hook.exec {
            let user = main_user(&*self.containerizer, handle);
            return self
                .containerizer
                .exec_probe(handle, &exec.command, user, timeout)
                .await;
        }
        let Some(http) = &hook.http_get else {
            return Err("the hook has no action".into());
        };
        let (pid, host) = self.main_target(handle)?;
        let ports: Vec<(Option<&str>, i32)> = spec
            .ports
            .iter()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        let port = resolve_port(&http.port, &ports).ok_or("the hook's port is unknown")?;
        let ip = match http.host.as_deref() {
            Some(h) => h
                .parse()
                .map_err(|_| format!("host {h:?} is not an IP address"))?,
            None => host,
        };
        let target = Target {
            pid,
            addr: SocketAddr::new(ip, port),
        };
        let path = http
            .path
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        let get = check::HttpGet {
            tls: http.scheme == Some(Scheme::Https),
            host: http.host.as_deref(),
            path,
            headers: &http.http_headers,
        };
        check::http(target, get, timeout).await
    }

    /// The running main process's pid and the container's address.
    fn main_target(&self, handle: &Handle) -> Result<(i32, IpAddr), String> {
        let id = self.containerizer.main_file(handle).current_id();
        let run = id.and_then(|id| self.containerizer.attach(handle, &id).ok());
        let pid = run
            .and_then(|r| r.pid())
            .ok_or("the main process is not running")?;
        let record = self.containerizer.record(handle).ok().flatten();
        let ips = record
            .and_then(|r| r.network)
            .map(|n| n.ips)
            .unwrap_or_default();
        Ok((pid, default_host(&ips)))
    }

    /// The postStart hook of a main process that just started: until it
    /// returns the container is not Ready (this reconcile writes no status
    /// before); a failure kills the process, and the restart policy takes
    /// it from there.
    pub(super) async fn post_start(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
    ) -> Result<(), ContainerizerError> {
        let Some(hook) = lifecycle(spec).post_start else {
            return Ok(());
        };
        let Err(output) = self.run_hook(handle, spec, &hook, POST_START_TIMEOUT).await else {
            return Ok(());
        };
        let msg = format!("PostStart hook failed: {output}");
        self.event(
            desired,
            handle,
            EventType::Warning,
            Reason::FailedPostStartHook,
            msg,
        )
        .await;
        self.containerizer.stop(handle, grace_period(spec)).await
    }

    /// The preStop hook, within `grace`; the grace left for SIGTERM.
    pub(super) async fn pre_stop(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
        grace: Duration,
    ) -> Duration {
        let Some(hook) = lifecycle(spec).pre_stop else {
            return grace;
        };
        let started = tokio::time::Instant::now();
        if let Err(output) = self.run_hook(handle, spec, &hook, grace).await {
            let msg = format!("PreStop hook failed: {output}");
            self.event(
                desired,
                handle,
                EventType::Warning,
                Reason::FailedPreStopHook,
                msg,
            )
            .await;
        }
        grace
            .saturating_sub(started.elapsed())
            .max(MIN_GRACE_AFTER_PRE_STOP.min(grace))
    }
}
