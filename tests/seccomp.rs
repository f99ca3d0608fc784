//! Seccomp as a user sees it from inside the container: the real agent,
//! real runc and crun, and a static probe (`support/seccomp_probe.c`,
//! bind-mounted in) that makes the syscalls the default profile refuses and
//! prints what each got. The main process is started with `runc exec` (or
//! `crun exec`), so what it reports is what exec'd processes get.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/apiserver/mod.rs"]
mod apiserver;
#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use apiserver::FakeApiServer;
use cluster::{Cluster, NODE};
use rundmc::api::{Container, ContainerSpec, SeccompProfile, SeccompProfileType, SecurityContext};
use support::agent::{AgentEnv, manifest};

const T: Duration = Duration::from_secs(30);

/// The probe, built static once per test run (the rootfs has no libc).
fn probe_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = support::workspace().join("target/seccomp-probe");
        std::fs::create_dir_all(&dir).unwrap();
        let source = support::workspace().join("tests/support/seccomp_probe.c");
        let out = Command::new("cc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(dir.join("seccomp_probe"))
            .arg(&source)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// A service that reports its seccomp mode, runs the probe against the
/// test's own (host) pid and `unshare -U`, then sleeps.
fn probing(security: &str) -> String {
    let script = format!(
        "grep Seccomp /proc/self/status; /probe/seccomp_probe {pid}; \
         unshare -U true && echo 'unshare -U: ok' || echo 'unshare -U: refused'; \
         echo probe done; exec sleep 100000",
        pid = std::process::id()
    );
    format!(
        "  process:\n    args: [\"/bin/sh\", \"-c\", \"{script}\"]\n  mounts:\n  - {{source: {}, destination: /probe, readOnly: true}}\n{security}",
        probe_dir().display()
    )
}

/// Each `<what>: <result>` line the container printed to stdout.
fn results(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once(" stdout F ").map(|(_, line)| line.to_string()))
        .collect()
}

fn run_probe(a: &AgentEnv, name: &str, security: &str) -> Vec<String> {
    a.write(&format!("{name}.yaml"), &manifest(name, &probing(security)));
    a.wait("the probe's output", T, || {
        a.main_log(name).contains("stdout F probe done")
    });
    results(&a.main_log(name))
}

/// What the default profile refuses, and what a process in a pid
/// namespace cannot reach anyway (a host pid is not visible: ESRCH).
const CONFINED: &[&str] = &[
    "Seccomp:\t2",
    "keyctl: EPERM",
    "add_key: EPERM",
    "bpf: EPERM",
    "mount: EPERM",
    "unshare(CLONE_NEWUSER): EPERM",
    "ptrace(PTRACE_ATTACH, host pid): ESRCH",
    "process_vm_readv(host pid): ESRCH",
    "unshare -U: refused",
];

fn assert_confined(lines: &[String]) {
    for want in CONFINED {
        assert!(lines.iter().any(|l| l == want), "{want:?} not in {lines:?}");
    }
}

/// Remove the manifest and wait until the container is gone, so that no
/// runtime's container outlives the test.
fn remove_and_wait(a: &AgentEnv, name: &str) {
    a.remove(&format!("{name}.yaml"));
    a.wait("the container destroyed", T, || {
        !a.env.depot.join(name).exists()
    });
}

#[test]
fn runc_the_default_profile_filters_exec_processes_and_init() {
    let a = AgentEnv::new("seccomp-runc");
    let _agent = a.start();
    let lines = run_probe(&a, "probe", "");
    assert_confined(&lines);
    let init = a.env.init_pid("probe");
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    assert!(status.contains("Seccomp:\t2"), "init: {status}");
}

#[test]
fn crun_the_default_profile_filters_exec_processes() {
    let mut a = AgentEnv::new("seccomp-crun");
    a.extra.extend(["--runtime".into(), "crun".into()]);
    let _agent = a.start();
    let lines = run_probe(&a, "probe", "");
    assert_confined(&lines);
    remove_and_wait(&a, "probe");
}

/// What the probe sees with no filter: what the default refuses works (the
/// capabilities' and the pid namespace's limits stay).
#[test]
fn unconfined_runs_without_a_filter() {
    let a = AgentEnv::new("seccomp-unconfined");
    let _agent = a.start();
    let lines = run_probe(
        &a,
        "free",
        "  securityContext: {seccompProfile: {type: Unconfined}}\n",
    );
    for want in [
        "Seccomp:\t0",
        "keyctl: ok",
        "add_key: ok",
        "unshare(CLONE_NEWUSER): ok",
        "unshare -U: ok",
        "mount: EPERM",
        "ptrace(PTRACE_ATTACH, host pid): ESRCH",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want:?} not in {lines:?}");
    }
}

