//! The contract between the rundmc agent and `rundmc-shim`, its per-process
//! supervisor: which files live in a process directory, what they hold and
//! who writes them. The agent depends on this crate for these definitions
//! only; the supervisor binary is `src/main.rs`.

pub mod protocol;
