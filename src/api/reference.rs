//! STAND-IN until the img-registry branch lands: image references.

use super::PullPolicy;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// Registry host.
    pub registry: String,
    /// Repository.
    pub repository: String,
    /// Tag.
    pub tag: Option<String>,
    /// Digest.
    pub digest: Option<String>,
}

/// A bad reference.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid reference format")]
pub struct ReferenceError;

impl ImageReference {
    /// Parse.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() || s.contains(' ') {
            return Err(ReferenceError);
        }
        Ok(Self {
            registry: "docker.io".into(),
            repository: s.into(),
            tag: None,
            digest: None,
        })
    }
    /// Kubelet's default.
    pub fn default_pull_policy(&self) -> PullPolicy {
        PullPolicy::Always
    }
}

impl std::fmt::Display for ImageReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}
