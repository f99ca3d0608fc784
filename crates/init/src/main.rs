//! `rundmc-init`: PID 1 of every rundmc container.
//!
//! It blocks every signal it can, so nothing sent to it from inside or
//! outside the container (TERM, INT, HUP...) ends it; only SIGKILL from the
//! host does, which is how destroy ends a container. It waits for signals
//! and, whenever one arrives, reaps every exited child: orphans re-parented
//! to it by the kernel never linger as zombies.
//!
//! When its stdin is a listening socket (the agent's, bound in the bundle
//! directory on the host), it also runs commands on request ([`serve`],
//! [`exec`]): exec probes and hooks, with the container's whole confinement
//! inherited rather than rebuilt, and no runtime or supervisor per command.
//!
//! It is freestanding (no std, no libc, no allocator) and statically linked,
//! so it runs in any image and a thousand containers share its few pages.

#![no_std]
#![no_main]

mod exec;
mod mem;
mod serve;
mod static_buf;
mod sys;

/// Entry point, called from `_start` with an aligned stack.
#[unsafe(no_mangle)]
extern "C" fn rundmc_init_main() -> ! {
    sys::block_all_signals();
    if sys::is_listening_socket(serve::LISTENER) {
        serve::run();
    }
    loop {
        reap_all();
        sys::wait_for_signal(sys::ALL_SIGNALS, None);
    }
}

/// Reap every child that has exited, without blocking.
fn reap_all() {
    while sys::reap_one() {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    sys::exit(1)
}
