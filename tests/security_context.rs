//! `spec.securityContext` as a user sees it: the real agent and real runc,
//! and each container's own view from inside (`/proc/self/status`, `id`,
//! `/proc/sys`, whether ping or a write to `/` works), read from its log.
//! Refusals are read where a user reads them: the status's Ready condition.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/apiserver/mod.rs"]
mod apiserver;
#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::time::Duration;

use apiserver::FakeApiServer;
use rundmc::api::{Capabilities, Container, ContainerSpec, Phase, SecurityContext};
use support::agent::{AgentEnv, manifest};

const T: Duration = Duration::from_secs(30);

/// A manifest whose main process runs `script`, then idles.
fn probe(name: &str, security_context: &str, script: &str) -> String {
    let extra = format!(
        "  securityContext: {security_context}\n  process:\n    args: [\"/bin/sh\", \"-c\", {:?}]\n",
        format!("{script}; echo probe-done; exec sleep 100000")
    );
    manifest(name, &extra)
}

/// The lines `name`'s main process printed, once it printed `probe-done`.
fn output(a: &AgentEnv, name: &str) -> Vec<String> {
    a.wait(&format!("{name} probed"), T, || {
        a.main_log(name).contains("probe-done")
    });
    a.main_log(name)
        .lines()
        .filter_map(|l| l.split_once(" F ").map(|(_, line)| line.to_string()))
        .collect()
}

/// The value after `key=` in `lines`.
fn value(lines: &[String], key: &str) -> String {
    let prefix = format!("{key}=");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in {lines:?}"))
        .trim()
        .to_string()
}

const PING: &str = "ping -c 1 -W 2 127.0.0.1 >/dev/null 2>&1; echo ping=$?";
const CAPS: &str = "echo eff=$(grep CapEff /proc/self/status | cut -f2); \
                    echo bnd=$(grep CapBnd /proc/self/status | cut -f2)";

#[test]
fn capabilities_added_and_dropped_are_the_containers_own() {
    let a = AgentEnv::new("secctx-caps");
    let _agent = a.start();
    a.write(
        "plain.yaml",
        &probe("plain", "{}", &format!("{PING}; {CAPS}")),
    );
    a.write(
        "noraw.yaml",
        &probe(
            "noraw",
            "{capabilities: {drop: [NET_RAW]}}",
            &format!("{PING}; {CAPS}"),
        ),
    );
    a.write(
        "bind.yaml",
        &probe(
            "bind",
            "{capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}",
            CAPS,
        ),
    );
    let plain = output(&a, "plain");
    assert_eq!(
        value(&plain, "ping"),
        "0",
        "ping works by default: {plain:?}"
    );
    assert_eq!(value(&plain, "eff"), "00000000a80425fb", "Docker's 14");

    let noraw = output(&a, "noraw");
    assert_ne!(value(&noraw, "ping"), "0", "NET_RAW dropped: {noraw:?}");
    assert_eq!(value(&noraw, "eff"), "00000000a80405fb");
    assert_eq!(value(&noraw, "bnd"), "00000000a80405fb");

    let bind = output(&a, "bind");
    assert_eq!(
        value(&bind, "eff"),
        "0000000000000400",
        "NET_BIND_SERVICE only"
    );
    assert_eq!(value(&bind, "bnd"), "0000000000000400");
}

#[test]
fn read_only_root_users_groups_and_sysctls_hold_inside() {
    fs_ids_and_sysctls("secctx-fs-ids", &[], "state.json");
}

#[test]
fn crun_takes_the_same_config() {
    if !std::path::Path::new("/usr/bin/crun").exists() {
        panic!("crun is not installed: this test needs it");
    }
    fs_ids_and_sysctls("secctx-crun", &["--runtime", "crun"], "status");
}

