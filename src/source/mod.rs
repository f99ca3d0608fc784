//! Sources of desired state: the watched manifest directory and the
//! Kubernetes API. Sources only read, resolve, validate and admit, on their
//! own tasks; they never touch containers. What they find goes to the
//! desired store as [`Update`]s, through one writer.

pub(crate) mod admission;
pub(crate) mod dir;
pub(crate) mod files;
pub(crate) mod kube;
pub mod manifest;
pub(crate) mod strict;
pub(crate) mod update;
pub(crate) mod yaml_line;

pub(crate) use update::{FileErrors, MirrorSight, Sighting, Update};
