//! The harness as a child subreaper. A raw `exec --detach` leaves the
//! process orphaned; the kernel hands it to the nearest subreaper, else to
//! PID 1. When it dies with its container it must be reaped before the
//! container's init can finish exiting (a dying pid namespace waits for
//! every member to be reaped), so a PID 1 that reaps lazily (this VM's
//! reaps every second or two) would bill its laziness to raw runc's
//! teardown. The harness reaps such orphans at once, as systemd would, and
//! as the agent's supervisors do for the processes they run.
//!
//! Children the harness spawns and waits for itself are registered, so the
//! reaper never takes their exit status from under `Child::wait`.

use std::collections::BTreeSet;
use std::io;
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::Mutex;
use std::time::Duration;

static SPAWNED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn spawned() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    SPAWNED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes the harness a subreaper and starts the reaper thread. Call it
/// first in `main`, before any other thread exists: it blocks SIGCHLD for
/// every thread to come, so that the reaper can wait for it.
pub fn start() -> io::Result<()> {
    // SAFETY: prctl and sigprocmask with valid arguments; no thread exists yet.
    unsafe {
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(reap_forever)?;
    Ok(())
}

fn reap_forever() {
    // SAFETY: a zeroed sigset_t filled by sigemptyset/sigaddset.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    };
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    loop {
        // SAFETY: valid set and timeout; a null siginfo is allowed.
        unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        reap_orphans();
    }
}

/// Reaps every exited child nobody waits for. A registered child in the way
/// is left to its waiter, and looked at again a millisecond later.
fn reap_orphans() {
    loop {
        // SAFETY: siginfo_t is plain data; zeroed is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: info is a valid siginfo_t to fill.
        if unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) } < 0 {
            return;
        }
        // SAFETY: waitid filled info (si_pid is 0 when nothing has exited).
        let pid = unsafe { info.si_pid() };
        if pid == 0 {
            return;
        }
        let guard = spawned();
        if guard.contains(&(pid as u32)) {
            drop(guard);
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        // SAFETY: reaps exactly that zombie, which no one else waits for.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    }
}

/// Spawns `cmd` as a registered child; call [`forget`] once it is reaped.
pub fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let mut guard = spawned();
    let child = cmd.spawn()?;
    guard.insert(child.id());
    Ok(child)
}

/// `pid` was reaped by its waiter.
pub fn forget(pid: u32) {
    spawned().remove(&pid);
}

/// Runs `cmd` to completion.
pub fn status(cmd: &mut Command) -> io::Result<ExitStatus> {
    let mut child = spawn(cmd)?;
    let status = child.wait();
    forget(child.id());
    status
}

/// Runs `cmd` to completion, capturing its output.
pub fn output(cmd: &mut Command) -> io::Result<Output> {
    cmd.stdout(std::process::Stdio::piped());
    let child = spawn(cmd)?;
    let pid = child.id();
    let out = child.wait_with_output();
    forget(pid);
    out
}
