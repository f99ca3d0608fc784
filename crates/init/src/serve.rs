//! The request loop: init waits on its listening socket and on a signalfd
//! at once, reaps on every signal, and hands each accepted connection from
//! the agent to a forked handler ([`crate::exec`]). Init itself never reads
//! a request, so no request, however malformed or slow, can stall or crash
//! PID 1.

use crate::static_buf::Static;
use crate::sys::{self, POLL_DEAD, POLLIN, PollFd};

/// The listening socket: init's stdin, as the runtime passed it on.
pub const LISTENER: i32 = 0;

/// Serve until the listener fails, then go on reaping alone.
pub fn run() -> ! {
    let sigfd = sys::signalfd_all();
    if sigfd < 0 || sys::set_nonblocking(LISTENER) < 0 {
        // Closed, so the agent's connect fails at once and it falls back to
        // the runtime's exec instead of waiting on a listener nobody serves.
        sys::close(LISTENER);
        reap_forever();
    }
    let sigfd = sigfd as i32;
    loop {
        let mut fds = [
            PollFd {
                fd: sigfd,
                events: POLLIN,
                revents: 0,
            },
            PollFd {
                fd: LISTENER,
                events: POLLIN,
                revents: 0,
            },
        ];
        sys::poll(&mut fds);
        if fds[0].revents != 0 {
            drain(sigfd);
        }
        crate::reap_all();
        if fds[1].revents & POLL_DEAD != 0 {
            sys::close(LISTENER);
            reap_forever();
        }
        if fds[1].revents & POLLIN != 0 {
            accept_all();
        }
    }
}

/// Read every queued signal off the signalfd (their only meaning is "look
/// for exited children").
fn drain(sigfd: i32) {
    // Eight `signalfd_siginfo`s at a time.
    static BUF: Static<[u8; 1024]> = Static::new([0; 1024]);
    // SAFETY: init is single-threaded and this is the buffer's only borrow.
    let buf = unsafe { BUF.get() };
    while sys::read(sigfd, buf) > 0 {}
}

/// Accept every pending connection and fork a handler for each one that
/// comes from outside the container.
fn accept_all() {
    loop {
        let conn = sys::accept(LISTENER);
        if conn < 0 {
            return;
        }
        let conn = conn as i32;
        // The agent is in no pid namespace of the container's, so the kernel
        // shows it as pid 0; a process of the container would show its pid.
        if sys::peer_pid(conn) == Some(0) && sys::fork() == 0 {
            crate::exec::handle(conn);
        }
        sys::close(conn);
    }
}

fn reap_forever() -> ! {
    loop {
        crate::reap_all();
        sys::wait_for_signal(sys::ALL_SIGNALS, None);
    }
}
