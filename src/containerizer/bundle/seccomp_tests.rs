use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use super::*;
use crate::api::{ContainerSpec, Handle, SecurityContext};
use crate::containerizer::bundle::{CapSet, DEFAULT_CAPABILITIES, all_capabilities, generate};

const AMD64: Native = Native {
    rust: "x86_64",
    go: "amd64",
};
const ARM64: Native = Native {
    rust: "aarch64",
    go: "arm64",
};

fn caps(names: &[&str]) -> HashSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn default_caps() -> HashSet<String> {
    caps(DEFAULT_CAPABILITIES)
}

/// Per syscall name, every rule naming it: (action, errno, args as JSON).
type Summary = BTreeMap<String, BTreeSet<String>>;

fn summary(filter: &LinuxSeccomp) -> Summary {
    let mut out = Summary::new();
    for rule in filter.syscalls().iter().flatten() {
        let args = serde_json::to_string(rule.args()).unwrap_or_default();
        let what = format!("{:?} {:?} {args}", rule.action(), rule.errno_ret());
        for name in rule.names() {
            out.entry(name.clone()).or_default().insert(what.clone());
        }
    }
    out
}

/// The names some rule allows without conditions on arguments.
fn allowed(filter: &LinuxSeccomp) -> BTreeSet<String> {
    filter
        .syscalls()
        .iter()
        .flatten()
        .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
        .flat_map(|r| r.names().iter().cloned())
        .collect()
}

#[test]
fn the_default_refuses_with_eperm_on_the_native_architectures() {
    let filter = evaluate(&default_profile(), &default_caps(), AMD64);
    assert_eq!(filter.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(filter.default_errno_ret(), Some(1));
    assert_eq!(
        filter.architectures(),
        &Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32])
    );
    let arm = evaluate(&default_profile(), &default_caps(), ARM64);
    assert_eq!(
        arm.architectures(),
        &Some(vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm])
    );
    assert!(allowed(&arm).contains("set_tls"));
    assert!(!allowed(&arm).contains("arch_prctl"));
    assert!(allowed(&filter).contains("arch_prctl"));
    assert!(!allowed(&filter).contains("set_tls"));
}

#[test]
fn without_cap_sys_admin_namespaces_mounts_keys_and_bpf_are_refused() {
    let filter = evaluate(&default_profile(), &default_caps(), AMD64);
    let allowed = allowed(&filter);
    for name in [
        "unshare", "setns", "mount", "umount2", "bpf", "keyctl", "add_key", "request_key",
        "clone3", "reboot", "kexec_load", "init_module", "open_by_handle_at", "sethostname",
    ] {
        assert!(!allowed.contains(name), "{name} is allowed");
    }
    for name in ["read", "execve", "ptrace", "process_vm_readv", "chroot", "io_uring_setup"] {
        assert!(allowed.contains(name), "{name} is refused");
    }
    let rules = summary(&filter);
    assert_eq!(
        rules["clone"],
        BTreeSet::from([format!(
            "ScmpActAllow None [{{\"index\":0,\"value\":{},\"valueTwo\":0,\"op\":\"SCMP_CMP_MASKED_EQ\"}}]",
            0x7e02_0000_u64
        )])
    );
    assert_eq!(
        rules["clone3"],
        BTreeSet::from(["ScmpActErrno Some(38) null".to_string()])
    );
    assert_eq!(rules["personality"].len(), 5);
    assert_eq!(
        rules["socket"],
        BTreeSet::from([
            "ScmpActAllow None [{\"index\":0,\"value\":40,\"valueTwo\":0,\"op\":\"SCMP_CMP_NE\"}]"
                .to_string()
        ])
    );
}

#[test]
fn capabilities_open_their_syscalls() {
    let mut with = default_caps();
    with.extend(caps(&["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_BPF"]));
    let filter = evaluate(&default_profile(), &with, AMD64);
    let allowed = allowed(&filter);
    for name in ["unshare", "setns", "mount", "clone", "clone3", "bpf", "kcmp"] {
        assert!(allowed.contains(name), "{name} is refused");
    }
    // With CAP_SYS_ADMIN, clone has no flag filter and clone3 no ENOSYS.
    let rules = summary(&filter);
    assert_eq!(
        rules["clone3"],
        BTreeSet::from(["ScmpActAllow None null".to_string()])
    );
    let without = evaluate(&default_profile(), &caps(&[]), AMD64);
    assert!(!self::allowed(&without).contains("chroot"));
}

