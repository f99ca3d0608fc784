//! The steps of a plan, executed: each one a containerizer verb plus the
//! events that tell what happened. The controller decides; this file does.

use std::collections::BTreeMap;
use std::time::Duration;

use super::controller::{Controller, ReconcileError, grace_period};
use super::history::{MAIN, MainFile, init_slot, slot_run_id};
use super::observe::Observation;
use super::ops::{ContainerOps, MainRun};
use super::plan::MainObs;
use super::reporting::ReportOps;
use super::store::{Desired, SOURCE_LABEL, SourceKind};
use crate::api::Reason;
use crate::api::{ContainerSpec, Handle, ProcessSpec};
use crate::containerizer::create::ImageLayers;
use crate::containerizer::run::RunSpec;
use crate::containerizer::{ContainerizerError, ErrorKind};
use crate::image::state::ReadyImage;
use crate::process::{ProcState, ProcessError};
use crate::report::events::EventType;

impl<C: ContainerOps, P: ReportOps> Controller<C, P> {
    pub(super) async fn destroy(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        obs: &Observation<C::Run>,
    ) -> Result<(), ContainerizerError> {
        if obs.record.is_some() && obs.runtime.is_none() {
            self.event(
                desired,
                handle,
                EventType::Warning,
                Reason::ContainerLost,
                "The runtime has no state for the container: killing what still runs in its cgroup",
            )
            .await;
        }
        if let Some(record) = &obs.record
            && obs.runtime.is_some()
        {
            let mut grace = grace_period(&record.spec);
            if obs.main == MainObs::Running {
                grace = self.pre_stop(handle, desired, &record.spec, grace).await;
            }
            grace = self
                .stop_main_first(handle, obs.main_process.as_ref(), &record.spec, grace)
                .await;
            self.stop_sidecars(handle, &record.spec, grace).await;
            self.event(
                desired,
                handle,
                EventType::Normal,
                Reason::Killing,
                format!("Stopping container with a grace period of {grace:?}"),
            )
            .await;
            if let Err(e) = self.containerizer.terminate(handle, grace).await {
                tracing::debug!(%handle, error = %e, "stop before destroy");
            }
        }
        self.containerizer.destroy(handle).await?;
        self.event(
            desired,
            handle,
            EventType::Normal,
            Reason::Destroyed,
            "Container destroyed",
        )
        .await;
        Ok(())
    }

    pub(super) async fn create(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
        image: Option<&ReadyImage>,
    ) -> Result<(), ReconcileError> {
        if let Some(d) = desired {
            // Before anything exists, so that deletion always waits for us.
            self.reporters.add_finalizer(d).await?;
        }
        let kind = desired.map(|d| d.origin.kind()).unwrap_or(SourceKind::File);
        let labels = BTreeMap::from([(SOURCE_LABEL.to_string(), kind.label().to_string())]);
        let layers = image.map(|r| ImageLayers {
            image: r.image.clone(),
            lowerdirs: r.lowerdirs.clone(),
        });
        let from = layers.as_ref().map_or(&spec.rootfs, |l| &l.image.name);
        match self
            .containerizer
            .create(handle, spec, labels, layers.as_ref())
            .await
        {
            Ok(()) => {
                self.event(
                    desired,
                    handle,
                    EventType::Normal,
                    Reason::Created,
                    format!("Created container from {from}"),
                )
                .await;
                Ok(())
            }
            Err(e) => {
                self.event(
                    desired,
                    handle,
                    EventType::Warning,
                    Reason::Failed,
                    format!("Error: {e}"),
                )
                .await;
                Err(e.into())
            }
        }
    }

    pub(super) async fn update_limits(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
    ) -> Result<(), ContainerizerError> {
        self.containerizer.update_limits(handle, spec).await?;
        self.event(
            desired,
            handle,
            EventType::Normal,
            Reason::Updated,
            "Updated limits in place",
        )
        .await;
        Ok(())
    }

