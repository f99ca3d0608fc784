//! How an ended process is described: the shell convention of 128 + signal
//! number for a death by signal, and the signal's name. Pure; the shim turns
//! a `waitid` result into an [`crate::protocol::ExitRecord`] with it.

/// How the process ended, as `waitid` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It called `exit` with this code.
    Exited(i32),
    /// This signal killed it.
    Killed(i32),
}

impl Ending {
    /// The exit code a shell would report: the code, or 128 + the signal.
    pub fn exit_code(self) -> i32 {
        match self {
            Ending::Exited(code) => code,
            Ending::Killed(sig) => 128 + sig,
        }
    }

    /// The signal that killed it.
    pub fn signal(self) -> Option<i32> {
        match self {
            Ending::Exited(_) => None,
            Ending::Killed(sig) => Some(sig),
        }
    }
}

const NAMES: &[(i32, &str)] = &[
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGTRAP, "SIGTRAP"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGKILL, "SIGKILL"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGPIPE, "SIGPIPE"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
    (libc::SIGCHLD, "SIGCHLD"),
    (libc::SIGCONT, "SIGCONT"),
    (libc::SIGSTOP, "SIGSTOP"),
    (libc::SIGTSTP, "SIGTSTP"),
    (libc::SIGTTIN, "SIGTTIN"),
    (libc::SIGTTOU, "SIGTTOU"),
    (libc::SIGURG, "SIGURG"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGWINCH, "SIGWINCH"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGSYS, "SIGSYS"),
];

/// The name of signal `sig`: `SIGTERM`, or `SIGRTMIN+3` for real-time ones,
/// or `SIG<n>` for a number Linux does not name.
pub fn signal_name(sig: i32) -> String {
    if let Some((_, name)) = NAMES.iter().find(|(n, _)| *n == sig) {
        return (*name).to_owned();
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (min..=max).contains(&sig) {
        return if sig == min {
            "SIGRTMIN".to_owned()
        } else {
            format!("SIGRTMIN+{}", sig - min)
        };
    }
    format!("SIG{sig}")
}

/// The number of a signal given by name (`TERM`, `SIGTERM`, any case) or
/// number (`15`).
pub fn parse_signal(text: &str) -> Option<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let upper = text.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    NAMES
        .iter()
        .find(|(_, name)| *name == full)
        .map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_exits_and_signals_like_a_shell() {
        assert_eq!(Ending::Exited(3).exit_code(), 3);
        assert_eq!(Ending::Exited(3).signal(), None);
        assert_eq!(Ending::Killed(libc::SIGTERM).exit_code(), 143);
        assert_eq!(Ending::Killed(libc::SIGKILL).exit_code(), 137);
        assert_eq!(Ending::Killed(9).signal(), Some(9));
    }

    #[test]
    fn names_signals() {
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(libc::SIGRTMIN()), "SIGRTMIN");
        assert_eq!(signal_name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
        assert_eq!(signal_name(200), "SIG200");
    }

    #[test]
    fn parses_signals() {
        assert_eq!(parse_signal("TERM"), Some(15));
        assert_eq!(parse_signal("sigkill"), Some(9));
        assert_eq!(parse_signal("15"), Some(15));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("NOPE"), None);
    }
}
