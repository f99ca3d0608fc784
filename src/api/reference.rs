//! Image references (`spec.image`), parsed and normalised the way Docker and
//! the kubelet do (the grammar of distribution's `reference` package):
//! `busybox` is `docker.io/library/busybox:latest`. Pure: no I/O, and no
//! registry client; the puller turns an [`ImageReference`] into requests.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::api::PullPolicy;

/// Where an unqualified name lives.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag of a reference that names none (and no digest).
pub const DEFAULT_TAG: &str = "latest";
/// Docker Hub's repository for single-component names (`busybox`).
const OFFICIAL_PREFIX: &str = "library/";
/// The longest repository name (with its registry) distribution accepts.
const MAX_NAME_LEN: usize = 255;
/// The longest tag.
const MAX_TAG_LEN: usize = 128;

/// A normalised image reference: `registry/repository[:tag][@digest]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageReference {
    /// `docker.io`, `ghcr.io`, `registry:5000`, `localhost`.
    pub registry: String,
    /// `library/busybox`, `org/app`.
    pub repository: String,
    /// The tag; `latest` when the reference named neither tag nor digest.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

/// Why a string is not an image reference; each names the part at fault.
#[derive(Error, Debug, Clone, PartialEq, Eq)]
pub enum ReferenceError {
    /// The reference is empty.
    #[error("image reference is empty")]
    Empty,
    /// Whitespace or another character no reference has.
    #[error("image reference {reference:?}: invalid character {ch:?}")]
    InvalidChar {
        /// The whole reference.
        reference: String,
        /// The character.
        ch: char,
    },
    /// The registry (first path component) is not a host\[:port\].
    #[error(
        "image reference {reference:?}: invalid registry {registry:?} (want host or host:port)"
    )]
    Registry {
        /// The whole reference.
        reference: String,
        /// The registry part.
        registry: String,
    },
    /// A repository path component has upper-case letters.
    #[error("image reference {reference:?}: repository name {component:?} must be lowercase")]
    Uppercase {
        /// The whole reference.
        reference: String,
        /// The offending component.
        component: String,
    },
    /// A repository path component is not `[a-z0-9]+` joined by `.`, `_`, `__` or dashes.
    #[error(
        "image reference {reference:?}: invalid repository name component {component:?} \
         (lowercase letters and digits, separated by '.', '_', '__' or '-')"
    )]
    Component {
        /// The whole reference.
        reference: String,
        /// The offending component (empty for `a//b`).
        component: String,
    },
    /// The registry and repository together are longer than 255 characters.
    #[error(
        "image reference {reference:?}: repository name is longer than {MAX_NAME_LEN} characters"
    )]
    TooLong {
        /// The whole reference.
        reference: String,
    },
    /// The tag is not `[\w][\w.-]{0,127}`.
    #[error(
        "image reference {reference:?}: invalid tag {tag:?} (letters, digits, '_', '.', '-', \
         not starting with '.' or '-', at most 128)"
    )]
    Tag {
        /// The whole reference.
        reference: String,
        /// The tag.
        tag: String,
    },
    /// The digest is not `sha256:<64 lowercase hex>`.
    #[error(
        "image reference {reference:?}: invalid digest {digest:?} (want sha256:<64 lowercase hex digits>)"
    )]
    Digest {
        /// The whole reference.
        reference: String,
        /// The digest.
        digest: String,
    },
}

