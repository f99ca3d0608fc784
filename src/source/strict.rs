//! Strict reading of file manifests, as `kubectl` validates by default: a
//! field the `Container` types do not know makes the document invalid
//! instead of being dropped without a word (`limts: {memory: 16Mi}` would
//! otherwise run with no limit). The fields ignored are found by
//! [`serde_ignored`] while the document is typed, so the types themselves
//! stay lenient: resources from the API server, which prunes unknown fields
//! per the CRD schema and may be newer than this agent, never meet this.
//! Pure: it takes a parsed document, not a file.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResourceExt;
use serde::de::{self, Deserialize, Visitor};
use serde_ignored::Path;
use serde_json::Value as Json;

use crate::api::Container;

/// Top-level fields read before the document is typed (`apiVersion` and
/// `kind` are checked by the manifest parser; the type does not hold them).
const ROOT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// `value` typed as a `Container`, with the dotted path (`spec.limts`,
/// `spec.mounts[1].sorce`) of every field the types do not know.
pub fn container(
    value: serde_yaml::Value,
) -> Result<(Container, Vec<String>), serde_path_to_error::Error<serde_yaml::Error>> {
    let mut unknown = Vec::new();
    let mut note = |path: Path<'_>| unknown.push(dotted(&path));
    let container =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut note))?;
    unknown.retain(|path| path != "apiVersion" && path != "kind");
    Ok((container, unknown))
}

/// `spec.mounts[1].source` style, as validation errors name fields.
fn dotted(path: &Path<'_>) -> String {
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        Path::Map { parent, key } => match dotted(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

/// The field to name for `unknown` fields (the first) and what to say,
/// counting the others; `None` when there are none.
pub fn report(unknown: &[String]) -> Option<(&str, String)> {
    let (first, rest) = unknown.split_first()?;
    let mut said = message(first);
    if !rest.is_empty() {
        said = format!("{said} (and {} more: {})", rest.len(), rest.join(", "));
    }
    Some((first, said))
}

/// What to say about the unknown field at `path`: `unknown field`, with a
/// `did you mean "limits"?` when a known field beside it is close.
pub fn message(path: &str) -> String {
    let (parent, name) = path.rsplit_once('.').unwrap_or(("", path));
    let name = name.split('[').next().unwrap_or(name);
    match closest(name, &known_fields(parent)) {
        Some(known) => format!("unknown field; did you mean {known:?}?"),
        None => "unknown field".to_string(),
    }
}

/// The known field nearest to `name`, if near enough to be a typo: at most
/// a third of the name's length in edits (and at least one), ignoring case.
fn closest(name: &str, known: &[String]) -> Option<String> {
    let lower = name.to_lowercase();
    let budget = (name.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&lower, &k.to_lowercase()), k))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

/// The fields a `Container` knows inside the object at `parent` (a dotted
/// path; `""` is the document): from the CRD schema the types generate,
/// and for `metadata`, from `ObjectMeta` itself.
fn known_fields(parent: &str) -> Vec<String> {
    match parent {
        "" => ROOT_FIELDS.iter().map(|s| s.to_string()).collect(),
        "metadata" => struct_fields::<ObjectMeta>(),
        _ => schema_fields(parent),
    }
}

/// Property names of the object at `parent` in the CRD's schema.
fn schema_fields(parent: &str) -> Vec<String> {
    let crd = Container::crd();
    let Some(schema) = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| serde_json::to_value(&s.open_api_v3_schema).ok())
    else {
        return Vec::new();
    };
    let mut node = &schema;
    for part in parent.split('.') {
        let mut pieces = part.split('[');
        let key = pieces.next().unwrap_or(part);
        node = &node["properties"][key];
        for _index in pieces {
            node = &node["items"];
        }
    }
    match &node["properties"] {
        Json::Object(props) => props.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The field names a derived (or hand-written, serde-style) `Deserialize`
/// of a struct declares, learnt by asking it to deserialize from a
/// deserializer that only records them.
fn struct_fields<'de, T: Deserialize<'de>>() -> Vec<String> {
    let mut fields = Vec::new();
    let _ = T::deserialize(FieldRecorder(&mut fields));
    fields
}

/// A deserializer that records the fields of the struct asked of it and
/// then fails.
struct FieldRecorder<'a>(&'a mut Vec<String>);

/// Its error: nothing is ever deserialized.
#[derive(Debug)]
struct Recorded;

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fields recorded")
    }
}

