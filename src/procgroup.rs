//! A child run to its end with piped stdio: its process group, killed
//! whole when its guard drops (the runtime adapter's runc calls and the CNI
//! plugins each run in a group of their own, so a timeout or a dropped call
//! leaves none of their children behind), and its input written while its
//! output is read. A leaf: imports nothing of the crate.

use std::io;
use std::process::ExitStatus;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};

/// How a child spawned with piped stdio ended, and what it printed.
pub(crate) struct Ended {
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// Its stdout.
    pub(crate) stdout: Vec<u8>,
    /// Its stderr.
    pub(crate) stderr: Vec<u8>,
}

/// Write `input` to the child's stdin while reading its stdout and stderr
/// to their ends, then reap it.
pub(crate) async fn exchange(child: &mut Child, input: &[u8]) -> io::Result<Ended> {
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (written, out, err) =
        tokio::join!(write_all(stdin, input), read_all(stdout), read_all(stderr));
    written?;
    let status = child.wait().await?;
    Ok(Ended {
        status,
        stdout: out?,
        stderr: err?,
    })
}

async fn write_all(pipe: Option<ChildStdin>, bytes: &[u8]) -> io::Result<()> {
    if let Some(mut pipe) = pipe {
        match pipe.write_all(bytes).await {
            // The child need not read all of its input.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            other => other?,
        }
    }
    Ok(())
}

async fn read_all<R: AsyncRead + Unpin>(pipe: Option<R>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut pipe) = pipe {
        pipe.read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

/// Kills a child's whole process group when dropped, unless disarmed once
/// the child was reaped: its pid, and so its group id, may be reused then.
pub(crate) struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    /// A guard of `child`'s group (it was spawned with `process_group(0)`).
    pub(crate) fn new(child: &Child) -> Self {
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);
        GroupGuard { pgid }
    }

    /// Kill the group now.
    pub(crate) fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH: the group is already empty, which is what we want.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// The child was reaped: leave its (reusable) group id alone.
    pub(crate) fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
