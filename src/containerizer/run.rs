//! `run`, `attach`, `signal` and `processes`: user processes joined to a
//! running container with the runtime's exec, each under its own
//! `rundmc-shim` supervisor so that it outlives the agent.

use std::path::{Path, PathBuf};

use super::bundle::{self, ProcessInput};
use super::depot::BundlePaths;
use super::lifecycle::can_exec;
use super::rootfs::Mounter;
use super::users;
use super::{Containerizer, ContainerizerError, ErrorKind, Result};
use crate::api::{ContainerSpec, EnvVar, FieldError, Handle, ValidationErrors};
use crate::fsutil;
use crate::process::{Launch, Process, ProcessInfo};
use crate::runtime::OciRuntime;
use rundmc_shim::protocol::{PID_FILE, PROCESS_JSON, RUNTIME_LOG};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    /// The process id (its directory's name); generated when `None`.
    pub id: Option<String>,
    /// Command and arguments.
    pub args: Vec<String>,
    /// Env after the container's.
    pub env: Vec<EnvVar>,
    /// Working directory; `/` by default.
    pub working_dir: Option<String>,
    /// `uid`, `uid:gid` or a name from the image's /etc/passwd; root by default.
    pub user: Option<String>,
    /// Give it a stdin fifo; the first writer's close is its end of file.
    pub stdin: bool,
    /// With `stdin`: keep the fifo open across writers (the spec's `stdin`
    /// without `stdinOnce`), so attach sessions come and go.
    pub keep_stdin_open: bool,
    /// Log rotation size; the supervisor's default when `None`.
    pub log_max_bytes: Option<u64>,
    /// Log files kept; the supervisor's default when `None`.
    pub log_max_files: Option<u32>,
    /// Run it in this pea of the container (a sidecar with a rootfs of its
    /// own) rather than in the container itself; its process directory is
    /// the container's all the same.
    pub pea: Option<String>,
    /// A terminal instead of pipes (`rundmc exec -t`, issue 18).
    pub terminal: Option<Terminal>,
}

/// Where a process runs: the runtime's container, its rootfs, the spec
/// confining it, and its cgroup.
struct Target {
    id: Handle,
    rootfs: PathBuf,
    spec: ContainerSpec,
    cgroup: crate::cgroup::Cgroup,
}

