use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;
use crate::api::validate::resources;
use crate::api::{EnvVar, Limits, Mount, ProcessSpec};

fn input<'a>(
    handle: &'a Handle,
    spec: &'a ContainerSpec,
    bind_flags: Vec<Vec<String>>,
) -> BundleInput<'a> {
    BundleInput {
        handle,
        spec,
        resources: resources(&spec.limits).unwrap(),
        init_binary: PathBuf::from("/usr/lib/rundmc/rundmc-init"),
        cgroup_parent: "rundmc".into(),
        bind_flags,
        nofile_hard: 65536,
        bounding_set: CapSet::ALL,
        netns: None,
        etc_files: Vec::new(),
        userns: None,
        seccomp_localhost: None,
    }
}

/// The config with `linux.seccomp`'s syscall rules replaced by their
/// count and its architectures (the build's) by a word: the profile itself
/// is pinned in `seccomp_tests`.
pub(super) fn seccomp_summarised(mut config: serde_json::Value) -> serde_json::Value {
    if let Some(rules) = config.pointer_mut("/linux/seccomp/syscalls") {
        let count = rules.as_array().map_or(0, Vec::len);
        *rules = serde_json::Value::from(format!("{count} rules"));
    }
    if let Some(arches) = config.pointer_mut("/linux/seccomp/architectures") {
        *arches = serde_json::Value::from("native and its compatible ones");
    }
    config
}

fn full_spec() -> ContainerSpec {
    ContainerSpec {
        rootfs: "/var/lib/rundmc/rootfs/busybox".into(),
        hostname: Some("web".into()),
        env: vec![EnvVar {
            name: "GREETING".into(),
            value: "hello".into(),
        }],
        process: Some(ProcessSpec {
            args: vec!["/bin/sh".into()],
            ..Default::default()
        }),
        mounts: vec![
            Mount {
                source: "/srv/data".into(),
                destination: "/data".into(),
                read_only: true,
            },
            Mount {
                source: "/tmp/scratch".into(),
                destination: "/scratch".into(),
                read_only: false,
            },
        ],
        limits: Limits {
            memory: Some(Quantity("64Mi".into())),
            cpu: Some(Quantity("500m".into())),
            pids: Some(100),
        },
        properties: BTreeMap::from([("team".into(), "web".into())]),
        ..Default::default()
    }
}

#[test]
fn snapshot_minimal() {
    let h = Handle::new("idle").unwrap();
    let spec = ContainerSpec {
        rootfs: "/img".into(),
        ..Default::default()
    };
    insta::assert_json_snapshot!(seccomp_summarised(canonical_json(&generate(&input(
        &h,
        &spec,
        vec![]
    )))));
}

#[test]
fn snapshot_full() {
    let h = Handle::new("web").unwrap();
    let spec = full_spec();
    let flags = vec![vec!["nosuid".into(), "nodev".into()], vec![]];
    insta::assert_json_snapshot!(seccomp_summarised(canonical_json(&generate(&input(
        &h, &spec, flags
    )))));
}

#[test]
fn snapshot_privileged_host_network() {
    let h = Handle::new("k8s_default_admin").unwrap();
    let spec = ContainerSpec {
        rootfs: "/img".into(),
        privileged: true,
        host_network: true,
        ..Default::default()
    };
    insta::assert_json_snapshot!(canonical_json(&generate(&input(&h, &spec, vec![]))));
}

#[test]
fn same_input_same_bytes() {
    let h = Handle::new("web").unwrap();
    let spec = full_spec();
    let a = serde_json::to_string(&canonical_json(&generate(&input(&h, &spec, vec![])))).unwrap();
    let b = serde_json::to_string(&canonical_json(&generate(&input(&h, &spec, vec![])))).unwrap();
    assert_eq!(a, b);
}

#[test]
fn rules_have_unique_names() {
    let mut names: Vec<_> = RULES.iter().map(|(n, _)| *n).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), RULES.len());
    assert_eq!(
        RULES.last().map(|(n, _)| *n),
        Some("init"),
        "init runs last"
    );
}

#[test]
fn cpu_quota_from_millicores() {
    assert_eq!(rules::cpu_quota_us(500), 50_000);
    assert_eq!(rules::cpu_quota_us(2000), 200_000);
    assert_eq!(
        rules::cpu_quota_us(1),
        1000,
        "the kernel's minimum quota is 1ms"
    );
}