impl ImageReference {
    /// Parses and normalises `s`: the registry defaults to `docker.io`
    /// (`index.docker.io` is `docker.io` too), a single-component Docker
    /// Hub name gains `library/`, and a reference with neither tag nor
    /// digest gets the tag `latest`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let err_ref = || s.to_string();
        if let Some(ch) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(ReferenceError::InvalidChar {
                reference: err_ref(),
                ch,
            });
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest).map_err(|()| ReferenceError::Digest {
                    reference: err_ref(),
                    digest: digest.to_string(),
                })?;
                (rest, Some(digest.to_string()))
            }
            None => (s, None),
        };
        let (name, tag) = split_tag(rest);
        if let Some(tag) = tag {
            check_tag(tag).map_err(|()| ReferenceError::Tag {
                reference: err_ref(),
                tag: tag.to_string(),
            })?;
        }
        let (registry, repository) = split_registry(name);
        check_registry(registry).map_err(|()| ReferenceError::Registry {
            reference: err_ref(),
            registry: registry.unwrap_or_default().to_string(),
        })?;
        check_repository(repository, s)?;
        if name.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong {
                reference: err_ref(),
            });
        }
        Ok(normalise(registry, repository, tag, digest))
    }

    /// Kubernetes' default `imagePullPolicy`: `Always` for the tag
    /// `latest` (which a reference naming neither tag nor digest has),
    /// otherwise `IfNotPresent`.
    pub fn default_pull_policy(&self) -> PullPolicy {
        match self.tag.as_deref() {
            Some(DEFAULT_TAG) => PullPolicy::Always,
            _ => PullPolicy::IfNotPresent,
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageReference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageReference::parse(s)
    }
}

fn normalise(
    registry: Option<&str>,
    repository: &str,
    tag: Option<&str>,
    digest: Option<String>,
) -> ImageReference {
    let registry = match registry {
        None | Some("index.docker.io") => DEFAULT_REGISTRY,
        Some(r) => r,
    };
    let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
        format!("{OFFICIAL_PREFIX}{repository}")
    } else {
        repository.to_string()
    };
    let tag = match (tag, &digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, None) => Some(DEFAULT_TAG.to_string()),
        (None, Some(_)) => None,
    };
    ImageReference {
        registry: registry.to_string(),
        repository,
        tag,
        digest,
    }
}

/// `name[:tag]`: the tag is after the last `:` that follows the last `/`
/// (a `:` before it is a registry's port).
fn split_tag(s: &str) -> (&str, Option<&str>) {
    let last_slash = s.rfind('/').map_or(0, |i| i + 1);
    match s[last_slash..].rfind(':') {
        Some(i) => (&s[..last_slash + i], Some(&s[last_slash + i + 1..])),
        None => (s, None),
    }
}

/// The first component is a registry when it has a `.` or a `:`, is
/// `localhost`, or has upper-case letters (Docker's `splitDockerDomain`).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn check_digest(digest: &str) -> Result<(), ()> {
    let hex = digest.strip_prefix("sha256:").ok_or(())?;
    let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok { Ok(()) } else { Err(()) }
}

fn check_tag(tag: &str) -> Result<(), ()> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let ok = match bytes.split_first() {
        Some((first, rest)) => {
            word(*first)
                && tag.len() <= MAX_TAG_LEN
                && rest.iter().all(|&b| word(b) || b == b'.' || b == b'-')
        }
        None => false,
    };
    if ok { Ok(()) } else { Err(()) }
}

/// `host[:port]`: dot-separated labels of letters, digits and inner
/// dashes (or a bracketed IPv6 address), and an optional numeric port.
fn check_registry(registry: Option<&str>) -> Result<(), ()> {
    let Some(registry) = registry else {
        return Ok(());
    };
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => (h, Some(p)),
        _ => (registry, None),
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(());
    }
    let ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
    } else {
        !host.is_empty() && host.split('.').all(valid_label)
    };
    if ok { Ok(()) } else { Err(()) }
}

