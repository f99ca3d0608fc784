//! Sources of desired state: the watched manifest directory and the
//! Kubernetes API. Sources only read, resolve, validate and admit, on their
//! own tasks; they never touch containers. What they find goes to the
//! desired store as [`Update`]s, through one writer.

pub mod admission;
pub mod dir;
pub mod files;
pub mod kube;
pub mod manifest;
pub mod strict;
pub mod update;
pub mod yaml_line;

pub use update::{FileErrors, MirrorSight, Sighting, Update};
