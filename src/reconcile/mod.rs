//! Reconciling: the desired store, the work queue, the pure planner, the
//! pure status computation and the controller loop that observes, plans and
//! executes for one handle at a time.

pub mod backoff;
pub mod controller;
pub mod history;
pub mod observe;
pub mod oom;
pub mod plan;
pub mod queue;
pub mod status;
pub mod steps;
pub mod store;
