//! Test doubles of the controller's seams. [`FakeContainers`] is an
//! in-memory containerizer: it keeps a small model of each container (its
//! record, runtime status, main-process history and runs), records every
//! verb in a [`Journal`], and fails verbs on request. [`FakeReports`]
//! records what the controller reports, in the same journal, and fails
//! status writes on request. Neither touches the host.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use super::controller::Clock;
use super::history::MainFile;
use super::images::ImageOps;
use super::ops::{ContainerOps, MainRun, OomEvents};
use super::reporting::ReportOps;
use super::store::Desired;
use crate::api::{ContainerSpec, ContainerStatus, Handle, ImageDefaults, ImageUse, Reason};
use crate::cgroup::CgroupError;
use crate::containerizer::create::ImageLayers;
use crate::containerizer::depot::{ContainerRecord, DepotError};
use crate::containerizer::run::RunSpec;
use crate::containerizer::{ContainerizerError, ErrorKind};
use crate::image::state::{ImageEvent, ImageState, ImageWait, ReadyImage, Wake};
use crate::process::{ExitRecord, ProcState, ProcessError};
use crate::report::events::EventType;
use crate::runtime::Status;

use crate::sync::lock;

/// A wall clock that follows tokio's (paused) time.
pub fn tokio_clock() -> Clock {
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let start = tokio::time::Instant::now();
    Arc::new(move || base + start.elapsed())
}

/// What both doubles were asked, in order, as `"<verb> <handle>"` lines.
#[derive(Debug, Default)]
pub struct Journal(Mutex<Vec<String>>);

impl Journal {
    fn note(&self, line: String) {
        lock(&self.0).push(line);
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.0).clone()
    }

    /// How many lines are exactly `line`.
    pub fn count(&self, line: &str) -> usize {
        lock(&self.0).iter().filter(|l| *l == line).count()
    }
}

/// One run of a main process, whose end the test decides.
#[derive(Debug, Clone)]
pub struct FakeRun {
    id: String,
    started_at: SystemTime,
    state: Arc<watch::Sender<ProcState>>,
}

impl FakeRun {
    fn new(id: &str, started_at: SystemTime) -> Self {
        Self {
            id: id.to_string(),
            started_at,
            state: Arc::new(watch::Sender::new(ProcState::Running)),
        }
    }

    /// End it with `code` at `at`.
    pub fn exit(&self, code: i32, at: SystemTime) {
        let rec = ExitRecord {
            exit_code: code,
            signal: None,
            signal_name: None,
            oom_killed: false,
            finished_at: humantime::format_rfc3339_nanos(at).to_string(),
            start_error: None,
        };
        self.state.send_replace(ProcState::Exited(rec));
    }
}

impl MainRun for FakeRun {
    fn id(&self) -> &str {
        &self.id
    }

    fn pid(&self) -> Option<i32> {
        Some(4242)
    }

    fn started_at(&self) -> SystemTime {
        self.started_at
    }

    fn state(&self) -> Result<ProcState, ProcessError> {
        Ok(self.state.borrow().clone())
    }

    async fn ended(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| !matches!(s, ProcState::Running)).await;
    }
}

/// OOM kills the test sends.
#[derive(Debug)]
pub struct FakeOom(mpsc::UnboundedReceiver<()>);

impl OomEvents for FakeOom {
    async fn next(&mut self) -> Option<()> {
        self.0.recv().await
    }
}

/// One container in the model: a record (`None` when half-made), what the
/// runtime says, the main process's history and runs.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    /// The depot record; `None` when half-made.
    pub record: Option<ContainerRecord>,
    /// The runtime's status; `None` when the runtime lost it.
    pub runtime: Option<Status>,
    /// `main.json`.
    pub main_file: MainFile,
    /// The other processes' histories, by slot.
    pub slots: HashMap<String, MainFile>,
    /// Runs by process id.
    pub runs: HashMap<String, FakeRun>,
    /// Which make of the container this is (its cgroup's instance).
    pub instance: u64,
}