fn valid_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn check_repository(repository: &str, reference: &str) -> Result<(), ReferenceError> {
    for component in repository.split('/') {
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase {
                reference: reference.to_string(),
                component: component.to_string(),
            });
        }
        if !valid_component(component) {
            return Err(ReferenceError::Component {
                reference: reference.to_string(),
                component: component.to_string(),
            });
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let ok = match &c[sep..i] {
            "." | "_" | "__" => true,
            s => s.bytes().all(|b| b == b'-'),
        };
        if !ok {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904b825dc642cb6eb9a060e54bf";

    #[test]
    fn normalises_like_docker() {
        let d = format!("sha256:{HEX}");
        let cases: Vec<(String, String)> = vec![
            ("busybox".into(), "docker.io/library/busybox:latest".into()),
            (
                "busybox:1.36".into(),
                "docker.io/library/busybox:1.36".into(),
            ),
            (
                "library/busybox".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "docker.io/busybox".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "index.docker.io/library/busybox:1".into(),
                "docker.io/library/busybox:1".into(),
            ),
            ("user/app".into(), "docker.io/user/app:latest".into()),
            ("ghcr.io/org/app:1.2".into(), "ghcr.io/org/app:1.2".into()),
            (
                "ghcr.io/org/team/app".into(),
                "ghcr.io/org/team/app:latest".into(),
            ),
            (
                format!("registry:5000/app@{d}"),
                format!("registry:5000/app@{d}"),
            ),
            ("localhost/x".into(), "localhost/x:latest".into()),
            ("localhost:5000/x:v1".into(), "localhost:5000/x:v1".into()),
            ("127.0.0.1:5000/a/b:t".into(), "127.0.0.1:5000/a/b:t".into()),
            (
                format!("busybox:1.36@{d}"),
                format!("docker.io/library/busybox:1.36@{d}"),
            ),
            (
                format!("busybox@{d}"),
                format!("docker.io/library/busybox@{d}"),
            ),
            (
                "a.b-c/x__y.z-w--v:Tag_1.x-y".into(),
                "a.b-c/x__y.z-w--v:Tag_1.x-y".into(),
            ),
            ("[::1]:5000/app".into(), "[::1]:5000/app:latest".into()),
        ];
        for (input, want) in cases {
            let r = ImageReference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), want, "{input}");
        }
    }

    #[test]
    fn fields() {
        let r = ImageReference::parse("registry:5000/team/app:2").unwrap();
        assert_eq!(r.registry, "registry:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("2"));
        assert_eq!(r.digest, None);
        assert_eq!(r.name(), "registry:5000/team/app");
    }

    #[test]
    fn rejects_with_the_part_named() {
        let long_tag = "t".repeat(129);
        let long_name = format!("a/{}", "b".repeat(260));
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "empty"),
            ("busy box".into(), "invalid character ' '"),
            ("Busybox".into(), "\"Busybox\" must be lowercase"),
            ("ghcr.io/Org/app".into(), "\"Org\" must be lowercase"),
            ("a//b".into(), "invalid repository name component \"\""),
            ("-a".into(), "invalid repository name component \"-a\""),
            ("a_.b".into(), "component \"a_.b\""),
            ("a___b".into(), "component \"a___b\""),
            ("a:".into(), "invalid tag \"\""),
            ("a:-x".into(), "invalid tag \"-x\""),
            ("a:x/y".into(), "invalid registry \"a:x\""),
            (format!("a:{long_tag}"), "invalid tag"),
            ("a@sha256:abc".into(), "invalid digest \"sha256:abc\""),
            (format!("a@sha512:{HEX}"), "invalid digest"),
            (format!("a@sha256:{}", HEX.to_uppercase()), "invalid digest"),
            ("reg:port/a".into(), "invalid registry \"reg:port\""),
            ("-reg.io/a".into(), "invalid registry \"-reg.io\""),
            ("reg..io/a".into(), "invalid registry \"reg..io\""),
            (long_name, "longer than 255"),
            ("ghcr.io/".into(), "component \"\""),
        ];
        for (input, want) in cases {
            let err = ImageReference::parse(&input).unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn kubelet_default_pull_policy() {
        let d = format!("sha256:{HEX}");
        let cases = [
            ("busybox".to_string(), PullPolicy::Always),
            ("busybox:latest".to_string(), PullPolicy::Always),
            ("busybox:1.36".to_string(), PullPolicy::IfNotPresent),
            (format!("busybox@{d}"), PullPolicy::IfNotPresent),
            (format!("busybox:1@{d}"), PullPolicy::IfNotPresent),
            (format!("busybox:latest@{d}"), PullPolicy::Always),
        ];
        for (input, want) in cases {
            let r = ImageReference::parse(&input).unwrap();
            assert_eq!(r.default_pull_policy(), want, "{input}");
        }
    }

    #[test]
    fn display_parses_back_to_itself() {
        for s in ["busybox", "ghcr.io/org/app:1.2", "localhost/x"] {
            let r = ImageReference::parse(s).unwrap();
            assert_eq!(ImageReference::parse(&r.to_string()).unwrap(), r);
        }
    }
}
