//! The resource kinds the fake serves: group, version, plural, scope, and the
//! per-kind rules of the real apiserver's registry strategies that the fake
//! mirrors (status subresource, generation, custom-resource semantics, field
//! labels). Adding a kind is one line in [`default_kinds`].

use serde_json::Value;

/// One served resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kind {
    /// API group; "" for the core group.
    pub group: String,
    /// API version, e.g. "v1alpha1".
    pub version: String,
    /// Kind, e.g. "Container".
    pub kind: String,
    /// Plural resource name used in URLs, e.g. "containers".
    pub plural: String,
    /// Singular name (discovery only).
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Has a `/status` subresource: status is reset on main-resource writes
    /// and everything but status is reset on status writes.
    pub status_subresource: bool,
    /// Status in a create body is kept (Nodes); otherwise a kind with a
    /// status subresource drops it.
    pub status_on_create: bool,
    /// `metadata.generation` is kept (set to 1 on create, bumped on changes
    /// outside metadata and status, and when deletion starts).
    pub tracks_generation: bool,
    /// Custom resource: strategic merge patch is refused with 415, updates
    /// must carry `metadata.resourceVersion`, and field labels beyond
    /// `metadata.name`/`metadata.namespace` are only its CRD's
    /// `selectableFields`, honoured from Kubernetes 1.31 on.
    pub custom: bool,
    /// Extra field labels: the built-in kind's supported labels, or the
    /// custom resource's `selectableFields` (without the leading dot).
    pub field_labels: Vec<String>,
    /// Short names (discovery only).
    pub short_names: Vec<String>,
}

impl Kind {
    /// A built-in kind with its supported extra field labels.
    pub fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Kind {
        Kind {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: kind.to_lowercase(),
            namespaced,
            status_subresource: false,
            status_on_create: false,
            tracks_generation: false,
            custom: false,
            field_labels: Vec::new(),
            short_names: Vec::new(),
        }
    }

    /// A custom resource kind (generation tracked, CR patch/update rules).
    pub fn custom(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Kind {
        Kind {
            tracks_generation: true,
            custom: true,
            ..Kind::builtin(group, version, kind, plural, namespaced)
        }
    }

    /// With a `/status` subresource.
    pub fn with_status(mut self) -> Kind {
        self.status_subresource = true;
        self
    }

    /// Keeps status in create bodies.
    pub fn with_status_on_create(mut self) -> Kind {
        self.status_on_create = true;
        self
    }

    /// With metadata.generation tracking.
    pub fn with_generation(mut self) -> Kind {
        self.tracks_generation = true;
        self
    }

    /// With extra field labels (built-ins) or selectable fields (CRs).
    pub fn with_fields(mut self, labels: &[&str]) -> Kind {
        self.field_labels = labels.iter().map(|l| l.to_string()).collect();
        self
    }

    /// With short names for discovery.
    pub fn with_short_names(mut self, names: &[&str]) -> Kind {
        self.short_names = names.iter().map(|l| l.to_string()).collect();
        self
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` as used in error messages (`containers.rundmc.io`).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group` as used in Invalid messages (`Container.rundmc.io`).
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// The kind described by a CustomResourceDefinition object, for its first
    /// served version; `None` when the object lacks the required fields.
    pub fn from_crd(crd: &Value) -> Option<Kind> {
        let spec = crd.get("spec")?;
        let names = spec.get("names")?;
        let versions = spec.get("versions")?.as_array()?;
        let version = versions
            .iter()
            .find(|v| v.get("served").and_then(Value::as_bool).unwrap_or(true))?;
        let mut kind = Kind::custom(
            spec.get("group")?.as_str()?,
            version.get("name")?.as_str()?,
            names.get("kind")?.as_str()?,
            names.get("plural")?.as_str()?,
            spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
        );
        if let Some(singular) = names.get("singular").and_then(Value::as_str) {
            kind.singular = singular.to_string();
        }
        kind.status_subresource = version.pointer("/subresources/status").is_some();
        kind.field_labels = selectable_fields(version);
        kind.short_names = string_list(names.get("shortNames"));
        Some(kind)
    }
}

/// The `selectableFields` of one CRD version, without the leading dots.
pub fn selectable_fields(crd_version: &Value) -> Vec<String> {
    crd_version
        .get("selectableFields")
        .and_then(Value::as_array)
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                .map(|p| p.trim_start_matches('.').to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Field labels of core/v1 Events, from the Kubernetes field-selector docs.
const CORE_EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// The kinds every fake serves. One line per kind.
pub fn default_kinds() -> Vec<Kind> {
    vec![
        container_kind(),
        // Deleting a namespace deletes the object at once; there is no
        // namespace controller to empty it first.
        Kind::builtin("", "v1", "Namespace", "namespaces", false).with_status(),
        // Nodes: only metadata.name and spec.unschedulable are field labels
        // (pkg/apis/core/v1/conversion.go).
        Kind::builtin("", "v1", "Node", "nodes", false)
            .with_status()
            .with_status_on_create()
            .with_fields(&["spec.unschedulable"]),
        // Image pull Secrets, read with a get.
        Kind::builtin("", "v1", "Secret", "secrets", true),
        Kind::builtin("", "v1", "Event", "events", true)
            .with_fields(CORE_EVENT_FIELDS)
            .with_short_names(&["ev"]),
        Kind::builtin("events.k8s.io", "v1", "Event", "events", true).with_short_names(&["ev"]),
        Kind::builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        )
        .with_status()
        .with_generation()
        .with_short_names(&["crd", "crds"]),
    ]
}

/// rundmc's `Container` custom resource, as its CRD declares it.
pub fn container_kind() -> Kind {
    Kind::custom("rundmc.io", "v1alpha1", "Container", "containers", true)
        .with_status()
        .with_fields(&["spec.nodeName"])
        .with_short_names(&["ctr"])
}