    pub(super) async fn start_main(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
        restart_delay: Option<Duration>,
    ) -> Result<(), ContainerizerError> {
        let Some(process) = self.main_process(handle, spec)? else {
            return Ok(());
        };
        let started = self
            .start_run(handle, MAIN, &process, None, restart_delay)
            .await;
        match started {
            Ok(Ok(p)) => {
                // The same words for every run, as kubelet's "Started
                // container": events of a series keep their first note.
                // Which run, and its pid, are in status.mainProcess.
                tracing::debug!(%handle, process = p.id(), pid = ?p.pid(), "main process started");
                let msg = "Started main process";
                self.event(desired, handle, EventType::Normal, Reason::Started, msg)
                    .await;
                self.post_start(handle, desired, spec).await
            }
            Ok(Err(source)) => {
                // Recorded in the run's exit file; the restart policy takes it from here.
                let msg = format!("Error: {source}");
                self.event(desired, handle, EventType::Warning, Reason::Failed, msg)
                    .await;
                Ok(())
            }
            Err(e) => {
                // Not running: say so, as the kubelet's `Failed` event does.
                let msg = format!("Error: {e}");
                self.event(desired, handle, EventType::Warning, Reason::Failed, msg)
                    .await;
                Err(e)
            }
        }
    }

    /// The main process `spec` runs: its own, over the defaults of the
    /// image the container was made from.
    fn main_process(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
    ) -> Result<Option<ProcessSpec>, ContainerizerError> {
        if !spec.runs_main() {
            return Ok(None);
        }
        let record = self.containerizer.record(handle)?;
        let defaults = record.and_then(|r| r.image).map(|i| i.defaults);
        crate::api::image::main_process(spec, &defaults.unwrap_or_default()).map_err(|e| {
            ContainerizerError::at(
                handle,
                ErrorKind::Invalid {
                    errors: crate::api::ValidationErrors(vec![crate::api::FieldError::new(
                        "spec.process",
                        e.to_string(),
                    )]),
                },
            )
        })
    }

