//! The controller: workers take handles off the queue, observe, plan,
//! execute the plan's steps through the containerizer, and report status
//! and events where the declaration came from. One handle is reconciled by
//! one worker at a time; any number of sources feed the same store and queue.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::backoff::CrashLoopBackoff;
use super::images::{
    ImageOps, ImageStep, PlanImages, check_command, config_error, pea_config_error, pea_image_key,
    pea_wait, peas_to_start,
};
use super::observe::{Observation, observe};
use super::oom::OomWatches;
use super::ops::{ContainerOps, MainRun};
use super::plan::{self, Plan, Step, Waiting};
use super::probing::ContainerExec;
use super::queue::WorkQueue;
use super::reporting::ReportOps;
use super::sidecars::{SidecarExec, SidecarKeys, sidecar_wake};
use super::status::{self, FailedStep, StatusInput};
use super::store::{Desired, SOURCE_LABEL, SourceKind, Store};
use crate::api::Reason;
use crate::api::reference::ImageReference;
use crate::api::{ContainerSpec, ContainerStatus, Handle, Origin};
use crate::containerizer::ContainerizerError;
use crate::image::state::{ImageState, ImageWait};
use crate::probe::{Prober, Wake};
use crate::report::Reporters;
use crate::report::events::EventType;
use crate::report::metrics::{AgentMetrics, ResultLabel, charge};
use crate::runtime::Status;
use crate::sync::lock;

/// Tunables of the controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Parallel reconciles.
    pub workers: usize,
    /// Reconcile everything this often, to catch what events miss.
    pub resync_period: Duration,
    /// Crash-loop backoff of main processes.
    pub crash_loop: CrashLoopBackoff,
    /// Where reconcile counts and timings go.
    pub metrics: AgentMetrics,
    /// Rotate a main process's log past this size.
    pub log_max_bytes: u64,
    /// Keep this many log files of a main process, the current one included.
    pub log_max_files: u32,
}

/// The wall clock the controller plans by: [`SystemTime::now`], or in
/// tests one that follows tokio's paused time.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The reconcile loop over one containerizer `C` (see [`ContainerOps`]),
/// reporting through `P` (see [`ReportOps`]).
pub struct Controller<C: ContainerOps, P: ReportOps = Reporters> {
    pub(super) containerizer: Arc<C>,
    store: Arc<Store>,
    queue: Arc<WorkQueue>,
    pub(super) reporters: Arc<P>,
    /// Where images come from.
    images: Arc<dyn ImageOps>,
    pub(super) config: ControllerConfig,
    clock: Clock,
    /// Runs whose exit is being awaited, as (handle, process id).
    watching: Arc<Mutex<HashSet<(Handle, String)>>>,
    /// Runs whose end (or backoff) has been announced by an event.
    announced: Mutex<HashSet<(Handle, String, Reason)>>,
    /// OOM kills in running containers.
    oom: Arc<OomWatches>,
    /// The probes of running main processes.
    pub(super) prober: Arc<Prober>,
    /// The probes of running sidecars, keyed as `sidecar_keys` says.
    pub(super) sidecar_prober: Arc<Prober>,
    /// Which sidecar each key of `sidecar_prober` is.
    pub(super) sidecar_keys: SidecarKeys,
}