#[derive(Debug, Default)]
struct World {
    containers: HashMap<Handle, FakeContainer>,
    /// Handles with a cgroup but no depot directory.
    leftover_cgroups: HashSet<Handle>,
    /// Verbs to fail, and how many more times.
    failures: HashMap<&'static str, u32>,
    /// Runs to end at once with this code as they start.
    exit_at_start: Option<i32>,
    oom: HashMap<Handle, mpsc::UnboundedSender<()>>,
    made: u64,
    /// Broken network attachments, reported once each.
    network_faults: HashMap<Handle, String>,
    /// What exec probes in a container answer (success when unset).
    probe_answers: HashMap<Handle, Result<(), String>>,
    /// The image each pea was made from.
    pea_images: HashMap<(Handle, String), ImageUse>,
}

/// The in-memory containerizer.
pub struct FakeContainers {
    world: Mutex<World>,
    journal: Arc<Journal>,
    clock: Clock,
}

/// The error every failing verb returns.
pub fn failure(handle: &Handle) -> ContainerizerError {
    DepotError::NotFound(handle.clone()).into()
}

impl FakeContainers {
    /// An empty machine.
    pub fn new(journal: Arc<Journal>, clock: Clock) -> Self {
        Self {
            world: Mutex::default(),
            journal,
            clock,
        }
    }

    /// Put a running container made from `spec` in place, as if an earlier
    /// agent had made it, with `labels` in its record.
    pub fn put(&self, handle: &Handle, spec: &ContainerSpec, labels: BTreeMap<String, String>) {
        let mut w = lock(&self.world);
        w.made += 1;
        let container = FakeContainer {
            record: Some(record(handle, spec, labels)),
            runtime: Some(Status::Running),
            main_file: MainFile::default(),
            slots: HashMap::new(),
            runs: HashMap::new(),
            instance: w.made,
        };
        w.containers.insert(handle.clone(), container);
    }

    /// Leave a cgroup of `handle` and nothing else, as a container whose
    /// depot directory went first does.
    pub fn leave_cgroup(&self, handle: &Handle) {
        lock(&self.world).leftover_cgroups.insert(handle.clone());
    }

    /// From now on, exec probes in `handle` answer `answer`.
    pub fn answer_probes(&self, handle: &Handle, answer: Result<(), String>) {
        lock(&self.world)
            .probe_answers
            .insert(handle.clone(), answer);
    }

    /// Break `handle`'s network attachment: the next look finds `why`.
    pub fn break_network(&self, handle: &Handle, why: &str) {
        let mut w = lock(&self.world);
        w.network_faults.insert(handle.clone(), why.to_string());
        let attached = crate::containerizer::network::NetworkUse {
            network: "test".into(),
            ips: vec!["10.0.0.2".into()],
        };
        if let Some(r) = w.containers.get_mut(handle).and_then(|c| c.record.as_mut()) {
            r.network = Some(attached);
        }
    }

    /// Change what is there of `handle`.
    pub fn edit(&self, handle: &Handle, f: impl FnOnce(&mut FakeContainer)) {
        if let Some(c) = lock(&self.world).containers.get_mut(handle) {
            f(c);
        }
    }

    /// A copy of what is there of `handle`.
    pub fn get(&self, handle: &Handle) -> Option<FakeContainer> {
        lock(&self.world).containers.get(handle).cloned()
    }

    /// The current run of `handle`'s main process.
    pub fn current_run(&self, handle: &Handle) -> Option<FakeRun> {
        let c = self.get(handle)?;
        c.runs.get(&c.main_file.current_id()?).cloned()
    }

    /// Fail the next `times` calls of `verb`.
    pub fn fail(&self, verb: &'static str, times: u32) {
        lock(&self.world).failures.insert(verb, times);
    }

    /// Make every run end with `code` as it starts (`None`: run on).
    pub fn exit_at_start(&self, code: Option<i32>) {
        lock(&self.world).exit_at_start = code;
    }

