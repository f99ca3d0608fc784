//! What a remote request asks for: `/v1/namespaces/{ns}/containers/{name}/{log|exec|attach}`,
//! the SubjectAccessReview attributes it needs (as the kubelet maps its
//! own paths: `get` for a log, `create` for exec and attach), and the local
//! API path that serves it. Pure.

use hyper::Method;

use crate::server::local::wire::{ApiError, ErrorKind};
use crate::server::local::{escape, unescape};

/// The API group of `Container` resources (crds/container.yaml).
pub const GROUP: &str = "rundmc.io";
/// Their resource name.
pub const RESOURCE: &str = "containers";

/// The subresource asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subresource {
    /// `log`: read the main process's output.
    Log,
    /// `exec`: run a command.
    Exec,
    /// `attach`: follow (and feed) the main process.
    Attach,
}

impl Subresource {
    /// The name in the URL and in the SubjectAccessReview.
    pub fn as_str(self) -> &'static str {
        match self {
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
        }
    }

    /// The RBAC verb, as the kubelet uses it: reading a log is `get`,
    /// starting a stream into the container is `create`.
    pub fn verb(self) -> &'static str {
        match self {
            Subresource::Log => "get",
            Subresource::Exec | Subresource::Attach => "create",
        }
    }

    /// The HTTP method the endpoint takes.
    pub fn method(self) -> Method {
        match self {
            Subresource::Log => Method::GET,
            Subresource::Exec | Subresource::Attach => Method::POST,
        }
    }

    /// The local API's endpoint for it.
    fn local(self) -> &'static str {
        match self {
            Subresource::Log => "logs",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "log" => Some(Subresource::Log),
            "exec" => Some(Subresource::Exec),
            "attach" => Some(Subresource::Attach),
            _ => None,
        }
    }
}

/// One Container resource's subresource.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The resource's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// What is asked of it.
    pub subresource: Subresource,
}

impl Target {
    /// The request's target, or why it names none.
    pub fn parse(method: &Method, path: &str) -> Result<Target, ApiError> {
        let parts: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(unescape)
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let ["v1", "namespaces", ns, RESOURCE, name, sub] = parts.as_slice() else {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!(
                    "{path}: no such endpoint (the remote API serves \
                     /v1/namespaces/{{namespace}}/containers/{{name}}/{{log|exec|attach}})"
                ),
            ));
        };
        let Some(subresource) = Subresource::parse(sub) else {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("{path}: {sub:?} is not one of log, exec, attach"),
            ));
        };
        if *method != subresource.method() {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("{path}: {sub} takes {}, not {method}", subresource.method()),
            ));
        }
        if ns.is_empty() || name.is_empty() || ns.contains('/') || name.contains('/') {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("{path}: a namespace and a name are needed"),
            ));
        }
        Ok(Target {
            namespace: ns.to_string(),
            name: name.to_string(),
            subresource,
        })
    }

    /// The local API's path and query for this target.
    pub fn local_uri(&self, query: Option<&str>) -> String {
        let name = escape(&format!("{}/{}", self.namespace, self.name));
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        format!("/v1/containers/{name}/{}{query}", self.subresource.local())
    }

    /// `containers/exec`, as RBAC names it.
    pub fn resource(&self) -> String {
        format!("{RESOURCE}/{}", self.subresource.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_review_attributes_and_local_endpoints() {
        let t = Target::parse(&Method::POST, "/v1/namespaces/team/containers/web/exec").unwrap();
        assert_eq!((t.namespace.as_str(), t.name.as_str()), ("team", "web"));
        assert_eq!(
            (t.subresource.as_str(), t.subresource.verb()),
            ("exec", "create")
        );
        assert_eq!(t.local_uri(None), "/v1/containers/team%2Fweb/exec");
        let t = Target::parse(&Method::GET, "/v1/namespaces/team/containers/web/log").unwrap();
        assert_eq!(t.subresource.verb(), "get");
        assert_eq!(
            t.local_uri(Some("follow=true")),
            "/v1/containers/team%2Fweb/logs?follow=true"
        );
        assert_eq!(t.resource(), "containers/log");
        let attach = Target::parse(&Method::POST, "/v1/namespaces/a/containers/b/attach").unwrap();
        assert_eq!(attach.subresource.verb(), "create");
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        for (m, p) in [
            (Method::GET, "/v1/containers/web/logs"),
            (Method::GET, "/v1/namespaces/a/containers/b/archive"),
            (Method::GET, "/v1/namespaces/a/pods/b/log"),
            (Method::GET, "/v1/namespaces/a/containers/b/exec"),
            (Method::POST, "/v1/namespaces/a/containers/b/log"),
            (Method::GET, "/v1/namespaces/a%2Fx/containers/b/log"),
        ] {
            assert!(Target::parse(&m, p).is_err(), "{m} {p}");
        }
    }
}
