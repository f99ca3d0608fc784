//! PATCH bodies: which patch types a kind accepts, and applying JSON merge
//! patch (RFC 7386) and JSON patch (RFC 6902) to the live object. Server-side
//! apply bodies are parsed here and merged in `fields`.
//!
//! Strategic merge patch is refused with 415 for custom resources, as the
//! real server does. For built-in kinds it is applied as a JSON merge patch:
//! a simplification (no patchMergeKey list merging, no `$patch`
//! directives) that is exact for patches touching only maps and scalars.

use serde_json::Value;

use super::kinds::Kind;
use super::status::ApiError;

pub const MERGE: &str = "application/merge-patch+json";
pub const JSON: &str = "application/json-patch+json";
pub const STRATEGIC: &str = "application/strategic-merge-patch+json";
pub const APPLY: &str = "application/apply-patch+yaml";

/// The patch types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Apply,
}

/// The patch type for a Content-Type, or 415 as the apiserver answers.
pub fn patch_type(kind: &Kind, content_type: Option<&str>) -> Result<PatchType, ApiError> {
    let media = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    let accepted: &[&str] = if kind.custom {
        &[JSON, MERGE, APPLY]
    } else {
        &[JSON, MERGE, STRATEGIC, APPLY]
    };
    match media {
        MERGE => Ok(PatchType::Merge),
        JSON => Ok(PatchType::Json),
        APPLY => Ok(PatchType::Apply),
        STRATEGIC if !kind.custom => Ok(PatchType::Merge),
        _ => Err(ApiError::unsupported_media_type(accepted)),
    }
}

/// Applies a merge or JSON patch to `live`, giving the candidate object.
pub fn patched(patch: PatchType, live: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let mut candidate = live.clone();
    match patch {
        PatchType::Merge => {
            let doc: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            if !doc.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            json_patch::merge(&mut candidate, &doc);
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(&mut candidate, &ops).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: format!(
                    "the server rejected our request due to an error in our request: {e}"
                ),
                details: None,
            })?;
        }
        PatchType::Apply => unreachable!("apply bodies go through fields::apply"),
    }
    Ok(candidate)
}

/// Parses an apply body (YAML or JSON) and checks it names the right
/// apiVersion, kind and object.
pub fn apply_body(kind: &Kind, name: &str, body: &[u8]) -> Result<Value, ApiError> {
    let applied: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    if !applied.is_object() {
        return Err(ApiError::bad_request("apply patch must be an object"));
    }
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let body_kind = applied.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != kind.api_version() || body_kind != kind.kind {
        return Err(ApiError::bad_request(format!(
            "the apiVersion/kind in the apply patch ({api_version}, {body_kind}) does not match the \
             request ({}, {})",
            kind.api_version(),
            kind.kind
        )));
    }
    let body_name = applied
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(name);
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::super::kinds::{container_kind, default_kinds};
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_is_refused_for_custom_resources_only() {
        let err = patch_type(&container_kind(), Some(STRATEGIC)).unwrap_err();
        assert_eq!((err.code, err.reason), (415, "UnsupportedMediaType"));
        let node = default_kinds()
            .into_iter()
            .find(|k| k.plural == "nodes")
            .unwrap();
        assert_eq!(
            patch_type(&node, Some(STRATEGIC)).unwrap(),
            PatchType::Merge
        );
        assert_eq!(
            patch_type(&node, Some("application/merge-patch+json; charset=utf-8")).unwrap(),
            PatchType::Merge
        );
    }

    #[test]
    fn merge_and_json_patches_apply() {
        let live = json!({"metadata": {"finalizers": ["a"]}, "spec": {"x": 1}});
        let merged = patched(
            PatchType::Merge,
            &live,
            br#"{"metadata":{"finalizers":null}}"#,
        )
        .unwrap();
        assert!(merged["metadata"].get("finalizers").is_none());
        let ops = br#"[{"op":"test","path":"/spec/x","value":1},{"op":"replace","path":"/spec/x","value":2}]"#;
        assert_eq!(
            patched(PatchType::Json, &live, ops).unwrap()["spec"]["x"],
            2
        );
        let failing = br#"[{"op":"test","path":"/spec/x","value":9}]"#;
        assert_eq!(
            patched(PatchType::Json, &live, failing).unwrap_err().code,
            422
        );
    }
}
