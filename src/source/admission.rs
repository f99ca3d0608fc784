//! Node-side admission: what a declaration may ask of this node only if the
//! node's owner allows it. `privileged` needs `--allow-privileged`; a bind
//! mount's source, resolved through symlinks, must lie under one of
//! `--allowed-host-paths`. Resources from the API are always checked; the
//! file source is trusted unless told otherwise.

use std::io;
use std::path::{Path, PathBuf};

use crate::api::ContainerSpec;

/// The node's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Allow `privileged: true`.
    pub allow_privileged: bool,
    /// Bind-mount sources must resolve to one of these or below.
    pub allowed_host_paths: Vec<PathBuf>,
}

impl Admission {
    /// Why `spec` is refused, if it is; `resolve` canonicalizes a host path
    /// (`std::fs::canonicalize` in production).
    pub fn check(
        &self,
        spec: &ContainerSpec,
        resolve: impl Fn(&Path) -> io::Result<PathBuf>,
    ) -> Result<(), String> {
        if spec.privileged && !self.allow_privileged {
            return Err("spec.privileged: privileged containers are not allowed on this node (--allow-privileged)".into());
        }
        for (i, m) in spec.mounts.iter().enumerate() {
            let field = format!("spec.mounts[{i}].source");
            let resolved = resolve(Path::new(&m.source)).map_err(|e| {
                format!("{field}: {} cannot be resolved on this node: {e}", m.source)
            })?;
            if !self
                .allowed_host_paths
                .iter()
                .any(|allowed| resolved.starts_with(allowed))
            {
                let shown = if resolved.as_os_str() == m.source.as_str() {
                    m.source.clone()
                } else {
                    format!("{} (resolved to {})", m.source, resolved.display())
                };
                return Err(format!(
                    "{field}: {shown} is not under an allowed host path (--allowed-host-paths)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Mount;

    fn spec(privileged: bool, sources: &[&str]) -> ContainerSpec {
        ContainerSpec {
            rootfs: "/img".into(),
            privileged,
            mounts: sources
                .iter()
                .enumerate()
                .map(|(i, s)| Mount {
                    source: s.to_string(),
                    destination: format!("/m{i}"),
                    read_only: true,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// A resolver with one symlink: /srv/link -> /etc.
    fn resolve(p: &Path) -> io::Result<PathBuf> {
        match p.strip_prefix("/srv/link") {
            Ok(rest) => Ok(Path::new("/etc").join(rest)),
            Err(_) if p.starts_with("/missing") => Err(io::Error::from(io::ErrorKind::NotFound)),
            Err(_) => Ok(p.to_path_buf()),
        }
    }

    #[test]
    fn default_refuses_privileged_and_every_host_path() {
        let none = Admission::default();
        assert_eq!(none.check(&spec(false, &[]), resolve), Ok(()));
        assert!(
            none.check(&spec(true, &[]), resolve)
                .unwrap_err()
                .starts_with("spec.privileged:")
        );
        let err = none
            .check(&spec(false, &["/srv/data"]), resolve)
            .unwrap_err();
        assert_eq!(
            err,
            "spec.mounts[0].source: /srv/data is not under an allowed host path (--allowed-host-paths)"
        );
    }

    #[test]
    fn allowed_paths_are_checked_after_symlinks() {
        let policy = Admission {
            allow_privileged: true,
            allowed_host_paths: vec!["/srv".into()],
        };
        assert_eq!(
            policy.check(&spec(true, &["/srv/data", "/srv"]), resolve),
            Ok(())
        );
        let err = policy
            .check(&spec(false, &["/srv/data", "/srv/link/shadow"]), resolve)
            .unwrap_err();
        assert!(
            err.starts_with("spec.mounts[1].source: /srv/link/shadow (resolved to /etc/shadow)"),
            "{err}"
        );
        assert!(
            policy.check(&spec(false, &["/srvx"]), resolve).is_err(),
            "a prefix of a name is not a parent"
        );
        assert!(
            policy
                .check(&spec(false, &["/missing/x"]), resolve)
                .unwrap_err()
                .contains("cannot be resolved")
        );
    }
}
