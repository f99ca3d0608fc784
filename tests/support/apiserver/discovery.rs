//! Discovery: `/version` with the emulated Kubernetes version, and the
//! legacy (unaggregated) `/api`, `/apis`, `/apis/{group}` and resource-list
//! documents built from the served kinds. Aggregated discovery is not
//! offered; clients that ask for it fall back to these, as they do against
//! servers older than 1.26.

use std::net::SocketAddr;

use http::Response;
use serde_json::{Value, json};

use super::handlers::{Body, error, json_response};
use super::kinds::Kind;
use super::routes::Route;
use super::status::ApiError;
use super::store::Store;

/// What `/version` reports.
#[derive(Clone, Debug)]
pub struct VersionInfo {
    /// Emulated minor version, for version-dependent behaviour.
    pub minor: u32,
    /// The `minor` string as sent (providers send e.g. "24+").
    pub minor_text: String,
    pub git_version: String,
}

impl VersionInfo {
    pub fn new(minor: u32) -> VersionInfo {
        VersionInfo {
            minor,
            minor_text: minor.to_string(),
            git_version: format!("v1.{minor}.0"),
        }
    }
}

/// Serves a non-resource route.
pub fn serve(
    route: &Route,
    store: &Store,
    version: &VersionInfo,
    addr: &SocketAddr,
) -> Response<Body> {
    let doc = match route {
        Route::Version => Some(version_doc(version)),
        Route::CoreVersions => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}],
        })),
        Route::Groups => Some(json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": groups(store).iter().map(|g| group_doc(store, g)).collect::<Vec<_>>(),
        })),
        Route::Group(g) if groups(store).contains(g) => {
            let mut doc = group_doc(store, g);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            Some(doc)
        }
        Route::Resources(g, v) => resource_list(store, g, v),
        Route::OpenApi(2) => Some(json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": version.git_version},
            "paths": {},
            "definitions": {},
        })),
        Route::OpenApi(_) => Some(json!({"paths": {}})),
        _ => None,
    };
    match doc {
        Some(doc) => json_response(200, &doc),
        None => error(&ApiError::no_route()),
    }
}

fn version_doc(v: &VersionInfo) -> Value {
    json!({
        "major": "1",
        "minor": v.minor_text,
        "gitVersion": v.git_version,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-01-01T00:00:00Z",
        "goVersion": "go1.22.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// Named groups (not the core group), in first-served order.
fn groups(store: &Store) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in store.kinds.iter().filter(|k| !k.group.is_empty()) {
        if !out.contains(&k.group) {
            out.push(k.group.clone());
        }
    }
    out
}

fn group_doc(store: &Store, group: &str) -> Value {
    let mut versions: Vec<Value> = Vec::new();
    for k in store.kinds.iter().filter(|k| k.group == group) {
        let gv = json!({"groupVersion": k.api_version(), "version": k.version});
        if !versions.contains(&gv) {
            versions.push(gv);
        }
    }
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

fn resource_list(store: &Store, group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&Kind> = store
        .kinds
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for k in kinds {
        resources.push(json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": k.short_names,
        }));
        if k.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}
