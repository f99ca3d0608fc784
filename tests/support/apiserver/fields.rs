//! `metadata.managedFields` bookkeeping for server-side apply, simplified.
//!
//! Each entry (manager, operation, subresource) owns a set of field paths,
//! encoded as `FieldsV1` (`{"f:spec":{"f:nodeName":{}}}`, with `"."` marking
//! an owned map). Simplifications against the real structured-merge-diff:
//! - paths descend into JSON objects, and into `metadata.finalizers`, a set
//!   as on a real server: each item is its own field (`v:"<item>"`), so
//!   managers own items, an apply adds its items to the others' and removes
//!   only its own. Every other list is atomic (one leaf): what a CRD list
//!   without `x-kubernetes-list-type` is, but not what `ownerReferences` (a
//!   map keyed by uid) is on a real server;
//! - an owned map is recorded with `"."` wherever it appears, where the real
//!   server does so only for maps (not structs) in the schema;
//! - ownership is tracked for everything but apiVersion, kind and metadata
//!   other than labels, annotations, finalizers and ownerReferences.
//!
//! The kept semantics are the ones controllers rely on: an Update takes the
//! fields it changed away from other managers; an Apply conflicts (409) on a
//! field another manager owns with a different value unless forced, and
//! removes fields its manager applied before but no longer applies and nobody
//! else owns.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A field path: object keys from the root.
pub type Path = Vec<String>;

/// Paths owned by one manager entry.
pub type FieldSet = BTreeSet<Path>;

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

/// Which part of an object a write may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The whole object (no status subresource).
    All,
    /// Everything but status (main resource of a kind with /status).
    NoStatus,
    /// Only status (the /status subresource).
    StatusOnly,
}

/// Whether ownership of `path` is tracked for a write in `scope`.
pub fn tracked(path: &[String], scope: Scope) -> bool {
    let Some(first) = path.first() else {
        return false;
    };
    match first.as_str() {
        "apiVersion" | "kind" => false,
        "metadata" => {
            scope != Scope::StatusOnly
                && path.len() > 1
                && matches!(
                    path[1].as_str(),
                    "labels" | "annotations" | "finalizers" | "ownerReferences"
                )
        }
        "status" => scope != Scope::NoStatus,
        _ => scope != Scope::StatusOnly,
    }
}

/// Every owned-able path in `value`: leaves and non-empty maps, filtered.
pub fn paths_of(value: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    collect(value, &mut Vec::new(), &mut out);
    out.retain(|p| tracked(p, scope));
    out
}

/// The lists kept as sets of items: only `metadata.finalizers`.
fn is_set_list(path: &[String]) -> bool {
    path == ["metadata", "finalizers"]
}

/// The path segment of a set item: `v:` and its JSON.
fn item_segment(item: &Value) -> String {
    format!("v:{item}")
}

fn collect(value: &Value, prefix: &mut Path, out: &mut FieldSet) {
    if let (Value::Array(items), true) = (value, is_set_list(prefix)) {
        for item in items {
            prefix.push(item_segment(item));
            out.insert(prefix.clone());
            prefix.pop();
        }
        return;
    }
    if let Value::Object(map) = value
        && !map.is_empty()
    {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        for (k, v) in map {
            prefix.push(k.clone());
            collect(v, prefix, out);
            prefix.pop();
        }
    } else if !prefix.is_empty() {
        out.insert(prefix.clone());
    }
}

/// The value at `path`, if present.
pub fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |cur, seg| match cur {
        Value::Array(items) => items.iter().find(|i| item_segment(i) == *seg),
        _ => cur.get(seg),
    })
}

fn is_leaf(value: &Value) -> bool {
    !matches!(value, Value::Object(m) if !m.is_empty())
}

/// `.spec.nodeName` as the apiserver prints paths in conflicts.
pub fn dotted(path: &[String]) -> String {
    path.iter().map(|s| format!(".{s}")).collect()
}

