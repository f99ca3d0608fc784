//! URL routing: which served kind, namespace, name and subresource a request
//! path names, or which discovery document. Also the query string.

use std::collections::BTreeMap;

use super::store::Store;

/// A resource request's target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: usize,
    /// From the URL; `None` for cluster-scoped kinds and all-namespace lists.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// What a path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Version,
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`.
    Resources(String, String),
    Resource(Target),
    /// `/openapi/v2` or `/openapi/v3`: empty documents, so kubectl's
    /// client-side checks pass (the fake validates no schemas).
    OpenApi(u8),
    NotFound,
}

/// Routes a path against the served kinds.
pub fn route(path: &str, store: &Store) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["openapi", "v2"] => Route::OpenApi(2),
        ["openapi", "v3"] => Route::OpenApi(3),
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["api", "v1"] => Route::Resources(String::new(), "v1".into()),
        ["apis", group] => Route::Group(group.to_string()),
        ["apis", group, version] => Route::Resources(group.to_string(), version.to_string()),
        ["api", "v1", rest @ ..] => resource("", "v1", rest, store),
        ["apis", group, version, rest @ ..] => resource(group, version, rest, store),
        _ => Route::NotFound,
    }
}

fn resource(group: &str, version: &str, rest: &[&str], store: &Store) -> Route {
    let namespaced_path = rest.len() >= 3
        && rest[0] == "namespaces"
        && store.kind_index(group, version, rest[2]).is_some();
    let (namespace, rest) = if namespaced_path {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return Route::NotFound;
    }
    let Some(kind) = store.kind_index(group, version, rest[0]) else {
        return Route::NotFound;
    };
    let k = &store.kinds[kind];
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    let scope_ok = if k.namespaced {
        namespace.is_some() || name.is_none()
    } else {
        namespace.is_none()
    };
    let sub_ok = match subresource.as_deref() {
        None => true,
        Some("status") => k.status_subresource,
        Some(_) => false,
    };
    if !scope_ok || !sub_ok {
        return Route::NotFound;
    }
    Route::Resource(Target {
        kind,
        namespace,
        name,
        subresource,
    })
}

/// Parses a query string, percent-decoding keys and values.
pub fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = text
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::super::kinds::default_kinds;
    use super::*;

    #[test]
    fn routes_namespaced_cluster_and_status_paths() {
        let store = Store::new(default_kinds());
        let c = store
            .kind_index("rundmc.io", "v1alpha1", "containers")
            .unwrap();
        let ns = store.kind_index("", "v1", "namespaces").unwrap();
        let path = "/apis/rundmc.io/v1alpha1/namespaces/default/containers/web/status";
        let Route::Resource(t) = route(path, &store) else {
            panic!("not a resource")
        };
        assert_eq!(
            (t.kind, t.namespace.as_deref(), t.name.as_deref()),
            (c, Some("default"), Some("web"))
        );
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let Route::Resource(t) = route("/apis/rundmc.io/v1alpha1/containers", &store) else {
            panic!()
        };
        assert_eq!((t.namespace, t.name), (None, None));
        let Route::Resource(t) = route("/api/v1/namespaces/default", &store) else {
            panic!()
        };
        assert_eq!((t.kind, t.name.as_deref()), (ns, Some("default")));
        assert_eq!(
            route("/apis/rundmc.io/v1alpha1/containers/web", &store),
            Route::NotFound
        );
        assert_eq!(
            route("/api/v1/namespaces/default/nodes/x", &store),
            Route::NotFound
        );
        assert_eq!(
            route(
                "/apis/rundmc.io/v1alpha1/namespaces/d/containers/w/exec",
                &store
            ),
            Route::NotFound
        );
    }

    #[test]
    fn query_is_percent_decoded() {
        let q = parse_query(Some(
            "fieldSelector=spec.nodeName%3Dnode-1&watch=true&labelSelector=a+in+%28b%29",
        ));
        assert_eq!(q["fieldSelector"], "spec.nodeName=node-1");
        assert_eq!(q["watch"], "true");
        assert_eq!(q["labelSelector"], "a in (b)");
    }
}
