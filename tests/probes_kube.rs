//! Readiness of a `Container` resource, through the (fake, real wire
//! protocol) API server: the Ready condition in the resource's status
//! follows its exec readiness probe both ways, with the probe's output as
//! its message, as `kubectl get containers` shows it.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/apiserver/mod.rs"]
mod apiserver;
#[path = "support/cluster.rs"]
mod cluster;
mod support;

use apiserver::FakeApiServer;
use rundmc::api::{Container, ContainerSpec, ExecAction, Probe, ProcessSpec};

use cluster::{Cluster, NODE};

fn probed(name: &str) -> Container {
    let spec = ContainerSpec {
        node_name: Some(NODE.into()),
        rootfs: support::image().display().to_string(),
        process: Some(ProcessSpec {
            args: vec!["/bin/sh".into(), "-c".into(), "exec sleep 100000".into()],
            readiness_probe: Some(Probe {
                exec: Some(ExecAction {
                    command: vec!["cat".into(), "/tmp/ready".into()],
                }),
                period_seconds: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Container::new(name, spec)
}

/// Ready's (status, reason, message) in the resource's status.
fn ready(c: &Container) -> Option<(String, String, String)> {
    let status = c.status.as_ref()?;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((
        ready.status.clone(),
        ready.reason.clone().unwrap_or_default(),
        ready.message.clone().unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_on_the_resource_follows_its_readiness_probe_both_ways() {
    let k = Cluster::new("kube-probe", FakeApiServer::start().await).await;
    let _agent = k.start();
    k.apply(&probed("web")).await;
    let unready = k
        .wait("Ready False from the probe", "web", |c| {
            ready(c).is_some_and(|(s, r, m)| {
                s == "False" && r == "Unhealthy" && m.contains("/tmp/ready")
            })
        })
        .await;
    let handle = unready.status.unwrap().handle.unwrap();

    let (code, _, err) = k.env.env.exec(&handle, &["touch", "/tmp/ready"]);
    assert_eq!(code, 0, "{err}");
    k.wait("Ready True", "web", |c| {
        ready(c).is_some_and(|(s, _, _)| s == "True")
    })
    .await;

    let (code, _, err) = k.env.env.exec(&handle, &["rm", "/tmp/ready"]);
    assert_eq!(code, 0, "{err}");
    k.wait("Ready False again", "web", |c| {
        ready(c).is_some_and(|(s, r, _)| s == "False" && r == "Unhealthy")
    })
    .await;
    assert!(!k.events_about("web", "Unhealthy").is_empty());
}
