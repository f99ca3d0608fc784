//! `info` and `metrics`: what a container is, read back from the depot and
//! the runtime's state; what it uses, read from its cgroup files in-process.

use crate::network::counters::NetCounters;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::rootfs::Mounter;
use super::{Containerizer, Result};
use crate::api::{Handle, Limits};
use crate::cgroup::Metrics;
use crate::runtime::{OciRuntime, Status};

/// A container as the depot and the runtime describe it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    /// The handle.
    pub handle: Handle,
    /// The runtime's status; `None` when the runtime has lost the container.
    pub status: Option<Status>,
    /// Host pid of init.
    pub init_pid: Option<i32>,
    /// The OCI bundle directory (see [`super::depot`]).
    pub bundle: PathBuf,
    /// The image directory the rootfs is made from.
    pub rootfs: String,
    /// The limits in force.
    pub limits: Limits,
    /// The spec's properties.
    pub properties: BTreeMap<String, String>,
    /// Labels attached at create.
    pub labels: BTreeMap<String, String>,
    /// Hash of the spec the container runs.
    pub spec_hash: String,
    /// When it was created.
    pub created_at: String,
}

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// Describe `handle`.
    pub async fn info(&self, handle: &Handle) -> Result<Info> {
        let record = self
            .depot
            .record(handle)?
            .ok_or_else(|| super::depot::DepotError::NotFound(handle.clone()))?;
        let state = self.runtime_state(handle).await?;
        Ok(Info {
            handle: handle.clone(),
            status: state.as_ref().map(|s| s.status),
            init_pid: state.as_ref().and_then(|s| s.pid),
            bundle: self.depot.paths(handle).bundle,
            rootfs: record.spec.rootfs.clone(),
            limits: record.spec.limits.clone(),
            properties: record.spec.properties.clone(),
            labels: record.labels,
            spec_hash: record.spec_hash,
            created_at: record.created_at,
        })
    }

    /// CPU, memory, pids and OOM kills of `handle`, from its cgroup files.
    pub fn metrics(&self, handle: &Handle) -> Result<Metrics> {
        self.cgroup(handle)
            .metrics()
            .map_err(Self::cgroup_err(handle))
    }

    /// `handle`'s network counters, summed over its interfaces, when it has
    /// a network of its own: read through any of its processes' view of
    /// its namespace (`/proc/<pid>/net/dev`), in-process.
    pub fn network_counters(&self, handle: &Handle) -> Option<NetCounters> {
        let netns = self.networking.as_ref()?.netns_dir.join(handle.as_str());
        if !crate::network::netns::is_pinned(&netns) {
            return None;
        }
        let pid = *self.cgroup(handle).procs().ok()?.first()?;
        let interfaces = crate::network::counters::read(pid).ok()?;
        Some(
            interfaces
                .iter()
                .fold(NetCounters::default(), |sum, (_, n)| NetCounters {
                    rx_bytes: sum.rx_bytes + n.rx_bytes,
                    rx_packets: sum.rx_packets + n.rx_packets,
                    tx_bytes: sum.tx_bytes + n.tx_bytes,
                    tx_packets: sum.tx_packets + n.tx_packets,
                }),
        )
    }
}