#[test]
fn host_network_drops_the_network_namespace() {
    let h = Handle::new("a").unwrap();
    let mut spec = ContainerSpec {
        rootfs: "/img".into(),
        ..Default::default()
    };
    let count = |spec: &ContainerSpec| {
        let cfg = generate(&input(&h, spec, vec![]));
        cfg.linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .len()
    };
    assert_eq!(count(&spec), 5);
    spec.host_network = true;
    assert_eq!(count(&spec), 4);
}

#[test]
fn default_hostname_is_hostname_safe() {
    let h = Handle::new("k8s_ns_web+1").unwrap();
    let spec = ContainerSpec {
        rootfs: "/img".into(),
        ..Default::default()
    };
    let cfg = generate(&input(&h, &spec, vec![]));
    assert_eq!(cfg.hostname().as_deref(), Some("k8s-ns-web-1"));
}

#[test]
fn process_env_overrides_container_env_in_place() {
    let mut spec = full_spec();
    spec.env.push(EnvVar {
        name: "PATH".into(),
        value: "/bin".into(),
    });
    let own = [EnvVar {
        name: "GREETING".into(),
        value: "bye".into(),
    }];
    let args = ["echo".to_string()];
    let p = process_spec(&ProcessInput {
        container: &spec,
        args: &args,
        env: &own,
        working_dir: Some("/tmp"),
        user: ExecUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![],
            home: Some("/home/app".into()),
        },
        nofile_hard: 65536,
        bounding_set: CapSet::ALL,
    });
    assert_eq!(
        p.env().clone().unwrap(),
        vec!["PATH=/bin", "HOME=/home/app", "GREETING=bye"]
    );
    assert_eq!(p.user().uid(), 1000);
    assert_eq!(p.cwd(), &PathBuf::from("/tmp"));
    assert_eq!(p.no_new_privileges(), Some(true));
}

#[test]
fn capability_names_all_parse() {
    let count = |privileged: bool| {
        let h = Handle::new("a").unwrap();
        let spec = ContainerSpec {
            rootfs: "/img".into(),
            privileged,
            ..Default::default()
        };
        let cfg = generate(&input(&h, &spec, vec![]));
        let caps = cfg
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        caps.bounding().as_ref().map(|s| s.len()).unwrap_or(0)
    };
    assert_eq!(count(false), DEFAULT_CAPABILITIES.len());
    assert_eq!(count(true), all_capabilities().len());
}

/// The capability sets of a config, as sorted names.
fn capability_names(cfg: &Spec) -> Vec<Vec<String>> {
    let caps = cfg
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().clone())
        .unwrap();
    [caps.bounding(), caps.effective(), caps.permitted()]
        .into_iter()
        .map(|set| {
            let mut names: Vec<String> = set
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|c| c.to_string())
                .collect();
            names.sort();
            names
        })
        .collect()
}

#[test]
fn capability_names_are_in_number_order() {
    assert_eq!(all_capabilities()[21], "CAP_SYS_ADMIN");
    assert_eq!(all_capabilities()[24], "CAP_SYS_RESOURCE");
    assert_eq!(all_capabilities()[40], "CAP_CHECKPOINT_RESTORE");
}

#[test]
fn privileged_gets_only_what_the_agents_bounding_set_has() {
    let h = Handle::new("a").unwrap();
    let spec = ContainerSpec {
        rootfs: "/img".into(),
        privileged: true,
        ..Default::default()
    };
    // Every capability but CAP_SYS_RESOURCE (24) and CAP_MKNOD (27).
    let bounding = CapSet(((1 << 41) - 1) & !(1 << 24) & !(1 << 27));
    let mut with = input(&h, &spec, vec![]);
    with.bounding_set = bounding;
    let sets = capability_names(&generate(&with));
    for set in &sets {
        assert_eq!(set.len(), all_capabilities().len() - 2, "{set:?}");
        assert!(
            !set.iter()
                .any(|c| c == "CAP_SYS_RESOURCE" || c == "CAP_MKNOD")
        );
    }
    assert_eq!(
        wanted_capabilities(&spec, bounding).1,
        vec!["CAP_SYS_RESOURCE", "CAP_MKNOD"]
    );
    // An unprivileged container loses CAP_MKNOD from its default set too,
    // and so does a process run in either.
    let unprivileged = ContainerSpec {
        privileged: false,
        ..spec.clone()
    };
    assert_eq!(
        wanted_capabilities(&unprivileged, bounding).1,
        vec!["CAP_MKNOD"]
    );
    let p = process_spec(&ProcessInput {
        container: &spec,
        args: &["/bin/true".to_string()],
        env: &[],
        working_dir: None,
        user: ExecUser::root(),
        nofile_hard: 1024,
        bounding_set: bounding,
    });
    let caps = p.capabilities().clone().unwrap();
    assert_eq!(
        caps.bounding().as_ref().map(|s| s.len()),
        Some(all_capabilities().len() - 2)
    );
}