    /// An OOM kill in `handle`'s cgroup; false when nothing watches it.
    pub fn oom_kill(&self, handle: &Handle) -> bool {
        lock(&self.world)
            .oom
            .get(handle)
            .is_some_and(|tx| tx.send(()).is_ok())
    }

    /// Note `verb` of `handle`; its scripted failure, if one is due.
    fn call(&self, verb: &'static str, handle: &Handle) -> Result<(), ContainerizerError> {
        self.journal.note(format!("{verb} {handle}"));
        let mut w = lock(&self.world);
        match w.failures.get_mut(verb) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Err(failure(handle))
            }
            _ => Ok(()),
        }
    }

    /// End every run of `handle` that still runs, killed by SIGKILL.
    fn end_runs(&self, handle: &Handle) {
        let now = (self.clock)();
        if let Some(c) = lock(&self.world).containers.get(handle) {
            for run in c.runs.values() {
                if matches!(*run.state.borrow(), ProcState::Running) {
                    run.exit(137, now);
                }
            }
        }
    }
}

fn record(
    handle: &Handle,
    spec: &ContainerSpec,
    labels: BTreeMap<String, String>,
) -> ContainerRecord {
    ContainerRecord {
        handle: handle.clone(),
        spec: spec.clone(),
        spec_hash: String::new(),
        created_at: String::new(),
        labels,
        image: None,
        network: None,
        userns: None,
    }
}

impl ContainerOps for FakeContainers {
    type Run = FakeRun;
    type Oom = FakeOom;

    fn depot_handles(&self) -> Vec<Handle> {
        lock(&self.world).containers.keys().cloned().collect()
    }

    fn cgroup_handles(&self) -> Vec<Handle> {
        lock(&self.world).leftover_cgroups.iter().cloned().collect()
    }

    fn record(&self, handle: &Handle) -> Result<Option<ContainerRecord>, DepotError> {
        match lock(&self.world).containers.get(handle) {
            Some(c) => Ok(c.record.clone()),
            None => Err(DepotError::NotFound(handle.clone())),
        }
    }

    fn has_cgroup(&self, handle: &Handle) -> bool {
        lock(&self.world).leftover_cgroups.contains(handle)
    }

    async fn runtime_status(&self, handle: &Handle) -> Result<Option<Status>, ContainerizerError> {
        Ok(self.get(handle).and_then(|c| c.runtime))
    }

    fn main_file(&self, handle: &Handle) -> MainFile {
        self.get(handle).map(|c| c.main_file).unwrap_or_default()
    }

    fn save_main_file(&self, handle: &Handle, file: &MainFile) -> Result<(), ContainerizerError> {
        self.call("save_main_file", handle)?;
        self.edit(handle, |c| c.main_file = *file);
        Ok(())
    }

    fn slot_file(&self, handle: &Handle, slot: &str) -> MainFile {
        let c = self.get(handle);
        c.and_then(|c| c.slots.get(slot).copied())
            .unwrap_or_default()
    }

    fn save_slot_file(
        &self,
        handle: &Handle,
        slot: &str,
        file: &MainFile,
    ) -> Result<(), ContainerizerError> {
        self.call("save_slot_file", handle)?;
        self.edit(handle, |c| {
            c.slots.insert(slot.to_string(), *file);
        });
        Ok(())
    }

    fn attach(&self, handle: &Handle, id: &str) -> Result<FakeRun, ContainerizerError> {
        let run = self.get(handle).and_then(|c| c.runs.get(id).cloned());
        run.ok_or_else(|| failure(handle))
    }

    fn remove_run(&self, handle: &Handle, id: &str) {
        self.edit(handle, |c| {
            c.runs.remove(id);
        });
    }

    fn run_file(&self, _handle: &Handle, _id: &str, _name: &str) -> Option<std::path::PathBuf> {
        None
    }

    fn cgroup_instance(&self, handle: &Handle) -> Option<u64> {
        self.get(handle).map(|c| c.instance)
    }

