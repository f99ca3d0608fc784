//! OOM kills as events that wake the reconcile of their container: one
//! watch per running container's cgroup (an eventfd on v1, inotify on v2;
//! see [`crate::cgroup::OomWatch`]), made through [`ContainerOps`]. A kill of the main process also ends
//! it, which its exit reports; this catches the others, which only an event
//! tells about.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::api::Handle;
use crate::sync::lock;

use super::ops::{ContainerOps, OomEvents};
use super::queue::WorkQueue;

/// The watches, and the OOM kills seen but not yet reported.
#[derive(Debug, Default)]
pub struct OomWatches {
    /// Watched cgroups, as (handle, instance of its cgroup): a container
    /// made again has a new cgroup, and gets a new watch.
    watching: Mutex<HashSet<(Handle, u64)>>,
    /// Containers with an OOM kill not yet reported.
    seen: Mutex<HashSet<Handle>>,
}

impl OomWatches {
    /// Watch the cgroup of `handle` unless it is already: each OOM kill in
    /// it is remembered and queues `handle`. The watch ends with the cgroup.
    pub fn ensure<C: ContainerOps>(
        self: &Arc<Self>,
        containers: &C,
        handle: &Handle,
        queue: &Arc<WorkQueue>,
    ) {
        let Some(instance) = containers.cgroup_instance(handle) else {
            return;
        };
        let key = (handle.clone(), instance);
        if !lock(&self.watching).insert(key.clone()) {
            return;
        }
        let mut watch = match containers.watch_oom(handle) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(%handle, error = %e, "OOM kills in this container will not be reported");
                lock(&self.watching).remove(&key);
                return;
            }
        };
        let (me, queue) = (Arc::clone(self), Arc::clone(queue));
        tokio::spawn(async move {
            while watch.next().await.is_some() {
                lock(&me.seen).insert(key.0.clone());
                queue.add(key.0.clone());
            }
            lock(&me.watching).remove(&key);
        });
    }

    /// Whether an OOM kill in `handle` is waiting to be reported; forgets it.
    pub fn take(&self, handle: &Handle) -> bool {
        lock(&self.seen).remove(handle)
    }
}
