//! What `spec.securityContext` means, field by field, apart from seccomp
//! and user namespaces: its validation (Kubernetes' rules, each error naming
//! its field and index), the effective settings the bundle rules read, and
//! the kubelet's runAsNonRoot check of the user a process will run as. Pure.

use std::collections::BTreeMap;

use super::capability::{self, Name};
use super::security::{ProcMountType, SecurityContext};
use super::sysctl::{self, Namespace};
use super::types::ContainerSpec;
use super::validate::FieldError;

/// The largest uid or gid Kubernetes takes (`runAsUser`, `runAsGroup`,
/// `supplementalGroups`).
pub const MAX_ID: i64 = i32::MAX as i64;

fn context(spec: &ContainerSpec) -> Option<&SecurityContext> {
    spec.security_context.as_ref()
}

/// Whether processes run with no_new_privs: unless `allowPrivilegeEscalation`
/// says otherwise, every unprivileged container's do.
pub fn no_new_privileges(spec: &ContainerSpec) -> bool {
    match context(spec).and_then(|s| s.allow_privilege_escalation) {
        Some(allow) => !allow,
        None => !spec.privileged,
    }
}

/// Whether the root filesystem is mounted read-only.
pub fn read_only_root(spec: &ContainerSpec) -> bool {
    context(spec)
        .and_then(|s| s.read_only_root_filesystem)
        .unwrap_or(false)
}

/// Whether /proc and /sys keep containerd's masked and read-only paths:
/// not for a privileged container, nor with `procMount: Unmasked`.
pub fn masked(spec: &ContainerSpec) -> bool {
    let unmasked = context(spec).and_then(|s| s.proc_mount) == Some(ProcMountType::Unmasked);
    !spec.privileged && !unmasked
}