    /// [`Self::start_run`] of `what` (a process other than the main one)
    /// in `slot`, announced as `Started` or `Failed`. A process that could
    /// not start is announced and left to the backoff; a containerizer
    /// error is announced and returned.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start_announced(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        what: &str,
        slot: &str,
        process: &ProcessSpec,
        pea: Option<&str>,
        restart_delay: Option<Duration>,
    ) -> Result<(), ContainerizerError> {
        let (kind, reason, msg, outcome) = match self
            .start_run(handle, slot, process, pea, restart_delay)
            .await
        {
            Ok(Ok(_)) => (
                EventType::Normal,
                Reason::Started,
                format!("Started {what}"),
                Ok(()),
            ),
            Ok(Err(source)) => (
                EventType::Warning,
                Reason::Failed,
                format!("Error: {what}: {source}"),
                Ok(()),
            ),
            Err(e) => (
                EventType::Warning,
                Reason::Failed,
                format!("Error: {what}: {e}"),
                Err(e),
            ),
        };
        self.event(desired, handle, kind, reason, msg).await;
        outcome
    }

    /// Start init process `index` of `spec`, after `restart_delay` of
    /// backoff when it failed before.
    pub(super) async fn start_init(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
        index: usize,
        restart_delay: Option<Duration>,
    ) -> Result<(), ContainerizerError> {
        let Some(init) = spec.init_processes.get(index) else {
            return Ok(());
        };
        let process = ProcessSpec {
            args: init.argv(),
            ..init.as_process()
        };
        let what = format!("init process {}", init.name);
        let slot = init_slot(&init.name);
        self.start_announced(handle, desired, &what, &slot, &process, None, restart_delay)
            .await
    }

    /// Record that init process `index` ran to completion: it is not run
    /// again while the container lasts, an agent restart included.
    pub(super) fn init_done(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        index: usize,
    ) -> Result<(), ContainerizerError> {
        let Some(init) = spec.init_processes.get(index) else {
            return Ok(());
        };
        let slot = init_slot(&init.name);
        let file = MainFile {
            completed: true,
            ..self.containerizer.slot_file(handle, &slot)
        };
        self.containerizer.save_slot_file(handle, &slot, &file)
    }

    /// The main process's current run, when it has one.
    fn current_main(&self, handle: &Handle) -> Option<C::Run> {
        let id = self.containerizer.main_file(handle).current_id()?;
        self.containerizer.attach(handle, &id).ok()
    }

    /// The history of process `slot`.
    fn history(&self, handle: &Handle, slot: &str) -> MainFile {
        match slot {
            MAIN => self.containerizer.main_file(handle),
            _ => self.containerizer.slot_file(handle, slot),
        }
    }

    /// Write the history of process `slot`.
    fn save_history(
        &self,
        handle: &Handle,
        slot: &str,
        file: &MainFile,
    ) -> Result<(), ContainerizerError> {
        match slot {
            MAIN => self.containerizer.save_main_file(handle, file),
            _ => self.containerizer.save_slot_file(handle, slot, file),
        }
    }

    /// Start the next run of process `slot` (the main process, or an init
    /// process, a sidecar), in pea `pea` when it has one. `Ok(Err(_))`
    /// when it was started and failed at once: recorded in its exit file,
    /// it ended.
    pub(super) async fn start_run(
        &self,
        handle: &Handle,
        slot: &str,
        process: &ProcessSpec,
        pea: Option<&str>,
        restart_delay: Option<Duration>,
    ) -> Result<Result<C::Run, ProcessError>, ContainerizerError> {
        if restart_delay.is_some() {
            self.end_previous_run(handle, slot).await?;
        }
        let runs = self.record_next_run(handle, slot, restart_delay)?;
        let run = RunSpec {
            id: Some(slot_run_id(slot, runs)),
            args: process.args.clone(),
            env: process.env.clone(),
            working_dir: process.working_dir.clone(),
            user: process.user.clone(),
            log_max_bytes: Some(self.config.log_max_bytes),
            log_max_files: Some(self.config.log_max_files),
            pea: pea.map(str::to_string),
            stdin: process.stdin,
            keep_stdin_open: process.stdin && !process.stdin_once,
            ..RunSpec::default()
        };
        match self.containerizer.run(handle, &run).await {
            Ok(p) => Ok(Ok(p)),
            Err(ContainerizerError::Container {
                kind:
                    ErrorKind::Process {
                        source: source @ ProcessError::StartFailed { .. },
                    },
                ..
            }) => Ok(Err(source)),
            Err(e) => Err(e),
        }
    }

    /// Before a restart: the previous run may live on where nothing saw
    /// it end (its supervisor was lost, or the runtime's exec reported a
    /// failure after starting it); end it, so that its restart never runs
    /// beside it.
    async fn end_previous_run(
        &self,
        handle: &Handle,
        slot: &str,
    ) -> Result<(), ContainerizerError> {
        let Some(id) = self.history(handle, slot).current_slot_id(slot) else {
            return Ok(());
        };
        let state = self.containerizer.attach(handle, &id).map(|p| p.state());
        let unseen = match state {
            Ok(Ok(ProcState::Lost { .. })) => "its lost supervisor left it running",
            Ok(Ok(ProcState::Exited(rec))) if rec.start_error.is_some() => {
                "the runtime reported a failed start but it ran"
            }
            _ => return Ok(()),
        };
        if self.containerizer.kill_lost(handle, &id).await? {
            tracing::warn!(%handle, process = %id, "killed the previous run: {unseen}");
        }
        Ok(())
    }

    /// Record the next run of process `slot` in its history file (the main
    /// process's is `main.json`), before it starts, so a crash in between
    /// never leaves a run the next agent would not know about: it just
    /// starts the next. Keeps the previous run's directory (for its logs)
    /// and removes the one before. Returns the run's number.
    fn record_next_run(
        &self,
        handle: &Handle,
        slot: &str,
        restart_delay: Option<Duration>,
    ) -> Result<u32, ContainerizerError> {
        let file = self.history(handle, slot);
        let next = match restart_delay {
            Some(delay) => {
                self.config.metrics.restarts.inc();
                file.restart(delay)
            }
            None => file.start(),
        };
        self.save_history(handle, slot, &next)?;
        if next.runs > 2 {
            self.containerizer
                .remove_run(handle, &slot_run_id(slot, next.runs - 2));
        }
        Ok(next.runs)
    }

    pub(super) async fn stop_main(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
    ) -> Result<(), ContainerizerError> {
        let file = MainFile {
            stopped: true,
            ..self.containerizer.main_file(handle)
        };
        self.containerizer.save_main_file(handle, &file)?;
        self.mark_stopped(handle, spec)?;
        let grace = self
            .pre_stop(handle, desired, spec, grace_period(spec))
            .await;
        let main = self.current_main(handle);
        let grace = self
            .stop_main_first(handle, main.as_ref(), spec, grace)
            .await;
        self.stop_sidecars(handle, spec, grace).await;
        self.event(
            desired,
            handle,
            EventType::Normal,
            Reason::Killing,
            format!("Stopping processes with a grace period of {grace:?}"),
        )
        .await;
        self.containerizer.stop(handle, grace).await
    }
}
