//! The object store: what etcd plus the generic registry do for the fake.
//!
//! Objects are `serde_json::Value`s keyed by (kind, namespace, name). One
//! global revision counter plays etcd's revision: every write bumps it and
//! stamps `metadata.resourceVersion`. The history of changes since the last
//! compaction serves watches from an old resourceVersion and lists at an
//! exact one (by rolling the current state back). Writes follow the registry
//! strategies: uid/creationTimestamp/generation on create; status reset on
//! main-resource writes and everything-but-status reset on `/status` writes;
//! generation bumped on changes outside metadata and status; deletion with
//! finalizers marks the object and the write that empties the finalizers
//! deletes it.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

use serde_json::{Value, json};

use super::fields::{self, Writer};
use super::kinds::Kind;
use super::status::ApiError;
use super::strategy::{
    self, check_finalizers, check_resource_version, finalizers, is_crd, meta_str, now,
    prepare_for_update, remove_meta, same_ignoring_times, scope_of, set_meta, spec_part,
};

pub use super::strategy::Preconditions;

/// (kind index, namespace or "" for cluster-scoped, name).
pub type ObjKey = (usize, String, String);

/// Watch event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One committed write.
#[derive(Clone, Debug)]
pub struct Change {
    pub rv: u64,
    pub key: ObjKey,
    pub event: EventType,
    /// The new state; for deletions the last state, stamped with `rv`.
    pub object: Value,
    /// The state before, if any.
    pub prev: Option<Value>,
}

/// How managedFields are maintained for a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Managed {
    /// Record an Update by the manager.
    Update,
    /// Already computed by server-side apply.
    Precomputed,
}

/// Who writes and how.
#[derive(Clone, Copy, Debug)]
pub struct WriteCtx<'a> {
    pub manager: &'a str,
    /// Through the `/status` subresource.
    pub status: bool,
    pub managed: Managed,
    /// The body must carry metadata.resourceVersion (PUT of a custom resource).
    pub require_rv: bool,
}

/// The store.
#[derive(Debug, Default)]
pub struct Store {
    pub kinds: Vec<Kind>,
    rv: u64,
    compacted: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: Vec<Change>,
    outbox: Vec<Change>,
    seq: u64,
    random: RandomState,
}

impl Store {
    pub fn new(kinds: Vec<Kind>) -> Store {
        Store {
            kinds,
            ..Store::default()
        }
    }

    /// The current revision.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// History at or below this revision is gone.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Index of a served kind.
    pub fn kind_index(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.kinds
            .iter()
            .position(|k| k.group == group && k.version == version && k.plural == plural)
    }

    /// Index of the kind for an `apiVersion` + `kind` pair.
    pub fn kind_for(&self, api_version: &str, kind: &str) -> Option<usize> {
        self.kinds
            .iter()
            .position(|k| k.api_version() == api_version && k.kind == kind)
    }

