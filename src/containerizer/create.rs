//! `create`: validate, reserve the handle, mount the rootfs, write the
//! bundle, start init under the runtime, and only then record the container
//! as complete. Any failure rolls back through destroy, so a failed create
//! leaves nothing behind.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::bundle::{self, BundleInput, CapSet};
use super::depot::{ContainerRecord, spec_hash};
use super::rootfs::{Mounter, inherited_bind_flags};
use super::{Containerizer, ContainerizerError, ErrorKind, Result};
use crate::api::{ContainerSpec, Handle, validate};
use crate::fsutil;
use crate::runtime::OciRuntime;

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// Create `handle` from `spec` and start its init. `labels` are kept in
    /// the depot record (e.g. which source declared it).
    pub async fn create(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        let resources = validate::validate(spec)
            .and_then(|()| validate::resources(&spec.limits))
            .map_err(|errors| ContainerizerError::at(handle, ErrorKind::Invalid { errors }))?;
        let bind_flags = self.check_host_paths(handle, spec)?;
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
        };
        log_left_out_capabilities(handle, spec.privileged, input.bounding_set);
        if let Err(err) = self.build_and_start(handle, spec, &input, labels).await {
            if let Err(cleanup) = self.destroy(handle).await {
                tracing::warn!(%handle, error = %cleanup, "rolling back a failed create");
            }
            return Err(err);
        }
        Ok(())
    }

    /// The rootfs must be a directory and every bind source must exist;
    /// returns the flags each bind must keep. Nothing is written.
    fn check_host_paths(&self, handle: &Handle, spec: &ContainerSpec) -> Result<Vec<Vec<String>>> {
        if !Path::new(&spec.rootfs).is_dir() {
            return Err(ContainerizerError::at(
                handle,
                ErrorKind::RootfsMissing {
                    path: spec.rootfs.clone().into(),
                },
            ));
        }
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
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        let paths = self.depot.paths(handle);
        // The handle is ours from the reservation on: whatever still runs in
        // its cgroup (a container whose runtime state was lost before the
        // depot forgot it) would join the new container's.
        let leftovers = self.kill_leftovers(handle).await?;
        if leftovers > 0 {
            tracing::warn!(%handle, count = leftovers, "killed processes left in the cgroup before creating");
        }
        for dir in [
            paths.rootfs(),
            paths.upper(),
            paths.work(),
            paths.processes(),
        ] {
            fs::create_dir(&dir).map_err(|e| {
                ContainerizerError::at(
                    handle,
                    ErrorKind::Fs {
                        source: fsutil::FsError::new(&dir, e),
                    },
                )
            })?;
        }
        self.mounter
            .mount_overlay(
                Path::new(&spec.rootfs),
                &paths.upper(),
                &paths.work(),
                &paths.rootfs(),
            )
            .map_err(Self::rootfs_err(handle))?;
        let config = bundle::canonical_json(&bundle::generate(input));
        fsutil::write_json_with(&paths.config(), &config, fsutil::Durability::Volatile)
            .map_err(|source| ContainerizerError::at(handle, ErrorKind::Fs { source }))?;
        self.runtime
            .create(handle.as_str(), &paths.dir)
            .await
            .map_err(Self::runtime_err(handle))?;
        self.runtime
            .start(handle.as_str())
            .await
            .map_err(Self::runtime_err(handle))?;
        let record = ContainerRecord {
            handle: handle.clone(),
            spec: spec.clone(),
            spec_hash: spec_hash(spec),
            created_at: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            labels,
        };
        self.depot.write_record(&record)?;
        Ok(())
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
/// cannot be read, so a failure here changes nothing.
pub fn bounding_set() -> CapSet {
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
fn log_left_out_capabilities(handle: &Handle, privileged: bool, bounding: CapSet) {
    let (_, left_out) = bundle::wanted_capabilities(privileged, bounding);
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
