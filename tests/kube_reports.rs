//! What the agent tells a cluster user, against the fake API server
//! (`tests/support/apiserver`): events that stay true across restarts of
//! the main process, refusals that name their real cause, and mirrors of
//! file-sourced containers on a cluster whose Container CRD is not there
//! yet.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/apiserver/mod.rs"]
mod apiserver;
#[path = "support/cluster.rs"]
mod cluster;
mod support;

use apiserver::FakeApiServer;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, PostParams};
use rundmc::api::{Container, ContainerSpec, Phase};
use support::agent::manifest;

use cluster::{Cluster, NODE, T};

fn container(name: &str, args: &[&str], extra: impl FnOnce(&mut ContainerSpec)) -> Container {
    let mut spec = ContainerSpec {
        node_name: Some(NODE.into()),
        rootfs: support::image().display().to_string(),
        process: Some(rundmc::api::ProcessSpec {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    extra(&mut spec);
    Container::new(name, spec)
}

/// How many times an event happened: 1, or its series' count.
fn occurrences(e: &Event) -> i32 {
    e.series.as_ref().map_or(1, |s| s.count)
}

/// `kubectl describe container` after the main process was started twice:
/// the Started events say what is true of both starts, and status says
/// which run is the one running, with its pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_of_the_main_process_is_reported_truthfully() {
    let k = Cluster::new("kube-events", FakeApiServer::start().await).await;
    let _agent = k.start();
    // Fails on its first run, runs on its second (the container, and its
    // writable layer, outlive the first run).
    let script = "[ -e /tmp/ran ] && exec sleep 100000; touch /tmp/ran; exit 1";
    k.apply(&container("flaky", &["/bin/sh", "-c", script], |_| {}))
        .await;
    let running = k
        .wait("the second run Running", "flaky", |c| {
            c.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::Running)
                    && s.restart_count == 1
                    && s.main_process.as_ref().is_some_and(|m| m.pid.is_some())
            })
        })
        .await;
    let main = running.status.unwrap().main_process.unwrap();
    assert_eq!(main.id, "main-2");
    let env_pid = k.env.main_pid("k8s_default_flaky");
    assert_eq!(main.pid, env_pid, "status names the running process");

    // Both starts are recorded, with words true of each.
    let server = &k.server;
    let started = || {
        server
            .events()
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("Started")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("flaky")
            })
            .collect::<Vec<_>>()
    };
    let both = server
        .wait_for(T, |_| started().iter().map(occurrences).sum::<i32>() >= 2)
        .await;
    assert!(both.is_ok(), "two starts: {:?}", started());
    let events = k.events_about("flaky", "Started");
    assert_eq!(events.iter().map(occurrences).sum::<i32>(), 2, "{events:?}");
    for e in &events {
        let note = e.note.as_deref().unwrap_or_default();
        assert_eq!(note, "Started main process", "{e:?}");
        assert_eq!(e.type_.as_deref(), Some("Normal"));
    }
    // Two starts of the same words are one series, as kubelet's are.
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].series.as_ref().map(|s| s.count), Some(2));

    // And events with other words are not folded into it.
    let failed = k.events_about("flaky", "BackOff");
    for e in &failed {
        assert_eq!(
            e.note.as_deref(),
            Some("Back-off restarting failed main process")
        );
    }
}

/// Events with other words are other events: a second, different refusal
/// of the same Container is not counted into the first one's series
/// (which would show the first refusal's words twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_refusal_is_a_different_event() {
    let k = Cluster::new("kube-refusals", FakeApiServer::start().await).await;
    let _agent = k.start();
    k.apply(&container("asks", &["sleep", "100000"], |s| {
        s.privileged = true
    }))
    .await;
    let notes = |s: &FakeApiServer| -> Vec<(String, i32)> {
        s.events()
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some("Forbidden")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("asks")
            })
            .map(|e| (e.note.clone().unwrap_or_default(), occurrences(e)))
            .collect()
    };
    let privileged = |n: &(String, i32)| n.0.contains("spec.privileged");
    let host_network = |n: &(String, i32)| n.0.contains("spec.hostNetwork");
    k.server
        .wait_for(T, |s| notes(s).iter().any(privileged))
        .await
        .unwrap_or_else(|_| panic!("no refusal: {:?}", notes(&k.server)));
    k.apply(&container("asks", &["sleep", "100000"], |s| {
        s.host_network = true
    }))
    .await;
    let seen = k
        .server
        .wait_for(T, |s| notes(s).iter().any(host_network))
        .await;
    let notes = notes(&k.server);
    assert!(
        seen.is_ok(),
        "the second refusal has no event of its own: {notes:?}"
    );
    assert_eq!(
        notes
            .iter()
            .filter(|n| privileged(n))
            .map(|n| n.1)
            .sum::<i32>(),
        1,
        "{notes:?}"
    );
}

