//! User namespaces (`spec.hostUsers: false`): each such container gets a
//! 65,536-id range of its own out of the range the agent owns
//! (`--userns-range`), mapped to ids 0..65535 inside.
//!
//! [`RangePool`] is the pure bookkeeping: which handle holds which range,
//! and the first free block. [`Allocator`] puts it behind a mutex, so that
//! concurrent creates never get the same range, and persists each range in
//! the container's depot directory (`userns.json`) before the range is used:
//! a restarted agent rebuilds the pool from the depot, and a create that
//! crashed leaves a half-made bundle whose destroy frees its range.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::depot::{Depot, DepotError};
use crate::api::Handle;
use crate::fsutil::{self, Durability};

/// The ids one container gets: 65,536, as the kubelet gives a pod.
pub const UNIT: u32 = 65_536;

/// The kubelet's default when no `kubelet` user has subordinate ids: from
/// 65,536, one unit for each of its 110 default pods.
pub const DEFAULT_RANGE: IdRange = IdRange {
    host_id: UNIT,
    size: UNIT * 110,
};

/// Ids `host_id..host_id + size` on the host; inside the container they
/// are `0..size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdRange {
    /// The first host id (container id 0 maps to it).
    pub host_id: u32,
    /// How many ids.
    pub size: u32,
}

impl IdRange {
    /// One past the last host id.
    pub fn end(&self) -> u64 {
        u64::from(self.host_id) + u64::from(self.size)
    }

    /// True when the two share an id.
    pub fn overlaps(&self, other: &IdRange) -> bool {
        u64::from(self.host_id) < other.end() && u64::from(other.host_id) < self.end()
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host_id, self.size)
    }
}

impl FromStr for IdRange {
    type Err = String;

    /// `FIRST:COUNT`, as in /etc/subuid: both multiples of 65,536, the
    /// first at least 65,536 (host root is never mapped), all below 2^32.
    fn from_str(s: &str) -> Result<Self, String> {
        let (first, count) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected FIRST:COUNT, e.g. {DEFAULT_RANGE}"))?;
        let num = |what: &str, v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|e| format!("{s:?}: {what} {v:?}: {e}"))
        };
        let range = IdRange {
            host_id: num("first id", first)?,
            size: num("count", count)?,
        };
        if range.host_id < UNIT
            || !range.host_id.is_multiple_of(UNIT)
            || !range.size.is_multiple_of(UNIT)
        {
            return Err(format!(
                "{s:?}: the first id must be a non-zero multiple of {UNIT}, and the count a multiple of {UNIT}"
            ));
        }
        if range.size == 0 || range.end() > u64::from(u32::MAX) {
            return Err(format!(
                "{s:?}: must hold at least {UNIT} ids and end below 4294967295"
            ));
        }
        Ok(range)
    }
}

/// User-namespace failures.
#[derive(Debug, Error)]
pub enum UsernsError {
    /// Every block of the agent's range is taken.
    #[error(
        "spec.hostUsers: no free {UNIT}-id range left in --userns-range {range} ({used} in use)"
    )]
    Exhausted {
        /// The agent's range.
        range: IdRange,
        /// How many containers hold one.
        used: usize,
    },
    /// The runtime cannot start processes in a user namespace of the
    /// container's own when the network namespace is the node's (CNI's).
    #[error(
        "spec.hostUsers: false on a network of its own needs crun or runc 1.2+: {runtime} \
         cannot exec into a user namespace whose network namespace the node's user namespace \
         owns (use --runtime crun, spec.network: none, or leave hostUsers unset)"
    )]
    RuntimeCannotJoin {
        /// What the runtime says it is.
        runtime: String,
    },
    /// The range could not be recorded in the depot.
    #[error(transparent)]
    Depot(#[from] DepotError),
}

/// Which handle holds which range, within the agent's span.
#[derive(Debug, Clone, PartialEq)]
pub struct RangePool {
    span: IdRange,
    held: BTreeMap<Handle, IdRange>,
}

impl RangePool {
    /// An empty pool over `span`.
    pub fn new(span: IdRange) -> Self {
        Self {
            span,
            held: BTreeMap::new(),
        }
    }

    /// The agent's range.
    pub fn span(&self) -> IdRange {
        self.span
    }

    /// The range `handle` holds.
    pub fn get(&self, handle: &Handle) -> Option<IdRange> {
        self.held.get(handle).copied()
    }

    /// Give `handle` the first free block (its own, when it holds one).
    pub fn allocate(&mut self, handle: &Handle) -> Result<IdRange, UsernsError> {
        if let Some(held) = self.get(handle) {
            return Ok(held);
        }
        let blocks = self.span.size / UNIT;
        let free = (0..blocks)
            .map(|i| IdRange {
                host_id: self.span.host_id + i * UNIT,
                size: UNIT,
            })
            .find(|c| !self.held.values().any(|h| h.overlaps(c)));
        let range = free.ok_or(UsernsError::Exhausted {
            range: self.span,
            used: self.held.len(),
        })?;
        self.held.insert(handle.clone(), range);
        Ok(range)
    }