/// Why a reconcile failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A containerizer verb failed.
    #[error(transparent)]
    Containerizer(#[from] ContainerizerError),
    /// The main process could not be started: it is not running.
    #[error(transparent)]
    StartMain(ContainerizerError),
    /// The API server refused or could not be reached.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// What one reconcile did, for the worker loop: when to look again.
type Outcome = Result<Option<Duration>, ReconcileError>;

/// What a controller drives: the containerizer, the store of declarations,
/// the queue, the reporters and the images.
pub(super) type Parts<C, P> = (
    Arc<C>,
    Arc<Store>,
    Arc<WorkQueue>,
    Arc<P>,
    Arc<dyn ImageOps>,
);

impl<C: ContainerOps, P: ReportOps> Controller<C, P> {
    /// A controller; call [`Controller::run`] to start it.
    pub fn new(
        containerizer: Arc<C>,
        store: Arc<Store>,
        queue: Arc<WorkQueue>,
        reporters: Arc<P>,
        images: Arc<dyn ImageOps>,
        config: ControllerConfig,
    ) -> Arc<Self> {
        let clock: Clock = Arc::new(SystemTime::now);
        let parts = (containerizer, store, queue, reporters, images);
        Self::with_clock(parts, config, clock)
    }

    /// A controller that reads the wall clock from `clock`.
    pub(super) fn with_clock(
        (containerizer, store, queue, reporters, images): Parts<C, P>,
        config: ControllerConfig,
        clock: Clock,
    ) -> Arc<Self> {
        let wake_queue = Arc::clone(&queue);
        let wake: Wake = Arc::new(move |h: &Handle| wake_queue.add(h.clone()));
        let exec = Arc::new(ContainerExec(Arc::clone(&containerizer)));
        let sidecar_keys = SidecarKeys::default();
        let sidecar_exec = Arc::new(SidecarExec {
            containerizer: Arc::clone(&containerizer),
            keys: Arc::clone(&sidecar_keys),
        });
        let sidecar_wake = sidecar_wake(Arc::clone(&sidecar_keys), Arc::clone(&wake));
        Arc::new(Self {
            prober: Arc::new(Prober::new(wake, exec)),
            sidecar_prober: Arc::new(Prober::new(sidecar_wake, sidecar_exec)),
            sidecar_keys,
            containerizer,
            store,
            queue,
            reporters,
            images,
            config,
            clock,
            watching: Arc::new(Mutex::new(HashSet::new())),
            announced: Mutex::new(HashSet::new()),
            oom: Arc::new(OomWatches::default()),
        })
    }

    /// Queue every handle that is declared or in the depot (the resync).
    pub fn enqueue_all(&self) {
        let mut handles: HashSet<Handle> = self.store.handles().into_iter().collect();
        handles.extend(self.containerizer.depot_handles());
        for h in handles {
            self.queue.add(h);
        }
    }

    /// At start, besides [`Controller::enqueue_all`]: what only a crash or
    /// a stop leaves behind and no event will name. A status file whose
    /// declaration went while the agent was down, and a cgroup under the
    /// cgroup parent that a lost container left. While the agent runs, it
    /// removes those itself, so the resync does not look for them.
    pub fn enqueue_at_start(&self) {
        self.enqueue_all();
        let reported = self.reporters.reported_names().into_iter();
        let mut handles: HashSet<Handle> = reported.filter_map(|n| Handle::new(n).ok()).collect();
        handles.extend(self.containerizer.cgroup_handles());
        for h in handles {
            self.queue.add(h);
        }
    }

    /// Run the workers and the resync ticker until the queue shuts down.
    pub async fn run(self: Arc<Self>) {
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.config.workers.max(1) {
            let me = Arc::clone(&self);
            workers.spawn(async move { me.work().await });
        }
        let me = Arc::clone(&self);
        let resync = tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.config.resync_period);
            tick.tick().await;
            loop {
                tick.tick().await;
                me.enqueue_all();
            }
        });
        while workers.join_next().await.is_some() {}
        resync.abort();
    }

    async fn work(&self) {
        while let Some(handle) = self.queue.next().await {
            let started = std::time::Instant::now();
            let outcome = self.reconcile(&handle).await;
            let m = &self.config.metrics;
            m.reconcile_seconds.observe(started.elapsed().as_secs_f64());
            let result = if outcome.is_ok() { "ok" } else { "error" };
            m.reconciles.get_or_create(&ResultLabel { result }).inc();
            self.queue.done(&handle);
            match outcome {
                Ok(requeue) => {
                    self.queue.forget(&handle);
                    if let Some(after) = requeue {
                        self.queue.add_after(handle, after);
                    }
                }
                Err(e) => {
                    let delay = self.queue.retry(handle.clone(), jitter());
                    tracing::warn!(%handle, error = %e, retry_in = ?delay, "reconcile failed");
                }
            }
        }
    }

    /// Bring `handle` to its declaration.
    pub async fn reconcile(&self, handle: &Handle) -> Outcome {
        let (desired, synced) = self.store.get_with_synced(handle);
        let mut obs = observe(&*self.containerizer, handle).await?;
        if self.network_broken(handle, desired.as_ref(), &obs).await {
            obs = observe(&*self.containerizer, handle).await?;
        }
        self.read_health(handle, &mut obs);
        self.read_sidecar_health(handle, &mut obs);
        let intent = intent(desired.as_ref(), &synced, &obs);
        let want = match &intent {
            Intent::Run(spec) => Some(&**spec),
            Intent::Destroy => None,
            Intent::LeaveAlone => {
                return match &desired {
                    Some(d) => Ok(self.report(d, &obs, None, None, None).await),
                    None => Ok(None),
                };
            }
        };
        if desired.is_none() && !obs.exists() && synced.contains(&SourceKind::File) {
            // Undeclared, and nothing to destroy: what still reports it (a
            // document that was invalid, then deleted) goes.
            self.reporters.forget_undeclared(handle).await;
            self.images.forget(handle);
            return Ok(None);
        }
        let now = (self.clock)();
        let plan = plan::plan(want, &obs.observed(), &self.config.crash_loop, now);
        if !plan.steps.is_empty() {
            tracing::debug!(%handle, steps = ?plan.steps, runtime = ?obs.runtime, main = ?obs.main, declared = desired.is_some(), "plan");
        }
        let images = match self.image_step(handle, desired.as_ref(), want, &plan).await {
            Ok(images) => images,
            Err(wait) => {
                return Ok(self.wait_for_image(desired.as_ref(), &obs, &wait).await);
            }
        };
        let result = self
            .execute(handle, desired.as_ref(), want, &obs, &plan, &images)
            .await;
        // The container's record and the peas' name their images now: the
        // store may let go.
        drop(images);
        let had_container = obs.record.is_some() || obs.half_made;
        // Nothing done, nothing to look at again: a resync costs one look.
        let mut after = match plan.steps.is_empty() {
            true => obs,
            false => observe(&*self.containerizer, handle).await?,
        };
        self.watch_main(handle, &after);
        self.keep_probing(handle, &after);
        self.keep_probing_sidecars(handle, &after);
        self.read_health(handle, &mut after);
        self.read_sidecar_health(handle, &mut after);
        self.announce_probe_failures(handle, desired.as_ref()).await;
        self.announce_sidecar_probe_failures(handle, desired.as_ref(), &after)
            .await;
        if after.runtime == Some(Status::Running) {
            self.oom.ensure(&*self.containerizer, handle, &self.queue);
        }
        self.announce_exit(handle, desired.as_ref(), &after, plan.waiting)
            .await;
        self.announce_sidecar_backoff(handle, desired.as_ref(), &after)
            .await;
        self.announce_oom(handle, desired.as_ref(), &after).await;
        let mut requeue = self.next_look(want, &after, plan.requeue_after);
        if let Some(d) = &desired {
            if d.deleting && after.record.is_none() && !after.half_made && result.is_ok() {
                // Destroyed: only now may the resource go.
                self.reporters.remove_finalizer(d).await?;
                return Ok(None);
            }
            let err = result
                .as_ref()
                .err()
                .map(|e| (failed_step(e), e.to_string()));
            let err = err.as_ref().map(|(step, msg)| (*step, msg.as_str()));
            if let Some(retry) = self.report(d, &after, plan.waiting, err, None).await {
                requeue = Some(requeue.map_or(retry, |r| r.min(retry)));
            }
        } else if had_container {
            self.reporters.forget(handle).await;
            self.images.forget(handle);
        }
        result.map(|()| requeue)
    }

    /// Every look at a running container with a network of its own checks
    /// its attachment (the resync's look too); a broken one is repaired by
    /// making the container again. True when it was destroyed for that.
    async fn network_broken(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        obs: &Observation<C::Run>,
    ) -> bool {
        let attached = obs.record.as_ref().is_some_and(|r| r.network.is_some());
        if !attached || obs.runtime != Some(Status::Running) {
            return false;
        }
        let Some(why) = self.containerizer.network_fault(handle).await else {
            return false;
        };
        let message = format!("Network attachment broken ({why}): making the container again");
        self.event(
            desired,
            handle,
            EventType::Warning,
            Reason::NetworkNotReady,
            message,
        )
        .await;
        if let Err(e) = self.destroy(handle, desired, obs).await {
            tracing::warn!(%handle, error = %e, "destroying a container whose network broke");
        }
        true
    }

    /// When to look again: what the plan asked for, or at once when the
    /// world moved while it ran (a main process that exited right after its
    /// start has no exit watch to wake us, so plan again now).
    fn next_look(
        &self,
        want: Option<&ContainerSpec>,
        after: &Observation<C::Run>,
        asked: Option<Duration>,
    ) -> Option<Duration> {
        let again = plan::plan(
            want,
            &after.observed(),
            &self.config.crash_loop,
            (self.clock)(),
        );
        let wanted = if again.steps.is_empty() {
            again.requeue_after
        } else {
            Some(Duration::ZERO)
        };
        match (asked, wanted) {
            (Some(a), Some(w)) => Some(a.min(w)),
            (a, w) => a.or(w),
        }
    }

    async fn execute(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        want: Option<&ContainerSpec>,
        obs: &Observation<C::Run>,
        plan: &Plan,
        images: &PlanImages,
    ) -> Result<(), ReconcileError> {
        for step in &plan.steps {
            match (*step, want) {
                (Step::Destroy, _) => self.destroy(handle, desired, obs).await?,
                (Step::Create, Some(spec)) => {
                    self.create(handle, desired, spec, images.main.as_ref())
                        .await?
                }
                (Step::UpdateLimits, Some(spec)) => {
                    self.update_limits(handle, desired, spec).await?
                }
                (Step::UpdateRecord, Some(spec)) => {
                    self.containerizer.update_record(handle, spec)?
                }
                (Step::StartMain, Some(spec)) => self
                    .start_main(handle, desired, spec, None)
                    .await
                    .map_err(ReconcileError::StartMain)?,
                (Step::RestartMain { delay }, Some(spec)) => self
                    .start_main(handle, desired, spec, Some(delay))
                    .await
                    .map_err(ReconcileError::StartMain)?,
                (Step::StopMain, Some(spec)) => self.stop_main(handle, desired, spec).await?,
                (Step::KillUnhealthy { probe }, Some(spec)) if !spec.sidecars.is_empty() => {
                    self.kill_unhealthy_main(handle, desired, spec, probe)
                        .await?
                }
                (Step::KillUnhealthy { probe }, Some(spec)) => {
                    self.kill_unhealthy(handle, desired, spec, probe).await?
                }
                (Step::StartInit { index }, Some(spec)) => self
                    .start_init(handle, desired, spec, index, None)
                    .await
                    .map_err(ReconcileError::StartMain)?,
                (Step::RestartInit { index, delay }, Some(spec)) => self
                    .start_init(handle, desired, spec, index, Some(delay))
                    .await
                    .map_err(ReconcileError::StartMain)?,
                (Step::InitDone { index }, Some(spec)) => self.init_done(handle, spec, index)?,
                (Step::StartSidecar { index }, Some(spec)) => {
                    self.start_sidecar(handle, desired, spec, index, None, images)
                        .await?
                }
                (Step::RestartSidecar { index, delay }, Some(spec)) => {
                    self.start_sidecar(handle, desired, spec, index, Some(delay), images)
                        .await?
                }
                (Step::KillSidecar { index, probe }, Some(spec)) => {
                    self.kill_sidecar(handle, desired, spec, index, probe)
                        .await?
                }
                (Step::RemoveSidecar { index }, Some(_)) => {
                    if let Some(record) = &obs.record {
                        self.remove_sidecar(handle, desired, &record.spec, index)
                            .await?
                    }
                }
                (_, None) => {}
            }
        }
        Ok(())
    }

    /// Make sure the current run's exit wakes this handle's reconcile: a
    /// task awaits the supervisor's pidfd, so exits arrive in milliseconds.
    /// So does a running init process's.
    fn watch_main(&self, handle: &Handle, obs: &Observation<C::Run>) {
        if let (Some(p), plan::MainObs::Running) = (&obs.main_process, obs.main) {
            self.watch_run(handle, p);
        }
        for init in &obs.inits {
            if let (Some(p), plan::MainObs::Running) = (&init.process, init.obs.run) {
                self.watch_run(handle, p);
            }
        }
        for sidecar in &obs.sidecars {
            if let (Some(p), plan::MainObs::Running) = (&sidecar.process, sidecar.obs.run) {
                self.watch_run(handle, p);
            }
        }
    }

    /// Wake `handle`'s reconcile when run `p` ends.
    fn watch_run(&self, handle: &Handle, p: &C::Run) {
        let key = (handle.clone(), p.id().to_string());
        if !lock(&self.watching).insert(key.clone()) {
            return;
        }
        let process = p.clone();
        let queue = Arc::clone(&self.queue);
        let watching = Arc::clone(&self.watching);
        tokio::spawn(async move {
            process.ended().await;
            lock(&watching).remove(&key);
            queue.add(key.0);
        });
    }

    /// Announce, once per run, an OOM kill and a crash-loop backoff.
    async fn announce_exit(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        obs: &Observation<C::Run>,
        waiting: Option<Waiting>,
    ) {
        let (Some(p), Some(term)) = (&obs.main_process, &obs.last_termination) else {
            return;
        };
        if !matches!(obs.main, plan::MainObs::Exited { .. }) {
            return;
        }
        let id = p.id().to_string();
        if term.reason == Reason::OomKilled.as_str()
            && self.first_time(handle, &id, Reason::OomKilled)
        {
            let msg = "Main process was killed by the OOM killer";
            self.event(desired, handle, EventType::Warning, Reason::OomKilled, msg)
                .await;
        }
        if let Some(Waiting::BackOff { delay, .. }) = waiting
            && self.first_time(handle, &id, Reason::BackOff)
        {
            // Stable words, as kubelet's "Back-off restarting failed
            // container": the delay and exit code change from run to run
            // and are in status (the Ready condition, lastTermination).
            tracing::debug!(%handle, ?delay, exit_code = term.exit_code, "main process backing off");
            let msg = "Back-off restarting failed main process";
            self.event(desired, handle, EventType::Warning, Reason::BackOff, msg)
                .await;
        }
    }

    /// Announce an OOM kill the main process survived (one that ended it
    /// is announced with its exit).
    async fn announce_oom(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        obs: &Observation<C::Run>,
    ) {
        if !self.oom.take(handle)
            || !matches!(obs.main, plan::MainObs::Running | plan::MainObs::NotStarted)
        {
            return;
        }
        let msg = "A process in the container was killed by the OOM killer".to_string();
        self.event(desired, handle, EventType::Warning, Reason::OomKilled, msg)
            .await;
    }

    pub(super) fn first_time(&self, handle: &Handle, id: &str, what: Reason) -> bool {
        let mut announced = lock(&self.announced);
        // Only the current run's announcements are worth remembering.
        announced.retain(|(h, i, _)| h != handle || i == id);
        announced.insert((handle.clone(), id.to_string(), what))
    }

    /// Compute `d`'s status and report it; when a write failed, how soon
    /// to try again.
    async fn report(
        &self,
        d: &Desired,
        obs: &Observation<C::Run>,
        waiting: Option<Waiting>,
        error: Option<(FailedStep, &str)>,
        image_wait: Option<&ImageWait>,
    ) -> Option<Duration> {
        let spec = d.spec.as_ref().or(obs.record.as_ref().map(|r| &r.spec));
        let previous = self.reporters.previous(d);
        let st = charge(&self.config.metrics.report_cpu, || {
            self.compute_status(d, obs, spec, previous.as_ref(), waiting, error, image_wait)
        });
        self.reporters.status(d, spec, &st).await
    }

    /// What [`Self::report`] reports.
    #[allow(clippy::too_many_arguments)]
    fn compute_status(
        &self,
        d: &Desired,
        obs: &Observation<C::Run>,
        spec: Option<&ContainerSpec>,
        previous: Option<&ContainerStatus>,
        waiting: Option<Waiting>,
        error: Option<(FailedStep, &str)>,
        image_wait: Option<&ImageWait>,
    ) -> ContainerStatus {
        let invalid = d.error.as_ref().map(|e| (e.reason, e.message.as_str()));
        let observed = obs.observed();
        let init_terminations: Vec<_> = obs
            .inits
            .iter()
            .map(|i| i.last_termination.clone())
            .collect();
        status::compute(&StatusInput {
            spec,
            generation: d.generation,
            invalid,
            terminating: d.deleting,
            observed: &observed,
            last_termination: obs.last_termination.clone(),
            init_terminations: &init_terminations,
            main_process: obs.main_process.as_ref().map(|p| (p.id(), p.pid())),
            waiting,
            error,
            image_wait: image_wait.map(|w| (w.reason, w.message.as_str())),
            image: spec.and_then(|s| s.image.as_deref()).map(normalised),
            image_id: obs
                .record
                .as_ref()
                .and_then(|r| r.image.as_ref())
                .map(|i| i.id.as_str()),
            pod_ips: obs
                .record
                .as_ref()
                .and_then(|r| r.network.as_ref())
                .map_or(&[][..], |n| n.ips.as_slice()),
            handle: d.handle.as_str(),
            previous,
            now: (self.clock)(),
        })
    }

    /// Before a step makes something from an image (a create, a pea's
    /// start), the image must be on the node. A pull runs in the
    /// background and wakes the handle when it ends; meanwhile nothing of
    /// the plan is done, and the wait is what status says.
    async fn image_step(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        want: Option<&ContainerSpec>,
        plan: &Plan,
    ) -> Result<PlanImages, ImageWait> {
        let mut images = PlanImages::default();
        let Some(spec) = want else {
            return Ok(images);
        };
        if plan.steps.contains(&Step::Create) {
            match self.main_image_step(handle, desired, spec).await {
                ImageStep::NotNeeded => {}
                ImageStep::Ready(ready) => images.main = Some(ready),
                ImageStep::Wait(wait) => return Err(wait),
            }
        }
        for (index, sidecar) in peas_to_start(spec, plan) {
            let key = pea_image_key(handle, &sidecar.name);
            let alone = sidecar.alone(spec);
            let at = format!("spec.sidecars[{index}].image: ");
            match self.ensure_image(handle, &key, desired, &alone, &at).await {
                ImageState::Ready(ready) => {
                    let defaults = &ready.image.defaults;
                    if let Some(wait) = pea_config_error(spec, index, sidecar, defaults) {
                        return Err(wait);
                    }
                    images.peas.insert(sidecar.name.clone(), ready);
                }
                ImageState::Waiting(wait) => return Err(pea_wait(index, wait)),
            }
        }
        Ok(images)
    }

    /// The container's image, before its create.
    async fn main_image_step(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
    ) -> ImageStep {
        if spec.image.is_none() {
            return match config_error(spec, &Default::default()) {
                Some(wait) => ImageStep::Wait(wait),
                None => ImageStep::NotNeeded,
            };
        }
        match self.ensure_image(handle, handle, desired, spec, "").await {
            ImageState::Ready(ready) => check_command(spec, ready),
            ImageState::Waiting(wait) => ImageStep::Wait(wait),
        }
    }

    /// Ask the image room about `spec`'s image for `key` (the container,
    /// or one of its peas), announcing on `handle` what it says, each
    /// note after `at` (what names the field, for a pea); the end of a
    /// pull wakes `handle`.
    async fn ensure_image(
        &self,
        handle: &Handle,
        key: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
        at: &str,
    ) -> ImageState {
        let namespace = match desired.map(|d| &d.origin) {
            Some(Origin::Kube { namespace, .. }) => Some(namespace.as_str()),
            _ => None,
        };
        let queue = Arc::clone(&self.queue);
        let woken = handle.clone();
        let wake = Box::new(move || queue.add(woken));
        let (state, events) = self.images.ensure(key, spec, namespace, wake);
        for e in events {
            let type_ = if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            let message = format!("{at}{}", e.message);
            self.event(desired, handle, type_, e.reason, message).await;
        }
        state
    }

    /// Nothing is done while the image is not there: report why, and look
    /// again when the image room says (or its pull wakes the handle).
    async fn wait_for_image(
        &self,
        desired: Option<&Desired>,
        obs: &Observation<C::Run>,
        wait: &ImageWait,
    ) -> Option<Duration> {
        let Some(d) = desired else {
            return wait.retry_in;
        };
        let retry = self.report(d, obs, None, None, Some(wait)).await;
        match (retry, wait.retry_in) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) async fn event(
        &self,
        desired: Option<&Desired>,
        handle: &Handle,
        type_: EventType,
        why: Reason,
        message: impl Into<String>,
    ) {
        self.reporters
            .event(desired, handle, type_, why, message.into())
            .await;
    }
}

