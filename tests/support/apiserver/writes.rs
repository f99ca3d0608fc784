//! The write verbs: create (POST), update (PUT), patch (merge, JSON, apply)
//! and delete, including the request-level checks the apiserver makes
//! before storage (body kind and name against the URL, namespace existence,
//! field manager for apply). `dryRun` is not implemented and is refused with
//! 400 rather than silently writing.

use serde_json::{Value, json};

use super::fields::{self, Writer};
use super::handlers::Req;
use super::patch::{self, PatchType};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Managed, Preconditions, WriteCtx};
use super::strategy::scope_of;

fn parse_object(req: &Req) -> Result<Value, ApiError> {
    if req.query.contains_key("dryRun") {
        return Err(ApiError::bad_request(
            "dryRun is not implemented by the fake apiserver",
        ));
    }
    let obj: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?;
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{obj}'"
        )));
    }
    if api_version != req.kind.api_version() || kind != req.kind.kind {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            req.kind.api_version()
        )));
    }
    let body_ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    if req.kind.namespaced && !body_ns.is_empty() && body_ns != req.ns() {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(obj)
}

fn ctx<'a>(req: &Req, manager: &'a str, managed: Managed) -> WriteCtx<'a> {
    WriteCtx {
        manager,
        status: req.status(),
        managed,
        require_rv: false,
    }
}

fn namespace_admission(req: &Req, store: &super::store::Store) -> Result<(), ApiError> {
    if req.kind.namespaced && !store.namespace_exists(&req.ns()) {
        return Err(ApiError::namespace_not_found(&req.ns()));
    }
    Ok(())
}

/// POST: 201 with the stored object.
pub fn create(req: &Req) -> Result<(u16, Value), ApiError> {
    let obj = parse_object(req)?;
    let manager = req.manager();
    req.shared.with(|s| {
        namespace_admission(req, &s.store)?;
        let w = ctx(req, &manager, Managed::Update);
        s.store
            .create(req.target.kind, &req.ns(), obj, &w)
            .map(|v| (201, v))
    })
}

/// PUT of the object or its status. Custom resources need
/// metadata.resourceVersion (no unconditional updates); a PUT never creates.
pub fn update(req: &Req) -> Result<Value, ApiError> {
    let obj = parse_object(req)?;
    let body_name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if body_name != req.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            req.name()
        )));
    }
    let manager = req.manager();
    let w = WriteCtx {
        require_rv: req.kind.custom,
        ..ctx(req, &manager, Managed::Update)
    };
    req.shared.with(|s| {
        s.store
            .update(req.target.kind, &req.ns(), req.name(), obj, &w)
    })
}

/// PATCH: merge / JSON patch of an existing object, or server-side apply.
pub fn patch(req: &Req) -> Result<(u16, Value), ApiError> {
    if req.query.contains_key("dryRun") {
        return Err(ApiError::bad_request(
            "dryRun is not implemented by the fake apiserver",
        ));
    }
    let patch_type = patch::patch_type(&req.kind, req.content_type.as_deref())?;
    if patch_type == PatchType::Apply {
        return apply(req);
    }
    let manager = req.manager();
    let (k, ns, name) = (req.target.kind, req.ns(), req.name());
    req.shared.with(|s| {
        let live = s
            .store
            .get(k, &ns, name)
            .ok_or_else(|| ApiError::not_found(&req.kind, name))?;
        let candidate = patch::patched(patch_type, live, &req.body)?;
        let w = ctx(req, &manager, Managed::Update);
        s.store
            .update(k, &ns, name, candidate, &w)
            .map(|v| (200, v))
    })
}

/// Server-side apply (simplified, see `fields`): creates a missing object
/// through the main resource, 404 through `/status`.
fn apply(req: &Req) -> Result<(u16, Value), ApiError> {
    let Some(manager) = req
        .query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
    else {
        return Err(ApiError {
            code: 422,
            reason: "Invalid",
            message: "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
            details: None,
        });
    };
    let force = req.query.get("force").is_some_and(|f| f == "true");
    let applied = patch::apply_body(&req.kind, req.name(), &req.body)?;
    let (k, ns, name) = (req.target.kind, req.ns(), req.name());
    let api_version = req.kind.api_version();
    let now = super::strategy::now();
    let writer = Writer {
        manager: &manager,
        subresource: if req.status() { "status" } else { "" },
        api_version: &api_version,
        now: &now,
    };
    let scope = scope_of(&req.kind, req.status());
    req.shared.with(|s| {
        let live = s.store.get(k, &ns, name).cloned();
        if live.is_none() {
            if req.status() {
                return Err(ApiError::not_found(&req.kind, name));
            }
            namespace_admission(req, &s.store)?;
        }
        let base = live.clone().unwrap_or_else(|| json!({}));
        let merged = fields::apply(&base, &applied, scope, force, &writer)
            .map_err(|conflicts| ApiError::apply_conflict(&req.kind, name, &conflicts))?;
        let w = ctx(req, &manager, Managed::Precomputed);
        match live {
            Some(_) => s.store.update(k, &ns, name, merged, &w).map(|v| (200, v)),
            None => s.store.create(k, &ns, merged, &w).map(|v| (201, v)),
        }
    })
}

fn preconditions(req: &Req) -> Result<Preconditions, ApiError> {
    if req.body.is_empty() {
        return Ok(Preconditions::default());
    }
    let opts: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
    if opts
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|d| !d.is_empty())
    {
        return Err(ApiError::bad_request(
            "dryRun is not implemented by the fake apiserver",
        ));
    }
    let text = |p: &str| opts.pointer(p).and_then(Value::as_str).map(String::from);
    Ok(Preconditions {
        uid: text("/preconditions/uid"),
        resource_version: text("/preconditions/resourceVersion"),
    })
}

/// DELETE of one object: 200 with the object (marked, or as last stored).
/// propagationPolicy is accepted and ignored: the fake has no garbage collector.
pub fn delete(req: &Req) -> Result<Value, ApiError> {
    let pre = preconditions(req)?;
    req.shared
        .with(|s| s.store.delete(req.target.kind, &req.ns(), req.name(), &pre))
}

/// DELETE of a collection (with selectors): 200 with the list of results.
pub fn delete_collection(
    req: &Req,
    selectors: Result<(FieldSelector, LabelSelector), ApiError>,
) -> Result<(u16, Value), ApiError> {
    let (fields, labels) = selectors?;
    let k = req.target.kind;
    let items = req.shared.with(|s| {
        let objects = s.store.list(k, req.target.namespace.as_deref(), None)?;
        let mut deleted = Vec::new();
        for obj in objects
            .iter()
            .filter(|o| fields.matches(o) && labels.matches(o))
        {
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            deleted.push(s.store.delete(k, ns, name, &Preconditions::default())?);
        }
        Ok::<_, ApiError>(deleted)
    })?;
    let rv = req.shared.peek(|s| s.store.resource_version());
    Ok((
        200,
        json!({
            "kind": format!("{}List", req.kind.kind),
            "apiVersion": req.kind.api_version(),
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items,
        }),
    ))
}
