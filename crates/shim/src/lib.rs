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

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    const CHILD: &str = "RUNDMC_ABORT_ON_PANIC_CHILD";

    /// Run in a child process (this test binary again): without the hook a
    /// panicking thread ends only itself, and the child exits 0.
    #[test]
    fn a_panic_in_any_thread_ends_the_process() {
        if std::env::var_os(CHILD).is_some() {
            super::abort_on_panic();
            let _ = std::thread::spawn(|| panic!("on purpose")).join();
            std::process::exit(0);
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "--nocapture",
                "tests::a_panic_in_any_thread_ends_the_process",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("on purpose"),
            "the message is still printed: {out:?}"
        );
    }
}
