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
        &Some(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32
        ])
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
        "unshare",
        "setns",
        "mount",
        "umount2",
        "bpf",
        "keyctl",
        "add_key",
        "request_key",
        "clone3",
        "reboot",
        "kexec_load",
        "init_module",
        "open_by_handle_at",
        "sethostname",
    ] {
        assert!(!allowed.contains(name), "{name} is allowed");
    }
    for name in [
        "read",
        "execve",
        "ptrace",
        "process_vm_readv",
        "chroot",
        "io_uring_setup",
    ] {
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
    for name in [
        "unshare", "setns", "mount", "clone", "clone3", "bpf", "kcmp",
    ] {
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
        userns: None,
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
    assert_eq!(
        config.linux().as_ref().and_then(|l| l.seccomp().clone()),
        None
    );

    let privileged = ContainerSpec {
        privileged: true,
        ..plain.clone()
    };
    let config = generate(&input(&h, &privileged));
    assert_eq!(
        config.linux().as_ref().and_then(|l| l.seccomp().clone()),
        None
    );

    // Capabilities are the container's bounding set, as the capabilities
    // rule gives it.
    let admin = ContainerSpec {
        security_context: Some(SecurityContext {
            capabilities: Some(crate::api::Capabilities {
                add: vec!["SYS_ADMIN".into()],
                drop: vec![],
            }),
            ..SecurityContext::default()
        }),
        ..plain.clone()
    };
    let spec = generate(&input(&h, &admin));
    let filter = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    assert!(filter.is_some_and(|f| allowed(&f).contains("mount")));
    let filter = generate(&input(&h, &plain))
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().clone());
    assert!(filter.is_some_and(|f| !allowed(&f).contains("mount")));
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

/// What one rule does, shortly: `allow`, `allow[0 != 40]`, `EPERM`, `ENOSYS`.
fn outcome(action: LinuxSeccompAction, errno: Option<u32>, args: &[LinuxSeccompArg]) -> String {
    let errno_name = |e: Option<u32>| match e.unwrap_or(1) {
        1 => "EPERM".to_string(),
        38 => "ENOSYS".to_string(),
        e => format!("errno {e}"),
    };
    let what = match action {
        LinuxSeccompAction::ScmpActAllow => "allow".to_string(),
        LinuxSeccompAction::ScmpActErrno => errno_name(errno),
        other => format!("{other:?}"),
    };
    let args: Vec<String> = args
        .iter()
        .map(|a| format!("{} {:?} {:#x}", a.index(), a.op(), a.value()))
        .collect();
    match args.is_empty() {
        true => what,
        false => format!("{what}[{}]", args.join(", ")),
    }
}

/// Per syscall name, what it gets: its rules, or the default action.
fn outcomes(filter: &LinuxSeccomp, names: &BTreeSet<String>) -> BTreeMap<String, String> {
    let default = outcome(filter.default_action(), filter.default_errno_ret(), &[]);
    let mut rules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in filter.syscalls().iter().flatten() {
        let args = rule.args().clone().unwrap_or_default();
        let what = outcome(rule.action(), rule.errno_ret(), &args);
        for name in rule.names() {
            rules.entry(name.clone()).or_default().insert(what.clone());
        }
    }
    names
        .iter()
        .map(|n| {
            let what = rules.get(n).map_or(default.clone(), |r| {
                r.iter().cloned().collect::<Vec<_>>().join(" | ")
            });
            (n.clone(), what)
        })
        .collect()
}

fn named(filter: &LinuxSeccomp) -> BTreeSet<String> {
    filter
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|r| r.names().iter().cloned())
        .collect()
}