/// A profile that refuses mkdir with EOPNOTSUPP and allows the rest.
const LOCALHOST: &str = r#"{
    "defaultAction": "SCMP_ACT_ALLOW",
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
    ],
    "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95}
    ]
}"#;

const MKDIR: &str = "  process:\n    args: [\"/bin/sh\", \"-c\", \"grep Seccomp: /proc/self/status; mkdir /tmp/d 2>&1; echo mkdir done; exec sleep 100000\"]\n  securityContext: {seccompProfile: {type: Localhost, localhostProfile: team/no-mkdir.json}}\n";

#[test]
fn a_localhost_profile_is_loaded_from_below_the_root_and_a_missing_one_is_a_config_error() {
    let mut a = AgentEnv::new("seccomp-localhost");
    let root = a.env.dir.join("seccomp");
    a.extra
        .extend(["--seccomp-profile-root".into(), root.display().to_string()]);
    let _agent = a.start();
    a.write("local.yaml", &manifest("local", MKDIR));
    let file = root.join("team/no-mkdir.json");
    a.wait("CreateContainerConfigError", T, || {
        a.condition("local", "Ready")
            .is_some_and(|(s, r, _)| s == "False" && r == "CreateContainerConfigError")
    });
    let (_, _, message) = a.condition("local", "Ready").unwrap();
    assert!(
        message.contains("spec.securityContext.seccompProfile.localhostProfile")
            && message.contains(&file.display().to_string()),
        "{message}"
    );
    assert_eq!(a.status_field("local", "phase").as_deref(), Some("Pending"));
    assert!(!a.env.depot.join("local").exists(), "nothing created");

    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, LOCALHOST).unwrap();
    a.wait("the container made once the profile is there", T, || {
        a.main_log("local").contains("stdout F mkdir done")
    });
    let lines = results(&a.main_log("local"));
    assert!(lines.contains(&"Seccomp:\t2".to_string()), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("mkdir") && l.contains("Operation not supported")),
        "{lines:?}"
    );
}

fn container(name: &str, type_: SeccompProfileType) -> Container {
    let spec = ContainerSpec {
        node_name: Some(NODE.into()),
        rootfs: support::image().display().to_string(),
        process: Some(rundmc::api::ProcessSpec {
            args: vec!["/bin/sh".into(), "-c".into(), "exec sleep 100000".into()],
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            seccomp_profile: Some(SeccompProfile {
                type_,
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        ..Default::default()
    };
    Container::new(name, spec)
}

fn ready_reason(c: &Container) -> Option<(String, String)> {
    let status = c.status.as_ref()?;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((
        ready.reason.clone().unwrap_or_default(),
        ready.message.clone().unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfined_from_the_api_needs_allow_unconfined_seccomp() {
    let k = Cluster::new("seccomp-admission", FakeApiServer::start().await).await;
    let mut agent = k.start();
    k.apply(&container("free", SeccompProfileType::Unconfined))
        .await;
    k.apply(&container("default", SeccompProfileType::RuntimeDefault))
        .await;
    let refused = k
        .wait("refused", "free", |c| {
            ready_reason(c).is_some_and(|(r, _)| r == "Forbidden")
        })
        .await;
    let (_, message) = ready_reason(&refused).unwrap();
    assert!(
        message.contains("spec.securityContext.seccompProfile.type")
            && message.contains("--allow-unconfined-seccomp"),
        "{message}"
    );
    k.wait("RuntimeDefault runs", "default", |c| {
        ready_reason(c).is_some_and(|(r, _)| r == "Started")
    })
    .await;
    assert!(!k.env.env.depot.join("k8s_default_free").exists());

    agent.terminate();
    let mut allowing = Cluster {
        server: k.server,
        client: k.client,
        env: k.env,
    };
    allowing.env.extra.push("--allow-unconfined-seccomp".into());
    let _agent = allowing.start();
    allowing
        .wait("Unconfined runs once allowed", "free", |c| {
            ready_reason(c).is_some_and(|(r, _)| r == "Started")
        })
        .await;
    let init = allowing.env.env.init_pid("k8s_default_free");
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    assert!(status.contains("Seccomp:\t0"), "{status}");
}