    /// Note a range found in the depot. One that overlaps another handle's
    /// (a depot edited by hand) is refused: the first one found keeps it.
    pub fn record(&mut self, handle: &Handle, range: IdRange) -> Result<(), Handle> {
        if let Some((other, _)) = self
            .held
            .iter()
            .find(|(h, r)| *h != handle && r.overlaps(&range))
        {
            return Err(other.clone());
        }
        self.held.insert(handle.clone(), range);
        Ok(())
    }

    /// `handle` gave its range back.
    pub fn release(&mut self, handle: &Handle) -> Option<IdRange> {
        self.held.remove(handle)
    }
}

/// Whether the runtime whose `--version` printed `version` can exec into a
/// container whose user namespace is its own but whose network namespace
/// belongs to the node's: runc before 1.2 joins the user namespace first
/// and is then refused the network one; crun, and runc 1.2+, manage.
pub fn execs_into_foreign_netns(version: &str) -> bool {
    let Some(rest) = version.trim_start().strip_prefix("runc version ") else {
        return true;
    };
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    match (major, minor) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 2),
        _ => true,
    }
}

/// The first line of what `<runtime> --version` prints, for messages.
pub fn runtime_name(version: &str) -> String {
    version
        .lines()
        .next()
        .unwrap_or("the runtime")
        .trim()
        .to_string()
}

/// The pool, shared by every create and destroy, and kept in the depot.
#[derive(Debug)]
pub struct Allocator {
    pool: Mutex<RangePool>,
}

impl Allocator {
    /// The pool over `span` with every range the depot's containers hold,
    /// half-made ones included (their destroy frees them).
    pub fn rebuild(depot: &Depot, span: IdRange) -> Result<Self, DepotError> {
        let mut pool = RangePool::new(span);
        for entry in depot.entries()? {
            let Some(range) = recorded(depot, &entry.handle) else {
                continue;
            };
            if let Err(other) = pool.record(&entry.handle, range) {
                tracing::warn!(handle = %entry.handle, %range, %other,
                    "user namespace range overlaps another container's; it stays with the other");
            }
        }
        Ok(Self {
            pool: Mutex::new(pool),
        })
    }

    /// Give `handle` a range and record it in its (reserved) depot
    /// directory before anything uses it.
    pub fn claim(&self, depot: &Depot, handle: &Handle) -> Result<IdRange, UsernsError> {
        let range = self.lock().allocate(handle)?;
        let path = depot.paths(handle).userns();
        if let Err(e) = fsutil::write_json_with(&path, &range, Durability::Volatile) {
            self.lock().release(handle);
            return Err(DepotError::from(e).into());
        }
        Ok(range)
    }

    /// `handle`'s bundle is gone: its range is free.
    pub fn release(&self, handle: &Handle) {
        if let Some(range) = self.lock().release(handle) {
            tracing::debug!(%handle, %range, "user namespace range freed");
        }
    }

    /// The range `handle` holds.
    pub fn get(&self, handle: &Handle) -> Option<IdRange> {
        self.lock().get(handle)
    }