/// Where containers/common 0.50.1 differs from Moby's default, which
/// rundmc's is, on amd64: (syscall, what it gets there, what it gets
/// here). Any other difference is drift.
///
/// - Its default is ENOSYS (Moby's EPERM); so the syscalls newer than it
///   (futex_waitv, io_uring_*, io_pgetevents_time64) get ENOSYS there.
/// - For rootless Podman it allows namespaces, mounts, keyctl, ptrace,
///   syslog, reboot and the NUMA calls without the capabilities Moby asks
///   for; its clone and clone3 have no namespace-flag filter.
/// - It refuses vmsplice and io_pgetevents, which Moby allows, and allows
///   the old names readdir, signal, sigaction, sigpending, sigsuspend,
///   syscall, timerfd, and pivot_root.
/// - Its socket rules refuse AF_NETLINK/NETLINK_AUDIT without
///   CAP_AUDIT_WRITE (Moby's instead refuse AF_VSOCK).
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[
    ("clone", "allow", "allow[0 ScmpCmpMaskedEq 0x7e020000]"),
    ("clone3", "allow", "ENOSYS"),
    ("fsconfig", "allow", "EPERM"),
    ("fsmount", "allow", "EPERM"),
    ("fsopen", "allow", "EPERM"),
    ("fspick", "allow", "EPERM"),
    ("futex_waitv", "ENOSYS", "allow"),
    ("get_mempolicy", "allow", "EPERM"),
    ("io_pgetevents", "EPERM", "allow"),
    ("io_pgetevents_time64", "ENOSYS", "allow"),
    ("io_uring_enter", "ENOSYS", "allow"),
    ("io_uring_register", "ENOSYS", "allow"),
    ("io_uring_setup", "ENOSYS", "allow"),
    ("keyctl", "allow", "EPERM"),
    ("mbind", "allow", "EPERM"),
    ("mount", "allow", "EPERM"),
    ("mount_setattr", "allow", "EPERM"),
    ("move_mount", "allow", "EPERM"),
    ("open_tree", "allow", "EPERM"),
    ("pidfd_getfd", "allow", "EPERM"),
    ("pivot_root", "allow", "EPERM"),
    ("readdir", "allow", "EPERM"),
    ("reboot", "allow", "EPERM"),
    ("set_mempolicy", "allow", "EPERM"),
    ("setns", "EPERM | allow", "EPERM"),
    ("sigaction", "allow", "EPERM"),
    ("signal", "allow", "EPERM"),
    ("sigpending", "allow", "EPERM"),
    ("sigsuspend", "allow", "EPERM"),
    ("socket", "allow", "allow[0 ScmpCmpNe 0x28]"),
    ("syscall", "allow", "EPERM"),
    ("syslog", "allow", "EPERM"),
    ("timerfd", "allow", "EPERM"),
    ("umount", "allow", "EPERM"),
    ("umount2", "allow", "EPERM"),
    ("unshare", "allow", "EPERM"),
    ("vmsplice", "EPERM", "allow"),
];
/// The same with every capability: what Moby conditions on capabilities
/// agrees, but for syscalls one of them lacks (quotactl_fd,
/// set_mempolicy_home_node are newer; query_module is gone from Moby's).
const KNOWN_DIFFERENCES_ALL_CAPS: &[(&str, &str, &str)] = &[
    ("futex_waitv", "ENOSYS", "allow"),
    ("io_pgetevents", "EPERM", "allow"),
    ("io_pgetevents_time64", "ENOSYS", "allow"),
    ("io_uring_enter", "ENOSYS", "allow"),
    ("io_uring_register", "ENOSYS", "allow"),
    ("io_uring_setup", "ENOSYS", "allow"),
    ("keyctl", "allow", "EPERM"),
    ("pivot_root", "allow", "EPERM"),
    ("query_module", "allow", "EPERM"),
    ("quotactl_fd", "ENOSYS", "allow"),
    ("readdir", "allow", "EPERM"),
    ("set_mempolicy_home_node", "ENOSYS", "allow"),
    ("sigaction", "allow", "EPERM"),
    ("signal", "allow", "EPERM"),
    ("sigpending", "allow", "EPERM"),
    ("sigsuspend", "allow", "EPERM"),
    ("socket", "allow", "allow[0 ScmpCmpNe 0x28]"),
    ("syscall", "allow", "EPERM"),
    ("timerfd", "allow", "EPERM"),
    ("vmsplice", "EPERM", "allow"),
];

#[test]
fn the_default_matches_moby_as_containers_common_ships_it_but_for_known_differences() {
    let text = std::fs::read_to_string(CONTAINERS_COMMON)
        .unwrap_or_else(|e| panic!("{CONTAINERS_COMMON}: {e} (scripts/deps.sh installs it)"));
    let reference = Profile::parse(&text).unwrap();
    let all = caps(all_capabilities());
    for (caps, known) in [
        (default_caps(), KNOWN_DIFFERENCES),
        (all, KNOWN_DIFFERENCES_ALL_CAPS),
    ] {
        let ours = evaluate(&default_profile(), &caps, AMD64);
        let theirs = evaluate(&reference, &caps, AMD64);
        let names: BTreeSet<String> = named(&ours).union(&named(&theirs)).cloned().collect();
        let (ours, theirs) = (outcomes(&ours, &names), outcomes(&theirs, &names));
        let diffs: Vec<(String, String, String)> = names
            .iter()
            .filter(|n| ours[*n] != theirs[*n])
            .map(|n| (n.clone(), theirs[n].clone(), ours[n].clone()))
            .collect();
        let known: Vec<(String, String, String)> = known
            .iter()
            .map(|(n, t, o)| (n.to_string(), t.to_string(), o.to_string()))
            .collect();
        if diffs != known {
            for (n, t, o) in &diffs {
                println!("    (\"{n}\", \"{t}\", \"{o}\"),");
            }
        }
        assert_eq!(diffs, known, "{} capabilities", caps.len());
    }
}