#[test]
fn the_default_profile_for_the_default_capabilities_is_pinned() {
    let filter = evaluate(&default_profile(), &default_caps(), AMD64);
    insta::assert_json_snapshot!(filter);
}

fn input<'a>(handle: &'a Handle, spec: &'a ContainerSpec) -> BundleInput<'a> {
    BundleInput {
        handle,
        spec,
        resources: crate::api::Resources::default(),
        init_binary: PathBuf::from("/init"),
        cgroup_parent: "rundmc".into(),
        bind_flags: Vec::new(),
        nofile_hard: 1024,
        bounding_set: CapSet::ALL,
        netns: None,
        etc_files: Vec::new(),
        seccomp_localhost: None,
    }
}

fn with_profile(type_: SeccompProfileType, localhost: Option<&str>) -> ContainerSpec {
    ContainerSpec {
        rootfs: "/img".into(),
        security_context: Some(SecurityContext {
            seccomp_profile: Some(crate::api::SeccompProfile {
                type_,
                localhost_profile: localhost.map(str::to_string),
            }),
            ..SecurityContext::default()
        }),
        ..ContainerSpec::default()
    }
}

#[test]
fn the_rule_follows_the_profile_type_and_the_capabilities_in_the_config() {
    let h = Handle::new("c").unwrap();
    let plain = ContainerSpec {
        rootfs: "/img".into(),
        ..ContainerSpec::default()
    };
    let config = generate(&input(&h, &plain));
    let filter = config.linux().as_ref().and_then(|l| l.seccomp().clone());
    let expected = evaluate(&default_profile(), &default_caps(), Native::host());
    assert_eq!(filter, Some(expected));

    let unconfined = with_profile(SeccompProfileType::Unconfined, None);
    let config = generate(&input(&h, &unconfined));
    assert_eq!(config.linux().as_ref().and_then(|l| l.seccomp().clone()), None);

    let privileged = ContainerSpec {
        privileged: true,
        ..plain.clone()
    };
    let config = generate(&input(&h, &privileged));
    assert_eq!(config.linux().as_ref().and_then(|l| l.seccomp().clone()), None);

    // Capabilities are read from the config the earlier rules wrote.
    let mut spec = generate(&input(&h, &plain));
    let mut caps = crate::containerizer::bundle::rules::capability_sets(all_capabilities());
    caps.set_bounding(caps.bounding().clone());
    if let Some(p) = spec.process_mut() {
        p.set_capabilities(Some(caps));
    }
    seccomp(&input(&h, &plain), &mut spec);
    let filter = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    assert!(filter.is_some_and(|f| allowed(&f).contains("mount")));
}

const LOCALHOST: &str = r#"{
    "defaultAction": "SCMP_ACT_ALLOW",
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
    ],
    "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_FOWNER"]}},
        {"names": ["chown"], "action": "SCMP_ACT_ERRNO", "includes": {"arches": ["arm64"]}}
    ]
}"#;

#[test]
fn a_localhost_profile_is_evaluated_as_moby_does() {
    let h = Handle::new("c").unwrap();
    let spec = with_profile(SeccompProfileType::Localhost, Some("p.json"));
    let profile = Profile::parse(LOCALHOST).unwrap();
    let mut input = input(&h, &spec);
    input.seccomp_localhost = Some(profile.clone());
    let config = generate(&input);
    let filter = config.linux().as_ref().and_then(|l| l.seccomp().clone());
    assert_eq!(
        filter,
        Some(evaluate(&profile, &default_caps(), Native::host()))
    );
    let amd = evaluate(&profile, &default_caps(), AMD64);
    assert_eq!(amd.default_action(), LinuxSeccompAction::ScmpActAllow);
    assert_eq!(
        amd.architectures(),
        &Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86])
    );
    // chmod's rule is excluded by CAP_FOWNER (a default capability), chown's
    // is for arm64 only.
    let names: Vec<_> = summary(&amd).into_keys().collect();
    assert_eq!(names, vec!["mkdir"]);
    let arm = evaluate(&profile, &caps(&[]), ARM64);
    let names: Vec<_> = summary(&arm).into_keys().collect();
    assert_eq!(names, vec!["chmod", "chown", "mkdir"]);
}