/// An image reference as status reports it: normalised when it parses.
fn normalised(image: &str) -> String {
    ImageReference::parse(image).map_or_else(|_| image.to_string(), |r| r.to_string())
}

/// Which step an error of a reconcile comes from.
fn failed_step(e: &ReconcileError) -> FailedStep {
    match e {
        ReconcileError::StartMain(_) => FailedStep::MainProcess,
        ReconcileError::Containerizer(e)
            if matches!(
                e.kind(),
                Some(crate::containerizer::ErrorKind::SeccompProfile { .. })
            ) =>
        {
            FailedStep::Config
        }
        _ => FailedStep::Container,
    }
}

/// The spec's grace period, 10 s by default.
pub(super) fn grace_period(spec: &ContainerSpec) -> Duration {
    Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(10).max(0) as u64)
}

/// A number in [0, 1) for retry jitter, from the clock's nanoseconds.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// What a reconcile is to bring a handle to.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Intent {
    /// Make it run as this spec says.
    Run(Box<ContainerSpec>),
    /// Nothing declares it, or its declaration is being deleted: destroy it.
    Destroy,
    /// Touch nothing: its source had not listed when the declaration was
    /// read, or its declaration was never valid and nothing runs.
    LeaveAlone,
}

/// The intent for a handle. `synced` is read with `desired`, at one instant.
pub(super) fn intent<R>(
    desired: Option<&Desired>,
    synced: &HashSet<SourceKind>,
    obs: &Observation<R>,
) -> Intent {
    match desired {
        Some(d) if d.deleting => Intent::Destroy,
        Some(d) => match (&d.spec, &obs.record) {
            (Some(spec), _) => Intent::Run(Box::new(spec.clone())),
            // Never valid: keep what runs (e.g. from before a restart).
            (None, Some(r)) => Intent::Run(Box::new(r.spec.clone())),
            (None, None) => Intent::LeaveAlone,
        },
        None => {
            let kind = obs
                .record
                .as_ref()
                .and_then(|r| r.labels.get(SOURCE_LABEL))
                .and_then(|l| SourceKind::from_label(l));
            match kind {
                Some(k) if !synced.contains(&k) => Intent::LeaveAlone,
                // Half-made or unlabelled: ours, and undeclared.
                _ => Intent::Destroy,
            }
        }
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
