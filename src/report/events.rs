//! Events: what happened to a container, Kubernetes-style (type, reason,
//! message). For file-sourced containers they go to `events.jsonl`, one
//! JSON object a line, bounded to the newest entries.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::api::Reason;
use crate::fsutil::{self, FsError};
use crate::sync::lock;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// Routine.
    Normal,
    /// Needs attention.
    Warning,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 with nanoseconds.
    pub time: String,
    /// The container's handle, or the manifest path for file errors.
    pub handle: String,
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// One CamelCase word.
    pub reason: String,
    /// Detail.
    pub message: String,
}

impl Event {
    /// An event happening now.
    pub fn now(handle: &str, type_: EventType, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            time: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            handle: handle.to_string(),
            type_,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// The bounded `events.jsonl`.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    keep: usize,
    lines: Mutex<usize>,
}

impl EventLog {
    /// Append to `path`, keeping about the newest `keep` events.
    pub fn open(path: impl Into<PathBuf>, keep: usize) -> Result<Self, FsError> {
        let path = path.into();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fsutil::at(dir))?;
        }
        let lines = match std::fs::read_to_string(&path) {
            Ok(text) => text.lines().count(),
            Err(_) => 0,
        };
        Ok(Self {
            path,
            keep: keep.max(1),
            lines: Mutex::new(lines),
        })
    }

    /// Append one event; when the file holds twice `keep`, cut it to the
    /// newest `keep` (an atomic rewrite, so readers never see half).
    pub fn record(&self, event: &Event) -> Result<(), FsError> {
        let mut lines = lock(&self.lines);
        let mut line = serde_json::to_string(event).unwrap_or_default();
        line.push('\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(fsutil::at(&self.path))?;
        f.write_all(line.as_bytes())
            .map_err(fsutil::at(&self.path))?;
        *lines += 1;
        if *lines >= 2 * self.keep {
            let text = std::fs::read_to_string(&self.path).map_err(fsutil::at(&self.path))?;
            let all: Vec<&str> = text.lines().collect();
            let kept = all[all.len().saturating_sub(self.keep)..].join("\n") + "\n";
            fsutil::write_atomic(&self.path, kept.as_bytes())?;
            *lines = self.keep.min(all.len());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_newest_kept() {
        let dir = std::env::temp_dir().join(format!("rundmc-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = EventLog::open(dir.join("events.jsonl"), 5).unwrap();
        for i in 0..23 {
            log.record(&Event::now(
                "web",
                EventType::Normal,
                Reason::Started,
                format!("n{i}"),
            ))
            .unwrap();
        }
        let text = std::fs::read_to_string(&log.path).unwrap();
        let events: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(events.len() >= 5 && events.len() < 10, "{}", events.len());
        assert_eq!(events.last().unwrap().message, "n22", "newest kept");
        assert_eq!(events[0].type_, EventType::Normal);
        let reopened = EventLog::open(dir.join("events.jsonl"), 5).unwrap();
        reopened
            .record(&Event::now("web", EventType::Warning, Reason::Failed, "x"))
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
