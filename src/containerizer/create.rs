//! `create`: validate, reserve the handle, mount the rootfs, pin the
//! network namespace, write the bundle, start init under the runtime while
//! the network is attached, and only then record the container as
//! complete. Any failure rolls back through destroy, so a failed create
//! leaves nothing behind.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::bundle::{self, BundleInput, CapSet};
use super::depot::{BundlePaths, ContainerRecord, spec_hash};
use super::rootfs::{Mounter, inherited_bind_flags};
use super::userns::IdRange;
use super::{Containerizer, ContainerizerError, ErrorKind, Result};
use crate::api::{ContainerSpec, Handle, ImageUse, validate};
use crate::fsutil;
use crate::runtime::OciRuntime;

/// The layers a container of an image mounts, and which image they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageLayers {
    /// The image, as the depot record keeps it.
    pub image: ImageUse,
    /// Its unpacked layers, top-most first.
    pub lowerdirs: Vec<PathBuf>,
}

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// Create `handle` from `spec`, whose rootfs is a directory, and start
    /// its init. `labels` are kept in the depot record (e.g. which source
    /// declared it).
    pub async fn create(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        self.create_from(handle, spec, labels, None).await
    }

    /// [`Containerizer::create`], where a spec with an image mounts
    /// `image`'s layers, which the caller holds in the store.
    pub async fn create_from(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        labels: BTreeMap<String, String>,
        image: Option<&ImageLayers>,
    ) -> Result<()> {
        let resources = validate::validate(spec)
            .and_then(|()| validate::resources(&spec.limits))
            .map_err(|errors| ContainerizerError::at(handle, ErrorKind::Invalid { errors }))?;
        let lowers = self.lowers(handle, spec, image)?;
        let bind_flags = self.check_host_paths(handle, spec)?;
        let seccomp_localhost = super::seccomp::localhost_profile(&self.seccomp_root, spec)
            .map_err(|source| {
                ContainerizerError::at(handle, ErrorKind::SeccompProfile { source })
            })?;
        self.depot.reserve(handle)?;
        let input = BundleInput {
            handle,
            spec,
            resources,
            init_binary: self.config.init_binary.clone(),
            cgroup_parent: self.config.cgroup_parent.clone(),
            bind_flags,
            nofile_hard: nofile_hard(),
            bounding_set: bounding_set(),
            netns: None,
            etc_files: Vec::new(),
            userns: None,
            seccomp_localhost,
        };
        log_left_out_capabilities(handle, spec, input.bounding_set);
        let made = Made {
            lowers: &lowers,
            image: image.map(|i| &i.image),
            labels,
        };
        if let Err(err) = self.build_and_start(handle, spec, &input, made).await {
            if let Err(cleanup) = self.destroy(handle).await {
                tracing::warn!(%handle, error = %cleanup, "rolling back a failed create");
            }
            return Err(err);
        }
        Ok(())
    }

    /// The overlay's lower directories: the image's layers, or the rootfs
    /// directory. Each must be a directory. Nothing is written.
    fn lowers(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        image: Option<&ImageLayers>,
    ) -> Result<Vec<PathBuf>> {
        let lowers = match (image, spec.image.is_some()) {
            (Some(i), true) => i.lowerdirs.clone(),
            (None, false) => vec![PathBuf::from(&spec.rootfs)],
            _ => return Err(ContainerizerError::at(handle, ErrorKind::ImageMismatch)),
        };
        existing_lowers(handle, lowers)
    }

    /// Every bind source must exist; returns the flags each bind must keep.
    /// Nothing is written.
    fn check_host_paths(&self, handle: &Handle, spec: &ContainerSpec) -> Result<Vec<Vec<String>>> {
        spec.mounts
            .iter()
            .enumerate()
            .map(|(index, m)| {
                let missing = || {
                    ContainerizerError::at(
                        handle,
                        ErrorKind::MountSourceMissing {
                            index,
                            path: m.source.clone().into(),
                        },
                    )
                };
                if fs::symlink_metadata(&m.source).is_err() {
                    return Err(missing());
                }
                inherited_bind_flags(Path::new(&m.source)).map_err(|_| missing())
            })
            .collect()
    }

    async fn build_and_start(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        input: &BundleInput<'_>,
        made: Made<'_>,
    ) -> Result<()> {
        let paths = self.depot.paths(handle);
        // The handle is ours from the reservation on: whatever still runs in
        // its cgroup (a container whose runtime state was lost before the
        // depot forgot it) would join the new container's.
        let leftovers = self.kill_leftovers(handle).await?;
        if leftovers > 0 {
            tracing::warn!(%handle, count = leftovers, "killed processes left in the cgroup before creating");
        }
        // Recorded before anything uses it: a crash from here leaves a
        // half-made bundle whose destroy frees the range.
        let userns =
            match self.wants_userns(spec) {
                true => Some(self.userns.claim(&self.depot, handle).map_err(|source| {
                    ContainerizerError::at(handle, ErrorKind::Userns { source })
                })?),
                false => None,
            };
        for dir in [
            paths.rootfs(),
            paths.upper(),
            paths.work(),
            paths.processes(),
        ] {
            fs::create_dir(&dir).map_err(fs_err(handle, &dir))?;
        }
        self.mount_rootfs(handle, made.lowers, userns)?;
        let pinned = self.pin_network(handle, spec, &paths).await?;
        if let (Some(_), Some(_), Some(runtime)) = (userns, &pinned, &self.userns_netns_refused_by)
        {
            let source = super::userns::UsernsError::RuntimeCannotJoin {
                runtime: runtime.clone(),
            };
            return Err(ContainerizerError::at(handle, ErrorKind::Userns { source }));
        }
        let input = BundleInput {
            netns: pinned.as_ref().map(|p| p.netns.clone()),
            etc_files: pinned
                .as_ref()
                .map(|p| p.etc_files.clone())
                .unwrap_or_default(),
            userns,
            ..input.clone()
        };
        let config = bundle::generate_without_seccomp(&input);
        write_config(handle, &paths, &input, config)?;
        // The network is attached while the runtime makes the container:
        // both need only the pinned namespace, and the main process, the
        // first that may use the network, starts after both.
        let (ran, network) =
            tokio::join!(self.create_and_start_init(handle, spec, &paths), async {
                match &pinned {
                    Some(pinned) => self.attach_pinned(handle, spec, pinned).await.map(Some),
                    None => Ok(None),
                }
            });
        let network = network?;
        ran?;
        let record = ContainerRecord {
            handle: handle.clone(),
            spec: spec.clone(),
            spec_hash: spec_hash(spec),
            created_at: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            labels: made.labels,
            image: made.image.cloned(),
            network,
            userns,
        };
        self.depot.write_record(&record)?;
        Ok(())
    }

    /// `runtime run --detach` of the init, which is handed the listening
    /// socket it serves commands on as its stdin: create and start in one
    /// runtime process.
    async fn create_and_start_init(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        paths: &BundlePaths,
    ) -> Result<()> {
        let listener = match super::init_exec::init_may_serve(spec) {
            true => super::init_exec::listen(&paths.init_socket()),
            false => None,
        };
        self.runtime
            .run_detached(handle.as_str(), &paths.bundle, listener)
            .await
            .map_err(Self::runtime_err(handle))
    }
}

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// The overlay of `lowers` at the bundle's rootfs. In a user namespace
    /// the layers are idmapped into its range first (their clones mounted
    /// under `lower/` only until the overlay holds them), and the upper
    /// directory, the root directory the container sees, belongs to its root.
    fn mount_rootfs(
        &self,
        handle: &Handle,
        lowers: &[PathBuf],
        userns: Option<IdRange>,
    ) -> Result<()> {
        let paths = self.depot.paths(handle);
        let Some(range) = userns else {
            return self
                .mounter
                .mount_overlay(lowers, &paths.upper(), &paths.work(), &paths.rootfs())
                .map_err(Self::rootfs_err(handle));
        };
        let started = std::time::Instant::now();
        let upper = paths.upper();
        let root = Some(nix::unistd::Uid::from_raw(range.host_id));
        let group = Some(nix::unistd::Gid::from_raw(range.host_id));
        nix::unistd::chown(&upper, root, group).map_err(|e| fs_err(handle, &upper)(e.into()))?;
        let mapped = self
            .mounter
            .idmap_layers(lowers, &paths.lower(), range)
            .map_err(Self::rootfs_err(handle))?;
        let mounted = self
            .mounter
            .mount_overlay(&mapped, &upper, &paths.work(), &paths.rootfs());
        // The overlay keeps private clones of its layers: the mount points
        // can go, whether or not it was mounted.
        for point in &mapped {
            self.mounter
                .unmount(point)
                .map_err(Self::rootfs_err(handle))?;
        }
        mounted.map_err(Self::rootfs_err(handle))?;
        tracing::info!(%handle, %range, layers = lowers.len(),
            micros = started.elapsed().as_micros() as u64,
            "user namespace: rootfs layers idmapped");
        Ok(())
    }
}

