//! What `spec.securityContext` does to the config and to a process's
//! process.json, and the default masked paths and devices, pinned.

use std::path::PathBuf;

use super::*;
use crate::api::validate::resources;
use crate::api::{Capabilities, ProcMountType, SecurityContext, Sysctl};

fn input<'a>(handle: &'a Handle, spec: &'a ContainerSpec) -> BundleInput<'a> {
    BundleInput {
        handle,
        spec,
        resources: resources(&spec.limits).unwrap(),
        init_binary: PathBuf::from("/usr/lib/rundmc/rundmc-init"),
        cgroup_parent: "rundmc".into(),
        bind_flags: Vec::new(),
        nofile_hard: 65536,
        bounding_set: CapSet::ALL,
        netns: None,
        etc_files: Vec::new(),
        userns: None,
        seccomp_localhost: None,
    }
}

fn confined() -> ContainerSpec {
    ContainerSpec {
        rootfs: "/var/lib/rundmc/rootfs/busybox".into(),
        security_context: Some(SecurityContext {
            capabilities: Some(Capabilities {
                add: vec!["SYS_TIME".into()],
                drop: vec!["NET_RAW".into(), "cap_mknod".into()],
            }),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_user: Some(1000),
            run_as_group: Some(3000),
            run_as_non_root: Some(true),
            supplemental_groups: vec![4000],
            sysctls: vec![Sysctl {
                name: "net/ipv4/ip_unprivileged_port_start".into(),
                value: "80".into(),
            }],
            ..SecurityContext::default()
        }),
        ..ContainerSpec::default()
    }
}

#[test]
fn snapshot_security_context() {
    let h = Handle::new("confined").unwrap();
    let spec = confined();
    let config = canonical_json(&generate(&input(&h, &spec)));
    insta::assert_json_snapshot!(super::tests::seccomp_summarised(config));
}

fn strings(list: &Option<Vec<String>>) -> Vec<String> {
    list.clone().unwrap_or_default()
}

/// containerd's defaults (oci/spec.go, WithDefaultUnixDevices), with
/// /proc/interrupts masked as Docker and Kubernetes 1.34 mask it.
#[test]
fn masked_paths_and_devices_are_containerds() {
    assert_eq!(
        MASKED_PATHS,
        [
            "/proc/acpi",
            "/proc/asound",
            "/proc/interrupts",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
        ]
    );
    assert_eq!(
        READONLY_PATHS,
        [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]
    );
    let h = Handle::new("a").unwrap();
    let spec = ContainerSpec {
        rootfs: "/img".into(),
        ..ContainerSpec::default()
    };
    let cfg = generate(&input(&h, &spec));
    let linux = cfg.linux().clone().unwrap();
    assert_eq!(strings(linux.masked_paths()), MASKED_PATHS.to_vec());
    assert_eq!(strings(linux.readonly_paths()), READONLY_PATHS.to_vec());
    let devices = linux
        .resources()
        .clone()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    let rules: Vec<(bool, Option<i64>, Option<i64>)> = devices
        .iter()
        .map(|d| (d.allow(), d.major(), d.minor()))
        .collect();
    assert_eq!(rules[0], (false, None, None), "deny all first");
    assert_eq!(rules.len(), 1 + DEFAULT_DEVICES.len());
    assert!(rules.contains(&(true, Some(1), Some(3))), "/dev/null");
    assert!(rules.contains(&(true, Some(136), None)), "/dev/pts/*");
}

#[test]
fn privileged_and_unmasked_unmask() {
    let h = Handle::new("a").unwrap();
    for spec in [
        ContainerSpec {
            privileged: true,
            ..confined()
        },
        ContainerSpec {
            host_users: Some(false),
            security_context: Some(SecurityContext {
                proc_mount: Some(ProcMountType::Unmasked),
                ..SecurityContext::default()
            }),
            ..confined()
        },
    ] {
        let cfg = generate(&input(&h, &spec));
        let linux = cfg.linux().clone().unwrap();
        assert_eq!(linux.masked_paths(), &None);
        assert_eq!(linux.readonly_paths(), &None);
    }
}

#[test]
fn config_and_process_get_the_same_capabilities_and_no_new_privs() {
    let h = Handle::new("confined").unwrap();
    let spec = confined();
    let cfg = generate(&input(&h, &spec));
    let init = cfg.process().clone().unwrap();
    let user = ExecUser {
        uid: 1000,
        gid: 0,
        additional_gids: vec![10],
        home: None,
    }
    .with_context(&spec);
    assert_eq!(
        (user.gid, user.additional_gids.clone()),
        (3000, vec![10, 4000])
    );
    let p = process_spec(&ProcessInput {
        container: &spec,
        args: &["/bin/true".to_string()],
        env: &[],
        working_dir: None,
        user,
        nofile_hard: 1024,
        bounding_set: CapSet::ALL,
    });
    assert_eq!(init.capabilities(), p.capabilities());
    let effective = p
        .capabilities()
        .clone()
        .unwrap()
        .effective()
        .clone()
        .unwrap();
    let names: Vec<String> = effective.iter().map(|c| c.to_string()).collect();
    assert_eq!(names.len(), 13, "{names:?}");
    assert!(names.iter().any(|c| c == "SYS_TIME"), "{names:?}");
    assert!(!names.iter().any(|c| c == "NET_RAW" || c == "MKNOD"));
    assert_eq!(init.no_new_privileges(), Some(true));
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.user().additional_gids(), &Some(vec![10, 4000]));
    assert_eq!((init.user().uid(), init.user().gid()), (1000, 3000));
    assert_eq!(cfg.root().clone().unwrap().readonly(), Some(true));

    let mut escalating = confined();
    if let Some(sc) = escalating.security_context.as_mut() {
        sc.allow_privilege_escalation = Some(true);
    }
    let cfg = generate(&input(&h, &escalating));
    assert_eq!(cfg.process().clone().unwrap().no_new_privileges(), None);
}
