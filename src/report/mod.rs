//! Reporting back where each declaration came from: status (computed in
//! [`status`], written as status files or resource status), events, and
//! metrics. [`Reporters`] routes by the declaration's source.

use std::path::Path;

use crate::api::{ContainerStatus, Handle};
use crate::reconcile::store::{Desired, Origin};

pub mod events;
pub mod files;
pub mod status;

use events::{Event, EventLog, EventType};
use files::StatusFiles;

/// Where status and events go.
#[derive(Debug)]
pub struct Reporters {
    /// Status files of file-sourced containers.
    pub files: StatusFiles,
    /// The event log of file-sourced containers (and of undeclared ones).
    pub events: EventLog,
}

impl Reporters {
    /// The status last reported for `d`.
    pub async fn previous(&self, d: &Desired) -> Option<ContainerStatus> {
        match &d.origin {
            Origin::File { .. } => self.files.previous(d.handle.as_str()),
            Origin::Kube { .. } => None,
        }
    }

    /// Report `status` for `d`, if it changed.
    pub async fn status(&self, d: &Desired, status: &ContainerStatus) {
        if let Origin::File { path, document } = &d.origin {
            let source = format!("{}#{document}", path.display());
            if let Err(e) = self.files.write(d.handle.as_str(), &source, status) {
                tracing::warn!(handle = %d.handle, error = %e, "cannot write status file");
            }
        }
    }

    /// Record an event about `handle`.
    pub async fn event(
        &self,
        desired: Option<&Desired>,
        handle: &Handle,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        let _ = desired;
        match type_ {
            EventType::Normal => tracing::info!(%handle, reason, "{message}"),
            EventType::Warning => tracing::warn!(%handle, reason, "{message}"),
        }
        let ev = Event::now(handle.as_str(), type_, reason, message);
        if let Err(e) = self.events.record(&ev) {
            tracing::warn!(error = %e, "cannot record event");
        }
    }

    /// `handle` is gone and undeclared: drop what was reported for it.
    pub async fn forget(&self, handle: &Handle) {
        if let Err(e) = self.files.remove(handle.as_str()) {
            tracing::warn!(%handle, error = %e, "cannot remove status file");
        }
    }

    /// Report the errors of a manifest file that name no container (none: clear them).
    pub fn file_errors(&self, path: &Path, errors: &[String]) {
        if let Err(e) = self.files.write_file_errors(path, errors) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write file status");
        }
        for message in errors {
            let ev = Event::now(
                &path.display().to_string(),
                EventType::Warning,
                events::reason::INVALID_MANIFEST,
                message.clone(),
            );
            if let Err(e) = self.events.record(&ev) {
                tracing::warn!(error = %e, "cannot record event");
            }
        }
    }
}
