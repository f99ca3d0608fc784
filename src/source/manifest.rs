//! Parsing manifest files: several YAML documents to a file, each a
//! `Container`. Every error names the file, the document, the line (when the
//! YAML parser knows it) and the field. Pure: it takes the text, not the file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::strict;
use super::yaml_line::{line_of, line_of_key};
use crate::api::{Container, Handle, MAX_HANDLE_LEN, validate};

/// The apiVersion every manifest must carry.
pub const API_VERSION: &str = "rundmc.io/v1alpha1";
/// The kind every manifest must carry.
pub const KIND: &str = "Container";

/// One problem with one document of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file.
    pub path: PathBuf,
    /// 1-based index of the document in the file; 0 for file-level errors.
    pub document: usize,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted field path, when the error is about one field.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The document's `metadata.name`, when it could be read.
    pub name: Option<String>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.document > 0 {
            write!(f, ": document {}", self.document)?;
        }
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ManifestError {}

/// A document that parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The file.
    pub path: PathBuf,
    /// 1-based index of the document in the file.
    pub document: usize,
    /// The handle (its `metadata.name`).
    pub handle: Handle,
    /// The resource.
    pub container: Container,
}

/// Parse every document of `text`. Empty documents are skipped. A YAML
/// syntax error ends the file: the parser cannot find the next document.
pub fn parse(path: &Path, text: &str) -> Vec<Result<Manifest, ManifestError>> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                out.push(Err(yaml_error(path, document, None, &e)));
                break;
            }
        };
        out.push(
            parse_document(path, document, value, text).map_err(|mut e| {
                if e.line.is_none() {
                    e.line = typed_error_line(text, i);
                }
                if let (None, Some(field)) = (e.line, &e.field) {
                    e.line = line_of(text, i, field);
                }
                e
            }),
        );
    }
    out
}

/// The line of a typing error in document `index`: a Value carries no
/// positions, so the failing document is parsed again straight from the
/// text, which does. Only runs for documents that already failed.
fn typed_error_line(text: &str, index: usize) -> Option<usize> {
    let doc = serde_yaml::Deserializer::from_str(text).nth(index)?;
    let err = Container::deserialize(doc).err()?;
    err.location().map(|l| l.line())
}

fn parse_document(
    path: &Path,
    document: usize,
    value: serde_yaml::Value,
    text: &str,
) -> Result<Manifest, ManifestError> {
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let err = |field: &str, message: String| ManifestError {
        path: path.into(),
        document,
        line: None,
        field: Some(field.to_string()),
        message,
        name: name.clone(),
    };
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if api_version != API_VERSION {
        return Err(err(
            "apiVersion",
            format!("{api_version:?} is not {API_VERSION:?}"),
        ));
    }
    let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    if kind != KIND {
        return Err(err("kind", format!("{kind:?} is not {KIND:?}")));
    }
    let (container, unknown) = strict::container(value).map_err(|e| {
        let field = e.path().to_string();
        let mut me = yaml_error(path, document, name.clone(), e.inner());
        me.field = (field != ".").then_some(field);
        me
    })?;
    if let Some((field, message)) = strict::report(&unknown) {
        return Err(ManifestError {
            line: line_of_key(text, document - 1, field),
            ..err(field, message)
        });
    }
    if !container.spec.image_pull_secrets.is_empty() {
        // A file has no namespace whose Secrets it could name.
        let field = "spec.imagePullSecrets";
        return Err(ManifestError {
            line: line_of_key(text, document - 1, field),
            ..err(
                field,
                "only Container resources may name Secrets; a node's registry credentials \
                 come from the agent's --image-credentials"
                    .into(),
            )
        });
    }
    let handle = file_handle(name.as_deref().unwrap_or("")).map_err(|m| err("metadata.name", m))?;
    let name = handle.to_string();
    validate(&container.spec).map_err(|errors| {
        let first = errors.0.first().cloned();
        ManifestError {
            path: path.into(),
            document,
            line: None,
            field: first.as_ref().map(|f| f.field.clone()),
            message: if errors.0.len() > 1 {
                format!(
                    "{} (and {} more: {errors})",
                    first.map(|f| f.message).unwrap_or_default(),
                    errors.0.len() - 1
                )
            } else {
                first.map(|f| f.message).unwrap_or_default()
            },
            name: Some(name.clone()),
        }
    })?;
    Ok(Manifest {
        path: path.into(),
        document,
        handle,
        container,
    })
}

fn yaml_error(
    path: &Path,
    document: usize,
    name: Option<String>,
    e: &serde_yaml::Error,
) -> ManifestError {
    let message = e.to_string();
    // serde_yaml appends " at line L column C"; the line has its own field.
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_string();
    ManifestError {
        path: path.into(),
        document,
        line: e.location().map(|l| l.line()),
        field: None,
        message,
        name,
    }
}