#[test]
fn an_oci_seccomp_object_is_a_profile() {
    let oci = r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"], "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#;
    let profile = Profile::parse(oci).unwrap();
    let filter = evaluate(&profile, &default_caps(), ARM64);
    let as_oci: LinuxSeccomp = serde_json::from_str(oci).unwrap();
    assert_eq!(filter, as_oci);
}

#[test]
fn bad_profiles_are_refused_with_the_reason() {
    let cases = [
        ("{", "EOF while parsing"),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/x"}"#,
            "unknown field `listenerPath`",
        ),
        (r#"{"defaultAction": "ALLOW"}"#, "unknown variant `ALLOW`"),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
               "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}"#,
            "architectures and archMap cannot both be set",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}"#,
            "syscalls[0]: names is empty",
        ),
    ];
    for (text, want) in cases {
        let err = Profile::parse(text).map(drop).unwrap_err().to_string();
        assert!(err.contains(want), "{text}: {err}");
    }
}

/// containers/common's default profile, as Debian installs it
/// (golang-github-containers-common 0.50.1, `scripts/deps.sh`): Moby's
/// default, loosened for rootless Podman.
const CONTAINERS_COMMON: &str = "/usr/share/containers/seccomp.json";

/// Where containers/common 0.50.1 differs from Moby's default, which
/// rundmc's is: for each syscall, (its rules there, its rules here), as
/// [`summary`] writes them. Any other difference is drift.
fn known_differences(all_caps: bool) -> BTreeMap<&'static str, (&'static str, &'static str)> {
    let allow = "ScmpActAllow None null";
    // Podman's runs rootless containers that need namespaces and mounts
    // inside their user namespace: it allows these without CAP_SYS_ADMIN.
    let mut out: BTreeMap<&str, (&str, &str)> = [
        "fsconfig", "fsmount", "fsopen", "fspick", "mount", "mount_setattr", "move_mount",
        "open_tree", "setns", "umount", "umount2", "unshare", "pidfd_getfd", "process_vm_readv",
        "process_vm_writev", "ptrace", "setdomainname", "sethostname", "keyctl",
    ]
    .into_iter()
    .map(|n| (n, (allow, "")))
    .collect();
    let _ = all_caps;
    out
}

#[test]
fn the_default_matches_moby_as_containers_common_ships_it_but_for_known_differences() {
    let text = std::fs::read_to_string(CONTAINERS_COMMON)
        .unwrap_or_else(|e| panic!("{CONTAINERS_COMMON}: {e} (scripts/deps.sh installs it)"));
    let reference = Profile::parse(&text).unwrap();
    for all_caps in [false, true] {
        let caps = match all_caps {
            false => default_caps(),
            true => caps(all_capabilities()),
        };
        let ours = summary(&evaluate(&default_profile(), &caps, AMD64));
        let theirs = summary(&evaluate(&reference, &caps, AMD64));
        let names: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
        let join = |rules: Option<&BTreeSet<String>>| {
            rules.map_or(String::new(), |r| r.iter().cloned().collect::<Vec<_>>().join(" | "))
        };
        let diffs: BTreeMap<String, (String, String)> = names
            .into_iter()
            .map(|n| (n.clone(), (join(theirs.get(n)), join(ours.get(n)))))
            .filter(|(_, (t, o))| t != o)
            .collect();
        let expected: BTreeMap<String, (String, String)> = known_differences(all_caps)
            .into_iter()
            .map(|(n, (t, o))| (n.to_string(), (t.to_string(), o.to_string())))
            .collect();
        assert_eq!(diffs, expected, "all capabilities: {all_caps}");
    }
}
