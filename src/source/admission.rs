//! Node-side admission: what a declaration may ask of this node only if the
//! node's owner allows it. `privileged` needs `--allow-privileged`, and
//! `hostNetwork` `--allow-host-network`; a bind mount's source must lie
//! under one of `--allowed-host-paths`, and the rootfs under one of
//! `--allowed-rootfs-paths` (it is a host directory the container reads),
//! both as written and resolved through symlinks; an image must come from
//! one of `--allowed-registries` when that is set. A capability beyond the
//! default set needs `--allowed-capabilities`, and a sysctl off the
//! kubelet's safe list a pattern of `--allowed-unsafe-sysctls`. Resources
//! from the API are always checked; the file source is trusted unless told
//! otherwise.
//!
//! The path as written is checked first, before it is resolved: in the
//! agent's pod only the allowed paths are mounted, so a path outside them
//! does not resolve there, and "not allowed" is the cause to report, not
//! "no such file".

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use crate::api::reference::ImageReference;
use crate::api::{ContainerSpec, capability, secctx, sysctl};

/// Why a declaration is refused on this node. Each names the field, and a
/// path outside the allowed ones also what the node allows and how to
/// allow more.
#[derive(Debug, Error)]
pub enum Refusal {
    /// `privileged: true` without `--allow-privileged`.
    #[error(
        "spec.privileged: privileged containers are not allowed on this node (--allow-privileged)"
    )]
    Privileged,
    /// `seccompProfile.type: Unconfined` without `--allow-unconfined-seccomp`.
    #[error(
        "spec.securityContext.seccompProfile.type: Unconfined (no seccomp filter) is not allowed \
         on this node (--allow-unconfined-seccomp)"
    )]
    UnconfinedSeccomp,
    /// `hostNetwork: true` without `--allow-host-network`.
    #[error(
        "spec.hostNetwork: the host's network is not allowed on this node (--allow-host-network)"
    )]
    HostNetwork,
    /// A host port under 1024 without `--allow-privileged-ports`.
    #[error(
        "spec.ports[{index}].hostPort: {port} is a privileged port, not allowed on this node \
         (--allow-privileged-ports)"
    )]
    PrivilegedPort {
        /// Its index in `spec.ports`.
        index: usize,
        /// The port.
        port: i32,
    },
    /// A capability beyond the default set, not in `--allowed-capabilities`.
    #[error(
        "spec.securityContext.capabilities.add[{index}]: {name} is beyond the default capability \
         set and not allowed on this node: it allows {}. To allow it, add it to the agent's \
         --allowed-capabilities (Helm chart value allowedCapabilities)",
        listed_words(.allowed)
    )]
    Capability {
        /// Its index in `add`.
        index: usize,
        /// The name as written.
        name: String,
        /// What the node allows beyond the default set.
        allowed: Vec<String>,
    },
    /// A sysctl off the safe list, matched by no `--allowed-unsafe-sysctls` pattern.
    #[error(
        "spec.securityContext.sysctls[{index}].name: {name} is not a safe sysctl and not allowed \
         on this node: it allows {}. To allow it, add it or a pattern such as `kernel.msg*` to \
         the agent's --allowed-unsafe-sysctls (Helm chart value allowedUnsafeSysctls)",
        listed_words(.allowed)
    )]
    UnsafeSysctl {
        /// Its index in `sysctls`.
        index: usize,
        /// Its normalised name.
        name: String,
        /// The node's patterns.
        allowed: Vec<String>,
    },
    /// An image from a registry outside `--allowed-registries`.
    #[error(
        "spec.image: {image} is from {registry}, which is not an allowed registry: this node \
         allows {}. To allow it, add it to the agent's --allowed-registries (Helm chart value \
         allowedRegistries)",
        .allowed.join(", ")
    )]
    Registry {
        /// The image, normalised.
        image: String,
        /// Its registry.
        registry: String,
        /// What the node allows.
        allowed: Vec<String>,
    },
    /// A host path outside the allowed ones, as written or resolved.
    #[error(
        "{field}: {path}{} is not under {}: this node allows {}. To allow it, add it or a \
         directory above it to the agent's {} (Helm chart value {})",
        resolved_to(.resolved.as_deref()),
        .rule.what(),
        listed(.allowed),
        .rule.flag(),
        .rule.chart_value()
    )]
    NotAllowed {
        /// The field, e.g. `spec.mounts[0].source`.
        field: String,
        /// The path as written.
        path: String,
        /// What it resolved to, when it was allowed as written.
        resolved: Option<PathBuf>,
        /// Which list it had to be under.
        rule: HostPathRule,
        /// What that list holds.
        allowed: Vec<PathBuf>,
    },
    /// An allowed path that does not resolve on this node.
    #[error("{field}: {path} cannot be resolved on this node: {source}")]
    Unresolvable {
        /// The field.
        field: String,
        /// The path as written.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An allowed path that resolved to a name that is not UTF-8.
    #[error("{field}: {path} resolved to {resolved:?}, which is not UTF-8")]
    NotUtf8 {
        /// The field.
        field: String,
        /// The path as written.
        path: String,
        /// What it resolved to.
        resolved: OsString,
    },
}

