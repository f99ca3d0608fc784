//! Mirror bookkeeping, with one owner: the mirror `Container` objects this
//! agent published for file-sourced containers. The Kubernetes reporter
//! writes it as it publishes; the Kubernetes source feeds it what the server
//! shows ([`MirrorSight`]), which marks a mirror someone else changed or
//! deleted as stale, to be published anew.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api::Handle;
use crate::source::MirrorSight;

/// The mirror object this agent published for a file-sourced container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirror {
    /// Its name.
    pub name: String,
    /// Its uid, which tells it from an older object of the same name;
    /// empty while it is being (re)created.
    pub uid: String,
    /// Its `metadata.generation` after this agent's last apply.
    pub generation: i64,
    /// The hash of the spec this agent applies (set before the apply, so
    /// the watch event of that apply, however early, matches it).
    pub spec_hash: String,
    /// Someone else changed its spec, or deleted it: publish it anew.
    pub stale: bool,
}

impl Mirror {
    /// Whether the server showing object `uid` so means someone else
    /// changed or deleted this mirror. Events about other objects of the
    /// name, events older than this agent's last apply, and the event of
    /// its own apply arriving before the apply's answer, do not count.
    pub fn changed_by(&self, uid: &str, sight: &MirrorSight) -> bool {
        uid == self.uid
            && match sight {
                MirrorSight::Deleted => true,
                MirrorSight::At {
                    generation,
                    spec_hash,
                } => *generation > self.generation && *spec_hash != self.spec_hash,
            }
    }

    /// Whether it names an object this agent's apply made (its uid is known).
    pub fn published(&self) -> bool {
        !self.name.is_empty() && !self.uid.is_empty()
    }
}

/// Every mirror this agent published, by the handle it mirrors.
#[derive(Debug, Default)]
pub struct Mirrors {
    table: Mutex<HashMap<Handle, Mirror>>,
}

impl Mirrors {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Handle, Mirror>> {
        crate::sync::lock(&self.table)
    }

    /// The mirror published for `handle`, if any.
    pub fn get(&self, handle: &Handle) -> Option<Mirror> {
        self.lock().get(handle).cloned()
    }

    /// Remember the mirror just published for `handle` (`None`: removed).
    pub fn set(&self, handle: &Handle, mirror: Option<Mirror>) {
        let mut table = self.lock();
        match mirror {
            Some(m) => table.insert(handle.clone(), m),
            None => table.remove(handle),
        };
    }

    /// The server shows mirror object `uid` of `handle` so. True when that
    /// makes the mirror stale: someone else changed or deleted what this
    /// agent published.
    pub fn seen(&self, handle: &Handle, uid: &str, sight: &MirrorSight) -> bool {
        match self.lock().get_mut(handle) {
            Some(m) if m.changed_by(uid, sight) => {
                m.stale = true;
                true
            }
            _ => false,
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
    fn a_mirror_is_stale_only_when_someone_else_changed_it() {
        let m = Mirror {
            name: "web-node-1".into(),
            uid: "u1".into(),
            generation: 2,
            spec_hash: "ours".into(),
            stale: false,
        };
        let at = |generation, spec_hash: &str| MirrorSight::At {
            generation,
            spec_hash: spec_hash.to_string(),
        };
        // The event of our own apply, early (before its answer) or on time.
        assert!(!m.changed_by("u1", &at(3, "ours")));
        assert!(!m.changed_by("u1", &at(2, "ours")));
        // An event older than our last apply.
        assert!(!m.changed_by("u1", &at(1, "older")));
        // Someone else's spec edit, or deletion.
        assert!(m.changed_by("u1", &at(3, "theirs")));
        assert!(m.changed_by("u1", &MirrorSight::Deleted));
        // Another object of the name: one we replaced, or one being made.
        assert!(!m.changed_by("u0", &MirrorSight::Deleted));
        assert!(!Mirror::default().changed_by("u1", &MirrorSight::Deleted));

        let mirrors = Mirrors::default();
        let handle = h("web");
        assert!(
            !mirrors.seen(&handle, "u1", &MirrorSight::Deleted),
            "none published"
        );
        mirrors.set(&handle, Some(m.clone()));
        assert!(mirrors.seen(&handle, "u1", &at(3, "theirs")));
        assert!(mirrors.get(&handle).unwrap().stale);
        mirrors.set(&handle, None);
        assert_eq!(mirrors.get(&handle), None);
    }

    #[test]
    fn a_mirror_being_created_is_not_published() {
        assert!(!Mirror::default().published());
        let mut m = Mirror {
            name: "web-node-1".into(),
            ..Mirror::default()
        };
        assert!(!m.published());
        m.uid = "u1".into();
        assert!(m.published());
    }
}
