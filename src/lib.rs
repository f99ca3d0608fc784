//! rundmc: a node agent that keeps a machine's OCI containers equal to the
//! `Container` manifests declared for it, in a watched directory or as
//! Kubernetes custom resources. See `DESIGN.md` for the flow and the rooms.

pub mod api;
pub mod process;
pub mod runtime;