    /// Takes the changes committed since the last call, for the watch hub.
    pub fn drain_outbox(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.outbox)
    }

    fn commit(&mut self, key: ObjKey, event: EventType, object: Value, prev: Option<Value>) -> u64 {
        self.rv += 1;
        let mut object = object;
        set_meta(&mut object, "resourceVersion", json!(self.rv.to_string()));
        if event == EventType::Deleted {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key.clone(), object.clone());
        }
        let change = Change {
            rv: self.rv,
            key,
            event,
            object,
            prev,
        };
        self.history.push(change.clone());
        self.outbox.push(change);
        self.rv
    }

    fn uid(&mut self) -> String {
        self.seq += 1;
        let a = self.random.hash_one(self.seq);
        let b = self.random.hash_one(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    fn generated_name(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.seq += 1;
        let mut n = self.random.hash_one(self.seq);
        let suffix: String = (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect();
        format!("{prefix}{suffix}")
    }

    /// Whether a namespace object exists.
    pub fn namespace_exists(&self, ns: &str) -> bool {
        let Some(k) = self.kind_index("", "v1", "namespaces") else {
            return true;
        };
        self.objects
            .contains_key(&(k, String::new(), ns.to_string()))
    }

    /// The stored object.
    pub fn get(&self, k: usize, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(k, ns.to_string(), name.to_string()))
    }

    /// Creates an object (POST, or apply to a missing object).
    pub fn create(
        &mut self,
        k: usize,
        ns: &str,
        mut obj: Value,
        w: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let kind = self.kinds[k].clone();
        if meta_str(&obj, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = self.object_name(&kind, &obj)?;
        let ns = if kind.namespaced { ns } else { "" };
        let key = (k, ns.to_string(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&kind, &name));
        }
        strategy::prepare_for_create(&kind, ns, &name, &mut obj);
        let uid = self.uid();
        set_meta(&mut obj, "uid", json!(uid));
        if w.managed == Managed::Update {
            remove_meta(&mut obj, "managedFields");
            record_update(&kind, w, &json!({}), &mut obj);
        }
        if is_crd(&kind) {
            self.crd_created(&mut obj);
        }
        self.commit(key.clone(), EventType::Added, obj, None);
        Ok(self.objects[&key].clone())
    }

    /// metadata.name, or one made from metadata.generateName.
    fn object_name(&mut self, kind: &Kind, obj: &Value) -> Result<String, ApiError> {
        match (meta_str(obj, "name"), meta_str(obj, "generateName")) {
            (Some(n), _) if !n.is_empty() => Ok(n.to_string()),
            (_, Some(prefix)) if !prefix.is_empty() => Ok(self.generated_name(prefix)),
            _ => {
                let summary = "Required value: name or generateName is required";
                let field = "metadata.name";
                Err(ApiError::invalid(
                    kind,
                    "",
                    field,
                    "FieldValueRequired",
                    summary,
                ))
            }
        }
    }

    /// Replaces an object through the main resource or `/status`, applying
    /// the registry strategy; deletes it when the write empties the
    /// finalizers of an object being deleted.
    pub fn update(
        &mut self,
        k: usize,
        ns: &str,
        name: &str,
        candidate: Value,
        w: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let kind = self.kinds[k].clone();
        let key = (k, ns.to_string(), name.to_string());
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&kind, name))?;
        check_resource_version(&kind, name, &old, &candidate, w.require_rv)?;
        let mut new = prepare_for_update(&kind, &old, candidate, w.status);
        check_finalizers(&kind, name, &old, &new)?;
        if w.managed == Managed::Update {
            record_update(&kind, w, &old, &mut new);
        }
        if kind.tracks_generation && spec_part(&old) != spec_part(&new) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            set_meta(&mut new, "generation", json!(generation + 1));
        }
        if same_ignoring_times(&old, &new) {
            return Ok(old);
        }
        if meta_str(&new, "deletionTimestamp").is_some() && finalizers(&new).is_empty() {
            // The registry deletes instead of writing (errEmptiedFinalizers):
            // watchers see one DELETED carrying the last stored state.
            let rv = self.commit(key, EventType::Deleted, old.clone(), Some(old));
            set_meta(&mut new, "resourceVersion", json!(rv.to_string()));
            return Ok(new);
        }
        self.commit(key.clone(), EventType::Modified, new, Some(old));
        Ok(self.objects[&key].clone())
    }

    /// Deletes an object: at once without finalizers, else marks it with
    /// deletionTimestamp (and bumps generation) and leaves it to the
    /// finalizers' owners.
    pub fn delete(
        &mut self,
        k: usize,
        ns: &str,
        name: &str,
        pre: &Preconditions,
    ) -> Result<Value, ApiError> {
        let kind = self.kinds[k].clone();
        let key = (k, ns.to_string(), name.to_string());
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&kind, name))?;
        pre.check(&kind, name, &old)?;
        if finalizers(&old).is_empty() {
            let rv = self.commit(key, EventType::Deleted, old.clone(), Some(old.clone()));
            let mut gone = old;
            set_meta(&mut gone, "resourceVersion", json!(rv.to_string()));
            return Ok(gone);
        }
        if meta_str(&old, "deletionTimestamp").is_some() {
            return Ok(old);
        }
        let mut new = old.clone();
        if let Some(generation) = old.pointer("/metadata/generation").and_then(Value::as_i64) {
            set_meta(&mut new, "generation", json!(generation + 1));
        }
        set_meta(&mut new, "deletionTimestamp", json!(now()));
        set_meta(&mut new, "deletionGracePeriodSeconds", json!(0));
        self.commit(key.clone(), EventType::Modified, new, Some(old));
        Ok(self.objects[&key].clone())
    }

    /// Removes an object at once, ignoring finalizers (test control).
    pub fn remove(&mut self, k: usize, ns: &str, name: &str) -> Option<Value> {
        let key = (k, ns.to_string(), name.to_string());
        let old = self.objects.get(&key).cloned()?;
        self.commit(key, EventType::Deleted, old.clone(), Some(old.clone()));
        Some(old)
    }

    /// Objects of a kind (optionally one namespace) at the current revision
    /// or, rolled back through history, at an exact older one.
    pub fn list(
        &self,
        k: usize,
        ns: Option<&str>,
        at: Option<u64>,
    ) -> Result<Vec<Value>, ApiError> {
        let mut state: BTreeMap<ObjKey, Value> = self
            .objects
            .range((k, String::new(), String::new())..)
            .take_while(|(key, _)| key.0 == k)
            .map(|(key, v)| (key.clone(), v.clone()))
            .collect();
        if let Some(at) = at {
            if at < self.compacted {
                return Err(ApiError::expired(
                    "The resourceVersion for the provided list is too old.",
                ));
            }
            for change in self.history.iter().rev().take_while(|c| c.rv > at) {
                if change.key.0 != k {
                    continue;
                }
                match &change.prev {
                    Some(prev) if change.event != EventType::Added => {
                        state.insert(change.key.clone(), prev.clone())
                    }
                    _ => state.remove(&change.key),
                };
            }
        }
        Ok(state
            .into_iter()
            .filter(|(key, _)| ns.is_none_or(|ns| key.1 == ns))
            .map(|(_, v)| v)
            .collect())
    }

    /// Changes of a kind after `rv`; `Err(compacted)` when that history is gone.
    pub fn changes_since(&self, k: usize, rv: u64) -> Result<Vec<Change>, u64> {
        if rv < self.compacted {
            return Err(self.compacted);
        }
        Ok(self
            .history
            .iter()
            .filter(|c| c.rv > rv && c.key.0 == k)
            .cloned()
            .collect())
    }

    /// Forgets all history: older resourceVersions become 410 Gone.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }

    /// The selectableFields a stored CRD declares for a kind, if one is stored.
    pub fn crd_selectable_fields(&self, kind: &Kind) -> Option<Vec<String>> {
        let crd_kind =
            self.kind_index("apiextensions.k8s.io", "v1", "customresourcedefinitions")?;
        let crd = self.get(crd_kind, "", &format!("{}.{}", kind.plural, kind.group))?;
        let versions = crd.pointer("/spec/versions")?.as_array()?;
        let version = versions
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(&kind.version))?;
        Some(super::kinds::selectable_fields(version))
    }

    /// A new CRD: its status says Established, and its kind gets served.
    fn crd_created(&mut self, crd: &mut Value) {
        strategy::establish_crd(crd);
        if let Some(kind) = Kind::from_crd(crd)
            && self
                .kind_index(&kind.group, &kind.version, &kind.plural)
                .is_none()
        {
            self.kinds.push(kind);
        }
    }
}

/// Records an Update by the writer in `new`'s managedFields.
fn record_update(kind: &Kind, w: &WriteCtx, old: &Value, new: &mut Value) {
    let now = now();
    let api_version = kind.api_version();
    let writer = Writer {
        manager: w.manager,
        subresource: if w.status { "status" } else { "" },
        api_version: &api_version,
        now: &now,
    };
    fields::record_update(old, new, scope_of(kind, w.status), &writer);
}
