//! How rundmc marks and recognises its own: the finalizer, annotation and
//! label it writes, and the hash that tells one spec from another. Shared by
//! the sources (which read them), the reporters and the containerizer
//! (which write them).

use super::ContainerSpec;

/// The finalizer that makes deletion wait until the container is destroyed.
pub const FINALIZER: &str = "rundmc.io/cleanup";
/// Marks a mirror of a file-sourced container; its value is the handle.
pub const MIRROR_OF: &str = "rundmc.io/mirror-of";
/// The depot label key naming a container's source kind.
pub const SOURCE_LABEL: &str = "rundmc.io/source";

/// A stable hash of a spec: what tells whether a container (or a mirror)
/// holds this spec.
pub fn spec_hash(spec: &ContainerSpec) -> String {
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    format!("{:016x}", super::handle::fnv1a64(&bytes))
}
