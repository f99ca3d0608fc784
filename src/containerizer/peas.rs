//! Peas: sidecars with a rootfs of their own. Each is an OCI container of
//! its own (a bundle under its container's, `peas/<name>`, with its own
//! overlay, mount namespace and cgroup under `<cgroup-parent>-peas`, where
//! nothing takes it for a container's) whose init joins the container's
//! network, IPC and UTS namespaces, and PID namespace with
//! `shareProcessNamespace`, by path (`/proc/<init pid>/ns/...`). The
//! sidecar itself runs in it as every process does: an exec under its own
//! supervisor, its directory among the container's processes.
//!
//! A pea's rootfs is an overlay of a read-only directory (`rootfs:`) or of
//! an image's layers (`image:`, held in the image store, which the caller
//! made sure of), with an upper and work directory of its own.
//!
//! The pea's directory is made before anything of it exists and removed
//! last, so the depot always lists what a destroy has to undo; its record
//! (`pea.json`, the image it was made from) is written before its overlay
//! is mounted, so the image store's GC keeps those layers while it is.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::bundle::{self, BundleInput};
use super::create::ImageLayers;
use super::depot::{BundlePaths, PEAS_DIR, PeaRecord};
use super::rootfs::Mounter;
use super::{Containerizer, ContainerizerError, ErrorKind, Result};
use crate::api::{ContainerSpec, Handle, ImageUse, Sidecar, validate};
use crate::cgroup::Cgroup;
use crate::fsutil;
use crate::runtime::{OciRuntime, RuntimeError, Status};