    fn watch_oom(&self, handle: &Handle) -> Result<FakeOom, CgroupError> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.world).oom.insert(handle.clone(), tx);
        Ok(FakeOom(rx))
    }

    async fn create(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        labels: BTreeMap<String, String>,
        image: Option<&ImageLayers>,
    ) -> Result<(), ContainerizerError> {
        self.call("create", handle)?;
        if image.is_some() != spec.image.is_some() {
            return Err(ContainerizerError::at(handle, ErrorKind::ImageMismatch));
        }
        if let Some(i) = image {
            let lowers: Vec<_> = i
                .lowerdirs
                .iter()
                .map(|l| l.display().to_string())
                .collect();
            self.journal
                .note(format!("layers {handle} {}", lowers.join(":")));
        }
        if self.get(handle).is_some() {
            return Err(DepotError::AlreadyExists(handle.clone()).into());
        }
        self.put(handle, spec, labels);
        self.edit(handle, |c| {
            if let Some(r) = c.record.as_mut() {
                r.image = image.map(|i| i.image.clone());
            }
        });
        Ok(())
    }

    async fn destroy(&self, handle: &Handle) -> Result<(), ContainerizerError> {
        self.call("destroy", handle)?;
        self.end_runs(handle);
        let mut w = lock(&self.world);
        w.containers.remove(handle);
        w.leftover_cgroups.remove(handle);
        // The cgroup went: its watch ends.
        w.oom.remove(handle);
        Ok(())
    }

    async fn terminate(&self, handle: &Handle, _grace: Duration) -> Result<(), ContainerizerError> {
        self.call("terminate", handle)?;
        self.end_runs(handle);
        self.edit(handle, |c| c.runtime = Some(Status::Stopped));
        Ok(())
    }

    async fn stop(&self, handle: &Handle, _grace: Duration) -> Result<(), ContainerizerError> {
        self.call("stop", handle)?;
        self.end_runs(handle);
        Ok(())
    }

    async fn update_limits(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
    ) -> Result<(), ContainerizerError> {
        self.call("update_limits", handle)?;
        self.edit(handle, |c| {
            if let Some(r) = &mut c.record {
                r.spec = spec.clone();
            }
        });
        Ok(())
    }

    fn update_record(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
    ) -> Result<(), ContainerizerError> {
        self.call("update_record", handle)?;
        self.edit(handle, |c| {
            if let Some(r) = &mut c.record {
                r.spec = spec.clone();
            }
        });
        Ok(())
    }

    async fn run(&self, handle: &Handle, spec: &RunSpec) -> Result<FakeRun, ContainerizerError> {
        self.call("run", handle)?;
        self.journal
            .note(format!("argv {handle} {}", spec.args.join(" ")));
        let id = spec.id.clone().unwrap_or_default();
        let now = (self.clock)();
        let run = FakeRun::new(&id, now);
        if let Some(code) = lock(&self.world).exit_at_start {
            run.exit(code, now);
        }
        let mut w = lock(&self.world);
        let c = w
            .containers
            .get_mut(handle)
            .ok_or_else(|| failure(handle))?;
        c.runs.insert(id, run.clone());
        Ok(run)
    }

    async fn network_fault(&self, handle: &Handle) -> Option<String> {
        lock(&self.world).network_faults.remove(handle)
    }

    async fn exec_probe(
        &self,
        handle: &Handle,
        _command: &[String],
        _user: Option<String>,
        _timeout: Duration,
    ) -> Result<(), String> {
        self.journal.note(format!("exec_probe {handle}"));
        let w = lock(&self.world);
        w.probe_answers.get(handle).cloned().unwrap_or(Ok(()))
    }

    async fn ensure_pea(
        &self,
        handle: &Handle,
        name: &str,
        image: Option<&ImageLayers>,
    ) -> Result<(), ContainerizerError> {
        self.call("ensure_pea", handle)?;
        match image {
            Some(i) => self
                .journal
                .note(format!("pea {handle} {name} from {}", i.image.name)),
            None => self.journal.note(format!("pea {handle} {name}")),
        }
        if let Some(i) = image {
            lock(&self.world)
                .pea_images
                .insert((handle.clone(), name.to_string()), i.image.clone());
        }
        Ok(())
    }

    fn pea_image(
        &self,
        handle: &Handle,
        name: &str,
    ) -> Result<Option<ImageUse>, ContainerizerError> {
        let key = (handle.clone(), name.to_string());
        Ok(lock(&self.world).pea_images.get(&key).cloned())
    }

    async fn exec_probe_in_pea(
        &self,
        handle: &Handle,
        pea: &str,
        _command: &[String],
        _user: Option<String>,
        _timeout: Duration,
    ) -> Result<(), String> {
        self.journal.note(format!("exec_probe {handle} pea {pea}"));
        let w = lock(&self.world);
        w.probe_answers.get(handle).cloned().unwrap_or(Ok(()))
    }

    async fn destroy_pea(&self, handle: &Handle, name: &str) -> Result<(), ContainerizerError> {
        self.call("destroy_pea", handle)?;
        self.journal.note(format!("destroy pea {handle} {name}"));
        Ok(())
    }

    fn signal(&self, handle: &Handle, id: &str, signal: i32) -> Result<(), ContainerizerError> {
        self.call("signal", handle)?;
        self.journal.note(format!("signal {handle} {id} {signal}"));
        let run = self.attach(handle, id)?;
        run.exit(128 + signal, (self.clock)());
        Ok(())
    }

    async fn kill_lost(&self, handle: &Handle, id: &str) -> Result<bool, ContainerizerError> {
        self.call("kill_lost", handle)?;
        self.journal.note(format!("killed {handle} {id}"));
        Ok(true)
    }
}

