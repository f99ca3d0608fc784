//! Images of `Container` resources: the credentials of the
//! `kubernetes.io/dockerconfigjson` Secrets a resource names in its own
//! namespace, read from the (fake, real wire protocol) API server, pull
//! from a registry on loopback that needs them; without them the pull is
//! refused and the resource says so in status and events.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/apiserver/mod.rs"]
mod apiserver;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/registry.rs"]
mod registry;
mod support;
#[path = "support/test_images.rs"]
mod test_images;

use std::collections::BTreeMap;

use apiserver::FakeApiServer;
use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rundmc::api::{Container, ContainerSpec, LocalObjectReference, Phase};

use cluster::{Cluster, NODE};
use registry::{Options, Registry};

fn container(name: &str, image: &str, secrets: &[&str]) -> Container {
    let spec = ContainerSpec {
        node_name: Some(NODE.into()),
        image: Some(image.into()),
        image_pull_secrets: secrets
            .iter()
            .map(|s| LocalObjectReference {
                name: s.to_string(),
            })
            .collect(),
        process: Some(rundmc::api::ProcessSpec {
            args: vec!["exec sleep 100000".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    Container::new(name, spec)
}

fn pull_secret(name: &str, registry: &str, user: &str, pass: &str) -> Secret {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let json = format!("{{\"auths\":{{\"{registry}\":{{\"auth\":\"{auth}\"}}}}}}");
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.into());
    secret.metadata.namespace = Some("default".into());
    secret.type_ = Some("kubernetes.io/dockerconfigjson".into());
    secret.data = Some(BTreeMap::from([(
        ".dockerconfigjson".to_string(),
        ByteString(json.into_bytes()),
    )]));
    secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resources_pull_secret_opens_a_private_registry() {
    let imgs = test_images::images();
    let reg = Registry::start(Options {
        tls: false,
        basic_auth: Some(("team".into(), "pa55".into())),
        ..Options::default()
    });
    reg.push(&imgs.layout, "simple", "private/app:1");
    let image = format!("{}/private/app:1", reg.addr);

    let mut k = Cluster::new("kube-pull-secret", FakeApiServer::start().await).await;
    k.env
        .extra
        .extend(["--insecure-registry".into(), reg.addr.clone()]);
    k.server
        .insert(&pull_secret("regcred", &reg.addr, "team", "pa55"));
    let _agent = k.start();

    // With a Secret that is not there: refused, and said so, naming it.
    k.apply(&container("nosecret", &image, &["nosuch"])).await;
    let refused = k
        .wait("ErrImagePull", "nosecret", |c| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.reason.as_deref() == Some("ErrImagePull"))
            })
        })
        .await;
    let status = refused.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Pending));
    let message = status.message.clone().unwrap_or_default();
    assert!(message.contains("unauthorized"), "{status:?}");
    assert!(
        message.contains("unable to retrieve image pull Secrets: default/nosuch"),
        "{status:?}"
    );
    assert!(!k.env.env.depot.join("nosecret").exists());

    // With it: pulled and running, and the image's id reported.
    k.apply(&container("withsecret", &image, &["regcred"]))
        .await;
    let running = k
        .wait("Running", "withsecret", |c| {
            c.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
        })
        .await;
    let digest = test_images::TestImages::digest(&imgs.layout, "simple");
    assert_eq!(running.status.unwrap().image_id, Some(digest));
    assert!(!k.events_about("withsecret", "Pulled").is_empty());
    assert!(!k.events_about("nosecret", "Failed").is_empty());
}