impl std::error::Error for Recorded {}

impl de::Error for Recorded {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Recorded
    }
}

impl<'de> de::Deserializer<'de> for FieldRecorder<'_> {
    type Error = Recorded;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Recorded> {
        Err(Recorded)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Recorded> {
        self.0.extend(fields.iter().map(|f| f.to_string()));
        Err(Recorded)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(yaml: &str) -> Vec<String> {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        container(value).unwrap().1
    }

    const HEAD: &str = "apiVersion: rundmc.io/v1alpha1\nkind: Container\n";

    #[test]
    fn a_known_document_has_no_unknown_fields() {
        let yaml = format!(
            "{HEAD}metadata:\n  name: web\n  namespace: default\n  uid: 0b5c\n  resourceVersion: '7'\n  generation: 2\n  creationTimestamp: 2026-01-01T00:00:00Z\n  labels: {{a: b}}\n  annotations: {{c: d}}\n  finalizers: [x]\n  managedFields: [{{manager: kubectl, operation: Apply}}]\nspec:\n  rootfs: /img\n  process: {{args: [sh], env: [{{name: A, value: b}}]}}\n  mounts: [{{source: /a, destination: /b, readOnly: true}}]\n  limits: {{memory: 16Mi, cpu: 1, pids: 5}}\n  properties: {{anything: goes}}\nstatus:\n  phase: Running\n  conditions: [{{type: Ready, status: 'True'}}]\n"
        );
        assert_eq!(unknown(&yaml), Vec::<String>::new());
    }

    #[test]
    fn unknown_fields_are_named_at_every_depth() {
        let yaml = format!(
            "{HEAD}metadata: {{name: web, lables: {{a: b}}}}\nspec:\n  rootfs: /img\n  limts: {{memory: 16Mi}}\n  mounts: [{{source: /a, destination: /b}}, {{source: /c, destination: /d, redOnly: true}}]\n  process: {{args: [sh], workingdir: /}}\nextra: 1\n"
        );
        assert_eq!(
            unknown(&yaml),
            vec![
                "metadata.lables",
                "spec.limts",
                "spec.mounts[1].redOnly",
                "spec.process.workingdir",
                "extra",
            ]
        );
    }

    #[test]
    fn close_matches_are_suggested_from_the_same_object() {
        assert_eq!(
            message("spec.limts"),
            r#"unknown field; did you mean "limits"?"#
        );
        assert_eq!(
            message("spec.mounts[1].redOnly"),
            r#"unknown field; did you mean "readOnly"?"#
        );
        assert_eq!(
            message("spec.process.workingdir"),
            r#"unknown field; did you mean "workingDir"?"#
        );
        assert_eq!(
            message("metadata.lables"),
            r#"unknown field; did you mean "labels"?"#
        );
        assert_eq!(
            message("spec.Privileged"),
            r#"unknown field; did you mean "privileged"?"#
        );
        assert_eq!(message("spec.frobnicate"), "unknown field");
        assert_eq!(message("extra"), "unknown field");
    }

    #[test]
    fn object_meta_fields_are_learnt_from_the_type() {
        let fields = struct_fields::<ObjectMeta>();
        for f in ["labels", "annotations", "namespace", "managedFields", "uid"] {
            assert!(fields.iter().any(|k| k == f), "{f} in {fields:?}");
        }
    }
}
