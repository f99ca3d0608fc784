//! A CPU hog beside a measurement: `stress-ng --cpu N`, the same for the
//! agent and the raw runtime, so bursts are measured with the cores already
//! busy (issue 19). It runs in a process group of its own, ended with
//! SIGTERM (stress-ng ends its workers), then SIGKILL, when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::{cleanup, sys};

/// What the hog runs, for the report.
pub const WHAT: &str = "stress-ng --cpu 2";

/// A running hog.
pub struct Hog {
    child: Child,
}

/// Why there can be no hog, if there cannot.
pub fn missing() -> Option<String> {
    // Through the reaper: a child spawned behind its back may be reaped by
    // it first, and the wait fail.
    let mut cmd = Command::new("stress-ng");
    cmd.arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let found = crate::reaper::status(&mut cmd).is_ok_and(|s| s.success());
    (!found).then(|| "stress-ng is not installed (scripts/deps.sh installs it)".to_string())
}

impl Hog {
    /// Starts `stress-ng --cpu workers`, bounded by a timeout of its own.
    pub fn start(workers: usize) -> Result<Hog> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("stress-ng");
        cmd.args([
            "--cpu",
            &workers.to_string(),
            "--timeout",
            "900s",
            "--quiet",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
        let child = crate::reaper::spawn(&mut cmd).context("starting stress-ng")?;
        let pid = child.id() as i32;
        cleanup::register(|r| r.children.push(pid));
        // Its workers are up within a few ms; give them a moment to load.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Hog { child })
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let group = -(self.child.id() as i32);
        let _ = sys::kill(group, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                crate::reaper::forget(self.child.id());
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = sys::kill(group, libc::SIGKILL);
        let _ = self.child.wait();
        crate::reaper::forget(self.child.id());
    }
}
