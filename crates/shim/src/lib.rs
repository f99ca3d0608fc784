//! The contract between the rundmc agent and `rundmc-shim`, its per-process
//! supervisor: which files live in a process directory, what they hold and
//! who writes them ([`protocol`]), the CRI log line format of `output.log`
//! ([`cri`]), how exit statuses are named ([`status`]) and how a pid is told
//! from a reused one ([`procstat`]). The agent depends on this crate for
//! these definitions only; the supervisor binary is `src/main.rs`.

pub mod cri;
pub mod procstat;
pub mod protocol;
pub mod status;