#[test]
fn a_container_on_a_network_joins_its_pinned_namespace_and_gets_its_etc_files() {
    let h = Handle::new("web").unwrap();
    let spec = full_spec();
    let mut with = input(&h, &spec, vec![vec![], vec![]]);
    with.netns = Some("/run/rundmc/netns/web".into());
    with.etc_files = vec![("/etc/hosts".into(), "/d/web/etc/hosts".into())];
    let config = generate(&with);
    let namespaces = config
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .clone()
        .unwrap();
    let net = namespaces
        .iter()
        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        .unwrap();
    assert_eq!(
        net.path().as_deref(),
        Some(std::path::Path::new("/run/rundmc/netns/web"))
    );
    let hosts = config
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == std::path::Path::new("/etc/hosts"))
        .unwrap();
    assert_eq!(
        hosts.source().as_deref(),
        Some(std::path::Path::new("/d/web/etc/hosts"))
    );
    let spec_without = full_spec();
    let without = generate(&input(&h, &spec_without, vec![vec![], vec![]]));
    let fresh = without
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .clone()
        .unwrap();
    let net = fresh
        .iter()
        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        .unwrap();
    assert_eq!(net.path(), &None, "a fresh namespace from the runtime");
}

/// What the containerizer writes, parsed, against the config tree, for
/// default, privileged, narrowed, Unconfined and Localhost containers,
/// twice each (the second from the default profile's kept filters).
#[test]
fn written_config_is_the_generated_config() {
    use crate::api::{Capabilities, SeccompProfile as Wanted, SeccompProfileType, SecurityContext};
    let h = Handle::new("web").unwrap();
    let with = |type_, caps: Option<Capabilities>| ContainerSpec {
        security_context: Some(SecurityContext {
            seccomp_profile: Some(Wanted {
                type_,
                localhost_profile: Some("p.json".into()),
            }),
            capabilities: caps,
            ..Default::default()
        }),
        ..full_spec()
    };
    let narrowed = Capabilities {
        add: vec!["SYS_ADMIN".into()],
        drop: vec!["NET_RAW".into()],
    };
    let privileged = ContainerSpec {
        privileged: true,
        ..full_spec()
    };
    let specs = [
        full_spec(),
        privileged,
        with(SeccompProfileType::RuntimeDefault, Some(narrowed)),
        with(SeccompProfileType::Unconfined, None),
        with(SeccompProfileType::Localhost, None),
    ];
    let localhost = SeccompProfile::parse(
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["ptrace"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    for spec in &specs {
        let input = BundleInput {
            seccomp_localhost: Some(localhost.clone()),
            ..input(&h, spec, vec![vec![], vec![]])
        };
        let expected = canonical_json(&generate(&input));
        for _ in 0..2 {
            let bytes = config_json(&input, generate_without_seccomp(&input)).unwrap();
            let mut written: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            sort_capability_sets(&mut written);
            assert_eq!(written, expected, "{spec:?}");
        }
    }
    let seccomp = |spec: &ContainerSpec| {
        let input = input(&h, spec, vec![vec![], vec![]]);
        let bytes = config_json(&input, generate_without_seccomp(&input)).unwrap();
        let written: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        written
            .pointer("/linux/seccomp/syscalls")
            .map(|s| s.to_string())
    };
    assert_ne!(
        seccomp(&specs[0]),
        seccomp(&specs[2]),
        "a capability set of its own gets a filter of its own"
    );
    assert_eq!(seccomp(&specs[1]), None, "privileged: no filter");
}