/// Reporters that remember what they are told.
#[derive(Debug, Default)]
pub struct FakeReports {
    journal: Arc<Journal>,
    statuses: Mutex<HashMap<Handle, Vec<ContainerStatus>>>,
    events: Mutex<Vec<(Handle, Reason, String)>>,
    failing_status_writes: Mutex<u32>,
}

impl FakeReports {
    /// Reporters noting into `journal`.
    pub fn new(journal: Arc<Journal>) -> Self {
        Self {
            journal,
            ..Self::default()
        }
    }

    /// Fail the next `times` status writes.
    pub fn fail_status_writes(&self, times: u32) {
        *lock(&self.failing_status_writes) = times;
    }

    /// Every status written for `handle`, oldest first.
    pub fn statuses(&self, handle: &Handle) -> Vec<ContainerStatus> {
        lock(&self.statuses)
            .get(handle)
            .cloned()
            .unwrap_or_default()
    }

    /// The reasons of the events about `handle`, oldest first.
    pub fn reasons(&self, handle: &Handle) -> Vec<Reason> {
        let events = lock(&self.events);
        let of = events.iter().filter(|(h, _, _)| h == handle);
        of.map(|(_, reason, _)| *reason).collect()
    }

    /// The notes of the events about `handle`, in order.
    pub fn notes(&self, handle: &Handle) -> Vec<String> {
        let events = lock(&self.events);
        let of = events.iter().filter(|(h, _, _)| h == handle);
        of.map(|(_, _, note)| note.clone()).collect()
    }
}

impl ReportOps for FakeReports {
    fn reported_names(&self) -> Vec<String> {
        let statuses = lock(&self.statuses);
        statuses.keys().map(|h| h.as_str().to_string()).collect()
    }

    fn previous(&self, d: &Desired) -> Option<ContainerStatus> {
        lock(&self.statuses).get(&d.handle)?.last().cloned()
    }

    async fn status(
        &self,
        d: &Desired,
        _spec: Option<&ContainerSpec>,
        status: &ContainerStatus,
    ) -> Option<Duration> {
        let mut failing = lock(&self.failing_status_writes);
        if *failing > 0 {
            *failing -= 1;
            self.journal.note(format!("status failed {}", d.handle));
            return Some(crate::report::REPORT_RETRY);
        }
        self.journal.note(format!("status {}", d.handle));
        let mut statuses = lock(&self.statuses);
        statuses
            .entry(d.handle.clone())
            .or_default()
            .push(status.clone());
        None
    }