/// A file-sourced handle is its `metadata.name`, which must be a DNS
/// subdomain (lowercase letters, digits, '-' and '.') and fit a handle. No
/// such name has a `_`, so it never meets a custom resource's handle.
pub fn file_handle(name: &str) -> Result<Handle, String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_HANDLE_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err(format!(
            "{name:?} must be 1-{MAX_HANDLE_LEN} lowercase letters, digits, '-' or '.', starting and ending alphanumeric"
        ));
    }
    Handle::new(name).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse(Path::new("/m/web.yaml"), text)
            .into_iter()
            .map(|r| match r {
                Ok(m) => format!("ok {}", m.handle),
                Err(e) => e.to_string(),
            })
            .collect()
    }

    const GOOD: &str = "apiVersion: rundmc.io/v1alpha1\nkind: Container\nmetadata:\n  name: web\nspec:\n  rootfs: /img\n";

    #[test]
    fn several_documents_and_empty_ones() {
        let text = format!("{GOOD}---\n---\n{}", GOOD.replace("web", "api"));
        assert_eq!(errors(&text), vec!["ok web", "ok api"]);
    }

    #[test]
    fn a_bad_capability_names_its_index_and_line() {
        let text = format!(
            "{GOOD}  securityContext:\n    capabilities:\n      add: [NET_ADMIN]\n      drop:\n      - ALL\n      - NET_RAWW\n"
        );
        assert_eq!(
            errors(&text),
            vec![
                r#"/m/web.yaml: document 1, line 12: spec.securityContext.capabilities.drop[1]: "NET_RAWW" is not a capability: a name such as NET_ADMIN (capabilities(7), without or with CAP_), or ALL"#
            ]
        );
    }

    #[test]
    fn bad_field_names_file_document_and_field() {
        let text = format!(
            "{GOOD}---\n{}  limits:\n    memory: 64Q\n",
            GOOD.replace("web", "db")
        );
        assert_eq!(
            errors(&text),
            vec![
                "ok web".to_string(),
                r#"/m/web.yaml: document 2, line 15: spec.limits.memory: "64Q" is not a quantity"#
                    .to_string()
            ]
        );
    }

    #[test]
    fn type_errors_carry_line_and_field() {
        let text = format!("{GOOD}  privileged: maybe\n");
        let got = errors(&text);
        assert!(
            got[0].starts_with("/m/web.yaml: document 1, line 7: spec.privileged: "),
            "{got:?}"
        );
    }

    #[test]
    fn image_manifests_and_their_errors() {
        let image = "apiVersion: rundmc.io/v1alpha1\nkind: Container\nmetadata:\n  name: web\nspec:\n  image: busybox\n  imagePullPolicy: IfNotPresent\n  process:\n    command: [sh]\n    args: [-c, sleep 9]\n";
        assert_eq!(errors(image), vec!["ok web"]);
        let both = image.replace("  image: busybox\n", "  image: busybox\n  rootfs: /img\n");
        assert_eq!(
            errors(&both),
            vec![
                "/m/web.yaml: document 1, line 7: spec.rootfs: must not be set with spec.image: a container runs from one or the other"
            ]
        );
        let secrets = format!("{image}  imagePullSecrets: [{{name: regcred}}]\n");
        assert_eq!(
            errors(&secrets),
            vec![
                "/m/web.yaml: document 1, line 11: spec.imagePullSecrets: only Container resources may name Secrets; a node's registry credentials come from the agent's --image-credentials"
            ]
        );
        let policy = image.replace("IfNotPresent", "Sometimes");
        let got = errors(&policy);
        assert!(
            got[0].starts_with(
                "/m/web.yaml: document 1, line 7: spec.imagePullPolicy: unknown variant `Sometimes`"
            ),
            "{got:?}"
        );
    }

    #[test]
    fn syntax_error_has_a_line() {
        let got = errors("apiVersion: rundmc.io/v1alpha1\nkind: [unclosed\n");
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("/m/web.yaml: document 1, line "),
            "{got:?}"
        );
    }

    #[test]
    fn wrong_kind_and_names() {
        assert_eq!(
            errors(&GOOD.replace("kind: Container", "kind: Pod")),
            vec![r#"/m/web.yaml: document 1, line 2: kind: "Pod" is not "Container""#]
        );
        let got = errors(&GOOD.replace("name: web", "name: Web_1"));
        assert!(
            got[0]
                .starts_with(r#"/m/web.yaml: document 1, line 4: metadata.name: "Web_1" must be"#),
            "{got:?}"
        );
        let got = errors(&GOOD.replace("rootfs: /img", "rootfs: img"));
        assert_eq!(
            got,
            vec![r#"/m/web.yaml: document 1, line 6: spec.rootfs: "img" is not an absolute path"#]
        );
    }

    #[test]
    fn unknown_fields_make_the_document_invalid() {
        let text = format!("{GOOD}  limts:\n    memory: 16Mi\n");
        assert_eq!(
            errors(&text),
            vec![
                r#"/m/web.yaml: document 1, line 7: spec.limts: unknown field; did you mean "limits"?"#
            ]
        );
        let text = format!(
            "{GOOD}  process: {{args: [sh], agrs: [x]}}\n  limts: {{cpu: 1}}\nstatuss: {{}}\n"
        );
        assert_eq!(
            errors(&text),
            vec![
                r#"/m/web.yaml: document 1, line 7: spec.process.agrs: unknown field; did you mean "args"? (and 2 more: spec.limts, statuss)"#
            ]
        );
    }

    #[test]
    fn kubernetes_metadata_and_status_stay_accepted() {
        let text = GOOD.replace(
            "  name: web\n",
            "  name: web\n  namespace: default\n  labels: {app: web}\n  annotations: {note: x}\n  uid: 1b2c\n  resourceVersion: \"42\"\n  generation: 3\n  creationTimestamp: \"2026-01-01T00:00:00Z\"\n  managedFields: [{manager: kubectl, operation: Apply, apiVersion: rundmc.io/v1alpha1}]\n",
        ) + "status:\n  phase: Running\n  restartCount: 2\n";
        assert_eq!(errors(&text), vec!["ok web"]);
    }

    #[test]
    fn numeric_quantities_are_accepted() {
        let text = format!("{GOOD}  limits:\n    memory: 67108864\n    cpu: 2\n");
        let parsed = parse(Path::new("/m/web.yaml"), &text);
        let m = parsed[0].as_ref().unwrap();
        assert_eq!(
            m.container.spec.limits.cpu.as_ref().map(|q| q.0.as_str()),
            Some("2")
        );
    }
}
