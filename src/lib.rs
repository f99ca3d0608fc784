//! rundmc: a node agent that keeps a machine's OCI containers equal to the
//! `Container` manifests declared for it, in a watched directory or as
//! Kubernetes custom resources. See `DESIGN.md` for the flow and the rooms.

pub mod api;
pub mod cgroup;
pub mod cli;
pub mod containerizer;
pub(crate) mod fsutil;
mod heap;
pub mod image;
pub mod mountinfo;
pub mod network;
pub(crate) mod pidfd;
pub(crate) mod probe;
pub mod process;
mod procgroup;
pub(crate) mod reconcile;
pub(crate) mod report;
pub mod runtime;
pub(crate) mod server;
pub mod source;
mod sync;
