//! The main process's history, kept in the container's depot directory as
//! `main.json` so that a restarted agent knows which run is current, how
//! many restarts there were and how long the last backoff was.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::plan::MainHistory;
use crate::fsutil::{self, FsError};

/// `main.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MainFile {
    /// Starts so far; the current run's process id is `main-<runs>`.
    pub runs: u32,
    /// Restarts after exits (starts after a stop or create do not count).
    pub restarts: u32,
    /// The backoff waited before the current run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delay_ms: Option<u64>,
    /// The current run was ended by a stop.
    #[serde(default)]
    pub stopped: bool,
    /// An init process's: it ran to completion, and is not run again until
    /// the container is made again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub completed: bool,
}

impl MainFile {
    /// Read it from `bundle`; absent means no run yet.
    pub fn load(bundle: &Path) -> Self {
        Self::load_slot(bundle, MAIN)
    }

    /// Write it atomically into `bundle`. Not fsynced: after a machine crash
    /// the container is recreated and its history starts again anyway.
    pub fn save(&self, bundle: &Path) -> Result<(), FsError> {
        self.save_slot(bundle, MAIN)
    }

    /// The history of process `slot` (`main`, `init-<name>`), read from
    /// `<slot>.json` in `bundle`; absent means no run yet.
    pub fn load_slot(bundle: &Path, slot: &str) -> Self {
        fsutil::read_small(&bundle.join(format!("{slot}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Write the history of process `slot` atomically into `bundle`.
    pub fn save_slot(&self, bundle: &Path, slot: &str) -> Result<(), FsError> {
        let path = bundle.join(format!("{slot}.json"));
        fsutil::write_json_with(&path, self, fsutil::Durability::Volatile)
    }

    /// The process id of the current run, if there was one.
    pub fn current_id(&self) -> Option<String> {
        (self.runs > 0).then(|| run_id(self.runs))
    }

    /// The process id of the current run of process `slot`, if there was one.
    pub fn current_slot_id(&self, slot: &str) -> Option<String> {
        (self.runs > 0).then(|| slot_run_id(slot, self.runs))
    }

    /// The history the planner reads.
    pub fn history(&self) -> MainHistory {
        MainHistory {
            restarts: self.restarts,
            last_delay: self.last_delay_ms.map(Duration::from_millis),
            stopped: self.stopped,
        }
    }

    /// The next run, after a create or a stop.
    pub fn start(self) -> Self {
        Self {
            runs: self.runs + 1,
            last_delay_ms: None,
            stopped: false,
            ..self
        }
    }

    /// The next run, restarting after an exit that waited `delay`.
    pub fn restart(self, delay: Duration) -> Self {
        Self {
            runs: self.runs + 1,
            restarts: self.restarts + 1,
            last_delay_ms: Some(delay.as_millis() as u64),
            stopped: false,
            completed: false,
        }
    }
}

/// The main process's slot: its history is `main.json`.
pub const MAIN: &str = "main";

/// The process id of run `n`.
pub fn run_id(n: u32) -> String {
    slot_run_id(MAIN, n)
}

/// The process id of run `n` of process `slot`: `<slot>-<n>`.
pub fn slot_run_id(slot: &str, n: u32) -> String {
    format!("{slot}-{n}")
}

/// The slot of init process `name`: its history is `init-<name>.json`,
/// its runs `init-<name>-<n>`.
pub fn init_slot(name: &str) -> String {
    format!("init-{name}")
}

/// The slot of sidecar `name`: its history is `sidecar-<name>.json`, its
/// runs `sidecar-<name>-<n>`.
pub fn sidecar_slot(name: &str) -> String {
    format!("sidecar-{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_restarts() {
        let f = MainFile::default();
        assert_eq!(f.current_id(), None);
        let f = f.start();
        assert_eq!(f.current_id().as_deref(), Some("main-1"));
        let f = f
            .restart(Duration::from_secs(10))
            .restart(Duration::from_secs(20));
        assert_eq!((f.runs, f.restarts, f.last_delay_ms), (3, 2, Some(20_000)));
        let f = MainFile { stopped: true, ..f }.start();
        assert_eq!(
            (f.runs, f.restarts, f.last_delay_ms, f.stopped),
            (4, 2, None, false)
        );
    }
}