/// Reads `metadata.managedFields` from an object.
pub fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let text = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let mut fields = FieldSet::new();
            if let Some(f) = e.get("fieldsV1") {
                decode(f, &mut Vec::new(), &mut fields);
            }
            Entry {
                manager: text("manager"),
                operation: text("operation"),
                subresource: text("subresource"),
                api_version: text("apiVersion"),
                time: text("time"),
                fields,
            }
        })
        .collect()
}

fn decode(node: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(map) = node.as_object() else { return };
    if !prefix.is_empty() && (map.is_empty() || map.contains_key(".")) {
        out.insert(prefix.clone());
    }
    for (k, v) in map {
        let seg = match k.strip_prefix("f:") {
            Some(seg) => seg,
            None if k.starts_with("v:") => k.as_str(),
            None => continue,
        };
        prefix.push(seg.to_string());
        decode(v, prefix, out);
        prefix.pop();
    }
}

fn has_descendant(fields: &FieldSet, path: &Path) -> bool {
    fields
        .range(path.clone()..)
        .nth(1)
        .is_some_and(|next| next.starts_with(path))
}

/// An entry owns a map only together with something in it: a map whose
/// fields all went to other managers is no longer owned either.
fn prune(obj: &Value, fields: &FieldSet) -> FieldSet {
    fields
        .iter()
        .filter(|p| get_path(obj, p).is_none_or(is_leaf) || has_descendant(fields, p))
        .cloned()
        .collect()
}

/// Writes entries (dropping empty ones) into `metadata.managedFields`.
pub fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let pruned: Vec<Entry> = entries
        .iter()
        .map(|e| Entry {
            fields: prune(obj, &e.fields),
            ..e.clone()
        })
        .collect();
    let list: Vec<Value> = pruned
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn encode(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for seg in path {
            let key = match seg.starts_with("v:") {
                true => seg.clone(),
                false => format!("f:{seg}"),
            };
            node = node
                .entry(key)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("encode only inserts objects");
        }
        if has_descendant(fields, path) {
            node.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

/// Who is writing, for managedFields.
#[derive(Clone, Debug)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub subresource: &'a str,
    pub api_version: &'a str,
    pub now: &'a str,
}

/// Records an Update: the writer takes every path it added or changed from
/// `old` to `new`; paths that vanished are dropped from every entry.
pub fn record_update(old: &Value, new: &mut Value, scope: Scope, w: &Writer) {
    let mut entries = read_entries(old);
    let old_paths = paths_of(old, Scope::All);
    let new_paths = paths_of(new, Scope::All);
    let changed: FieldSet = paths_of(new, scope)
        .into_iter()
        .filter(|p| {
            let now = get_path(new, p);
            !old_paths.contains(p) || (now.is_some_and(is_leaf) && get_path(old, p) != now)
        })
        .collect();
    for e in entries.iter_mut() {
        e.fields
            .retain(|p| new_paths.contains(p) && !changed.contains(p));
    }
    if !changed.is_empty() {
        let entry = take_entry(&mut entries, w, "Update");
        entry.fields.extend(changed);
    }
    write_entries(new, &entries);
}

fn take_entry<'e>(entries: &'e mut Vec<Entry>, w: &Writer, operation: &str) -> &'e mut Entry {
    let pos = entries
        .iter()
        .position(|e| e.same_owner(w.manager, operation, w.subresource));
    let pos = pos.unwrap_or_else(|| {
        entries.push(Entry {
            manager: w.manager.to_string(),
            operation: operation.to_string(),
            subresource: w.subresource.to_string(),
            api_version: w.api_version.to_string(),
            time: String::new(),
            fields: FieldSet::new(),
        });
        entries.len() - 1
    });
    let entry = &mut entries[pos];
    entry.time = w.now.to_string();
    entry.api_version = w.api_version.to_string();
    entry
}

/// A field another manager owns with a different value: (manager, apiVersion, `.path`).
pub type Conflict = (String, String, String);

