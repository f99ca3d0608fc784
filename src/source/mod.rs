//! Sources of desired state: the watched manifest directory and (later) the
//! Kubernetes API. Sources only parse and validate; they never touch
//! containers. What they find goes to the desired store.

pub mod admission;
pub mod dir;
pub mod kube;
pub mod manifest;
pub mod strict;
pub mod yaml_line;
