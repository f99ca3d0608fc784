//! Container networking through CNI: network configs, the plugin exec
//! protocol, and the attachment of a container's namespace to a network.
//! Imports only `api`, `fsutil` and `mountinfo` of the crate.

// coordinator replaces at merge
pub mod attach;
pub mod cni;
pub mod plugin;
