//! The containerizer: the seed's Containerizer in Rust. It owns the depot,
//! turns specs into bundles, mounts rootfs layers, and drives the OCI
//! runtime and the process supervisors to create, run in, stop and destroy
//! containers. It knows nothing of where specs come from.

pub mod bundle;
pub mod cgroup;
pub mod depot;
pub mod rootfs;
pub mod users;
