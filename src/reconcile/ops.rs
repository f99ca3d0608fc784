//! The controller's seam: exactly what it asks of the containerizer, as
//! [`ContainerOps`], and of one run of a main process, as [`MainRun`]. The
//! real [`Containerizer`] and [`Process`] implement them here; the tests of
//! the controller use an in-memory double that touches no host state.
//!
//! The traits live with their one consumer, so the containerizer knows
//! nothing of the controller. Their futures are `Send` and the controller is
//! generic over them: no boxing or dynamic dispatch on the hot path.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use crate::api::{ContainerSpec, Handle, ImageUse};
use crate::cgroup::{CgroupError, OomWatch};
use crate::containerizer::create::ImageLayers;
use crate::containerizer::depot::{ContainerRecord, DepotError};
use crate::containerizer::rootfs::Mounter;
use crate::containerizer::run::RunSpec;
use crate::containerizer::{Containerizer, ContainerizerError, ErrorKind};
use crate::process::{ProcState, Process, ProcessError};
use crate::runtime::{OciRuntime, Status};

use super::history::MainFile;

/// Shorthand for results of the verbs.
type Result<T, E = ContainerizerError> = std::result::Result<T, E>;

/// What the controller asks of the containerizer: what is there (the
/// observation's inputs) and the verbs its steps execute.
pub trait ContainerOps: Send + Sync + 'static {
    /// A run of a main process.
    type Run: MainRun;
    /// OOM kills in one container's cgroup.
    type Oom: OomEvents;

    /// Every handle with a depot directory, complete or not.
    fn depot_handles(&self) -> Vec<Handle>;
    /// Every handle with a cgroup under the cgroup parent.
    fn cgroup_handles(&self) -> Vec<Handle>;
    /// `handle`'s depot record: `Ok(None)` when half-made, `NotFound` when
    /// it has no depot directory.
    fn record(&self, handle: &Handle) -> Result<Option<ContainerRecord>, DepotError>;
    /// Whether `handle` has a cgroup in any hierarchy.
    fn has_cgroup(&self, handle: &Handle) -> bool;
    /// The runtime's status of `handle`; `None` when it has no such container.
    fn runtime_status(
        &self,
        handle: &Handle,
    ) -> impl Future<Output = Result<Option<Status>>> + Send;
    /// The main process's history (`main.json`); empty when there is none.
    fn main_file(&self, handle: &Handle) -> MainFile;
    /// Write the main process's history.
    fn save_main_file(&self, handle: &Handle, file: &MainFile) -> Result<()>;
    /// The history of another process of the container, by its slot
    /// (`init-<name>`); empty when there is none.
    fn slot_file(&self, handle: &Handle, slot: &str) -> MainFile;
    /// Write the history of process `slot`.
    fn save_slot_file(&self, handle: &Handle, slot: &str, file: &MainFile) -> Result<()>;
    /// Process `id` of `handle`, from its directory.
    fn attach(&self, handle: &Handle, id: &str) -> Result<Self::Run>;
    /// Remove what is left of run `id` (its directory and logs).
    fn remove_run(&self, handle: &Handle, id: &str);
    /// Where run `id` may keep a file of its own (its probes' standing),
    /// which goes with the run; `None` when runs have no directory.
    fn run_file(&self, handle: &Handle, id: &str, name: &str) -> Option<std::path::PathBuf>;
    /// Which instance of `handle`'s cgroup is there now (a container made
    /// again has a new one); `None` when it cannot be watched.
    fn cgroup_instance(&self, handle: &Handle) -> Option<u64>;
    /// Watch OOM kills in `handle`'s cgroup.
    fn watch_oom(&self, handle: &Handle) -> Result<Self::Oom, CgroupError>;

    /// Create `handle` from `spec` and start its init.
    fn create(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        labels: BTreeMap<String, String>,
        image: Option<&ImageLayers>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Destroy `handle` and everything of it; missing is success.
    fn destroy(&self, handle: &Handle) -> impl Future<Output = Result<()>> + Send;
    /// Stop every process of `handle`, init too, within `grace`.
    fn terminate(
        &self,
        handle: &Handle,
        grace: Duration,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Stop every process of `handle` but init, within `grace`.
    fn stop(&self, handle: &Handle, grace: Duration) -> impl Future<Output = Result<()>> + Send;
    /// Apply `spec`'s limits in place.
    fn update_limits(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Record `spec` without touching the container.
    fn update_record(&self, handle: &Handle, spec: &ContainerSpec) -> Result<()>;
    /// Run a process in `handle`.
    fn run(
        &self,
        handle: &Handle,
        spec: &RunSpec,
    ) -> impl Future<Output = Result<Self::Run>> + Send;
    /// Make pea `name` of `handle` (a sidecar with a rootfs or image of
    /// its own) unless it runs; a pea of an image mounts `image`'s layers.
    fn ensure_pea(
        &self,
        handle: &Handle,
        name: &str,
        image: Option<&ImageLayers>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The image pea `name` of `handle` was made from, as the depot says.
    fn pea_image(&self, handle: &Handle, name: &str) -> Result<Option<ImageUse>>;
    /// Destroy pea `name` of `handle`; missing is success.
    fn destroy_pea(&self, handle: &Handle, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Send `signal` to process `id` of `handle`, through its supervisor.
    fn signal(&self, handle: &Handle, id: &str, signal: i32) -> Result<()>;
    /// End process `id` where nothing watches it; true when one was.
    fn kill_lost(&self, handle: &Handle, id: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Why `handle`'s network attachment is broken (CNI CHECK, and its
    /// pinned namespace); `None` when it is whole or it has none.
    fn network_fault(&self, handle: &Handle) -> impl Future<Output = Option<String>> + Send;
    /// Run an exec probe's `command` as `user` within `timeout`: `Err`
    /// carries its output.
    fn exec_probe(
        &self,
        handle: &Handle,
        command: &[String],
        user: Option<String>,
        timeout: Duration,
    ) -> impl Future<Output = std::result::Result<(), String>> + Send;
    /// [`Self::exec_probe`] in pea `pea` of `handle`.
    fn exec_probe_in_pea(
        &self,
        handle: &Handle,
        pea: &str,
        command: &[String],
        user: Option<String>,
        timeout: Duration,
    ) -> impl Future<Output = std::result::Result<(), String>> + Send;
}

/// One run of a main process, as the controller sees it.
pub trait MainRun: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// Its process id, `main-<n>`.
    fn id(&self) -> &str;
    /// Its host pid, when it started.
    fn pid(&self) -> Option<i32>;
    /// When its supervisor started it.
    fn started_at(&self) -> SystemTime;
    /// Running, exited or lost.
    fn state(&self) -> Result<ProcState, ProcessError>;
    /// Until it has ended.
    fn ended(&self) -> impl Future<Output = ()> + Send;
}

/// OOM kills in one cgroup, one item per kill; `None` once the cgroup is gone.
pub trait OomEvents: Send + 'static {
    /// The next kill.
    fn next(&mut self) -> impl Future<Output = Option<()>> + Send;
}

impl<R: OciRuntime, M: Mounter> ContainerOps for Containerizer<R, M> {
    type Run = Process;
    type Oom = OomWatch;

    fn depot_handles(&self) -> Vec<Handle> {
        let entries = self.depot().entries().unwrap_or_default();
        entries.into_iter().map(|e| e.handle).collect()
    }

    fn cgroup_handles(&self) -> Vec<Handle> {
        Containerizer::cgroup_handles(self)
    }

    fn record(&self, handle: &Handle) -> Result<Option<ContainerRecord>, DepotError> {
        self.depot().record(handle)
    }

    fn has_cgroup(&self, handle: &Handle) -> bool {
        self.cgroup_everywhere(handle).exists()
    }

    async fn runtime_status(&self, handle: &Handle) -> Result<Option<Status>> {
        Ok(self.runtime_state(handle).await?.map(|s| s.status))
    }

    fn main_file(&self, handle: &Handle) -> MainFile {
        MainFile::load(&self.depot_dir(handle))
    }

    fn save_main_file(&self, handle: &Handle, file: &MainFile) -> Result<()> {
        file.save(&self.depot_dir(handle))
            .map_err(|source| ContainerizerError::at(handle, ErrorKind::Fs { source }))
    }

    fn slot_file(&self, handle: &Handle, slot: &str) -> MainFile {
        MainFile::load_slot(&self.depot_dir(handle), slot)
    }

    fn save_slot_file(&self, handle: &Handle, slot: &str, file: &MainFile) -> Result<()> {
        file.save_slot(&self.depot_dir(handle), slot)
            .map_err(|source| ContainerizerError::at(handle, ErrorKind::Fs { source }))
    }

    fn attach(&self, handle: &Handle, id: &str) -> Result<Process> {
        Containerizer::attach(self, handle, id)
    }

    fn remove_run(&self, handle: &Handle, id: &str) {
        let _ = self.remove_process(handle, id);
    }

    fn run_file(&self, handle: &Handle, id: &str, name: &str) -> Option<std::path::PathBuf> {
        Some(self.process_dir(handle, id).join(name))
    }

    fn cgroup_instance(&self, handle: &Handle) -> Option<u64> {
        let counter = self.cgroup(handle).oom_counter_file().ok()?;
        let dir = std::fs::metadata(counter.parent()?).ok()?;
        Some(dir.ino())
    }

    fn watch_oom(&self, handle: &Handle) -> Result<OomWatch, CgroupError> {
        OomWatch::new(&self.cgroup(handle))
    }

    async fn create(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        labels: BTreeMap<String, String>,
        image: Option<&ImageLayers>,
    ) -> Result<()> {
        Containerizer::create_from(self, handle, spec, labels, image).await
    }

    async fn destroy(&self, handle: &Handle) -> Result<()> {
        Containerizer::destroy(self, handle).await
    }

    async fn terminate(&self, handle: &Handle, grace: Duration) -> Result<()> {
        Containerizer::terminate(self, handle, grace).await
    }

    async fn stop(&self, handle: &Handle, grace: Duration) -> Result<()> {
        Containerizer::stop(self, handle, grace).await
    }

    async fn update_limits(&self, handle: &Handle, spec: &ContainerSpec) -> Result<()> {
        Containerizer::update_limits(self, handle, spec).await
    }

    fn update_record(&self, handle: &Handle, spec: &ContainerSpec) -> Result<()> {
        Containerizer::update_record(self, handle, spec)
    }

    async fn run(&self, handle: &Handle, spec: &RunSpec) -> Result<Process> {
        Containerizer::run(self, handle, spec).await
    }

    fn signal(&self, handle: &Handle, id: &str, signal: i32) -> Result<()> {
        Containerizer::signal(self, handle, id, signal)
    }

    async fn ensure_pea(
        &self,
        handle: &Handle,
        name: &str,
        image: Option<&ImageLayers>,
    ) -> Result<()> {
        Containerizer::ensure_pea(self, handle, name, image).await
    }

    fn pea_image(&self, handle: &Handle, name: &str) -> Result<Option<ImageUse>> {
        Containerizer::pea_image(self, handle, name)
    }

    async fn destroy_pea(&self, handle: &Handle, name: &str) -> Result<()> {
        Containerizer::destroy_pea(self, handle, name).await
    }

    async fn kill_lost(&self, handle: &Handle, id: &str) -> Result<bool> {
        Containerizer::kill_lost(self, handle, id).await
    }

    async fn network_fault(&self, handle: &Handle) -> Option<String> {
        Containerizer::network_fault(self, handle).await
    }

    async fn exec_probe(
        &self,
        handle: &Handle,
        command: &[String],
        user: Option<String>,
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        Containerizer::exec_probe(self, handle, command, user, timeout).await
    }

    async fn exec_probe_in_pea(
        &self,
        handle: &Handle,
        pea: &str,
        command: &[String],
        user: Option<String>,
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        Containerizer::exec_probe_in_pea(self, handle, pea, command, user, timeout).await
    }
}

impl MainRun for Process {
    fn id(&self) -> &str {
        Process::id(self)
    }

    fn pid(&self) -> Option<i32> {
        Process::pid(self)
    }

    fn started_at(&self) -> SystemTime {
        std::fs::metadata(self.dir().join(rundmc_shim::protocol::SHIM_JSON))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    fn state(&self) -> Result<ProcState, ProcessError> {
        Process::state(self)
    }

    async fn ended(&self) {
        let _ = Process::wait(self).await;
    }
}

impl OomEvents for OomWatch {
    async fn next(&mut self) -> Option<()> {
        OomWatch::next(self).await
    }
}
