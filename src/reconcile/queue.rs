//! The work queue, after client-go's: handles are deduplicated while they
//! wait; a handle being reconciled is never handed to a second worker, and
//! if it is added meanwhile it is queued again once the first is done.
//! Delayed adds (backoff, requeue-after) are timers that add when they fire.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::backoff::retry_delay;
use crate::api::Handle;

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Handle>,
    queued: HashSet<Handle>,
    active: HashSet<Handle>,
    dirty: HashSet<Handle>,
    delayed: HashMap<Handle, Instant>,
    failures: HashMap<Handle, u32>,
    shut: bool,
}

/// A deduplicating, per-handle serialising work queue.
#[derive(Debug, Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    ready: Notify,
}

impl WorkQueue {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Queue `handle` now (no-op if already waiting).
    pub fn add(&self, handle: Handle) {
        let mut s = self.lock();
        if s.shut {
            return;
        }
        if s.active.contains(&handle) {
            s.dirty.insert(handle);
        } else if s.queued.insert(handle.clone()) {
            s.ready.push_back(handle);
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Queue `handle` after `delay`, unless an earlier timer is already set.
    pub fn add_after(self: &Arc<Self>, handle: Handle, delay: Duration) {
        if delay.is_zero() {
            return self.add(handle);
        }
        let at = Instant::now() + delay;
        {
            let mut s = self.lock();
            match s.delayed.get(&handle) {
                Some(existing) if *existing <= at => return,
                _ => s.delayed.insert(handle.clone(), at),
            };
        }
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let fire = {
                let mut s = queue.lock();
                let mine = s.delayed.get(&handle) == Some(&at);
                if mine {
                    s.delayed.remove(&handle);
                }
                mine
            };
            if fire {
                queue.add(handle);
            }
        });
    }

    /// The next handle to reconcile; `None` once shut down. The caller must
    /// call [`WorkQueue::done`] with it.
    pub async fn next(&self) -> Option<Handle> {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if s.shut {
                    return None;
                }
                if let Some(h) = s.ready.pop_front() {
                    s.queued.remove(&h);
                    s.active.insert(h.clone());
                    if !s.ready.is_empty() {
                        self.ready.notify_one();
                    }
                    return Some(h);
                }
            }
            notified.await;
        }
    }

    /// Finished with `handle`; it is queued again if it was added meanwhile.
    pub fn done(&self, handle: &Handle) {
        let mut s = self.lock();
        s.active.remove(handle);
        if s.dirty.remove(handle) {
            drop(s);
            self.add(handle.clone());
        }
    }

    /// Count a failure of `handle` and queue it again after the retry backoff.
    pub fn retry(self: &Arc<Self>, handle: Handle, jitter: f64) -> Duration {
        let failures = {
            let mut s = self.lock();
            let n = s.failures.entry(handle.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay = retry_delay(failures, jitter);
        self.add_after(handle, delay);
        delay
    }

    /// `handle` succeeded: reset its failure count.
    pub fn forget(&self, handle: &Handle) {
        self.lock().failures.remove(handle);
    }

    /// Handles waiting to be handed out.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    /// True when nothing waits.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stop handing out work; `next` returns `None` from now on.
    pub fn shutdown(&self) {
        self.lock().shut = true;
        self.ready.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Handle {
        Handle::new(s).unwrap()
    }

    #[tokio::test]
    async fn dedupes_while_waiting() {
        let q = WorkQueue::new();
        q.add(h("a"));
        q.add(h("b"));
        q.add(h("a"));
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, Some(h("a")));
        assert_eq!(q.next().await, Some(h("b")));
    }

    #[tokio::test]
    async fn an_active_handle_is_not_handed_out_twice() {
        let q = WorkQueue::new();
        q.add(h("a"));
        let first = q.next().await.unwrap();
        q.add(h("a"));
        assert!(q.is_empty(), "held back while active");
        q.done(&first);
        assert_eq!(q.len(), 1, "queued again once done");
        assert_eq!(q.next().await, Some(h("a")));
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_adds_fire_once_at_the_earliest_time() {
        let q = WorkQueue::new();
        q.add_after(h("a"), Duration::from_secs(10));
        q.add_after(h("a"), Duration::from_secs(5));
        q.add_after(h("a"), Duration::from_secs(20));
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, Some(h("a")));
        q.done(&h("a"));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(q.is_empty(), "the superseded timers did not fire");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_and_forget_resets() {
        let q = WorkQueue::new();
        assert_eq!(q.retry(h("a"), 0.5), Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(q.next().await, Some(h("a")));
        q.done(&h("a"));
        assert_eq!(q.retry(h("a"), 0.5), Duration::from_millis(1000));
        q.forget(&h("a"));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        q.next().await;
        q.done(&h("a"));
        assert_eq!(q.retry(h("a"), 0.5), Duration::from_millis(500));
    }

    #[tokio::test]
    async fn shutdown_wakes_waiters() {
        let q = WorkQueue::new();
        let q2 = Arc::clone(&q);
        let waiter = tokio::spawn(async move { q2.next().await });
        tokio::task::yield_now().await;
        q.shutdown();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
