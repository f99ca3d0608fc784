//! The containerizer: the seed's Containerizer in Rust. It owns the depot,
//! turns specs into bundles, mounts rootfs layers, and drives the OCI
//! runtime and the process supervisors to create, run in, stop and destroy
//! containers. It knows nothing of where specs come from.
//!
//! One file per verb: [`create`], [`destroy`], [`stop`], [`info`]. The pure
//! guards on the runtime status live in [`lifecycle`]; processes no runtime
//! accounts for are killed through the cgroup in [`leftovers`].

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use crate::api::{Handle, ValidationErrors};
use crate::fsutil::FsError;
use crate::runtime::{OciRuntime, RuntimeError, Status};

pub mod adopt;
pub mod bundle;
pub mod create;
pub mod depot;
pub mod destroy;
pub mod exec_probe;
pub mod idmap;
pub mod info;
pub mod init_exec;
pub mod leftovers;
pub mod lifecycle;
pub mod network;
pub mod nstar;
pub mod peas;
pub mod rootfs;
pub mod run;
pub mod seccomp;
pub mod stop;
pub mod stream;
pub mod update;
pub mod userns;
pub mod users;

use crate::cgroup::{Cgroup, CgroupError, Hierarchy};
use crate::process::{ProcessError, Tracker};
use depot::{Depot, DepotError};
use rootfs::{KernelMounter, Mounter, RootfsError};
use userns::{Allocator, IdRange, UsernsError};
use users::UserError;

