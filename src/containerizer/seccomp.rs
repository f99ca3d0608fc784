//! Localhost seccomp profiles: the file a spec's
//! `securityContext.seccompProfile.localhostProfile` names, below the
//! agent's `--seccomp-profile-root`, read and parsed before the bundle's
//! pure rules run (which evaluate it, see `bundle::seccomp`).

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::bundle::{SeccompProfile, SeccompProfileError};
use crate::api::{ContainerSpec, SeccompProfileType};

/// Where Localhost profiles are read from unless told otherwise (the
/// kubelet's is /var/lib/kubelet/seccomp).
pub const DEFAULT_PROFILE_ROOT: &str = "/var/lib/rundmc/seccomp";

/// The field a Localhost profile's path is in.
pub const FIELD: &str = "spec.securityContext.seccompProfile.localhostProfile";

/// Why a Localhost profile cannot be used.
#[derive(Debug, Error)]
pub enum LocalhostError {
    /// Type Localhost without a path (validation refuses it first).
    #[error("{FIELD}: must be set for type Localhost")]
    Unset,
    /// An absolute path, or one with `..`: it must stay below the root.
    #[error(
        "{FIELD}: {path:?} must be a relative path below the seccomp profile root {root} (--seccomp-profile-root), without .."
    )]
    Escapes {
        /// As written.
        path: String,
        /// The root.
        root: PathBuf,
    },
    /// The file cannot be read.
    #[error(
        "{FIELD}: cannot read the seccomp profile {file}: {source} (profiles are read from --seccomp-profile-root)"
    )]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not a profile.
    #[error("{FIELD}: the seccomp profile {file} is invalid: {source}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: SeccompProfileError,
    },
}

/// `spec`'s Localhost profile, read from below `root`; `None` when its
/// profile is of another type.
pub fn localhost_profile(
    root: &Path,
    spec: &ContainerSpec,
) -> Result<Option<SeccompProfile>, LocalhostError> {
    let Some(wanted) = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .filter(|p| p.type_ == SeccompProfileType::Localhost)
    else {
        return Ok(None);
    };
    let path = wanted
        .localhost_profile
        .as_deref()
        .ok_or(LocalhostError::Unset)?;
    let file = profile_path(root, path)?;
    let text = std::fs::read_to_string(&file).map_err(|source| LocalhostError::Read {
        file: file.clone(),
        source,
    })?;
    SeccompProfile::parse(&text)
        .map(Some)
        .map_err(|source| LocalhostError::Invalid { file, source })
}

/// `root`/`path`, when `path` is relative and has no `..`.
pub fn profile_path(root: &Path, path: &str) -> Result<PathBuf, LocalhostError> {
    match crate::api::validate::is_below(path) {
        true => Ok(root.join(path)),
        false => Err(LocalhostError::Escapes {
            path: path.to_string(),
            root: root.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{SeccompProfile as Wanted, SecurityContext};

    fn spec(type_: SeccompProfileType, path: Option<&str>) -> ContainerSpec {
        ContainerSpec {
            security_context: Some(SecurityContext {
                seccomp_profile: Some(Wanted {
                    type_,
                    localhost_profile: path.map(str::to_string),
                }),
                ..SecurityContext::default()
            }),
            ..ContainerSpec::default()
        }
    }

    #[test]
    fn validation_wants_a_localhost_profile_exactly_for_type_localhost() {
        let errors = |s: &ContainerSpec| match crate::api::validate(s) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        let mut ok = spec(SeccompProfileType::Localhost, Some("team/p.json"));
        ok.rootfs = "/img".into();
        assert_eq!(errors(&ok), "");
        for (type_, path, want) in [
            (
                SeccompProfileType::Localhost,
                None,
                "must be set for type Localhost",
            ),
            (
                SeccompProfileType::Localhost,
                Some("../p.json"),
                "without ..",
            ),
            (
                SeccompProfileType::Localhost,
                Some("/p.json"),
                "must be a relative path",
            ),
            (
                SeccompProfileType::Unconfined,
                Some("p.json"),
                "must not be set for type Unconfined",
            ),
            (
                SeccompProfileType::RuntimeDefault,
                Some("p.json"),
                "must not be set for type RuntimeDefault",
            ),
        ] {
            let mut bad = spec(type_, path);
            bad.rootfs = "/img".into();
            let err = errors(&bad);
            assert!(err.starts_with(FIELD) && err.contains(want), "{err}");
        }
    }

    #[test]
    fn paths_stay_below_the_root() {
        let root = Path::new("/var/lib/rundmc/seccomp");
        assert_eq!(
            profile_path(root, "team/audit.json").unwrap(),
            root.join("team/audit.json")
        );
        for bad in ["/etc/p.json", "../p.json", "a/../../p.json", ""] {
            let err = profile_path(root, bad).unwrap_err().to_string();
            assert!(
                err.contains(FIELD) && err.contains("--seccomp-profile-root"),
                "{err}"
            );
        }
    }

    struct Dir(PathBuf);

    impl Dir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_profile_is_read_only_for_type_localhost() {
        let dir = std::env::temp_dir().join(format!("rundmc-seccomp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = Dir(dir);
        let other = spec(SeccompProfileType::RuntimeDefault, None);
        assert!(localhost_profile(dir.path(), &other).unwrap().is_none());

        let missing = spec(SeccompProfileType::Localhost, Some("nope.json"));
        let err = localhost_profile(dir.path(), &missing)
            .unwrap_err()
            .to_string();
        assert!(err.contains(FIELD), "{err}");
        assert!(
            err.contains(&dir.path().join("nope.json").display().to_string()),
            "{err}"
        );

        std::fs::write(dir.path().join("bad.json"), "{\"defaultAction\": 1}").unwrap();
        let bad = spec(SeccompProfileType::Localhost, Some("bad.json"));
        let err = localhost_profile(dir.path(), &bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.json") && err.contains("is invalid"),
            "{err}"
        );

        std::fs::write(
            dir.path().join("ok.json"),
            "{\"defaultAction\": \"SCMP_ACT_LOG\"}",
        )
        .unwrap();
        let ok = spec(SeccompProfileType::Localhost, Some("ok.json"));
        assert!(localhost_profile(dir.path(), &ok).unwrap().is_some());
    }
}
