//! The contract between the rundmc agent and `rundmc-shim`, its per-process
//! supervisor: which files live in a process directory, what they hold and
//! who writes them ([`protocol`]), the CRI log line format of `output.log`
//! ([`cri`]), how exit statuses are named ([`status`]) and how a pid is told
//! from a reused one ([`procstat`]), and the system calls both sides make
//! the same way: replacing a file atomically ([`atomic`]) and holding a
//! process by a pidfd ([`pidfd`]); and how both binaries end on a panic
//! ([`abort_on_panic`]). The agent depends on this crate for these
//! definitions only; the supervisor binary is `src/main.rs`.

/// Make any panic end the whole process, as `panic = "abort"` does, also
/// in a build whose profile unwinds (`make test` builds the binaries with
/// the tests' own unwinding profile, so that dependencies compile once).
/// The default hook still prints the message first. Called first thing by
/// each binary's `main`, so that no thread of a binary ever unwinds: no
/// task swallows a panic, and no lock is ever poisoned.
pub fn abort_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        std::process::abort();
    }));
}

pub mod atomic;
pub mod cri;
pub mod pidfd;
pub mod procstat;
pub mod protocol;
pub mod status;