/// Everything that can go wrong in a containerizer verb. Most of it is
/// about one container, which it names once, with what went wrong there in
/// [`ErrorKind`] (naming the spec field where that is the cause).
#[derive(Debug, Error)]
pub enum ContainerizerError {
    /// A verb on one container failed.
    #[error("{handle}: {kind}")]
    Container {
        /// The container.
        handle: Handle,
        /// What went wrong.
        #[source]
        kind: ErrorKind,
    },
    /// The depot refused (its error names the container).
    #[error(transparent)]
    Depot(#[from] DepotError),
    /// The machine's cgroup layout could not be read.
    #[error("cannot find cgroups: {0}")]
    CgroupSetup(#[source] CgroupError),
}

impl ContainerizerError {
    /// `kind` went wrong with `handle`.
    pub fn at(handle: &Handle, kind: ErrorKind) -> Self {
        Self::Container {
            handle: handle.clone(),
            kind,
        }
    }

    /// What went wrong, when it was about one container.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Self::Container { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

/// What went wrong with one container in a containerizer verb.
#[derive(Debug, Error)]
pub enum ErrorKind {
    /// The spec failed validation.
    #[error("invalid spec: {errors}")]
    Invalid {
        /// Every problem, each naming its field.
        errors: ValidationErrors,
    },
    /// `spec.rootfs` is not a directory.
    #[error("spec.rootfs: {path} is not a directory")]
    RootfsMissing {
        /// The image path.
        path: PathBuf,
    },
    /// The container's network could not be set up or torn down: the
    /// plugin's or the kernel's message.
    #[error("network: {message}")]
    Network {
        /// What went wrong.
        message: String,
    },
    /// A spec with an image came without its layers, or one without an
    /// image with layers (a caller's mistake, not the user's).
    #[error("spec.image: the image's layers must be given exactly when the spec names an image")]
    ImageMismatch,
    /// A bind mount source does not exist.
    #[error("spec.mounts[{index}].source: {path} does not exist")]
    MountSourceMissing {
        /// Index in `spec.mounts`.
        index: usize,
        /// The source path.
        path: PathBuf,
    },
    /// Mounting or unmounting the rootfs failed.
    #[error("{source}")]
    Rootfs {
        /// Why.
        #[source]
        source: RootfsError,
    },
    /// The OCI runtime failed; its own message is inside.
    #[error("{source}")]
    Runtime {
        /// Why.
        #[source]
        source: RuntimeError,
    },
    /// A cgroup operation failed.
    #[error("{source}")]
    Cgroup {
        /// Why.
        #[source]
        source: CgroupError,
    },
    /// `spec.process.user` could not be resolved.
    #[error("spec.process.user: {source}")]
    User {
        /// Why.
        #[source]
        source: UserError,
    },
    /// A file outside the depot's own could not be read or written.
    #[error("{source}")]
    Fs {
        /// Why.
        #[source]
        source: FsError,
    },
    /// A pea was asked for that the container's spec does not declare.
    #[error("no sidecar {name:?} with a rootfs of its own is declared")]
    PeaUnknown {
        /// The sidecar's name.
        name: String,
    },
    /// The verb needs the container in another state.
    #[error("cannot {verb} a container that is {status:?}")]
    WrongState {
        /// What was asked.
        verb: &'static str,
        /// What it is.
        status: Option<Status>,
    },
    /// Streaming a tar in or out failed.
    #[error("streaming {path}: {message}")]
    Stream {
        /// The path in the container.
        path: String,
        /// What nstar or the pipe said.
        message: String,
    },
    /// No user namespace range could be given (`spec.hostUsers: false`).
    #[error("{source}")]
    Userns {
        /// Why.
        #[source]
        source: UsernsError,
    },
    /// A process could not be started, found or signalled.
    #[error("{source}")]
    Process {
        /// Why.
        #[source]
        source: ProcessError,
    },
    /// A process id that is not a valid name.
    #[error("process id {id:?}: {reason}")]
    BadProcessId {
        /// The id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A process with this id already exists in the container.
    #[error("process {id} already exists")]
    ProcessExists {
        /// The id.
        id: String,
    },
    /// The spec's Localhost seccomp profile cannot be used: the spec cannot
    /// run on this node as it is (kubelet's CreateContainerConfigError).
    #[error("{source}")]
    SeccompProfile {
        /// Which file, and why.
        #[source]
        source: seccomp::LocalhostError,
    },
    /// Processes survived SIGKILL (e.g. stuck in the kernel).
    #[error("{count} processes survived SIGKILL")]
    Unkillable {
        /// How many.
        count: usize,
    },
}

/// Shorthand for results of containerizer verbs.
pub type Result<T, E = ContainerizerError> = std::result::Result<T, E>;

/// Where the containerizer keeps and finds things.
#[derive(Debug, Clone)]
pub struct Config {
    /// The depot directory.
    pub depot: PathBuf,
    /// Where OCI bundles go (a tmpfs, as `/run`); `None`: in the depot
    /// directories (see [`depot`]).
    pub bundles: Option<PathBuf>,
    /// Host path of `rundmc-init`.
    pub init_binary: PathBuf,
    /// The cgroup every container's cgroup goes under.
    pub cgroup_parent: String,
    /// The `rundmc` binary, run as `rundmc nstar` for stream in/out.
    pub nstar_binary: PathBuf,
    /// The `rundmc-shim` supervisor binary.
    pub shim_binary: PathBuf,
    /// The cgroup supervisors move into as they start, out of the agent's
    /// own (which a service manager or pod kills with the agent).
    pub shim_cgroup: Option<String>,
}

/// The containerizer over an OCI runtime `R` and a mounter `M`.
pub struct Containerizer<R, M = KernelMounter> {
    depot: Depot,
    runtime: R,
    /// Shared with the blocking threads that unmount and remove.
    mounter: Arc<M>,
    hierarchy: Hierarchy,
    /// Every mounted cgroup hierarchy, the ones rundmc does not read too.
    all_roots: Vec<PathBuf>,
    /// `cgroup.procs` of the supervisors' cgroup, in every hierarchy.
    shim_cgroups: Vec<PathBuf>,
    tracker: Tracker,
    config: Config,
    /// Containers' networks of their own, when the node has CNI.
    networking: Option<Arc<network::Networking>>,
    /// User namespace id ranges (`hostUsers: false`), kept in the depot.
    userns: Arc<Allocator>,
    /// Whether a spec that leaves `hostUsers` unset gets a user namespace.
    userns_by_default: bool,
    /// What `<runtime> --version` says, when the runtime cannot exec into
    /// a user namespace whose network namespace is the node's.
    userns_netns_refused_by: Option<String>,
    /// Where Localhost seccomp profiles are read from.
    seccomp_root: PathBuf,
}

impl<R: OciRuntime> Containerizer<R, KernelMounter> {
    /// A containerizer on the real kernel.
    pub fn new(config: Config, runtime: R) -> Result<Self> {
        Self::with_mounter(config, runtime, KernelMounter)
    }
}

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// A containerizer with its own mounter.
    pub fn with_mounter(config: Config, runtime: R, mounter: M) -> Result<Self> {
        let depot = match &config.bundles {
            Some(bundles) => Depot::with_bundles(&config.depot, bundles)?,
            None => Depot::open(&config.depot)?,
        };
        let userns = Arc::new(Allocator::rebuild(&depot, userns::DEFAULT_RANGE)?);
        let hierarchy = Hierarchy::detect().map_err(ContainerizerError::CgroupSetup)?;
        let tracker = Tracker::new(&config.shim_binary);
        let all_roots = crate::cgroup::mounted_roots().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "leftover cgroups are looked for only where rundmc reads");
            Vec::new()
        });
        let shim_cgroups = config
            .shim_cgroup
            .as_deref()
            .map(make_shim_cgroup)
            .unwrap_or_default();
        Ok(Self {
            depot,
            runtime,
            mounter: Arc::new(mounter),
            hierarchy,
            all_roots,
            shim_cgroups,
            tracker,
            config,
            networking: None,
            userns,
            userns_by_default: false,
            userns_netns_refused_by: None,
            seccomp_root: PathBuf::from(seccomp::DEFAULT_PROFILE_ROOT),
        })
    }

    /// Give user-namespaced containers their ids from `range` (the
    /// kubelet's default otherwise), and with `by_default` a user namespace
    /// to every spec that leaves `hostUsers` unset (but privileged and
    /// hostNetwork ones). Ranges containers already hold stay theirs,
    /// inside `range` or not.
    pub fn with_user_namespaces(mut self, range: IdRange, by_default: bool) -> Result<Self> {
        self.userns = Arc::new(Allocator::rebuild(&self.depot, range)?);
        self.userns_by_default = by_default;
        Ok(self)
    }

