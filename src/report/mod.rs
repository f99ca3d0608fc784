//! Reporting back where each declaration came from: status (computed by the
//! controller; written as status files, resource status, or mirror status),
//! events (the event log, or Kubernetes Events), and finalizers.
//! [`Reporters`] routes by the declaration's source. Reasons become words
//! here, where they are written.

use std::path::Path;
use std::time::Duration;

use crate::api::{ContainerSpec, ContainerStatus, Desired, Handle, Origin, Reason};
use crate::source::Sighting;

pub mod events;
pub mod files;
pub mod kube;
pub mod metrics;
pub mod mirror;
pub mod recorder;

use events::{Event, EventLog, EventType};
use files::StatusFiles;
use kube::{KubeReportError, KubeReporter};
use metrics::{ReportCpu, charge};

/// When to report again after a write failed.
pub const REPORT_RETRY: Duration = Duration::from_secs(5);

/// Where status and events go.
pub struct Reporters {
    /// Status files of file-sourced containers.
    pub files: StatusFiles,
    /// The event log of file-sourced (and undeclared) containers.
    pub events: EventLog,
    /// The API server, when the agent runs with `--kube`.
    pub kube: Option<KubeReporter>,
    /// Where the CPU of status and event writes is counted.
    pub cpu: ReportCpu,
}

impl Reporters {
    /// The status last reported for `d`.
    pub fn previous(&self, d: &Desired) -> Option<ContainerStatus> {
        match &d.origin {
            Origin::File { .. } => charge(&self.cpu, || self.files.previous(d.handle.as_str())),
            Origin::Kube { .. } => self.kube.as_ref().and_then(|k| k.reported(&d.handle)),
        }
    }

    /// Take in what the Kubernetes source saw of status and mirrors;
    /// the handles whose mirror someone else changed or deleted while
    /// `file_declared` says the directory still declares them.
    pub fn seen(
        &self,
        sightings: &[Sighting],
        file_declared: impl Fn(&Handle) -> bool,
    ) -> Vec<Handle> {
        let Some(kube) = &self.kube else {
            return Vec::new();
        };
        sightings
            .iter()
            .filter_map(|s| kube.seen(s, &file_declared))
            .collect()
    }

    /// Report `status` for `d` where it came from (and to its mirror); when
    /// a write failed, how soon to try again.
    pub async fn status(
        &self,
        d: &Desired,
        spec: Option<&ContainerSpec>,
        status: &ContainerStatus,
    ) -> Option<Duration> {
        let mut retry = None;
        if let Origin::File { path, document } = &d.origin {
            let source = format!("{}#{document}", path.display());
            let written = charge(&self.cpu, || {
                self.files.write(d.handle.as_str(), &source, status)
            });
            if let Err(e) = written {
                tracing::warn!(handle = %d.handle, error = %e, "cannot write status file");
                retry = Some(REPORT_RETRY);
            }
        }
        let Some(kube) = &self.kube else {
            return retry;
        };
        match kube.status(d, spec, status).await {
            Ok(()) => retry,
            // Its cause was logged when the publication failed.
            Err(KubeReportError::MirrorNotPublished { retry_in, .. }) => {
                Some(retry.map_or(retry_in, |r| r.min(retry_in)))
            }
            Err(e) => {
                tracing::warn!(handle = %d.handle, error = %e, "cannot write status to the API server");
                Some(REPORT_RETRY)
            }
        }
    }

    /// Record an event about `handle`, declared by `desired` if it is.
    pub async fn event(
        &self,
        desired: Option<&Desired>,
        handle: &Handle,
        type_: EventType,
        reason: Reason,
        message: String,
    ) {
        charge(&self.cpu, || match type_ {
            EventType::Normal => tracing::info!(%handle, %reason, "{message}"),
            EventType::Warning => tracing::warn!(%handle, %reason, "{message}"),
        });
        let is_kube = matches!(desired.map(|d| &d.origin), Some(Origin::Kube { .. }));
        if let (Some(kube), Some(d)) = (&self.kube, desired)
            && let Err(e) = kube.event(d, type_, reason, &message).await
        {
            tracing::warn!(%handle, error = %e, "cannot record a Kubernetes event");
        }
        if !is_kube {
            let ev = Event::now(handle.as_str(), type_, reason, message);
            if let Err(e) = charge(&self.cpu, || self.events.record(&ev)) {
                tracing::warn!(error = %e, "cannot record event");
            }
        }
    }

    /// `handle` is gone and undeclared: drop what was reported for it.
    pub async fn forget(&self, handle: &Handle) {
        if let Err(e) = self.files.remove(handle.as_str()) {
            tracing::warn!(%handle, error = %e, "cannot remove status file");
        }
        if let Some(kube) = &self.kube
            && let Err(e) = kube.forget_mirror(handle).await
        {
            tracing::warn!(%handle, error = %e, "cannot delete the mirror");
        }
    }

    /// `handle` is undeclared and nothing of it exists, but something may
    /// still report it: a declaration that never made a container (an
    /// invalid document) and has since gone. Its status file goes, and its
    /// mirror if one is known.
    pub async fn forget_undeclared(&self, handle: &Handle) {
        if let Err(e) = self.files.remove(handle.as_str()) {
            tracing::warn!(%handle, error = %e, "cannot remove status file");
        }
        if let Some(kube) = &self.kube
            && kube.has_mirror(handle)
            && let Err(e) = kube.forget_mirror(handle).await
        {
            tracing::warn!(%handle, error = %e, "cannot delete the mirror");
        }
    }

    /// Add the cleanup finalizer to `d`'s resource, if it is one without it.
    pub async fn add_finalizer(&self, d: &Desired) -> Result<(), ::kube::Error> {
        match (&self.kube, &d.origin) {
            (
                Some(kube),
                Origin::Kube {
                    namespace, name, ..
                },
            ) if !d.finalizer => kube.add_finalizer(namespace, name).await,
            _ => Ok(()),
        }
    }

    /// Remove the cleanup finalizer from `d`'s resource, if it carries it.
    pub async fn remove_finalizer(&self, d: &Desired) -> Result<(), ::kube::Error> {
        match (&self.kube, &d.origin) {
            (
                Some(kube),
                Origin::Kube {
                    namespace, name, ..
                },
            ) if d.finalizer => kube.remove_finalizer(namespace, name).await,
            _ => Ok(()),
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
                Reason::InvalidManifest,
                message.clone(),
            );
            if let Err(e) = self.events.record(&ev) {
                tracing::warn!(error = %e, "cannot record event");
            }
        }
    }
}
