//! Capability names and the set a container asks for: containerd's default
//! set, every one when privileged, and `spec.securityContext.capabilities`
//! (`drop` first, `ALL` dropping every one, then `add`). Names are taken as
//! Kubernetes writes them (`NET_ADMIN`), and also with `CAP_` and in any
//! case, as containerd accepts them; in the OCI config they are `CAP_*`.
//! Pure: the agent's bounding set is applied by the bundle rules.

use super::types::ContainerSpec;

/// The capability set containerd (1.x, and Docker) gives an unprivileged
/// container.
pub const DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability up to CAP_CHECKPOINT_RESTORE, in number order: a
/// name's index is its capability number.
pub const ALL: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A name in `add` or `drop`, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    /// `ALL`: every capability.
    All,
    /// One capability, as `CAP_*`.
    One(&'static str),
}

/// `NET_ADMIN`, `CAP_NET_ADMIN` or `net_admin` as `CAP_NET_ADMIN`; `ALL`
/// as [`Name::All`]; `None` for a name the kernel does not know.
pub fn parse(name: &str) -> Option<Name> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Some(Name::All);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    ALL.iter()
        .find(|c| c.strip_prefix("CAP_") == Some(bare))
        .map(|c| Name::One(c))
}

/// The capabilities `spec` asks for, in number order: every one when
/// privileged; otherwise the default set, less `drop` (all of it for
/// `ALL`), plus `add` (every one for `ALL`). Unknown names, which
/// validation refuses, are skipped.
pub fn wanted(spec: &ContainerSpec) -> Vec<&'static str> {
    if spec.privileged {
        return ALL.to_vec();
    }
    let caps = spec
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref());
    let Some(caps) = caps else {
        return in_number_order(DEFAULT.iter().copied());
    };
    let names = |list: &[String]| list.iter().filter_map(|n| parse(n)).collect::<Vec<_>>();
    let (add, drop) = (names(&caps.add), names(&caps.drop));
    if add.contains(&Name::All) {
        return ALL.to_vec();
    }
    let kept = DEFAULT
        .iter()
        .copied()
        .filter(|c| !drop.contains(&Name::All) && !drop.contains(&Name::One(c)));
    let added = add.into_iter().filter_map(|n| match n {
        Name::One(c) => Some(c),
        Name::All => None,
    });
    in_number_order(kept.chain(added))
}

/// What `spec` asks for beyond the default set (every one when privileged).
pub fn beyond_default(spec: &ContainerSpec) -> Vec<&'static str> {
    wanted(spec)
        .into_iter()
        .filter(|c| !DEFAULT.contains(c))
        .collect()
}

fn in_number_order(names: impl Iterator<Item = &'static str>) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = names.collect();
    out.sort_by_key(|n| ALL.iter().position(|c| c == n));
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Capabilities, SecurityContext};

    fn with(add: &[&str], drop: &[&str]) -> ContainerSpec {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect();
        ContainerSpec {
            security_context: Some(SecurityContext {
                capabilities: Some(Capabilities {
                    add: words(add),
                    drop: words(drop),
                }),
                ..SecurityContext::default()
            }),
            ..ContainerSpec::default()
        }
    }

    #[test]
    fn names_are_read_as_containerd_does() {
        assert_eq!(parse("NET_ADMIN"), Some(Name::One("CAP_NET_ADMIN")));
        assert_eq!(parse("CAP_NET_ADMIN"), Some(Name::One("CAP_NET_ADMIN")));
        assert_eq!(parse("net_admin"), Some(Name::One("CAP_NET_ADMIN")));
        assert_eq!(parse("all"), Some(Name::All));
        assert_eq!(parse("NET_ADMINX"), None);
        assert_eq!(parse("CAP_"), None);
    }

    #[test]
    fn drop_then_add() {
        let default = wanted(&ContainerSpec::default());
        assert_eq!(default.len(), 14);
        assert!(beyond_default(&ContainerSpec::default()).is_empty());
        let no_raw = wanted(&with(&[], &["NET_RAW"]));
        assert_eq!(no_raw.len(), 13);
        assert!(!no_raw.contains(&"CAP_NET_RAW"));
        assert_eq!(
            wanted(&with(&["NET_BIND_SERVICE", "SYS_TIME"], &["ALL"])),
            vec!["CAP_NET_BIND_SERVICE", "CAP_SYS_TIME"]
        );
        assert_eq!(
            beyond_default(&with(&["SYS_TIME", "CHOWN"], &[])),
            vec!["CAP_SYS_TIME"]
        );
        assert_eq!(wanted(&with(&["ALL"], &[])), ALL.to_vec());
        let privileged = ContainerSpec {
            privileged: true,
            ..with(&[], &["ALL"])
        };
        assert_eq!(wanted(&privileged), ALL.to_vec());
    }
}