    /// Tell the containerizer what `<runtime> --version` printed: runc
    /// before 1.2 cannot run user-namespaced containers on a CNI network,
    /// which are then refused with a message saying so.
    pub fn with_runtime_version(mut self, version: &str) -> Self {
        self.userns_netns_refused_by =
            (!userns::execs_into_foreign_netns(version)).then(|| userns::runtime_name(version));
        self
    }

    /// True when `spec` runs in a user namespace of its own: `hostUsers:
    /// false`, or unset where the agent defaults to one.
    pub fn wants_userns(&self, spec: &crate::api::ContainerSpec) -> bool {
        match spec.host_users {
            Some(host) => !host,
            None => self.userns_by_default && !spec.privileged && !spec.host_network,
        }
    }

    /// The user namespace range `handle` holds, if any.
    pub fn userns_range(&self, handle: &Handle) -> Option<IdRange> {
        self.userns.get(handle)
    }

    /// Give containers a network of their own through CNI.
    pub fn with_networking(mut self, networking: network::Networking) -> Self {
        self.networking = Some(Arc::new(networking));
        self
    }

    /// Read Localhost seccomp profiles from below `root` (the agent's
    /// `--seccomp-profile-root`; [`seccomp::DEFAULT_PROFILE_ROOT`] otherwise).
    pub fn with_seccomp_profile_root(mut self, root: PathBuf) -> Self {
        self.seccomp_root = root;
        self
    }

    /// The depot.
    pub fn depot(&self) -> &Depot {
        &self.depot
    }

    /// The OCI runtime.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// The cgroup of `handle`.
    pub fn cgroup(&self, handle: &Handle) -> Cgroup {
        let path = format!(
            "/{}/{}",
            self.config.cgroup_parent.trim_matches('/'),
            handle
        );
        self.hierarchy.cgroup(&path)
    }

    /// `handle`'s cgroup in every mounted hierarchy, not only those rundmc
    /// reads: the runtime makes it in all of them (blkio, devices, systemd's
    /// named one...), and where no runtime state is left to remove them,
    /// rundmc must, from each.
    pub fn cgroup_everywhere(&self, handle: &Handle) -> Cgroup {
        let rel = format!("{}/{}", self.config.cgroup_parent.trim_matches('/'), handle);
        self.with_all_roots(self.cgroup(handle), &rel)
    }

    /// `cgroup` (made for `rel`) with `rel` under every other root added, on v1.
    fn with_all_roots(&self, mut cgroup: Cgroup, rel: &str) -> Cgroup {
        if let Cgroup::V1(dirs) = &mut cgroup {
            for root in &self.all_roots {
                dirs.entry(root.to_string_lossy().into_owned())
                    .or_insert_with(|| root.join(rel));
            }
        }
        cgroup
    }

    /// Handles of every complete container in the depot.
    pub fn handles(&self) -> Result<Vec<Handle>> {
        Ok(self
            .depot
            .entries()?
            .into_iter()
            .filter(|e| e.complete)
            .map(|e| e.handle)
            .collect())
    }

    /// The runtime's state of `handle`; `None` when the runtime has no such
    /// container, which is an answer, not an error.
    pub async fn runtime_state(&self, handle: &Handle) -> Result<Option<crate::runtime::State>> {
        match self.runtime.state(handle.as_str()).await {
            Ok(s) => Ok(Some(s)),
            Err(RuntimeError::NotFound { .. }) => Ok(None),
            Err(source) => Err(ContainerizerError::at(
                handle,
                ErrorKind::Runtime { source },
            )),
        }
    }

    /// The depot directory of `handle`: its record, its writable layer and
    /// its processes (see [`depot`]).
    pub fn depot_dir(&self, handle: &Handle) -> PathBuf {
        self.depot.paths(handle).dir
    }

    fn runtime_err(handle: &Handle) -> impl FnOnce(RuntimeError) -> ContainerizerError + '_ {
        move |source| ContainerizerError::at(handle, ErrorKind::Runtime { source })
    }

    fn cgroup_err(handle: &Handle) -> impl FnOnce(CgroupError) -> ContainerizerError + '_ {
        move |source| ContainerizerError::at(handle, ErrorKind::Cgroup { source })
    }

    fn rootfs_err(handle: &Handle) -> impl FnOnce(RootfsError) -> ContainerizerError + '_ {
        move |source| ContainerizerError::at(handle, ErrorKind::Rootfs { source })
    }
}

/// Make the supervisors' cgroup in every hierarchy; where that fails, they
/// stay in the agent's cgroup there, which is worth a warning, not a stop.
fn make_shim_cgroup(rel: &str) -> Vec<PathBuf> {
    match crate::cgroup::make_everywhere(rel) {
        Ok(made) => {
            for e in &made.errors {
                tracing::warn!(cgroup = rel, error = %e, "supervisors stay in the agent's cgroup there");
            }
            made.procs_files
        }
        Err(e) => {
            tracing::warn!(cgroup = rel, error = %e, "supervisors stay in the agent's cgroup");
            Vec::new()
        }
    }
}
