//! `update_limits` and `update_record`: changes applied to a running
//! container in place. Limits go through the runtime's `update`, so no
//! process restarts and every pid stays the same.

use super::bundle::limit_resources;
use super::depot::{DepotError, spec_hash};
use super::rootfs::Mounter;
use super::{Containerizer, ContainerizerError, ErrorKind, Result};
use crate::api::{ContainerSpec, Handle, validate};
use crate::runtime::OciRuntime;

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// Apply `spec`'s limits to the running container and record `spec`.
    pub async fn update_limits(&self, handle: &Handle, spec: &ContainerSpec) -> Result<()> {
        let resources = validate::resources(&spec.limits)
            .map_err(|errors| ContainerizerError::at(handle, ErrorKind::Invalid { errors }))?;
        let linux = limit_resources(&resources, true);
        self.runtime
            .update(handle.as_str(), &linux)
            .await
            .map_err(Self::runtime_err(handle))?;
        self.update_record(handle, spec)
    }

    /// Record `spec` as the container's spec, for changes that need no
    /// action on the container itself.
    pub fn update_record(&self, handle: &Handle, spec: &ContainerSpec) -> Result<()> {
        let mut record = self
            .depot
            .record(handle)?
            .ok_or_else(|| DepotError::NotFound(handle.clone()))?;
        record.spec = spec.clone();
        record.spec_hash = spec_hash(spec);
        Ok(self.depot.write_record(&record)?)
    }
}