/// The container spec a pea's bundle is made from: its rootfs and limits,
/// the container's env and confinement; no mounts, no hostname (the UTS
/// namespace is the container's).
pub fn pea_spec(container: &ContainerSpec, sidecar: &Sidecar) -> ContainerSpec {
    ContainerSpec {
        rootfs: sidecar.rootfs.clone().unwrap_or_default(),
        env: container.env.clone(),
        limits: sidecar.limits.clone(),
        privileged: container.privileged,
        security_context: container.security_context.clone().map(|mut s| {
            s.sysctls.clear();
            s
        }),
        host_network: container.host_network,
        ..ContainerSpec::default()
    }
}

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// The runtime's id of pea `name` of `handle`: `<handle>+pea-<name>`,
    /// hashed when that is too long. No container's handle has a `+` (file
    /// names are DNS subdomains, resources' handles `k8s_<ns>_<name>`), so
    /// a pea's id never meets one.
    pub fn pea_id(&self, handle: &Handle, name: &str) -> Handle {
        let plain = format!("{handle}+pea-{name}");
        Handle::new(&plain).unwrap_or_else(|_| {
            let hash = crate::api::handle::fnv1a64(plain.as_bytes());
            // Only hex digits and a known prefix: always a handle.
            Handle::new(format!("pea+{hash:016x}")).unwrap_or_else(|_| handle.clone())
        })
    }

    /// The bundle of pea `name` of `handle`.
    pub fn pea_paths(&self, handle: &Handle, name: &str) -> BundlePaths {
        self.depot.paths(handle).pea(name)
    }

    /// The cgroup of the pea whose runtime id is `id`, in every hierarchy.
    pub fn pea_cgroup(&self, id: &Handle) -> Cgroup {
        let rel = format!("{}-peas/{id}", self.config.cgroup_parent.trim_matches('/'));
        self.with_all_roots(self.hierarchy.cgroup(&format!("/{rel}")), &rel)
    }

    /// Make pea `name` of `handle` unless it runs: a leftover of it is
    /// destroyed first. The container must be running. A pea of an image
    /// mounts `image`'s layers, which the caller holds in the store.
    pub async fn ensure_pea(
        &self,
        handle: &Handle,
        name: &str,
        image: Option<&ImageLayers>,
    ) -> Result<()> {
        let id = self.pea_id(handle, name);
        if let Ok(state) = self.runtime.state(id.as_str()).await
            && state.status == Status::Running
        {
            return Ok(());
        }
        self.destroy_pea(handle, name).await?;
        let record = self
            .depot
            .record(handle)?
            .ok_or_else(|| super::depot::DepotError::NotFound(handle.clone()))?;
        let sidecar = record
            .spec
            .sidecars
            .iter()
            .find(|s| s.name == name && s.is_pea())
            .ok_or_else(|| {
                ContainerizerError::at(handle, ErrorKind::PeaUnknown { name: name.into() })
            })?;
        let init = self
            .runtime_state(handle)
            .await?
            .filter(|s| s.status == Status::Running)
            .and_then(|s| s.pid)
            .ok_or_else(|| {
                ContainerizerError::at(
                    handle,
                    ErrorKind::WrongState {
                        verb: "make a pea in",
                        status: None,
                    },
                )
            })?;
        let spec = pea_spec(&record.spec, sidecar);
        let lowers = self.pea_lowers(handle, sidecar, image)?;
        let pea = Pea {
            name,
            id: &id,
            spec: &spec,
            lowers,
            record: PeaRecord {
                image: image.map(|i| i.image.clone()),
            },
        };
        let made = self
            .make_pea(handle, &pea, init, record.spec.share_process_namespace)
            .await;
        if let Err(e) = made {
            if let Err(cleanup) = self.destroy_pea(handle, name).await {
                tracing::warn!(%handle, pea = name, error = %cleanup, "rolling back a failed pea");
            }
            return Err(e);
        }
        Ok(())
    }

    /// The overlay's lower directories of pea `sidecar`: its image's
    /// layers, or its rootfs directory. Each must be a directory.
    fn pea_lowers(
        &self,
        handle: &Handle,
        sidecar: &Sidecar,
        image: Option<&ImageLayers>,
    ) -> Result<Vec<PathBuf>> {
        let lowers = match (&sidecar.rootfs, image) {
            (Some(rootfs), None) => vec![PathBuf::from(rootfs)],
            (None, Some(i)) if sidecar.image.is_some() && !i.lowerdirs.is_empty() => {
                i.lowerdirs.clone()
            }
            _ => return Err(ContainerizerError::at(handle, ErrorKind::ImageMismatch)),
        };
        super::create::existing_lowers(handle, lowers)
    }

    /// The pea's directory, record, overlay and bundle, then its init,
    /// joined to the namespaces of the container's init `init`.
    async fn make_pea(
        &self,
        handle: &Handle,
        pea: &Pea<'_>,
        init: i32,
        share_pid: bool,
    ) -> Result<()> {
        let spec = pea.spec;
        let resources = validate::resources(&spec.limits)
            .map_err(|errors| ContainerizerError::at(handle, ErrorKind::Invalid { errors }))?;
        let paths = self.pea_paths(handle, pea.name);
        std::fs::create_dir_all(&paths.dir).map_err(|e| self.pea_fs_err(handle, &paths.dir, e))?;
        fsutil::write_json_with(
            &paths.pea_record(),
            &pea.record,
            fsutil::Durability::Volatile,
        )
        .map_err(|source| ContainerizerError::at(handle, ErrorKind::Fs { source }))?;
        for dir in [paths.rootfs(), paths.upper(), paths.work()] {
            std::fs::create_dir_all(&dir).map_err(|e| self.pea_fs_err(handle, &dir, e))?;
        }
        self.mounter
            .mount_overlay(&pea.lowers, &paths.upper(), &paths.work(), &paths.rootfs())
            .map_err(Self::rootfs_err(handle))?;
        let id = pea.id;
        let input = BundleInput {
            handle: id,
            spec,
            resources,
            init_binary: self.config.init_binary.clone(),
            cgroup_parent: format!("{}-peas", self.config.cgroup_parent.trim_matches('/')),
            bind_flags: Vec::new(),
            nofile_hard: super::create::nofile_hard(),
            bounding_set: super::create::bounding_set(),
            netns: None,
            etc_files: Vec::new(),
            userns: None,
            seccomp_localhost: None,
        };
        let mut config = bundle::generate_without_seccomp(&input);
        join_namespaces(&mut config, init, share_pid);
        super::create::write_config(handle, &paths, &input, config)?;
        self.runtime
            .run_detached(id.as_str(), &paths.bundle, None)
            .await
            .map_err(Self::runtime_err(handle))
    }

    /// Destroy pea `name` of `handle`: its runtime container (killing its
    /// processes), whatever is left in its cgroup, its overlay, its cgroup
    /// and its directory, in that order. What is gone already is fine.
    pub async fn destroy_pea(&self, handle: &Handle, name: &str) -> Result<()> {
        let id = self.pea_id(handle, name);
        match self.runtime.delete(id.as_str(), true).await {
            Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
            Err(source) => {
                return Err(ContainerizerError::at(
                    handle,
                    ErrorKind::Runtime { source },
                ));
            }
        }
        let cgroup = self.pea_cgroup(&id);
        for _ in 0..50 {
            let victims = match cgroup.kill_round() {
                Ok(v) => v,
                Err(_) => break,
            };
            if victims.is_empty() {
                break;
            }
            for v in victims {
                let _ = v.exited_within(std::time::Duration::from_secs(1)).await;
            }
        }
        let paths = self.pea_paths(handle, name);
        for rootfs in paths.rootfs_mounts() {
            self.mounter
                .unmount_fully(&rootfs)
                .map_err(Self::rootfs_err(handle))?;
        }
        cgroup.remove().map_err(Self::cgroup_err(handle))?;
        self.remove_peas_cgroup_if_empty();
        // The bundle first: it never outlives the pea's depot directory.
        for dir in [&paths.bundle, &paths.dir] {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(self.pea_fs_err(handle, dir, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The image pea `name` of `handle` was made from, as its record says;
    /// `None` for a pea of a rootfs directory, or one not made.
    pub fn pea_image(&self, handle: &Handle, name: &str) -> Result<Option<ImageUse>> {
        let record = super::depot::read_pea_record(&self.pea_paths(handle, name))?;
        Ok(record.and_then(|r| r.image))
    }

    /// Remove `<cgroup-parent>-peas` in every hierarchy once no pea's
    /// cgroup is left in it: the kernel refuses the rmdir (EBUSY) while one
    /// is, and that is left alone. A pea made at that very moment may find
    /// the directory gone between the runtime's two mkdirs and fail; its
    /// reconcile makes it again.
    fn remove_peas_cgroup_if_empty(&self) {
        let rel = format!("{}-peas", self.config.cgroup_parent.trim_matches('/'));
        let all = self.with_all_roots(self.hierarchy.cgroup(&format!("/{rel}")), &rel);
        for dir in all.dirs() {
            if let Err(e) = std::fs::remove_dir(&dir)
                && !matches!(
                    e.raw_os_error(),
                    Some(libc::EBUSY | libc::ENOTEMPTY | libc::ENOENT)
                )
            {
                tracing::debug!(dir = %dir.display(), error = %e, "removing the peas' cgroup");
            }
        }
    }

    /// Destroy every pea the depot lists for `handle`.
    pub async fn destroy_peas(&self, handle: &Handle) -> Result<()> {
        let dir = self.depot.paths(handle).dir.join(PEAS_DIR);
        let names: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(_) => return Ok(()),
        };
        for name in names {
            self.destroy_pea(handle, &name).await?;
        }
        Ok(())
    }

    fn pea_fs_err(
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

/// What a pea is made of.
struct Pea<'a> {
    name: &'a str,
    id: &'a Handle,
    spec: &'a ContainerSpec,
    lowers: Vec<PathBuf>,
    record: PeaRecord,
}

/// Join the namespaces of the process `pid`: network (unless the config
/// has none, on the host's network), IPC and UTS, and PID when `share_pid`.
/// The mount namespace stays the pea's own; so does the hostname, which is
/// the container's already.
fn join_namespaces(config: &mut Spec, pid: i32, share_pid: bool) {
    config.set_hostname(None);
    let Some(linux) = config.linux_mut() else {
        return;
    };
    let Some(namespaces) = linux.namespaces_mut() else {
        return;
    };
    for ns in namespaces.iter_mut() {
        let file = match ns.typ() {
            LinuxNamespaceType::Network => "net",
            LinuxNamespaceType::Ipc => "ipc",
            LinuxNamespaceType::Uts => "uts",
            LinuxNamespaceType::Pid if share_pid => "pid",
            _ => continue,
        };
        ns.set_path(Some(PathBuf::from(format!("/proc/{pid}/ns/{file}"))));
    }
}
