//! The agent's hold on a supervisor it did not necessarily start: its pid
//! from `shim.json`, verified against the recorded start time so a reused pid
//! is never mistaken for it, and a pidfd that becomes readable when it exits.

use std::path::{Path, PathBuf};

use rundmc_shim::protocol::{SHIM_JSON, ShimRecord};

use super::ProcessError;
use super::files::read_json;
use crate::pidfd::PidFd;

/// Reads `dir/shim.json`; `None` when there is none.
pub(crate) fn read_record(dir: &Path) -> Result<Option<ShimRecord>, ProcessError> {
    read_json(&dir.join(SHIM_JSON))
}

/// Where the process in `dir` logs: the log directory its supervisor
/// recorded, else `dir` itself (no `--log-dir`, or no record yet).
pub(crate) fn log_dir_of(dir: &Path) -> PathBuf {
    log_dir_in(dir, read_record(dir).ok().flatten().as_ref())
}

/// [`log_dir_of`], with the record already read.
pub(crate) fn log_dir_in(dir: &Path, record: Option<&ShimRecord>) -> PathBuf {
    record
        .and_then(|r| r.log_dir.clone())
        .unwrap_or_else(|| dir.to_owned())
}

/// Opens the supervisor `record` names, if that very process still runs and
/// has not exited: the pidfd is taken first and the start time checked
/// after, so it cannot refer to a process that reused the pid.
pub(crate) fn open_live(record: &ShimRecord) -> Option<PidFd> {
    let shim = PidFd::open_verified(record.pid, record.start_time).ok()?;
    (!shim.has_exited()).then_some(shim)
}