fn fs_err<'a>(
    handle: &'a Handle,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ContainerizerError + 'a {
    move |e| {
        ContainerizerError::at(
            handle,
            ErrorKind::Fs {
                source: fsutil::FsError::new(path, e),
            },
        )
    }
}

/// The agent's hard RLIMIT_NOFILE, which containers inherit as their ceiling.
pub fn nofile_hard() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024)
}

/// The agent's capability bounding set, which caps every container's
/// capabilities (a runtime it starts inherits it). Every capability when it
/// cannot be read, so a failure here changes nothing. Read once: the agent
/// never drops from it, and reading `/proc/self/status` of a process with
/// many threads on every create and start was measurable (issue 19).
pub fn bounding_set() -> CapSet {
    static READ: std::sync::OnceLock<CapSet> = std::sync::OnceLock::new();
    *READ.get_or_init(read_bounding_set)
}

fn read_bounding_set() -> CapSet {
    let status = fs::read_to_string("/proc/self/status");
    match status.as_deref().map(CapSet::from_status) {
        Ok(Some(set)) => set,
        Ok(None) | Err(_) => {
            tracing::warn!("cannot read CapBnd from /proc/self/status; assuming every capability");
            CapSet::ALL
        }
    }
}

/// Say which capabilities a container asked for and will not get: loudly
/// for a privileged one, which asked for every one.
fn log_left_out_capabilities(handle: &Handle, spec: &ContainerSpec, bounding: CapSet) {
    let (_, left_out) = bundle::wanted_capabilities(spec, bounding);
    let privileged = spec.privileged;
    if left_out.is_empty() {
        return;
    }
    let left_out = left_out.join(",");
    if privileged {
        tracing::warn!(%handle, %left_out, bounding = %bounding,
            "privileged container gets every capability but these, which the agent's bounding set lacks");
    } else {
        tracing::debug!(%handle, %left_out, bounding = %bounding,
            "container goes without these default capabilities, which the agent's bounding set lacks");
    }
}

