//! The registry strategies and metadata rules the store applies on writes:
//! what an update through the main resource or `/status` may change, which
//! metadata the server owns, finalizer and precondition checks, and what a
//! new CRD's status says. Pure functions over `serde_json::Value`.

use serde_json::{Value, json};

use super::fields::Scope;
use super::kinds::Kind;
use super::status::ApiError;

/// Now, as the apiserver formats `metav1.Time` (seconds, UTC).
pub fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| now.to_string())
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

pub fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"][field] = value;
}

pub fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove(field);
    }
}

/// Everything outside metadata and status: what bumps generation.
pub fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    v
}

/// Equal but for managedFields timestamps: such a write is a no-op.
pub fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(list) = v
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            list.iter_mut()
                .filter_map(Value::as_object_mut)
                .for_each(|e| {
                    e.remove("time");
                });
        }
        v
    };
    strip(a) == strip(b)
}

pub fn is_crd(kind: &Kind) -> bool {
    kind.group == "apiextensions.k8s.io" && kind.plural == "customresourcedefinitions"
}

/// The part of an object a write may change.
pub fn scope_of(kind: &Kind, status: bool) -> Scope {
    match (kind.status_subresource, status) {
        (false, _) => Scope::All,
        (true, false) => Scope::NoStatus,
        (true, true) => Scope::StatusOnly,
    }
}

/// The registry's PrepareForUpdate: reset what this write may not change and
/// keep the server-owned metadata.
pub fn prepare_for_update(kind: &Kind, old: &Value, candidate: Value, status: bool) -> Value {
    let mut new = match (kind.status_subresource, status) {
        (true, true) => {
            let mut new = old.clone();
            set_or_remove(&mut new, "status", candidate.get("status"));
            if let Some(mf) = candidate.pointer("/metadata/managedFields") {
                set_meta(&mut new, "managedFields", mf.clone());
            }
            new
        }
        (true, false) => {
            let mut new = candidate;
            set_or_remove(&mut new, "status", old.get("status"));
            new
        }
        (false, _) => candidate,
    };
    new["apiVersion"] = old["apiVersion"].clone();
    new["kind"] = old["kind"].clone();
    if !new.get("metadata").is_some_and(Value::is_object) {
        new["metadata"] = json!({});
    }
    let keep = [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "resourceVersion",
    ];
    for field in keep {
        match old.get("metadata").and_then(|m| m.get(field)) {
            Some(v) => set_meta(&mut new, field, v.clone()),
            None => remove_meta(&mut new, field),
        }
    }
    new
}

fn set_or_remove(obj: &mut Value, field: &str, value: Option<&Value>) {
    match value {
        Some(v) => obj[field] = v.clone(),
        None => {
            if let Some(map) = obj.as_object_mut() {
                map.remove(field);
            }
        }
    }
}

/// No finalizer may be added to an object being deleted (ValidateObjectMetaUpdate).
pub fn check_finalizers(kind: &Kind, name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    if meta_str(old, "deletionTimestamp").is_none() {
        return Ok(());
    }
    let before = finalizers(old);
    let added: Vec<String> = finalizers(new)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    let summary = format!(
        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
    );
    Err(ApiError::invalid(
        kind,
        name,
        "metadata.finalizers",
        "FieldValueForbidden",
        &summary,
    ))
}

/// DeleteOptions.preconditions.
#[derive(Clone, Debug, Default)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl Preconditions {
    pub fn check(&self, kind: &Kind, name: &str, obj: &Value) -> Result<(), ApiError> {
        let actual_uid = meta_str(obj, "uid").unwrap_or_default();
        if let Some(uid) = self.uid.as_deref().filter(|u| *u != actual_uid) {
            let what = format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual_uid}"
            );
            return Err(ApiError::precondition(kind, name, &what));
        }
        let actual_rv = meta_str(obj, "resourceVersion").unwrap_or_default();
        if let Some(rv) = self.resource_version.as_deref().filter(|r| *r != actual_rv) {
            let what = format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual_rv}"
            );
            return Err(ApiError::precondition(kind, name, &what));
        }
        Ok(())
    }
}

/// The registry's PrepareForCreate plus metadata stamping: apiVersion,
/// kind, name and namespace from the request, server-owned metadata
/// dropped, creationTimestamp and generation set. Status is the server's to
/// set on kinds with a status subresource (dropped for custom resources,
/// Active for namespaces), except Nodes, whose kubelet creates them with it.
pub fn prepare_for_create(kind: &Kind, ns: &str, name: &str, obj: &mut Value) {
    obj["apiVersion"] = json!(kind.api_version());
    obj["kind"] = json!(kind.kind);
    set_meta(obj, "name", json!(name));
    if kind.namespaced {
        set_meta(obj, "namespace", json!(ns));
    } else {
        remove_meta(obj, "namespace");
    }
    let server_owned = [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
    ];
    for field in server_owned {
        remove_meta(obj, field);
    }
    set_meta(obj, "creationTimestamp", json!(now()));
    if kind.tracks_generation {
        set_meta(obj, "generation", json!(1));
    }
    if kind.status_subresource
        && !kind.status_on_create
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    if kind.group.is_empty() && kind.plural == "namespaces" {
        obj["status"] = json!({"phase": "Active"});
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
    }
}

/// Optimistic concurrency: a resourceVersion in the body must be the
/// current one; custom resources also refuse updates without one.
pub fn check_resource_version(
    kind: &Kind,
    name: &str,
    old: &Value,
    candidate: &Value,
    require_rv: bool,
) -> Result<(), ApiError> {
    match meta_str(candidate, "resourceVersion").filter(|rv| !rv.is_empty()) {
        Some(rv) if Some(rv) != meta_str(old, "resourceVersion") => {
            Err(ApiError::conflict(kind, name))
        }
        None if require_rv => {
            let summary = "Invalid value: 0x0: must be specified for an update";
            let field = "metadata.resourceVersion";
            Err(ApiError::invalid(
                kind,
                name,
                field,
                "FieldValueInvalid",
                summary,
            ))
        }
        _ => Ok(()),
    }
}

/// What the apiextensions controllers write into a new CRD's status.
pub fn establish_crd(crd: &mut Value) {
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let versions: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| vs.iter().filter_map(|v| v.get("name").cloned()).collect())
        .unwrap_or_default();
    let now = now();
    let condition = |t: &str, reason: &str| json!({"type": t, "status": "True", "reason": reason, "message": "", "lastTransitionTime": now});
    crd["status"] = json!({
        "acceptedNames": names,
        "storedVersions": versions,
        "conditions": [condition("NamesAccepted", "NoConflicts"), condition("Established", "InitialNamesAccepted")],
    });
}
