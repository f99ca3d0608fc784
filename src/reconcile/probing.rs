//! The controller's side of probes: which run is probed and with what
//! (the prober is told at every look, so a restarted agent resumes
//! probing the run it finds), what its health is before planning, the
//! `Unhealthy` events, and the kill of a main process whose liveness or
//! startup probe failed. The prober only reports; the rules are here and
//! in the planner.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::controller::{Controller, grace_period};
use super::observe::Observation;
use super::ops::{ContainerOps, MainRun};
use super::plan::MainObs;
use super::reporting::ReportOps;
use super::store::Desired;
use crate::api::{ContainerSpec, Handle, ProbeKind, ProcessSpec, Reason};
use crate::containerizer::ContainerizerError;
use crate::probe::{ExecProbe, Subject, check::default_host, failure_message};
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
        self.announce_probe_failures(handle, desired).await;
        let grace = grace_period(spec);
        let msg = format!(
            "Main process failed {} probe, will be restarted",
            probe.as_str().to_lowercase()
        );
        self.event(desired, handle, EventType::Normal, Reason::Killing, msg)
            .await;
        self.prober.stop(handle);
        self.containerizer.stop(handle, grace).await
    }
}
