//! Reconciling: the desired store, the work queue, the pure planner, the
//! pure status computation and the controller loop that observes, plans and
//! executes for one handle at a time. The controller reaches the
//! containerizer and the reporters only through the seams in [`ops`] and
//! [`reporting`], so it is unit-tested without runc.

pub mod backoff;
pub mod controller;
pub mod history;
pub mod images;
pub mod observe;
pub mod oom;
pub mod ops;
pub mod plan;
pub mod probing;
pub mod queue;
pub mod reporting;
pub mod sidecars;
pub mod status;
pub mod steps;
pub mod store;

#[cfg(test)]
mod fake;