/// `state_file`: what the runtime keeps in its root for a container
/// (runc's `state.json`, crun's `status`), to tell which one ran it.
fn fs_ids_and_sysctls(env: &str, flags: &[&str], state_file: &str) {
    let mut a = AgentEnv::new(env);
    a.extra.extend(flags.iter().map(|f| f.to_string()));
    let _agent = a.start();
    a.write(
        "ro.yaml",
        &probe(
            "ro",
            "{readOnlyRootFilesystem: true}",
            "touch /x 2>/dev/null; echo root=$?; touch /dev/shm/x; echo shm=$?; \
             echo cgroups=$(ls /sys/fs/cgroup | wc -l); \
             d=/sys/fs/cgroup; [ -d $d/pids ] && d=$d/pids; \
             mkdir $d/x 2>/dev/null; echo cgroup_mkdir=$?",
        ),
    );
    a.write(
        "ids.yaml",
        &probe(
            "ids",
            "{runAsUser: 1234, runAsGroup: 2345, supplementalGroups: [3456], runAsNonRoot: true}",
            "echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G); \
             echo init=$(stat -c %u /proc/1)",
        ),
    );
    a.write(
        "sysctl.yaml",
        &probe(
            "sysctl",
            "{sysctls: [{name: net/ipv4/ip_unprivileged_port_start, value: \"99\"}, \
              {name: kernel.shm_rmid_forced, value: \"1\"}]}",
            "echo port=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start); \
             echo rmid=$(cat /proc/sys/kernel/shm_rmid_forced)",
        ),
    );
    let ro = output(&a, "ro");
    assert!(
        a.env.runc_root.join("ro").join(state_file).exists(),
        "run by the runtime asked for"
    );
    assert_ne!(value(&ro, "root"), "0", "/ is read-only: {ro:?}");
    assert_eq!(value(&ro, "shm"), "0", "/dev/shm stays writable: {ro:?}");
    assert_ne!(
        value(&ro, "cgroups"),
        "0",
        "its cgroup at /sys/fs/cgroup: {ro:?}"
    );
    assert_ne!(
        value(&ro, "cgroup_mkdir"),
        "0",
        "no cgroup made under its own: {ro:?}"
    );

    let ids = output(&a, "ids");
    assert_eq!(value(&ids, "uid"), "1234");
    assert_eq!(value(&ids, "gid"), "2345");
    assert_eq!(value(&ids, "groups"), "2345 3456");
    assert_eq!(value(&ids, "init"), "1234", "not even init runs as root");

    let sysctl = output(&a, "sysctl");
    assert_eq!(value(&sysctl, "port"), "99");
    assert_eq!(value(&sysctl, "rmid"), "1");
}

#[test]
fn run_as_non_root_refuses_a_root_image_with_the_reason_in_status() {
    let a = AgentEnv::new("secctx-nonroot");
    let _agent = a.start();
    a.write(
        "rooty.yaml",
        &probe("rooty", "{runAsNonRoot: true}", "echo ran-as=$(id -u)"),
    );
    a.wait("rooty refused", T, || {
        a.condition("rooty", "Ready")
            .is_some_and(|c| c.1 == "CreateContainerConfigError")
    });
    let (status, _, message) = a.condition("rooty", "Ready").unwrap();
    assert_eq!(status, "False");
    assert!(
        message.contains("container has runAsNonRoot and image will run as root"),
        "{message}"
    );
    assert_eq!(a.env.runc_status("rooty"), None, "nothing created");
    assert!(a.main_log("rooty").is_empty());
}

fn with_caps(name: &str, add: &[&str]) -> Container {
    let spec = ContainerSpec {
        node_name: Some(cluster::NODE.into()),
        rootfs: support::image().display().to_string(),
        process: Some(rundmc::api::ProcessSpec {
            args: vec!["/bin/sh".into(), "-c".into(), "exec sleep 100000".into()],
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            capabilities: Some(Capabilities {
                add: add.iter().map(|s| s.to_string()).collect(),
                drop: vec![],
            }),
            ..SecurityContext::default()
        }),
        ..Default::default()
    };
    Container::new(name, spec)
}

fn ready_reason(c: &Container) -> Option<(String, String)> {
    let s = c.status.as_ref()?;
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((
        ready.reason.clone().unwrap_or_default(),
        ready.message.clone().unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_beyond_the_default_from_the_api_need_the_agents_flag() {
    let mut k = cluster::Cluster::new("secctx-admit", FakeApiServer::start().await).await;
    k.env
        .extra
        .extend(["--allowed-capabilities".into(), "SYS_TIME".into()]);
    let _agent = k.start();
    k.apply(&with_caps("admin", &["CHOWN", "NET_ADMIN"])).await;
    k.apply(&with_caps("clock", &["SYS_TIME"])).await;
    let admin = k
        .wait("admin refused", "admin", |c| {
            ready_reason(c).is_some_and(|r| r.0 == "Forbidden")
        })
        .await;
    let (_, message) = ready_reason(&admin).unwrap();
    assert!(
        message.contains(
            "spec.securityContext.capabilities.add[1]: NET_ADMIN is beyond the default \
             capability set and not allowed on this node"
        ),
        "{message}"
    );
    assert_eq!(k.env.env.runc_status("k8s_default_admin"), None);
    k.wait("clock runs", "clock", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Running))
    })
    .await;
}