/// The sysctls to set, by normalised name.
pub fn sysctls(spec: &ContainerSpec) -> BTreeMap<String, String> {
    context(spec)
        .map(|s| {
            s.sysctls
                .iter()
                .map(|s| (sysctl::normalize(&s.name), s.value.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The normalised names of `spec`'s sysctls that are not on the safe
/// list, with their index.
pub fn unsafe_sysctls(spec: &ContainerSpec) -> Vec<(usize, String)> {
    context(spec)
        .map(|s| {
            s.sysctls
                .iter()
                .map(|s| sysctl::normalize(&s.name))
                .enumerate()
                .filter(|(_, n)| !sysctl::is_safe(n))
                .collect()
        })
        .unwrap_or_default()
}

/// `(uid, gid)` from `runAsUser`/`runAsGroup`, and `supplementalGroups`,
/// as the kernel's ids. Validation keeps them in range.
pub fn ids(spec: &ContainerSpec) -> (Option<u32>, Option<u32>, Vec<u32>) {
    let id = |v: i64| u32::try_from(v).ok();
    match context(spec) {
        Some(s) => (
            s.run_as_user.and_then(id),
            s.run_as_group.and_then(id),
            s.supplemental_groups
                .iter()
                .filter_map(|g| id(*g))
                .collect(),
        ),
        None => (None, None, Vec::new()),
    }
}

/// The kubelet's runAsNonRoot check, before a create: with
/// `runAsNonRoot: true`, the main process's user (`runAsUser`, else
/// `user`, the spec's or the image's; root when unset) must be a uid
/// other than 0. A user name cannot be checked without the image's
/// passwd, so it is refused, as the kubelet does.
pub fn verify_non_root(spec: &ContainerSpec, user: Option<&str>) -> Result<(), String> {
    let Some(sc) = context(spec).filter(|s| s.run_as_non_root == Some(true)) else {
        return Ok(());
    };
    if let Some(uid) = sc.run_as_user {
        return match uid {
            0 => Err("container's runAsUser breaks non-root policy (runAsNonRoot)".into()),
            _ => Ok(()),
        };
    }
    let uid_part = user.map(|u| u.split_once(':').map_or(u, |(u, _)| u));
    match uid_part.filter(|u| !u.is_empty()) {
        None => Err("container has runAsNonRoot and image will run as root".into()),
        Some(u) => match u.parse::<u32>() {
            Ok(0) => Err("container has runAsNonRoot and image will run as root".into()),
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "container has runAsNonRoot and image has non-numeric user ({u}), cannot \
                 verify user is non-root"
            )),
        },
    }
}

/// Every problem with `spec.securityContext`, pushed onto `errs`.
pub fn check(errs: &mut Vec<FieldError>, spec: &ContainerSpec) {
    let Some(sc) = context(spec) else {
        return;
    };
    check_capabilities(errs, sc);
    check_escalation(errs, spec, sc);
    check_ids(errs, sc);
    if sc.proc_mount == Some(ProcMountType::Unmasked) && spec.host_users != Some(false) {
        errs.push(FieldError::new(
            "spec.securityContext.procMount",
            "Unmasked needs spec.hostUsers: false (a user namespace of the container's own)",
        ));
    }
    check_sysctls(errs, spec, sc);
}

fn check_capabilities(errs: &mut Vec<FieldError>, sc: &SecurityContext) {
    let Some(caps) = &sc.capabilities else {
        return;
    };
    for (list, names) in [("add", &caps.add), ("drop", &caps.drop)] {
        for (i, name) in names.iter().enumerate() {
            if capability::parse(name).is_none() {
                errs.push(FieldError::new(
                    format!("spec.securityContext.capabilities.{list}[{i}]"),
                    format!(
                        "{name:?} is not a capability: a name such as NET_ADMIN (capabilities(7), \
                         without or with CAP_), or ALL"
                    ),
                ));
            }
        }
    }
}

/// allowPrivilegeEscalation: false cannot hold with what grants it anyway.
fn check_escalation(errs: &mut Vec<FieldError>, spec: &ContainerSpec, sc: &SecurityContext) {
    if sc.allow_privilege_escalation != Some(false) {
        return;
    }
    let field = "spec.securityContext.allowPrivilegeEscalation";
    if spec.privileged {
        errs.push(FieldError::new(
            field,
            "cannot be false with spec.privileged: true",
        ));
    }
    let adds = sc.capabilities.iter().flat_map(|c| c.add.iter());
    let sys_admin = adds
        .filter_map(|n| capability::parse(n))
        .any(|n| n == Name::All || n == Name::One("CAP_SYS_ADMIN"));
    if sys_admin {
        errs.push(FieldError::new(
            field,
            "cannot be false with capabilities.add SYS_ADMIN (or ALL)",
        ));
    }
}

fn check_ids(errs: &mut Vec<FieldError>, sc: &SecurityContext) {
    let mut id = |field: String, v: i64| {
        if !(0..=MAX_ID).contains(&v) {
            errs.push(FieldError::new(
                field,
                format!("{v} is out of range: 0 to {MAX_ID}"),
            ));
        }
    };
    if let Some(uid) = sc.run_as_user {
        id("spec.securityContext.runAsUser".into(), uid);
    }
    if let Some(gid) = sc.run_as_group {
        id("spec.securityContext.runAsGroup".into(), gid);
    }
    for (i, gid) in sc.supplemental_groups.iter().enumerate() {
        id(
            format!("spec.securityContext.supplementalGroups[{i}]"),
            *gid,
        );
    }
}

/// Each sysctl well formed, namespaced, once, and not of the node's own
/// network namespace. Whether it is allowed on this node is admission's.
fn check_sysctls(errs: &mut Vec<FieldError>, spec: &ContainerSpec, sc: &SecurityContext) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in sc.sysctls.iter().enumerate() {
        let field = format!("spec.securityContext.sysctls[{i}].name");
        let name = sysctl::normalize(&s.name);
        if !sysctl::well_formed(&s.name) {
            errs.push(FieldError::new(
                field,
                format!(
                    "{:?} is not a sysctl name (lower-case components separated by '.' or '/')",
                    s.name
                ),
            ));
            continue;
        }
        match sysctl::namespace(&name) {
            None => errs.push(FieldError::new(
                field,
                format!(
                    "{name} is not namespaced: setting it would change the node, not the \
                     container (namespaced: kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, net.*)"
                ),
            )),
            Some(Namespace::Net) if spec.host_network => errs.push(FieldError::new(
                field,
                format!("{name} is not allowed with spec.hostNetwork: it would set the node's"),
            )),
            _ if !seen.insert(name.clone()) => {
                errs.push(FieldError::new(field, format!("{name} is set twice")))
            }
            _ => {}
        }
        if s.value.contains(['\0', '\n']) {
            errs.push(FieldError::new(
                format!("spec.securityContext.sysctls[{i}].value"),
                "must not contain a newline or NUL",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Capabilities, Sysctl};

    fn spec(sc: SecurityContext) -> ContainerSpec {
        ContainerSpec {
            rootfs: "/r".into(),
            security_context: Some(sc),
            ..ContainerSpec::default()
        }
    }

    fn errors(spec: &ContainerSpec) -> Vec<String> {
        let mut errs = Vec::new();
        check(&mut errs, spec);
        errs.iter().map(ToString::to_string).collect()
    }

    fn sysctl(name: &str) -> Sysctl {
        Sysctl {
            name: name.into(),
            value: "1".into(),
        }
    }

    #[test]
    fn unknown_capabilities_are_named_with_their_index() {
        let s = spec(SecurityContext {
            capabilities: Some(Capabilities {
                add: vec!["NET_ADMIN".into(), "NET_ADMINN".into()],
                drop: vec!["all".into()],
            }),
            ..SecurityContext::default()
        });
        assert_eq!(
            errors(&s),
            vec![
                "spec.securityContext.capabilities.add[1]: \"NET_ADMINN\" is not a capability: a \
                 name such as NET_ADMIN (capabilities(7), without or with CAP_), or ALL"
            ]
        );
    }

    #[test]
    fn escalation_cannot_be_refused_to_what_grants_it() {
        let mut s = spec(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: vec!["CAP_SYS_ADMIN".into()],
                drop: vec![],
            }),
            ..SecurityContext::default()
        });
        s.privileged = true;
        let errs = errors(&s);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("spec.privileged"));
        assert!(errs[1].contains("SYS_ADMIN"));
    }

    #[test]
    fn ids_proc_mount_and_sysctls() {
        let mut s = spec(SecurityContext {
            run_as_user: Some(-1),
            run_as_group: Some(MAX_ID + 1),
            supplemental_groups: vec![5, -2],
            proc_mount: Some(ProcMountType::Unmasked),
            sysctls: vec![
                sysctl("net/ipv4/ip_unprivileged_port_start"),
                sysctl("vm.swappiness"),
                sysctl("net.ipv4.ip_unprivileged_port_start"),
                sysctl("Bad..name"),
            ],
            ..SecurityContext::default()
        });
        s.host_network = true;
        let fields: Vec<String> = errors(&s)
            .iter()
            .map(|e| e.split(':').next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            fields,
            vec![
                "spec.securityContext.runAsUser",
                "spec.securityContext.runAsGroup",
                "spec.securityContext.supplementalGroups[1]",
                "spec.securityContext.procMount",
                "spec.securityContext.sysctls[0].name",
                "spec.securityContext.sysctls[1].name",
                "spec.securityContext.sysctls[2].name",
                "spec.securityContext.sysctls[3].name",
            ]
        );
        s.host_network = false;
        s.host_users = Some(false);
        let errs = errors(&s);
        assert!(errs.iter().any(|e| e.contains("is set twice")), "{errs:?}");
        assert!(!errs.iter().any(|e| e.contains("procMount")), "{errs:?}");
    }

    #[test]
    fn run_as_non_root_follows_the_kubelet() {
        let non_root = |uid: Option<i64>| {
            spec(SecurityContext {
                run_as_non_root: Some(true),
                run_as_user: uid,
                ..SecurityContext::default()
            })
        };
        let root_msg = "container has runAsNonRoot and image will run as root";
        assert_eq!(verify_non_root(&non_root(None), None), Err(root_msg.into()));
        assert_eq!(
            verify_non_root(&non_root(None), Some("0:10")),
            Err(root_msg.into())
        );
        assert_eq!(verify_non_root(&non_root(None), Some("1000:0")), Ok(()));
        assert!(
            verify_non_root(&non_root(None), Some("app"))
                .is_err_and(|e| e.contains("non-numeric user (app)"))
        );
        assert_eq!(verify_non_root(&non_root(Some(1000)), Some("0")), Ok(()));
        assert!(verify_non_root(&non_root(Some(0)), Some("1000")).is_err());
        assert_eq!(
            verify_non_root(&spec(SecurityContext::default()), None),
            Ok(())
        );
    }

    #[test]
    fn effective_settings() {
        let mut s = spec(SecurityContext::default());
        assert!(no_new_privileges(&s) && masked(&s) && !read_only_root(&s));
        s.privileged = true;
        assert!(!no_new_privileges(&s) && !masked(&s));
        s.security_context = Some(SecurityContext {
            allow_privilege_escalation: Some(true),
            read_only_root_filesystem: Some(true),
            proc_mount: Some(ProcMountType::Unmasked),
            sysctls: vec![
                sysctl("net/core/somaxconn"),
                sysctl("kernel.shm_rmid_forced"),
            ],
            ..SecurityContext::default()
        });
        s.privileged = false;
        assert!(!no_new_privileges(&s) && !masked(&s) && read_only_root(&s));
        assert_eq!(
            sysctls(&s).keys().collect::<Vec<_>>(),
            vec!["kernel.shm_rmid_forced", "net.core.somaxconn"]
        );
        assert_eq!(unsafe_sysctls(&s), vec![(0, "net.core.somaxconn".into())]);
    }
}