/// In the agent's pod, a host path outside `allowedHostPaths` is not even
/// visible: the refusal must say it is not allowed, and how to allow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_outside_the_allowed_host_paths_is_refused_as_not_allowed() {
    let mut k = Cluster::new("kube-refusal", FakeApiServer::start().await).await;
    let allowed = k.env.env.dir.join("shared");
    std::fs::create_dir_all(&allowed).unwrap();
    k.env.extra.extend([
        "--allowed-host-paths".to_string(),
        allowed.display().to_string(),
    ]);
    let _agent = k.start();
    // Outside the allowed path and, as in the pod, not visible here.
    let source = "/rundmc-not-mounted-in-this-pod/common-licenses";
    k.apply(&container("licenses", &["sleep", "100000"], |s| {
        s.mounts = vec![rundmc::api::Mount {
            source: source.into(),
            destination: "/licenses".into(),
            read_only: true,
        }]
    }))
    .await;
    let refused = k
        .wait("licenses refused", "licenses", |c| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason.as_deref() == Some("Forbidden"))
            })
        })
        .await;
    let condition = refused.status.unwrap().conditions[0].clone();
    let message = condition.message.unwrap_or_default();
    assert!(
        message.contains(&format!(
            "spec.mounts[0].source: {source} is not under an allowed host path: this node allows {}",
            allowed.display()
        )),
        "{message}"
    );
    assert!(
        message.contains("--allowed-host-paths (Helm chart value allowedHostPaths)"),
        "{message}"
    );
    assert!(!message.contains("cannot be resolved"), "{message}");
    let warnings = k.events_about("licenses", "Forbidden");
    assert!(
        warnings.iter().any(|e| e
            .note
            .as_deref()
            .is_some_and(|n| n.contains("allowedHostPaths"))),
        "{warnings:?}"
    );
    assert_eq!(k.env.env.runc_status("k8s_default_licenses"), None);
}

/// An agent started before the Container CRD is installed: the file's
/// container runs, its mirror cannot be published, and the agent says so
/// once, writes no status for a mirror that does not exist, and publishes
/// it when the CRD arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_waits_for_its_crd_with_one_log_line_and_no_nameless_writes() {
    let server = FakeApiServer::builder()
        .without("rundmc.io", "containers")
        .start()
        .await;
    let k = Cluster::new("kube-no-crd", server).await;
    let _agent = k.start();
    k.env.write(
        "static.yaml",
        &manifest("static", "  process:\n    args: [\"sleep\", \"100000\"]\n"),
    );
    // The container runs from its file whatever the API server says.
    tokio::task::block_in_place(|| k.env.wait("static running", T, || k.env.running("static")));

    // Two attempts to publish the mirror, the second after a backoff.
    let applies = |s: &FakeApiServer| {
        s.requests()
            .iter()
            .filter(|r| r.path.ends_with("/containers/static-node-1"))
            .count()
    };
    k.server
        .wait_for(T, |s| applies(s) >= 2)
        .await
        .unwrap_or_else(|_| panic!("no retry\n{}", k.env.agent_log()));
    let log = k.env.agent_log();
    assert_eq!(
        log.matches("cannot publish the mirror").count(),
        1,
        "the cause is logged once:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("cannot publish the mirror") && l.contains("404")),
        "{log}"
    );
    assert!(!log.contains("non-empty name"), "{log}");
    assert_eq!(
        log.matches("does not serve Container resources").count(),
        1,
        "the watch's cause too:\n{log}"
    );
    assert!(!log.contains("cannot write status"), "{log}");
    let status_writes = k
        .server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/status"))
        .count();
    assert_eq!(
        status_writes, 0,
        "no status written for a mirror that does not exist"
    );

    // The CRD arrives: the mirror is published and its status follows.
    let crds: Api<CustomResourceDefinition> = Api::all(k.client.clone());
    crds.create(&PostParams::default(), &Container::crd())
        .await
        .unwrap();
    let mirror = k
        .wait("the mirror Running", "static-node-1", |c| {
            c.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
        })
        .await;
    assert_eq!(mirror.spec.node_name.as_deref(), Some(NODE));
    let log = k.env.agent_log();
    assert_eq!(log.matches("cannot publish the mirror").count(), 1, "{log}");
    assert!(log.contains("published the mirror"), "{log}");
}

/// The agent filters server-side on a 1.31 server; then the CRD is replaced
/// by the form without `selectableFields` (`kubectl apply -f
/// manifests/deploy/rundmc.yaml` again, say), so the server refuses the node
/// selector. The agent filters by itself from then on: what ran keeps
/// running, and what is declared next runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_watching_when_the_crd_loses_its_selectable_fields() {
    let k = Cluster::new("kube-crd-swap", FakeApiServer::start().await).await;
    let crds: Api<CustomResourceDefinition> = Api::all(k.client.clone());
    crds.create(
        &PostParams::default(),
        &rundmc::api::crd::crd(Some("1.31".parse().unwrap())),
    )
    .await
    .unwrap();
    let _agent = k.start();
    let ready = |c: &Container| {
        c.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Running) && s.main_process.is_some())
    };
    k.apply(&container("before", &["sleep", "100000"], |_| {}))
        .await;
    k.wait("before Running", "before", ready).await;

    let mut portable = rundmc::api::crd::crd(None);
    let stored = crds.get("containers.rundmc.io").await.unwrap();
    portable.metadata.resource_version = stored.metadata.resource_version;
    crds.replace("containers.rundmc.io", &PostParams::default(), &portable)
        .await
        .unwrap();
    k.server.cut_watches();

    k.apply(&container("after", &["sleep", "100000"], |_| {}))
        .await;
    k.wait("after Running", "after", ready).await;
    let before = k.server.get::<Container>("default", "before").unwrap();
    assert!(ready(&before), "{before:?}");
    assert_eq!(
        k.env.env.runc_status("k8s_default_before").as_deref(),
        Some("running")
    );
    let log = k.env.agent_log();
    assert!(log.contains("no longer filters Containers"), "{log}");
}