/// Which of the node's lists of host paths a field's path must be under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathRule {
    /// `spec.rootfs`: `--allowed-rootfs-paths`.
    Rootfs,
    /// A bind mount's source: `--allowed-host-paths`.
    HostPath,
}

impl HostPathRule {
    fn what(self) -> &'static str {
        match self {
            Self::Rootfs => "an allowed rootfs path",
            Self::HostPath => "an allowed host path",
        }
    }

    /// The agent flag that lists the allowed paths.
    fn flag(self) -> &'static str {
        match self {
            Self::Rootfs => "--allowed-rootfs-paths",
            Self::HostPath => "--allowed-host-paths",
        }
    }

    /// The Helm chart's value for that flag.
    fn chart_value(self) -> &'static str {
        match self {
            Self::Rootfs => "allowedRootfsPaths",
            Self::HostPath => "allowedHostPaths",
        }
    }
}

fn resolved_to(resolved: Option<&Path>) -> String {
    resolved.map_or_else(String::new, |r| format!(" (resolved to {})", r.display()))
}

fn listed_words(allowed: &[String]) -> String {
    match allowed.is_empty() {
        true => "none".to_string(),
        false => allowed.join(", "),
    }
}

fn listed(allowed: &[PathBuf]) -> String {
    match allowed.is_empty() {
        true => "none".to_string(),
        false => allowed
            .iter()
            .map(|a| a.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The node's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Allow `privileged: true`.
    pub allow_privileged: bool,
    /// Allow `hostNetwork: true`.
    pub allow_host_network: bool,
    /// Allow `securityContext.seccompProfile.type: Unconfined`.
    pub allow_unconfined_seccomp: bool,
    /// Allow host ports under 1024.
    pub allow_privileged_ports: bool,
    /// Bind-mount sources must resolve to one of these or below.
    pub allowed_host_paths: Vec<PathBuf>,
    /// The rootfs must resolve to one of these or below.
    pub allowed_rootfs_paths: Vec<PathBuf>,
    /// Images must come from one of these registries (`host[:port]`); any
    /// when empty.
    pub allowed_registries: Vec<String>,
    /// Capabilities (`NET_ADMIN`, or `ALL`) that may be added beyond the
    /// default set.
    pub allowed_capabilities: Vec<String>,
    /// Patterns (`kernel.msg*`, `net.core.somaxconn`) of namespaced
    /// sysctls allowed besides the safe ones.
    pub allowed_unsafe_sysctls: Vec<String>,
}

impl Admission {
    /// Why `spec` is refused, if it is; `resolve` canonicalizes a host path
    /// (`std::fs::canonicalize` in production).
    #[cfg(test)]
    pub fn check(
        &self,
        spec: &ContainerSpec,
        resolve: impl Fn(&Path) -> io::Result<PathBuf>,
    ) -> Result<(), Refusal> {
        self.admit(spec, resolve).map(drop)
    }

    /// `spec` as admitted: its rootfs and bind-mount sources replaced by
    /// the paths they resolved to when checked, so that a symlink swapped
    /// afterwards cannot lead the container elsewhere. Or why it is refused.
    pub fn admit(
        &self,
        spec: &ContainerSpec,
        resolve: impl Fn(&Path) -> io::Result<PathBuf>,
    ) -> Result<ContainerSpec, Refusal> {
        if spec.privileged && !self.allow_privileged {
            return Err(Refusal::Privileged);
        }
        if spec.host_network && !self.allow_host_network {
            return Err(Refusal::HostNetwork);
        }
        if unconfined_seccomp(spec) && !self.allow_unconfined_seccomp {
            return Err(Refusal::UnconfinedSeccomp);
        }
        self.check_registry(spec)?;
        self.check_ports(spec)?;
        self.check_capabilities(spec)?;
        self.check_sysctls(spec)?;
        let rootfs = Under {
            field: "spec.rootfs".into(),
            allowed: &self.allowed_rootfs_paths,
            rule: HostPathRule::Rootfs,
        };
        let mut admitted = spec.clone();
        if spec.image.is_none() {
            admitted.rootfs = rootfs.check(&spec.rootfs, &resolve)?;
        }
        for (i, m) in admitted.mounts.iter_mut().enumerate() {
            let source = Under {
                field: format!("spec.mounts[{i}].source"),
                allowed: &self.allowed_host_paths,
                rule: HostPathRule::HostPath,
            };
            m.source = source.check(&m.source, &resolve)?;
        }
        Ok(admitted)
    }
}

impl Admission {
    /// Each capability `add` names beyond the default set must be allowed
    /// (`ALL` in the list allows any). Unknown names are validation's; a
    /// privileged container has every one already, by `--allow-privileged`.
    fn check_capabilities(&self, spec: &ContainerSpec) -> Result<(), Refusal> {
        if spec.privileged {
            return Ok(());
        }
        let adds = spec
            .security_context
            .iter()
            .flat_map(|s| s.capabilities.iter())
            .flat_map(|c| c.add.iter().enumerate());
        let allowed: Vec<Option<capability::Name>> = self
            .allowed_capabilities
            .iter()
            .map(|a| capability::parse(a))
            .collect();
        if allowed.contains(&Some(capability::Name::All)) {
            return Ok(());
        }
        for (index, name) in adds {
            let beyond = match capability::parse(name) {
                Some(capability::Name::One(c)) => !capability::DEFAULT.contains(&c),
                Some(capability::Name::All) => true,
                None => false,
            };
            if beyond && !allowed.contains(&capability::parse(name)) {
                return Err(Refusal::Capability {
                    index,
                    name: name.clone(),
                    allowed: self.allowed_capabilities.clone(),
                });
            }
        }
        Ok(())
    }

    /// Every sysctl off the safe list must match an allowed pattern.
    fn check_sysctls(&self, spec: &ContainerSpec) -> Result<(), Refusal> {
        let refused = secctx::unsafe_sysctls(spec).into_iter().find(|(_, name)| {
            !self
                .allowed_unsafe_sysctls
                .iter()
                .any(|p| sysctl::matches(p, name))
        });
        match refused {
            Some((index, name)) => Err(Refusal::UnsafeSysctl {
                index,
                name,
                allowed: self.allowed_unsafe_sysctls.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Host ports under 1024 are the node's services' unless allowed.
    fn check_ports(&self, spec: &ContainerSpec) -> Result<(), Refusal> {
        if self.allow_privileged_ports {
            return Ok(());
        }
        let low = spec
            .ports
            .iter()
            .enumerate()
            .find_map(|(index, p)| p.host_port.filter(|h| *h < 1024).map(|port| (index, port)));
        match low {
            Some((index, port)) => Err(Refusal::PrivilegedPort { index, port }),
            None => Ok(()),
        }
    }

    /// An image's registry must be allowed, when a list is set. A
    /// reference that does not parse is validation's to report.
    fn check_registry(&self, spec: &ContainerSpec) -> Result<(), Refusal> {
        let Some(image) = spec.image.as_deref() else {
            return Ok(());
        };
        let Ok(reference) = ImageReference::parse(image) else {
            return Ok(());
        };
        let allowed = self.allowed_registries.is_empty()
            || self.allowed_registries.iter().any(|r| {
                let r = r.trim_end_matches('/');
                r == reference.registry
                    || (r == "index.docker.io" && reference.registry == "docker.io")
            });
        match allowed {
            true => Ok(()),
            false => Err(Refusal::Registry {
                image: reference.to_string(),
                registry: reference.registry.clone(),
                allowed: self.allowed_registries.clone(),
            }),
        }
    }
}

/// Whether `spec` asks for no seccomp filter. A privileged container has
/// none either, but `--allow-privileged` already gates that.
fn unconfined_seccomp(spec: &ContainerSpec) -> bool {
    spec.security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .is_some_and(|p| p.type_ == crate::api::SeccompProfileType::Unconfined)
}

/// A host path a field names must be one of `allowed` or below, both as
/// written and resolved.
struct Under<'a> {
    field: String,
    allowed: &'a [PathBuf],
    rule: HostPathRule,
}

impl Under<'_> {
    /// The path `path` resolved to, when it is allowed.
    fn check(
        &self,
        path: &str,
        resolve: impl Fn(&Path) -> io::Result<PathBuf>,
    ) -> Result<String, Refusal> {
        if !self.allows(&lexically_normal(Path::new(path))) {
            return Err(self.refusal(path, None));
        }
        let resolved = resolve(Path::new(path)).map_err(|source| Refusal::Unresolvable {
            field: self.field.clone(),
            path: path.to_owned(),
            source,
        })?;
        if !self.allows(&resolved) {
            return Err(self.refusal(path, Some(resolved)));
        }
        resolved
            .into_os_string()
            .into_string()
            .map_err(|resolved| Refusal::NotUtf8 {
                field: self.field.clone(),
                path: path.to_owned(),
                resolved,
            })
    }

    fn allows(&self, path: &Path) -> bool {
        self.allowed.iter().any(|a| path.starts_with(a))
    }

    /// `path` (resolved to `resolved`) is refused.
    fn refusal(&self, path: &str, resolved: Option<PathBuf>) -> Refusal {
        Refusal::NotAllowed {
            field: self.field.clone(),
            path: path.to_owned(),
            resolved,
            rule: self.rule,
            allowed: self.allowed.to_vec(),
        }
    }
}

/// `path` with `.` and `..` taken out as written, without looking at the
/// file system (`/srv/../etc` is `/etc`).
fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
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
            Err(_) if p.starts_with("/srv/missing") => {
                Err(io::Error::from(io::ErrorKind::NotFound))
            }
            Err(_) => Ok(p.to_path_buf()),
        }
    }

    #[test]
    fn default_refuses_privileged_and_every_host_path() {
        let none = Admission {
            allowed_rootfs_paths: vec!["/img".into()],
            ..Admission::default()
        };
        assert_eq!(
            none.check(&spec(false, &[]), resolve)
                .map_err(|e| e.to_string()),
            Ok(())
        );
        assert!(
            none.check(&spec(true, &[]), resolve)
                .unwrap_err()
                .to_string()
                .starts_with("spec.privileged:")
        );
        let err = none
            .check(&spec(false, &["/srv/data"]), resolve)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "spec.mounts[0].source: /srv/data is not under an allowed host path: this node \
             allows none. To allow it, add it or a directory above it to the agent's \
             --allowed-host-paths (Helm chart value allowedHostPaths)"
        );
    }

    #[test]
    fn unconfined_seccomp_needs_its_flag() {
        use crate::api::{SeccompProfile, SeccompProfileType, SecurityContext};
        let with = |type_| ContainerSpec {
            security_context: Some(SecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_,
                    localhost_profile: None,
                }),
                ..SecurityContext::default()
            }),
            ..spec(false, &[])
        };
        let policy = Admission {
            allowed_rootfs_paths: vec!["/img".into()],
            ..Admission::default()
        };
        let err = policy
            .check(&with(SeccompProfileType::Unconfined), resolve)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "spec.securityContext.seccompProfile.type: Unconfined (no seccomp filter) is not \
             allowed on this node (--allow-unconfined-seccomp)"
        );
        assert!(
            policy
                .check(&with(SeccompProfileType::RuntimeDefault), resolve)
                .is_ok()
        );
        let allowing = Admission {
            allow_unconfined_seccomp: true,
            ..policy
        };
        assert!(
            allowing
                .check(&with(SeccompProfileType::Unconfined), resolve)
                .is_ok()
        );
    }

    /// In the agent's pod only allowed paths are mounted: a path outside
    /// them does not resolve there, and the refusal says why it is refused.
    #[test]
    fn a_path_outside_the_allowed_ones_is_refused_as_such_not_as_missing() {
        let policy = Admission {
            allowed_host_paths: vec!["/srv/data".into(), "/opt/shared".into()],
            allowed_rootfs_paths: vec!["/img".into()],
            ..Admission::default()
        };
        let in_the_pod = |p: &Path| match p.starts_with("/srv/data") || p.starts_with("/img") {
            true => Ok(p.to_path_buf()),
            false => Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        for source in [
            "/usr/share/common-licenses",
            "/srv/data/../../etc",
            "/srv/database",
        ] {
            let err = policy
                .check(&spec(false, &[source]), in_the_pod)
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                format!(
                    "spec.mounts[0].source: {source} is not under an allowed host path: this \
                     node allows /srv/data, /opt/shared. To allow it, add it or a directory \
                     above it to the agent's --allowed-host-paths (Helm chart value \
                     allowedHostPaths)"
                )
            );
        }
        let mut s = spec(false, &[]);
        s.rootfs = "/var/lib/images/busybox".into();
        let err = policy.check(&s, in_the_pod).unwrap_err().to_string();
        assert!(
            err.starts_with("spec.rootfs: /var/lib/images/busybox is not under an allowed rootfs path: this node allows /img.")
                && err.ends_with("--allowed-rootfs-paths (Helm chart value allowedRootfsPaths)"),
            "{err}"
        );
        // Under an allowed path, a missing source is just that.
        let err = policy
            .check(&spec(false, &["/srv/data/gone"]), |p: &Path| {
                match p.ends_with("gone") {
                    true => Err(io::Error::from(io::ErrorKind::NotFound)),
                    false => Ok(p.to_path_buf()),
                }
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/srv/data/gone cannot be resolved on this node"),
            "{err}"
        );
        assert_eq!(
            policy
                .check(&spec(false, &["/srv/data/./x"]), in_the_pod)
                .map_err(|e| e.to_string()),
            Ok(())
        );
    }

    #[test]
    fn allowed_paths_are_checked_after_symlinks() {
        let policy = Admission {
            allow_privileged: true,
            allowed_host_paths: vec!["/srv".into()],
            allowed_rootfs_paths: vec!["/img".into()],
            ..Admission::default()
        };
        assert_eq!(
            policy
                .check(&spec(true, &["/srv/data", "/srv"]), resolve)
                .map_err(|e| e.to_string()),
            Ok(())
        );
        let err = policy
            .check(&spec(false, &["/srv/data", "/srv/link/shadow"]), resolve)
            .unwrap_err()
            .to_string();
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
                .check(&spec(false, &["/srv/missing/x"]), resolve)
                .unwrap_err()
                .to_string()
                .contains("cannot be resolved")
        );
    }

    #[test]
    fn the_rootfs_and_the_hosts_network_are_the_nodes_to_grant() {
        let policy = Admission {
            allowed_rootfs_paths: vec!["/img".into()],
            ..Admission::default()
        };
        let mut s = spec(false, &[]);
        s.rootfs = "/".into();
        assert!(
            policy
                .check(&s, resolve)
                .unwrap_err()
                .to_string()
                .starts_with(
                    "spec.rootfs: / is not under an allowed rootfs path: this node allows /img."
                )
        );
        s.rootfs = "/img/link".into();
        let through_link = |p: &Path| match p.strip_prefix("/img/link") {
            Ok(rest) => Ok(Path::new("/etc").join(rest)),
            Err(_) => Ok(p.to_path_buf()),
        };
        assert!(
            policy
                .check(&s, through_link)
                .unwrap_err()
                .to_string()
                .starts_with("spec.rootfs: /img/link (resolved to /etc")
        );
        s.rootfs = "/img/busybox".into();
        s.host_network = true;
        assert!(
            policy
                .check(&s, resolve)
                .unwrap_err()
                .to_string()
                .starts_with("spec.hostNetwork:")
        );
        let open = Admission {
            allow_host_network: true,
            ..policy
        };
        assert_eq!(open.check(&s, resolve).map_err(|e| e.to_string()), Ok(()));
    }

    #[test]
    fn the_admitted_spec_names_what_the_paths_resolved_to() {
        let policy = Admission {
            allowed_host_paths: vec!["/srv".into(), "/etc".into()],
            allowed_rootfs_paths: vec!["/img".into()],
            ..Admission::default()
        };
        let admitted = policy
            .admit(&spec(false, &["/srv/link/hosts"]), resolve)
            .unwrap();
        assert_eq!(admitted.mounts[0].source, "/etc/hosts");
        assert_eq!(admitted.mounts[0].destination, "/m0");
        assert_eq!(admitted.rootfs, "/img");
    }

    #[test]
    fn images_come_from_the_allowed_registries_and_need_no_rootfs_path() {
        let policy = Admission {
            allowed_registries: vec!["registry.local:5000".into(), "docker.io".into()],
            ..Admission::default()
        };
        let image = |i: &str| ContainerSpec {
            image: Some(i.into()),
            ..Default::default()
        };
        assert!(
            policy.check(&image("busybox"), resolve).is_ok(),
            "Docker Hub"
        );
        assert!(
            policy
                .check(&image("registry.local:5000/app:1"), resolve)
                .is_ok()
        );
        let err = policy
            .check(&image("ghcr.io/org/app:1.2"), resolve)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("spec.image: ghcr.io/org/app:1.2 is from ghcr.io, which is not an allowed registry: this node allows registry.local:5000, docker.io."),
            "{err}"
        );
        let open = Admission::default();
        assert!(
            open.check(&image("ghcr.io/org/app:1.2"), resolve).is_ok(),
            "no list: any"
        );
    }

    #[test]
    fn host_ports_under_1024_need_the_nodes_leave() {
        let spec = ContainerSpec {
            rootfs: "/img".into(),
            ports: vec![
                crate::api::ContainerPort {
                    container_port: 8080,
                    host_port: Some(8080),
                    ..Default::default()
                },
                crate::api::ContainerPort {
                    container_port: 80,
                    host_port: Some(80),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let policy = Admission {
            allowed_rootfs_paths: vec!["/img".into()],
            ..Admission::default()
        };
        let err = policy.check(&spec, resolve).unwrap_err().to_string();
        assert_eq!(
            err,
            "spec.ports[1].hostPort: 80 is a privileged port, not allowed on this node (--allow-privileged-ports)"
        );
        let allowed = Admission {
            allow_privileged_ports: true,
            ..policy
        };
        assert!(allowed.check(&spec, resolve).is_ok());
    }

    fn confined(add: &[&str], sysctls: &[&str]) -> ContainerSpec {
        use crate::api::{Capabilities, SecurityContext, Sysctl};
        ContainerSpec {
            security_context: Some(SecurityContext {
                capabilities: Some(Capabilities {
                    add: add.iter().map(|s| s.to_string()).collect(),
                    drop: vec!["ALL".into()],
                }),
                sysctls: sysctls
                    .iter()
                    .map(|n| Sysctl {
                        name: n.to_string(),
                        value: "1".into(),
                    })
                    .collect(),
                ..SecurityContext::default()
            }),
            ..spec(false, &[])
        }
    }

    #[test]
    fn capabilities_beyond_the_default_and_unsafe_sysctls_need_the_flags() {
        let mut policy = Admission {
            allowed_rootfs_paths: vec!["/img".into()],
            ..Admission::default()
        };
        let check =
            |p: &Admission, s: &ContainerSpec| p.check(s, resolve).map_err(|e| e.to_string());
        let default_only = confined(&["CHOWN", "NET_BIND_SERVICE"], &["kernel.shm_rmid_forced"]);
        assert!(check(&policy, &default_only).is_ok());
        let beyond = confined(&["CHOWN", "NET_ADMIN"], &[]);
        let refused = check(&policy, &beyond).unwrap_err();
        assert!(
            refused.starts_with(
                "spec.securityContext.capabilities.add[1]: NET_ADMIN is beyond the default \
                 capability set and not allowed on this node: it allows none."
            ),
            "{refused}"
        );
        assert!(check(&policy, &confined(&["ALL"], &[])).is_err());
        policy.allowed_capabilities = vec!["CAP_NET_ADMIN".into()];
        assert!(check(&policy, &beyond).is_ok());
        assert!(check(&policy, &confined(&["SYS_TIME"], &[])).is_err());
        policy.allowed_capabilities = vec!["ALL".into()];
        assert!(check(&policy, &confined(&["SYS_TIME", "ALL"], &[])).is_ok());

        let unsafe_ = confined(&[], &["net.ipv4.tcp_syncookies", "kernel/msgmax"]);
        let refused = check(&policy, &unsafe_).unwrap_err();
        assert!(
            refused.starts_with(
                "spec.securityContext.sysctls[1].name: kernel.msgmax is not a safe sysctl"
            ),
            "{refused}"
        );
        policy.allowed_unsafe_sysctls = vec!["kernel.msg*".into()];
        assert!(check(&policy, &unsafe_).is_ok());
        // A privileged container is --allow-privileged's, not these lists'.
        policy.allowed_capabilities.clear();
        let privileged = ContainerSpec {
            privileged: true,
            ..confined(&["SYS_ADMIN"], &[])
        };
        assert!(
            check(&policy, &privileged)
                .unwrap_err()
                .contains("spec.privileged")
        );
        policy.allow_privileged = true;
        assert!(check(&policy, &privileged).is_ok());
    }
}