    async fn event(
        &self,
        _desired: Option<&Desired>,
        handle: &Handle,
        _type: EventType,
        reason: Reason,
        message: String,
    ) {
        let event = (handle.clone(), reason, message);
        lock(&self.events).push(event);
    }

    async fn forget(&self, handle: &Handle) {
        self.journal.note(format!("forget {handle}"));
        lock(&self.statuses).remove(handle);
    }

    async fn forget_undeclared(&self, handle: &Handle) {
        self.journal.note(format!("forget_undeclared {handle}"));
        lock(&self.statuses).remove(handle);
    }

    async fn add_finalizer(&self, d: &Desired) -> Result<(), kube::Error> {
        self.journal.note(format!("add_finalizer {}", d.handle));
        Ok(())
    }

    async fn remove_finalizer(&self, d: &Desired) -> Result<(), kube::Error> {
        self.journal.note(format!("remove_finalizer {}", d.handle));
        Ok(())
    }
}

/// Images whose pulls the test decides: an image is pulling until the
/// test makes it ready or fails it. Every ensure is journaled.
#[derive(Default)]
pub struct FakeImages {
    journal: Arc<Journal>,
    ready: Mutex<HashMap<String, ImageDefaults>>,
    failed: Mutex<HashMap<String, ImageWait>>,
    wakes: Mutex<Vec<Wake>>,
}

impl FakeImages {
    /// Images journaling into `journal`.
    pub fn new(journal: Arc<Journal>) -> Self {
        Self {
            journal,
            ..Self::default()
        }
    }

    /// The pull of `image` ends well: its config gives `defaults`.
    pub fn pulled(&self, image: &str, defaults: ImageDefaults) {
        lock(&self.ready).insert(image.to_string(), defaults);
        lock(&self.failed).remove(image);
        self.wake_all();
    }

    /// The pull of `image` ends in `wait`.
    pub fn failed(&self, image: &str, wait: ImageWait) {
        lock(&self.failed).insert(image.to_string(), wait);
        self.wake_all();
    }

    fn wake_all(&self) {
        let wakes: Vec<Wake> = lock(&self.wakes).drain(..).collect();
        for wake in wakes {
            wake();
        }
    }
}

impl ImageOps for FakeImages {
    fn ensure(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        namespace: Option<&str>,
        wake: Wake,
    ) -> (ImageState, Vec<ImageEvent>) {
        let name = spec.image.clone().unwrap_or_default();
        let ns = namespace.unwrap_or("-");
        self.journal.note(format!("ensure {handle} {name} {ns}"));
        let event = |warning, reason, message: String| ImageEvent {
            warning,
            reason,
            message,
        };
        if let Some(defaults) = lock(&self.ready).get(&name).cloned() {
            let ready = ReadyImage {
                image: ImageUse {
                    name: name.clone(),
                    id: format!("sha256:{name}"),
                    defaults,
                },
                lowerdirs: vec![
                    format!("/layers/{name}/2").into(),
                    format!("/layers/{name}/1").into(),
                ],
                lease: None,
            };
            let pulled = event(false, Reason::Pulled, format!("pulled {name}"));
            return (ImageState::Ready(ready), vec![pulled]);
        }
        if let Some(wait) = lock(&self.failed).get(&name).cloned() {
            let failed = event(true, Reason::Failed, wait.message.clone());
            return (ImageState::Waiting(wait), vec![failed]);
        }
        lock(&self.wakes).push(wake);
        let wait = ImageWait {
            reason: Reason::Creating,
            message: format!("Pulling image {name}"),
            retry_in: None,
        };
        let pulling = event(false, Reason::Pulling, format!("Pulling image {name}"));
        (ImageState::Waiting(wait), vec![pulling])
    }

    fn forget(&self, _handle: &Handle) {}
}
