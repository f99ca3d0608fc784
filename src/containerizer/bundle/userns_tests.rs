//! The user namespace rule: namespace, maps, and /sys in a pinned network.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;
use crate::api::validate::resources;
use crate::containerizer::userns::IdRange;

const RANGE: IdRange = IdRange {
    host_id: 196_608,
    size: 65_536,
};

fn config(userns: Option<IdRange>, netns: Option<PathBuf>) -> Value {
    let handle = Handle::new("private").unwrap();
    let spec = ContainerSpec {
        rootfs: "/img".into(),
        host_users: Some(userns.is_none()),
        ..Default::default()
    };
    let input = BundleInput {
        handle: &handle,
        spec: &spec,
        resources: resources(&spec.limits).unwrap(),
        init_binary: PathBuf::from("/usr/lib/rundmc/rundmc-init"),
        cgroup_parent: "rundmc".into(),
        bind_flags: Vec::new(),
        nofile_hard: 65536,
        bounding_set: CapSet::ALL,
        netns,
        etc_files: Vec::new(),
        userns,
        seccomp_localhost: None,
    };
    canonical_json(&generate(&input))
}

fn sys_mount(config: &Value) -> Value {
    config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/sys")
        .cloned()
        .unwrap()
}

fn has_user_ns(config: &Value) -> bool {
    config["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "user")
}

#[test]
fn a_range_gives_a_user_namespace_mapping_it() {
    let cfg = config(Some(RANGE), None);
    assert!(has_user_ns(&cfg));
    let map = json!([{"containerID": 0, "hostID": 196_608, "size": 65_536}]);
    assert_eq!(cfg["linux"]["uidMappings"], map);
    assert_eq!(cfg["linux"]["gidMappings"], map);
    assert_eq!(
        sys_mount(&cfg)["type"],
        "sysfs",
        "its own network: its own sysfs"
    );
}

#[test]
fn host_users_get_neither_namespace_nor_maps() {
    let cfg = config(None, Some("/run/netns/x".into()));
    assert!(!has_user_ns(&cfg));
    assert!(cfg["linux"].get("uidMappings").is_none());
    assert_eq!(sys_mount(&cfg)["type"], "sysfs");
}

#[test]
fn a_pinned_network_gets_the_hosts_sys_read_only() {
    let sys = sys_mount(&config(Some(RANGE), Some("/run/netns/x".into())));
    assert_eq!(sys["type"], "bind");
    assert_eq!(sys["source"], "/sys");
    assert_eq!(
        sys["options"],
        json!(["rbind", "rro", "nosuid", "noexec", "nodev"])
    );
}