/// A terminal for a process: the runtime makes a pty of this size and
/// sends its master over the unix socket listening at `socket` (runc's
/// `--console-socket`); the process's output then bypasses the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    /// Where the caller listens for the pty master.
    pub socket: PathBuf,
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// Run a process in `handle`; returns once it runs (or why it cannot).
    pub async fn run(&self, handle: &Handle, spec: &RunSpec) -> Result<Process> {
        let record = self
            .depot
            .record(handle)?
            .ok_or_else(|| super::depot::DepotError::NotFound(handle.clone()))?;
        let target = self.target(handle, record.spec, spec.pea.as_deref())?;
        self.check_can_exec(handle, &target.id).await?;
        let paths = self.depot.paths(handle);
        let mut process = self.process_spec_for(handle, &target.rootfs, &target.spec, spec)?;
        let id = spec.id.clone().unwrap_or_else(generate_id);
        let dir = self.make_process_dir(handle, &paths, &id)?;
        if let Some(t) = &spec.terminal {
            let size = oci_spec::runtime::BoxBuilder::default()
                .height(u64::from(t.rows))
                .width(u64::from(t.cols))
                .build()
                .ok();
            process.set_terminal(Some(true));
            process.set_console_size(size);
        }
        fsutil::write_json_with(
            &dir.join(PROCESS_JSON),
            &process,
            fsutil::Durability::Volatile,
        )
        .map_err(|source| ContainerizerError::at(handle, ErrorKind::Fs { source }))?;
        let launch = self.launch(&target, spec, &id, &dir, &paths);
        self.tracker
            .spawn(launch)
            .await
            .map_err(|source| ContainerizerError::at(handle, ErrorKind::Process { source }))
    }

    /// The OCI process `spec` runs as in a container made from `container`
    /// on `rootfs`: its user resolved there (and refused as root under
    /// `runAsNonRoot`), the container's env and capabilities.
    pub(super) fn process_spec_for(
        &self,
        handle: &Handle,
        rootfs: &Path,
        container: &ContainerSpec,
        spec: &RunSpec,
    ) -> Result<oci_spec::runtime::Process> {
        let user = users::resolve_for(rootfs, spec.user.as_deref(), container)
            .map_err(|source| ContainerizerError::at(handle, ErrorKind::User { source }))?;
        check_non_root(handle, container, &user)?;
        Ok(bundle::process_spec(&ProcessInput {
            container,
            args: &spec.args,
            env: &spec.env,
            working_dir: spec.working_dir.as_deref(),
            user,
            nofile_hard: super::create::nofile_hard(),
            bounding_set: super::create::bounding_set(),
        }))
    }

    /// Where a process of `handle` runs: the container, or its pea `pea`.
    fn target(&self, handle: &Handle, spec: ContainerSpec, pea: Option<&str>) -> Result<Target> {
        let Some(name) = pea else {
            return Ok(Target {
                id: handle.clone(),
                rootfs: self.depot.paths(handle).rootfs(),
                cgroup: self.cgroup(handle),
                spec,
            });
        };
        let sidecar = spec
            .sidecars
            .iter()
            .find(|s| s.name == name && s.is_pea())
            .ok_or_else(|| {
                ContainerizerError::at(handle, ErrorKind::PeaUnknown { name: name.into() })
            })?;
        let id = self.pea_id(handle, name);
        Ok(Target {
            rootfs: self.pea_paths(handle, name).rootfs(),
            cgroup: self.pea_cgroup(&id),
            spec: super::peas::pea_spec(&spec, sidecar),
            id,
        })
    }

    /// Refuse unless the runtime says container `id` (the container
    /// `handle`, or one of its peas) can take an exec.
    async fn check_can_exec(&self, handle: &Handle, id: &Handle) -> Result<()> {
        let state = self
            .runtime
            .state(id.as_str())
            .await
            .map_err(Self::runtime_err(handle))?;
        if can_exec(Some(state.status)) {
            return Ok(());
        }
        Err(ContainerizerError::at(
            handle,
            ErrorKind::WrongState {
                verb: "run in",
                status: Some(state.status),
            },
        ))
    }

    /// Make `processes/<id>` in the bundle, refusing a bad or taken id,
    /// and its log directory in the depot.
    fn make_process_dir(&self, handle: &Handle, paths: &BundlePaths, id: &str) -> Result<PathBuf> {
        check_process_id(handle, id)?;
        let processes = paths.processes();
        let dir = processes.join(id);
        std::fs::create_dir_all(&processes).map_err(|e| self.fs_err(handle, &processes, e))?;
        std::fs::create_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                ContainerizerError::at(handle, ErrorKind::ProcessExists { id: id.into() })
            }
            _ => self.fs_err(handle, &dir, e),
        })?;
        // The same directory without a bundle root, or through an adopted
        // container's link.
        let logs = paths.process_logs().join(id);
        std::fs::create_dir_all(&logs).map_err(|e| self.fs_err(handle, &logs, e))?;
        Ok(dir)
    }

    /// What the supervisor of process `id` is started with.
    fn launch(
        &self,
        target: &Target,
        spec: &RunSpec,
        id: &str,
        dir: &Path,
        paths: &BundlePaths,
    ) -> Launch {
        let mut argv = self.runtime.exec_argv(
            target.id.as_str(),
            &dir.join(PROCESS_JSON),
            &dir.join(PID_FILE),
            &dir.join(RUNTIME_LOG),
        );
        if let Some(t) = &spec.terminal {
            // Before the container id, which ends the exec's argv.
            let at = argv.len().saturating_sub(1);
            argv.splice(at..at, ["--console-socket".into(), t.socket.clone().into()]);
        }
        let mut launch = Launch::new(id, dir, argv);
        let logs = paths.process_logs().join(id);
        launch.log_dir = (logs != dir).then_some(logs);
        launch.stdin = spec.stdin;
        launch.keep_stdin_open = spec.keep_stdin_open;
        launch.oom_file = target.cgroup.oom_counter_file().ok();
        launch.join_cgroups = self.shim_cgroups.clone();
        if let Some(b) = spec.log_max_bytes {
            launch.log_max_bytes = b;
        }
        if let Some(n) = spec.log_max_files {
            launch.log_max_files = n;
        }
        launch
    }

    /// Reattach to process `id` of `handle` from its directory alone.
    pub fn attach(&self, handle: &Handle, id: &str) -> Result<Process> {
        check_process_id(handle, id)?;
        Process::attach(self.process_dir(handle, id))
            .map_err(|source| ContainerizerError::at(handle, ErrorKind::Process { source }))
    }

    /// Send `signal` to process `id` of `handle`.
    pub fn signal(&self, handle: &Handle, id: &str, signal: i32) -> Result<()> {
        self.attach(handle, id)?
            .signal(signal)
            .map_err(|source| ContainerizerError::at(handle, ErrorKind::Process { source }))
    }

    /// Every process of `handle`, with its state.
    pub fn processes(&self, handle: &Handle) -> Result<Vec<ProcessInfo>> {
        crate::process::list(&self.depot.paths(handle).processes())
            .map_err(|source| ContainerizerError::at(handle, ErrorKind::Process { source }))
    }

    /// The directory of process `id`.
    pub fn process_dir(&self, handle: &Handle, id: &str) -> PathBuf {
        self.depot.paths(handle).processes().join(id)
    }

    /// Remove what process `id` left: its directory, then its log's. What
    /// is gone already is fine.
    pub fn remove_process(&self, handle: &Handle, id: &str) -> Result<(), fsutil::FsError> {
        let paths = self.depot.paths(handle);
        fsutil::remove_dir_all_if_exists(&paths.processes().join(id))?;
        fsutil::remove_dir_all_if_exists(&paths.process_logs().join(id))
    }

    fn fs_err(
        &self,
        handle: &Handle,
        path: &std::path::Path,
        e: std::io::Error,
    ) -> ContainerizerError {
        ContainerizerError::at(
            handle,
            ErrorKind::Fs {
                source: fsutil::FsError::new(path, e),
            },
        )
    }
}

/// With `runAsNonRoot`, no process of the container runs as uid 0, whatever
/// asked for it (the main process is checked before the create, too).
fn check_non_root(handle: &Handle, spec: &ContainerSpec, user: &bundle::ExecUser) -> Result<()> {
    let non_root = spec
        .security_context
        .as_ref()
        .is_some_and(|s| s.run_as_non_root == Some(true));
    if !non_root || user.uid != 0 {
        return Ok(());
    }
    let error = FieldError::new(
        "spec.securityContext.runAsNonRoot",
        "the process would run as root (uid 0)",
    );
    Err(ContainerizerError::at(
        handle,
        ErrorKind::Invalid {
            errors: ValidationErrors(vec![error]),
        },
    ))
}

/// A fresh process id: `p-` and the time in nanoseconds, in hex.
fn generate_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("p-{nanos:x}")
}

/// A process id names a directory: it must be a valid handle.
fn check_process_id(handle: &Handle, id: &str) -> Result<()> {
    Handle::new(id).map(drop).map_err(|e| {
        let reason = e.to_string();
        ContainerizerError::at(
            handle,
            ErrorKind::BadProcessId {
                id: id.into(),
                reason,
            },
        )
    })
}