/// Server-side apply of `applied` onto `live` (an empty object when
/// creating). Returns the merged object with managedFields updated, or the
/// conflicts when not forced.
pub fn apply(
    live: &Value,
    applied: &Value,
    scope: Scope,
    force: bool,
    w: &Writer,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = read_entries(live);
    let applied_paths = paths_of(applied, scope);
    let is_me = |e: &Entry| e.same_owner(w.manager, "Apply", w.subresource);
    let mut conflicts = Vec::new();
    for e in entries.iter_mut().filter(|e| !is_me(e)) {
        let clashing: Vec<Path> = e
            .fields
            .iter()
            .filter(|p| applied_paths.contains(*p))
            .filter(|p| get_path(applied, p).is_some_and(is_leaf))
            .filter(|p| get_path(live, p) != get_path(applied, p))
            .cloned()
            .collect();
        if force {
            e.fields.retain(|p| !clashing.contains(p));
        } else {
            conflicts.extend(
                clashing
                    .iter()
                    .map(|p| (e.manager.clone(), e.api_version.clone(), dotted(p))),
            );
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let previously: FieldSet = entries
        .iter()
        .filter(|e| is_me(e))
        .flat_map(|e| e.fields.clone())
        .collect();
    let owned_by_others: FieldSet = entries
        .iter()
        .filter(|e| !is_me(e))
        .flat_map(|e| e.fields.clone())
        .collect();
    let mut merged = live.clone();
    let dropped: Vec<&Path> = previously
        .difference(&applied_paths)
        .filter(|p| !owned_by_others.contains(*p))
        .collect();
    // Deepest first, so a map emptied by removing its fields goes too.
    for path in dropped.into_iter().rev() {
        remove_path(&mut merged, path);
    }
    let mut applied = restrict(applied, scope);
    union_finalizers(&mut merged, &mut applied);
    merge_into(&mut merged, &applied);
    let entry = take_entry(&mut entries, w, "Apply");
    entry.fields = applied_paths;
    write_entries(&mut merged, &entries);
    Ok(merged)
}

/// Only the parts of `applied` a write in `scope` may set.
fn restrict(applied: &Value, scope: Scope) -> Value {
    let Some(map) = applied.as_object() else {
        return applied.clone();
    };
    let keep = |k: &str| match scope {
        Scope::All => true,
        Scope::NoStatus => k != "status",
        Scope::StatusOnly => k == "status",
    };
    Value::Object(
        map.iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// An apply's finalizers join the ones it does not remove (a set), and
/// an emptied set goes.
fn union_finalizers(merged: &mut Value, applied: &mut Value) {
    let Some(Value::Array(new)) = applied.pointer("/metadata/finalizers").cloned() else {
        return;
    };
    let mut all = match merged.pointer("/metadata/finalizers") {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    for item in new {
        if !all.contains(&item) {
            all.push(item);
        }
    }
    for obj in [merged, applied] {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            match all.is_empty() {
                true => meta.remove("finalizers"),
                false => meta.insert("finalizers".into(), Value::Array(all.clone())),
            };
        }
    }
}

fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let parent = parents
        .iter()
        .try_fold(&mut *obj, |cur, seg| cur.get_mut(seg));
    if let Some(Value::Array(items)) = parent {
        items.retain(|i| item_segment(i) != *last);
        return;
    }
    let Some(Value::Object(parent)) = parent else {
        return;
    };
    let removable = parent
        .get(last)
        .is_some_and(|v| is_leaf(v) || v.as_object().is_some_and(Map::is_empty));
    if removable {
        parent.remove(last);
    }
}

/// Deep merge: maps merge key by key, anything else replaces.
pub fn merge_into(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_into(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            subresource: "status",
            api_version: "rundmc.io/v1alpha1",
            now: "2024-01-01T00:00:00Z",
        }
    }

    #[test]
    fn fields_v1_round_trips() {
        let obj = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "status": {"phase": "Running", "c": [1]}});
        let fields = paths_of(&obj, Scope::All);
        let mut with = obj.clone();
        write_entries(
            &mut with,
            &[Entry {
                manager: "m".into(),
                operation: "Apply".into(),
                subresource: String::new(),
                api_version: "v1".into(),
                time: "t".into(),
                fields: fields.clone(),
            }],
        );
        let encoded = with.pointer("/metadata/managedFields/0/fieldsV1").unwrap();
        assert_eq!(encoded["f:status"]["f:phase"], json!({}));
        assert_eq!(encoded["f:status"]["."], json!({}));
        assert!(
            encoded["f:metadata"].get(".").is_none(),
            "metadata itself is not owned"
        );
        assert_eq!(read_entries(&with)[0].fields, fields);
    }

    #[test]
    fn apply_drops_fields_no_longer_applied() {
        let first = json!({"status": {"phase": "Failed", "lastTermination": {"exitCode": 1}}});
        let live = apply(
            &json!({"metadata": {}}),
            &first,
            Scope::StatusOnly,
            false,
            &writer("a"),
        )
        .unwrap();
        let second = json!({"status": {"phase": "Running"}});
        let live = apply(&live, &second, Scope::StatusOnly, false, &writer("a")).unwrap();
        assert_eq!(live["status"], json!({"phase": "Running"}));
    }

    #[test]
    fn apply_conflicts_unless_forced() {
        let live = apply(
            &json!({"metadata": {}}),
            &json!({"status": {"phase": "A"}}),
            Scope::StatusOnly,
            false,
            &writer("a"),
        )
        .unwrap();
        let other = json!({"status": {"phase": "B"}});
        let err = apply(&live, &other, Scope::StatusOnly, false, &writer("b")).unwrap_err();
        assert_eq!(
            err,
            vec![(
                "a".into(),
                "rundmc.io/v1alpha1".into(),
                ".status.phase".into()
            )]
        );
        let same = json!({"status": {"phase": "A"}});
        assert!(
            apply(&live, &same, Scope::StatusOnly, false, &writer("b")).is_ok(),
            "same value co-owns"
        );
        let forced = apply(&live, &other, Scope::StatusOnly, true, &writer("b")).unwrap();
        assert_eq!(forced["status"]["phase"], "B");
        let a = read_entries(&forced).into_iter().find(|e| e.manager == "a");
        assert!(a.is_none(), "forced apply took a's only field");
    }

    #[test]
    fn update_takes_changed_fields() {
        let live = apply(
            &json!({"metadata": {}}),
            &json!({"status": {"phase": "A"}}),
            Scope::StatusOnly,
            false,
            &writer("a"),
        )
        .unwrap();
        let mut new = live.clone();
        new["status"]["phase"] = json!("C");
        record_update(&live, &mut new, Scope::StatusOnly, &writer("edit"));
        let entries = read_entries(&new);
        assert_eq!(entries.len(), 1, "a lost its only field: {entries:?}");
        assert_eq!(entries[0].manager, "edit");
        assert!(
            entries[0]
                .fields
                .contains(&vec!["status".to_string(), "phase".to_string()])
        );
    }

    #[test]
    fn finalizers_are_a_set_of_items_each_manager_owns_its_own() {
        let fin = |v: &Value| v.pointer("/metadata/finalizers").cloned();
        let ours = json!({"metadata": {"finalizers": ["rundmc.io/cleanup"]}});
        let live = apply(
            &json!({"metadata": {}}),
            &ours,
            Scope::NoStatus,
            true,
            &writer("a"),
        )
        .unwrap();
        let theirs = json!({"metadata": {"finalizers": ["other/hold"]}});
        let live =
            apply(&live, &theirs, Scope::NoStatus, false, &writer("b")).expect("no conflict");
        assert_eq!(fin(&live), Some(json!(["rundmc.io/cleanup", "other/hold"])));
        let fields = &read_entries(&live)[0].fields;
        assert!(fields.contains(&vec![
            "metadata".to_string(),
            "finalizers".to_string(),
            r#"v:"rundmc.io/cleanup""#.to_string()
        ]));
        // Each removes only its own item.
        let none = json!({"metadata": {"finalizers": []}});
        let live = apply(&live, &none, Scope::NoStatus, true, &writer("a")).unwrap();
        assert_eq!(fin(&live), Some(json!(["other/hold"])));
        let live = apply(&live, &none, Scope::NoStatus, true, &writer("b")).unwrap();
        assert_eq!(fin(&live), None, "an emptied set goes");
    }
}
