//! Reporting back where each declaration came from: status (computed here,
//! written as status files or resource status), events, and metrics.

pub mod events;
pub mod files;
pub mod status;