    /// The agent's range.
    pub fn span(&self) -> IdRange {
        self.lock().span()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RangePool> {
        // The pool is consistent after every call; a panic elsewhere while
        // it was held leaves nothing half-done.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The range recorded in `handle`'s directory: `userns.json`, written
/// before the range is used, else the record's copy (a machine crash may
/// lose the first but keep the second). What cannot be read holds no range,
/// with a warning: an unreadable record is the controller's to repair (it
/// remakes the container), not a reason for the agent not to start.
fn recorded(depot: &Depot, handle: &Handle) -> Option<IdRange> {
    let path = depot.paths(handle).userns();
    match std::fs::read(&path) {
        Ok(bytes) if !fsutil::is_unwritten(&bytes) => match serde_json::from_slice(&bytes) {
            Ok(range) => return Some(range),
            Err(e) => tracing::warn!(%handle, path = %path.display(), error = %e,
                    "unreadable user namespace range; trying the record"),
        },
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(%handle, path = %path.display(), error = %e,
            "unreadable user namespace range; trying the record"),
    }
    match depot.record(handle) {
        Ok(Some(record)) => record.userns,
        Ok(None) | Err(DepotError::NotFound(_)) => None,
        Err(e) => {
            tracing::warn!(%handle, error = %e, "no user namespace range known for it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Handle {
        Handle::new(s).unwrap()
    }

    #[test]
    fn ranges_parse_like_subuid() {
        assert_eq!("65536:7208960".parse::<IdRange>().unwrap(), DEFAULT_RANGE);
        assert_eq!(DEFAULT_RANGE.to_string(), "65536:7208960");
        for bad in [
            "65536",
            "0:65536",
            "65537:65536",
            "65536:100",
            "65536:0",
            "x:65536",
            "4294901760:65536",
        ] {
            assert!(bad.parse::<IdRange>().is_err(), "{bad} must be refused");
        }
        assert!("4294836224:65536".parse::<IdRange>().is_ok());
    }

    #[test]
    fn only_runc_before_1_2_cannot_exec_across() {
        assert!(!execs_into_foreign_netns(
            "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\n"
        ));
        assert!(!execs_into_foreign_netns("runc version 1.0.0-rc93"));
        assert!(execs_into_foreign_netns("runc version 1.2.0\n"));
        assert!(execs_into_foreign_netns("runc version 2.0.1"));
        assert!(execs_into_foreign_netns(
            "crun version 1.8.1\ncommit: f8a0\n"
        ));
        assert!(execs_into_foreign_netns(""));
        assert_eq!(
            runtime_name("runc version 1.1.5\ncommit: x"),
            "runc version 1.1.5"
        );
    }

    #[test]
    fn blocks_are_disjoint_first_free_and_reused() {
        let mut pool = RangePool::new(IdRange {
            host_id: UNIT,
            size: 3 * UNIT,
        });
        let a = pool.allocate(&h("a")).unwrap();
        let b = pool.allocate(&h("b")).unwrap();
        assert_eq!(a.host_id, UNIT);
        assert_eq!(b.host_id, 2 * UNIT);
        assert!(!a.overlaps(&b));
        assert_eq!(pool.allocate(&h("a")).unwrap(), a, "a handle keeps its own");
        pool.allocate(&h("c")).unwrap();
        assert!(matches!(
            pool.allocate(&h("d")),
            Err(UsernsError::Exhausted { used: 3, .. })
        ));
        assert_eq!(pool.release(&h("a")), Some(a));
        assert_eq!(
            pool.allocate(&h("d")).unwrap(),
            a,
            "a freed block is reused"
        );
    }

    #[test]
    fn recorded_ranges_are_skipped_even_off_the_grid() {
        let mut pool = RangePool::new(IdRange {
            host_id: UNIT,
            size: 4 * UNIT,
        });
        // Recorded under an older --userns-range, half a block off.
        let old = IdRange {
            host_id: UNIT + UNIT / 2,
            size: UNIT,
        };
        pool.record(&h("old"), old).unwrap();
        assert_eq!(
            pool.record(
                &h("clash"),
                IdRange {
                    host_id: 2 * UNIT,
                    size: UNIT
                }
            ),
            Err(h("old"))
        );
        let next = pool.allocate(&h("new")).unwrap();
        assert_eq!(
            next.host_id,
            3 * UNIT,
            "both blocks the old range touches are skipped"
        );
    }

    #[test]
    fn allocator_persists_and_rebuilds_from_the_depot() {
        let dir = std::env::temp_dir().join(format!("rundmc-userns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let depot = Depot::open(&dir).unwrap();
        let alloc = Allocator::rebuild(&depot, DEFAULT_RANGE).unwrap();
        depot.reserve(&h("a")).unwrap();
        depot.reserve(&h("b")).unwrap();
        let a = alloc.claim(&depot, &h("a")).unwrap();
        let b = alloc.claim(&depot, &h("b")).unwrap();
        assert!(!a.overlaps(&b));

        let again = Allocator::rebuild(&depot, DEFAULT_RANGE).unwrap();
        assert_eq!(again.get(&h("a")), Some(a));
        assert_eq!(again.get(&h("b")), Some(b));

        depot.remove(&h("a")).unwrap();
        again.release(&h("a"));
        depot.reserve(&h("c")).unwrap();
        assert_eq!(again.claim(&depot, &h("c")).unwrap(), a);
        // Unreadable: no range, and no reason not to start.
        depot.reserve(&h("bad")).unwrap();
        std::fs::write(
            depot.paths(&h("bad")).record(),
            b"{\"handle\": \"bad\", \"sp",
        )
        .unwrap();
        let with_bad = Allocator::rebuild(&depot, DEFAULT_RANGE).unwrap();
        assert_eq!(with_bad.get(&h("bad")), None);
        assert_eq!(with_bad.get(&h("c")), Some(a));
        let missing = alloc.claim(&depot, &h("gone"));
        assert!(matches!(missing, Err(UsernsError::Depot(_))));
        assert_eq!(
            alloc.get(&h("gone")),
            None,
            "a range not recorded is not held"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
