//! After a failed start, whatever the runtime left behind. The supervisor
//! is a child subreaper, so once the runtime has exited, every process it
//! started and abandoned is the supervisor's child: the process itself,
//! when the runtime reported a failure after starting it, or a runtime
//! helper cut off midway. Nothing would supervise, log or reap them, and
//! the agent would start the process again beside them: all are killed and
//! reaped.

use std::os::fd::AsFd;
use std::time::Duration;

use rundmc_shim::procstat;

use super::sys;

/// Rounds of listing and killing: a killed child's own children in the
/// supervisor's pid namespace become its children in turn.
const ROUNDS: usize = 10;
/// How long each child gets to die after SIGKILL.
const WAIT: Duration = Duration::from_secs(5);

/// SIGKILLs and reaps every child of the supervisor; returns the pids killed.
pub fn kill_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut killed = Vec::new();
    for _ in 0..ROUNDS {
        let children = children_of(me);
        if children.is_empty() {
            break;
        }
        for pid in children {
            // A child's pid stays ours until we reap it: no reuse to fear.
            let Ok(fd) = sys::pidfd_open(pid) else {
                continue;
            };
            if sys::pidfd_send_signal(fd.as_fd(), libc::SIGKILL).is_ok() {
                killed.push(pid);
            }
            if let Err(e) = sys::reap_within(fd.as_fd(), WAIT) {
                eprintln!("rundmc-shim: reaping {pid}: {e}");
            }
        }
    }
    killed
}

/// Pids whose parent is `ppid`, from /proc.
fn children_of(ppid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| procstat::parse_ppid(&stat))
                == Some(ppid)
        })
        .collect()
}
