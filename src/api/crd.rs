//! The Container CRD, generated from the Rust types. `crds/` holds the
//! committed copy; a test fails when it drifts from what the types generate.

use kube::CustomResourceExt;

use super::types::Container;

/// The CRD as YAML, as committed in `crds/container.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&Container::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_matches_the_types() {
        let committed = include_str!("../../crds/container.yaml");
        let generated = crd_yaml().unwrap();
        assert!(
            committed == generated,
            "crds/container.yaml is stale: run `cargo run -- crd > crds/container.yaml`"
        );
    }

    #[test]
    fn crd_has_what_kubectl_needs() {
        let crd = Container::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("containers.rundmc.io"));
        assert_eq!(crd.spec.names.short_names, Some(vec!["ctr".to_string()]));
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Node", "Phase", "Ready", "Restarts", "Age", "Handle", "Rootfs"
            ]
        );
        let selectable: Vec<_> = version
            .selectable_fields
            .iter()
            .flatten()
            .map(|f| f.json_path.as_str())
            .collect();
        assert_eq!(selectable, [".spec.nodeName"]);
    }
}
