//! API errors as the apiserver sends them: `metav1.Status` objects with the
//! reason, code and message texts of `k8s.io/apimachinery/pkg/api/errors`,
//! so kube's `ErrorResponse` parses them and callers can match on reason.

use serde_json::{Value, json};

use super::kinds::Kind;

/// A failed request, rendered as a `Status` body.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }

    pub fn not_found(kind: &Kind, name: &str) -> ApiError {
        let msg = format!("{} \"{name}\" not found", kind.qualified());
        ApiError::new(404, "NotFound", msg).with_details(name_details(kind, name))
    }

    /// The namespace of a create does not exist (NamespaceLifecycle admission).
    pub fn namespace_not_found(namespace: &str) -> ApiError {
        let msg = format!("namespaces \"{namespace}\" not found");
        ApiError::new(404, "NotFound", msg)
            .with_details(json!({"name": namespace, "kind": "namespaces"}))
    }

    /// A URL that names no served resource.
    pub fn no_route() -> ApiError {
        ApiError::new(404, "NotFound", "the server could not find the requested resource")
            .with_details(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}))
    }

    pub fn already_exists(kind: &Kind, name: &str) -> ApiError {
        let msg = format!("{} \"{name}\" already exists", kind.qualified());
        ApiError::new(409, "AlreadyExists", msg).with_details(name_details(kind, name))
    }

    /// Optimistic-concurrency failure (`OptimisticLockErrorMsg`).
    pub fn conflict(kind: &Kind, name: &str) -> ApiError {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            kind.qualified()
        );
        ApiError::new(409, "Conflict", msg).with_details(name_details(kind, name))
    }

    /// A failed delete precondition.
    pub fn precondition(kind: &Kind, name: &str, what: &str) -> ApiError {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {what}",
            kind.qualified()
        );
        ApiError::new(409, "Conflict", msg).with_details(name_details(kind, name))
    }

    /// Server-side apply conflicts: (manager, apiVersion, field path) triples.
    pub fn apply_conflict(
        kind: &Kind,
        name: &str,
        conflicts: &[(String, String, String)],
    ) -> ApiError {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, v, f)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {v}"), "field": f})
            })
            .collect();
        let message = match conflicts {
            [(m, v, f)] => {
                format!("Apply failed with 1 conflict: conflict with \"{m}\" using {v}: {f}")
            }
            _ => {
                let (m, v, _) = &conflicts[0];
                let fields: Vec<String> =
                    conflicts.iter().map(|(_, _, f)| format!("- {f}")).collect();
                format!(
                    "Apply failed with {} conflicts: conflicts with \"{m}\" using {v}:\n{}",
                    conflicts.len(),
                    fields.join("\n")
                )
            }
        };
        let mut details = name_details(kind, name);
        details["causes"] = Value::Array(causes);
        ApiError::new(409, "Conflict", message).with_details(details)
    }

    /// 422 with one field error; `field_reason` is a `CauseType` such as
    /// `FieldValueForbidden`, `summary` the part after the field path.
    pub fn invalid(
        kind: &Kind,
        name: &str,
        field: &str,
        field_reason: &str,
        summary: &str,
    ) -> ApiError {
        let message = format!(
            "{} \"{name}\" is invalid: {field}: {summary}",
            kind.qualified_kind()
        );
        let details = json!({
            "name": name,
            "group": kind.group,
            "kind": kind.kind,
            "causes": [{"reason": field_reason, "message": summary, "field": field}],
        });
        ApiError::new(422, "Invalid", message).with_details(details)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 410 Expired (`NewResourceExpired`).
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn unsupported_media_type(accepted: &[&str]) -> ApiError {
        let msg = format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            accepted.join(", ")
        );
        ApiError::new(415, "UnsupportedMediaType", msg)
    }

    pub fn method_not_allowed(verb: &str, kind: &Kind) -> ApiError {
        let msg = format!(
            "{verb} is not supported on resources of kind \"{}\"",
            kind.qualified()
        );
        ApiError::new(405, "MethodNotAllowed", msg)
    }

    /// 504 for a list at a resourceVersion the store has not reached.
    pub fn too_large_resource_version(asked: u64, current: u64) -> ApiError {
        let msg = format!("Too large resource version: {asked}, current: {current}");
        ApiError::new(504, "Timeout", msg).with_details(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        }))
    }

    pub fn service_unavailable() -> ApiError {
        ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )
    }
}

fn name_details(kind: &Kind, name: &str) -> Value {
    json!({"name": name, "group": kind.group, "kind": kind.plural})
}
