//! Reasons: the one vocabulary of why something happened or is as it is,
//! for events, conditions and terminations (kubelet's words where one
//! fits). Code passes [`Reason`]s; strings are made only where a reason is
//! reported: an event, a condition, a termination record.

use std::fmt;

/// Why: an event's reason, a condition's reason, or how a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The container was created.
    Created,
    /// A process (the main one, or init for idle containers) started or runs.
    Started,
    /// Processes are being stopped or killed.
    Killing,
    /// A restart waits out crash-loop backoff (an event).
    BackOff,
    /// Waiting out crash-loop backoff (Ready's reason).
    CrashLoopBackOff,
    /// Something failed; for Ready, the last reconcile did.
    Failed,
    /// The OOM killer ended the main process.
    OomKilled,
    /// A declaration is invalid; the last good spec runs.
    InvalidManifest,
    /// The node's admission policy refuses the declaration.
    Forbidden,
    /// The declaration is valid (Valid's reason).
    Valid,
    /// Limits or the record were updated in place.
    Updated,
    /// The container was destroyed.
    Destroyed,
    /// The runtime has no state for a container the depot records (deleted
    /// behind the agent's back): what runs in its cgroup is killed, and the
    /// container made again if it is declared.
    ContainerLost,
    /// Stopped on request.
    Stopped,
    /// Exited 0, not restarted.
    Completed,
    /// Exited non-zero, not restarted.
    Error,
    /// Its supervisor died without recording an exit.
    Lost,
    /// The process never started.
    StartError,
    /// Being made.
    Creating,
    /// Being destroyed.
    Terminating,
    /// The main process could not be started (kubelet's waiting reason
    /// for a container it could not create).
    CreateContainerError,
    /// An image pull started.
    Pulling,
    /// An image was pulled, or is already on the node.
    Pulled,
    /// An image pull failed (event Failed, and Ready's reason).
    ErrImagePull,
    /// Waiting out an image pull's backoff.
    ImagePullBackOff,
    /// The image is not on the node and the pull policy is Never.
    ErrImageNeverPull,
    /// The image reference cannot be parsed.
    InvalidImageName,
    /// The spec and the image together give no process to run (kubelet's word).
    CreateContainerConfigError,
    /// A container's network attachment is broken (kubelet's word).
    NetworkNotReady,
    /// A probe failed (an event), or has not succeeded yet (Ready).
    Unhealthy,
    /// The postStart hook failed: the main process is killed (an event).
    FailedPostStartHook,
    /// The preStop hook failed; the stop goes on (an event).
    FailedPreStopHook,
    /// Init processes are running (Ready's reason, as the kubelet's
    /// PodInitializing).
    Initializing,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 33] = [
        Reason::Created,
        Reason::Started,
        Reason::Killing,
        Reason::BackOff,
        Reason::CrashLoopBackOff,
        Reason::Failed,
        Reason::OomKilled,
        Reason::InvalidManifest,
        Reason::Forbidden,
        Reason::Valid,
        Reason::Updated,
        Reason::Destroyed,
        Reason::ContainerLost,
        Reason::Stopped,
        Reason::Completed,
        Reason::Error,
        Reason::Lost,
        Reason::StartError,
        Reason::Creating,
        Reason::Terminating,
        Reason::CreateContainerError,
        Reason::Pulling,
        Reason::Pulled,
        Reason::ErrImagePull,
        Reason::ImagePullBackOff,
        Reason::ErrImageNeverPull,
        Reason::InvalidImageName,
        Reason::CreateContainerConfigError,
        Reason::NetworkNotReady,
        Reason::Unhealthy,
        Reason::FailedPostStartHook,
        Reason::FailedPreStopHook,
        Reason::Initializing,
    ];

    /// The one CamelCase word reported.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Created => "Created",
            Reason::Started => "Started",
            Reason::Killing => "Killing",
            Reason::BackOff => "BackOff",
            Reason::CrashLoopBackOff => "CrashLoopBackOff",
            Reason::Failed => "Failed",
            Reason::OomKilled => "OOMKilled",
            Reason::InvalidManifest => "InvalidManifest",
            Reason::Forbidden => "Forbidden",
            Reason::Valid => "Valid",
            Reason::Updated => "Updated",
            Reason::Destroyed => "Destroyed",
            Reason::ContainerLost => "ContainerLost",
            Reason::Stopped => "Stopped",
            Reason::Completed => "Completed",
            Reason::Error => "Error",
            Reason::Lost => "Lost",
            Reason::StartError => "StartError",
            Reason::Creating => "Creating",
            Reason::Terminating => "Terminating",
            Reason::CreateContainerError => "CreateContainerError",
            Reason::Pulling => "Pulling",
            Reason::Pulled => "Pulled",
            Reason::ErrImagePull => "ErrImagePull",
            Reason::ImagePullBackOff => "ImagePullBackOff",
            Reason::ErrImageNeverPull => "ErrImageNeverPull",
            Reason::InvalidImageName => "InvalidImageName",
            Reason::CreateContainerConfigError => "CreateContainerConfigError",
            Reason::NetworkNotReady => "NetworkNotReady",
            Reason::Unhealthy => "Unhealthy",
            Reason::FailedPostStartHook => "FailedPostStartHook",
            Reason::FailedPreStopHook => "FailedPreStopHook",
            Reason::Initializing => "Initializing",
        }
    }

    /// The reason a reported word names (a termination read back).
    pub fn parse(word: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == word)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_distinct_and_read_back() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        assert_eq!(Reason::OomKilled.to_string(), "OOMKilled");
        assert_eq!(Reason::parse("Nonsense"), None);
    }
}
