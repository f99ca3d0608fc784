//! OOM kills as events that wake the reconcile of their container: one
//! watch per running container's cgroup (an eventfd on v1, inotify on v2;
//! see [`crate::cgroup::OomWatch`]). A kill of the main process also ends
//! it, which its exit reports; this catches the others, which only an event
//! tells about.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use crate::api::Handle;
use crate::cgroup::{Cgroup, OomWatch};
use crate::sync::lock;

use super::queue::WorkQueue;

/// The watches, and the OOM kills seen but not yet reported.
#[derive(Debug, Default)]
pub struct OomWatches {
    /// Watched cgroups, as (handle, inode of the watched directory): a
    /// container made again has a new cgroup, and gets a new watch.
    watching: Mutex<HashSet<(Handle, u64)>>,
    /// Containers with an OOM kill not yet reported.
    seen: Mutex<HashSet<Handle>>,
}

impl OomWatches {
    /// Watch `cgroup` of `handle` unless it is already: each OOM kill in it
    /// is remembered and queues `handle`. The watch ends with the cgroup.
    pub fn ensure(self: &Arc<Self>, handle: &Handle, cgroup: &Cgroup, queue: &Arc<WorkQueue>) {
        let Some(ino) = cgroup
            .oom_counter_file()
            .ok()
            .and_then(|f| std::fs::metadata(f.parent()?).ok())
            .map(|m| m.ino())
        else {
            return;
        };
        let key = (handle.clone(), ino);
        if !lock(&self.watching).insert(key.clone()) {
            return;
        }
        let mut watch = match OomWatch::new(cgroup) {
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
