//! The contract between the rundmc agent and `rundmc-shim`, its per-process
//! supervisor: which files live in a process directory, what they hold and
//! who writes them ([`protocol`]), the CRI log line format of `output.log`
//! ([`cri`]), how exit statuses are named ([`status`]) and how a pid is told
//! from a reused one ([`procstat`]), and the system calls both sides make
//! the same way: replacing a file atomically ([`atomic`]) and holding a
//! process by a pidfd ([`pidfd`]). The agent depends on this crate for these
//! definitions only; the supervisor binary is `src/main.rs`.

pub mod atomic;
pub mod cri;
pub mod pidfd;
pub mod procstat;
pub mod protocol;
pub mod status;