/// What a create makes the container from, besides its spec.
struct Made<'a> {
    /// The overlay's lower directories, top-most first.
    lowers: &'a [PathBuf],
    /// The image, when it runs one.
    image: Option<&'a ImageUse>,
    /// The record's labels.
    labels: BTreeMap<String, String>,
}

/// `lowers` when there is at least one and each is a directory (a rootfs
/// or an image's layers, for a container's overlay or a pea's).
pub(super) fn existing_lowers(handle: &Handle, lowers: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    match lowers.iter().find(|l| !l.is_dir()) {
        Some(missing) => Err(ContainerizerError::at(
            handle,
            ErrorKind::RootfsMissing {
                path: missing.clone(),
            },
        )),
        None if lowers.is_empty() => Err(ContainerizerError::at(handle, ErrorKind::ImageMismatch)),
        None => Ok(lowers),
    }
}

/// Write the config of `input` (`config`, from
/// [`bundle::generate_without_seccomp`]) into the bundle.
pub(super) fn write_config(
    handle: &Handle,
    paths: &BundlePaths,
    input: &BundleInput<'_>,
    config: oci_spec::runtime::Spec,
) -> Result<()> {
    let path = paths.config();
    let fs_err = |source| ContainerizerError::at(handle, ErrorKind::Fs { source });
    let bytes = bundle::config_json(input, config).map_err(|e| {
        let invalid = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        fs_err(fsutil::FsError::new(&path, invalid))
    })?;
    fsutil::write_atomic_with(&path, &bytes, fsutil::Durability::Volatile).map_err(fs_err)
}
