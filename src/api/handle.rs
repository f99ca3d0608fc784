//! Container handles: the name of a container's depot directory, its runc id
//! and its cgroup. A `Handle` is validated on construction, so anything that
//! holds one may touch the disk with it.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest handle accepted; keeps depot paths and cgroup names well under
/// the 255-byte file name limit.
pub const MAX_HANDLE_LEN: usize = 128;

/// Why a string is not a handle.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandleError {
    /// Empty string.
    #[error("handle is empty")]
    Empty,
    /// Longer than [`MAX_HANDLE_LEN`].
    #[error("handle {0:?} is longer than {MAX_HANDLE_LEN} bytes")]
    TooLong(String),
    /// A character outside runc's id charset `[A-Za-z0-9_+.-]`.
    #[error("handle {handle:?} contains {bad:?}; only letters, digits and _ + . - are allowed")]
    BadChar {
        /// The refused handle.
        handle: String,
        /// The first offending character.
        bad: char,
    },
    /// Starts with a dot (`.`, `..` and the depot's own temp names).
    #[error("handle {0:?} starts with a dot")]
    LeadingDot(String),
}

/// A validated container handle.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Handle(String);

impl Handle {
    /// Validate `s` as a handle.
    pub fn new(s: impl Into<String>) -> Result<Self, HandleError> {
        let s = s.into();
        if s.is_empty() {
            return Err(HandleError::Empty);
        }
        if s.len() > MAX_HANDLE_LEN {
            return Err(HandleError::TooLong(s));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.' | '-')))
        {
            return Err(HandleError::BadChar { handle: s, bad });
        }
        if s.starts_with('.') {
            return Err(HandleError::LeadingDot(s));
        }
        Ok(Self(s))
    }

    /// The handle of a namespaced custom resource. File-sourced handles are
    /// DNS subdomains and never contain `_`, and neither do namespaces or
    /// names, so `k8s_<namespace>_<name>` cannot collide with either. A handle
    /// that would be too long keeps a prefix and gains a hash of the whole.
    pub fn for_resource(namespace: &str, name: &str) -> Result<Self, HandleError> {
        let full = format!("k8s_{namespace}_{name}");
        if full.len() <= MAX_HANDLE_LEN {
            return Self::new(full);
        }
        let hash = fnv1a64(full.as_bytes());
        let keep = MAX_HANDLE_LEN - 17;
        let mut cut = keep;
        while !full.is_char_boundary(cut) {
            cut -= 1;
        }
        Self::new(format!("{}-{hash:016x}", &full[..cut]))
    }

    /// `<self>-<suffix>` as an object name (a DNS subdomain of at most 253
    /// characters): one that would be longer keeps a prefix and gains a
    /// hash of the whole, as long handles do.
    pub fn with_suffix(&self, suffix: &str) -> String {
        const MAX: usize = 253;
        let full = format!("{self}-{suffix}");
        if full.len() <= MAX {
            return full;
        }
        let hash = fnv1a64(full.as_bytes());
        let mut cut = MAX - 17;
        while !full.is_char_boundary(cut) {
            cut -= 1;
        }
        let prefix = full[..cut].trim_end_matches(['-', '.']);
        format!("{prefix}-{hash:016x}")
    }

    /// The handle as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// FNV-1a: a stable, dependency-free hash, for shortening long names and
/// telling specs apart (not for security).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Handle {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Handle {
    type Error = HandleError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Handle> for String {
    fn from(h: Handle) -> Self {
        h.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_runc_ids() {
        for ok in ["web", "a.b-c_d+e", "X1", "k8s_default_web"] {
            assert_eq!(Handle::new(ok).map(String::from), Ok(ok.to_string()));
        }
    }

    #[test]
    fn refuses_bad_handles() {
        assert_eq!(Handle::new(""), Err(HandleError::Empty));
        assert_eq!(Handle::new(".."), Err(HandleError::LeadingDot("..".into())));
        assert_eq!(Handle::new(".x"), Err(HandleError::LeadingDot(".x".into())));
        assert!(matches!(
            Handle::new("a/b"),
            Err(HandleError::BadChar { bad: '/', .. })
        ));
        assert!(matches!(
            Handle::new("a b"),
            Err(HandleError::BadChar { bad: ' ', .. })
        ));
        assert!(matches!(Handle::new("é"), Err(HandleError::BadChar { .. })));
        assert!(matches!(
            Handle::new("a".repeat(129)),
            Err(HandleError::TooLong(_))
        ));
        assert!(Handle::new("a".repeat(128)).is_ok());
    }

    #[test]
    fn resource_handles_do_not_collide() {
        let a = Handle::for_resource("a-b", "c").unwrap();
        let b = Handle::for_resource("a", "b-c").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "k8s_a-b_c");
        let long = Handle::for_resource("ns", &"n".repeat(253)).unwrap();
        let long2 = Handle::for_resource("ns", &format!("{}m", "n".repeat(252))).unwrap();
        assert_eq!(long.as_str().len(), MAX_HANDLE_LEN);
        assert_ne!(long, long2);
    }

    #[test]
    fn suffixed_names_fit_an_object_name() {
        let h = Handle::new("web").unwrap();
        assert_eq!(h.with_suffix("node-1"), "web-node-1");
        let long = Handle::new("w".repeat(MAX_HANDLE_LEN)).unwrap();
        let node = "n".repeat(200);
        let a = long.with_suffix(&node);
        assert_eq!(a.len(), 253);
        assert!(a.starts_with("www") && !a.contains("--"));
        assert_ne!(
            a,
            long.with_suffix(&"m".repeat(200)),
            "the hash tells them apart"
        );
    }
}
