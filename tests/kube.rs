//! The agent with `--kube`, against the fake API server in
//! `tests/support/apiserver` (real wire protocol on loopback), driven the
//! way a cluster user would: resources applied and edited through
//! `kube::Client`, checked with what `kubectl get` and `kubectl describe`
//! would show, and with runc.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/apiserver/mod.rs"]
mod apiserver;
#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::time::Duration;

use apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, Patch, PatchParams};
use rundmc::api::{Container, ContainerSpec, Phase};
use support::agent::{AgentEnv, manifest};

use cluster::{Cluster, NODE, T};

fn container(name: &str, node: &str, extra: impl FnOnce(&mut ContainerSpec)) -> Container {
    let mut spec = ContainerSpec {
        node_name: Some(node.into()),
        rootfs: support::image().display().to_string(),
        process: Some(rundmc::api::ProcessSpec {
            args: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo hi $GREETING; exec sleep 100000".into(),
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    extra(&mut spec);
    Container::new(name, spec)
}

/// Refused by node-side admission: `Ready=False` with reason `Forbidden`.
fn forbidden(c: &Container) -> bool {
    c.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == "Ready" && c.status == "False" && c.reason.as_deref() == Some("Forbidden")
        })
    })
}

fn ready(c: &Container) -> bool {
    c.status.as_ref().is_some_and(|s| {
        s.phase == Some(Phase::Running)
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
            && s.observed_generation == c.metadata.generation
    })
}

fn runc_status(env: &AgentEnv, id: &str) -> Option<String> {
    env.env.runc_status(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_for_this_node_runs_and_another_nodes_is_ignored() {
    let k = Cluster::new("kube-basic", FakeApiServer::start().await).await;
    let _agent = k.start();
    k.apply(&container("web", NODE, |_| {})).await;
    k.apply(&container("elsewhere", "node-2", |_| {})).await;

    let web = k.wait("web Ready", "web", ready).await;
    let status = web.status.unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.handle.as_deref(), Some("k8s_default_web"));
    assert!(
        web.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"rundmc.io/cleanup".to_string())
    );
    assert_eq!(
        runc_status(&k.env, "k8s_default_web").as_deref(),
        Some("running")
    );

    let other = k.server.get::<Container>("default", "elsewhere").unwrap();
    assert!(
        other.status.is_none() && other.metadata.finalizers.is_none(),
        "another node's is untouched"
    );
    assert_eq!(runc_status(&k.env, "k8s_default_elsewhere"), None);

    let events = k.server.events();
    let reasons: Vec<_> = events.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(
        reasons.contains(&"Created".into()) && reasons.contains(&"Started".into()),
        "{reasons:?}"
    );
    let started = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("Started"))
        .unwrap();
    assert_eq!(started.reporting_instance.as_deref(), Some(NODE));
    assert_eq!(
        started.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("web")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_edit_bumps_the_generation_and_updates_the_container() {
    let k = Cluster::new("kube-edit", FakeApiServer::start().await).await;
    let _agent = k.start();
    k.apply(&container("web", NODE, |_| {})).await;
    k.wait("web Ready", "web", ready).await;
    let init = k.env.env.init_pid("k8s_default_web");

    let edited = container("web", NODE, |s| {
        s.env = vec![rundmc::api::EnvVar {
            name: "GREETING".into(),
            value: "v2".into(),
        }]
    });
    k.apply(&edited).await;
    let web = k
        .wait("generation 2 Ready", "web", |c| {
            c.metadata.generation == Some(2) && ready(c)
        })
        .await;
    assert_eq!(web.status.unwrap().observed_generation, Some(2));
    assert_ne!(
        k.env.env.init_pid("k8s_default_web"),
        init,
        "recreated for the new env"
    );
    assert!(k.env.main_log("k8s_default_web").contains("hi v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_destroys_the_container_before_the_finalizer_goes() {
    let k = Cluster::new("kube-delete", FakeApiServer::start().await).await;
    let _agent = k.start();
    k.apply(&container("web", NODE, |_| {})).await;
    k.wait("web Ready", "web", ready).await;
    // Another controller's finalizer keeps the object after ours goes, to
    // look at it then; the agent must leave it alone.
    const HOLD: &str = "test.rundmc.io/hold";
    let hold = serde_json::json!({
        "apiVersion": "rundmc.io/v1alpha1", "kind": "Container",
        "metadata": {"name": "web", "finalizers": [HOLD]},
    });
    k.api()
        .patch(
            "web",
            &PatchParams::apply("other-controller"),
            &Patch::Apply(&hold),
        )
        .await
        .unwrap();
    k.api()
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    // Checked at each change the server makes: the first state without our
    // finalizer must already be without the container.
    let depot = k.env.env.depot.join("k8s_default_web");
    let mut bundle_when_released = None;
    k.server
        .wait_for(T, |s| {
            let Some(obj) = s.get::<Container>("default", "web") else {
                return true;
            };
            let ours = obj
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == "rundmc.io/cleanup");
            if !ours {
                bundle_when_released = Some(depot.exists());
            }
            !ours
        })
        .await
        .unwrap();
    assert_eq!(
        bundle_when_released,
        Some(false),
        "destroyed before released"
    );
    assert_eq!(
        runc_status(&k.env, "k8s_default_web"),
        None,
        "no runc container"
    );
    let held = k
        .server
        .get::<Container>("default", "web")
        .expect("still held");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.metadata.finalizers, Some(vec![HOLD.to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privileged_resource_is_refused_with_a_condition_and_an_event() {
    let k = Cluster::new("kube-refuse", FakeApiServer::start().await).await;
    let _agent = k.start();
    k.apply(&container("root", NODE, |s| s.privileged = true))
        .await;
    let obj = k.wait("refused", "root", forbidden).await;
    let ready = obj
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason.as_deref(), Some("Forbidden"));
    assert!(
        ready.message.unwrap().contains("spec.privileged"),
        "names the field"
    );
    assert_eq!(
        runc_status(&k.env, "k8s_default_root"),
        None,
        "nothing created"
    );
    assert!(!k.env.env.depot.join("k8s_default_root").exists());
    k.server
        .wait_for(T, |s| {
            s.events().iter().any(|e| {
                e.reason.as_deref() == Some("Forbidden") && e.type_.as_deref() == Some("Warning")
            })
        })
        .await
        .expect("a Warning Forbidden event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rootfs_or_host_network_the_node_did_not_grant_is_refused() {
    let k = Cluster::new("kube-refuse-host", FakeApiServer::start().await).await;
    let _agent = k.start();
    k.apply(&container("hostroot", NODE, |s| s.rootfs = "/".into()))
        .await;
    k.apply(&container("hostnet", NODE, |s| s.host_network = true))
        .await;
    for (name, field) in [("hostroot", "spec.rootfs"), ("hostnet", "spec.hostNetwork")] {
        let obj = k.wait("refused", name, forbidden).await;
        let status = obj.status.unwrap();
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert!(
            ready.message.as_deref().unwrap_or("").contains(field),
            "{name}: {ready:?}"
        );
        let handle = format!("k8s_default_{name}");
        assert_eq!(runc_status(&k.env, &handle), None, "nothing created");
        assert!(!k.env.env.depot.join(&handle).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_cut_by_410_recovers_without_duplicates_or_lost_updates() {
    let k = Cluster::new("kube-410", FakeApiServer::start().await).await;
    let _agent = k.start();
    k.apply(&container("web", NODE, |_| {})).await;
    k.wait("web Ready", "web", ready).await;
    let init = k.env.env.init_pid("k8s_default_web");

    // The update lands while the server refuses the agent, and history is
    // compacted past the agent's resourceVersion before it comes back.
    k.server.set_unavailable(true).await;
    let mut limited = k.server.get::<Container>("default", "web").unwrap();
    limited.spec.limits.memory = Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        "48Mi".into(),
    ));
    let limited = k.server.update(&limited);
    assert_eq!(limited.metadata.generation, Some(2));
    k.server.compact();
    k.server.set_unavailable(false).await;

    let mem = k
        .env
        .env
        .cgroup_dir("memory", "k8s_default_web")
        .join("memory.limit_in_bytes");
    k.until("the new limit", move || {
        std::fs::read_to_string(&mem).is_ok_and(|v| v.trim() == (48u64 << 20).to_string())
    })
    .await;
    k.wait("generation 2 observed", "web", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.observed_generation == Some(2))
    })
    .await;
    assert!(
        k.server.expired_watches() >= 1,
        "the agent's watch came back to 410 Expired"
    );
    assert_eq!(
        k.env.env.init_pid("k8s_default_web"),
        init,
        "updated in place, not duplicated"
    );
    let listed = k.env.env.runc(&["list", "-q"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_server_gets_the_client_side_filter() {
    let k = Cluster::new(
        "kube-124",
        FakeApiServer::builder().version(24).start().await,
    )
    .await;
    let _agent = k.start();
    k.apply(&container("web", NODE, |_| {})).await;
    k.apply(&container("elsewhere", "node-2", |_| {})).await;
    k.wait("web Ready", "web", ready).await;
    assert_eq!(runc_status(&k.env, "k8s_default_elsewhere"), None);
    let watches: Vec<_> = k
        .server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "containers" && r.verb == "watch")
        .collect();
    assert!(!watches.is_empty());
    assert!(
        watches
            .iter()
            .all(|r| !r.query.contains_key("fieldSelector")),
        "the filter runs client-side"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_filters_server_side() {
    let k = Cluster::new("kube-131", FakeApiServer::start().await).await;
    let _agent = k.start();
    k.apply(&container("web", NODE, |_| {})).await;
    k.wait("web Ready", "web", ready).await;
    let watches: Vec<_> = k
        .server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "containers" && r.verb == "watch")
        .collect();
    assert!(
        watches
            .iter()
            .all(|r| r.query.get("fieldSelector").map(String::as_str)
                == Some("spec.nodeName=node-1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_container_gets_a_mirror_that_follows_its_status() {
    let k = Cluster::new("kube-mirror", FakeApiServer::start().await).await;
    let _agent = k.start();
    k.env.write(
        "static.yaml",
        &manifest("static", "  process:\n    args: [\"sleep\", \"100000\"]\n"),
    );
    let mirror = k.wait("mirror Running", "static-node-1", ready).await;
    let annotations = mirror.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations.get("rundmc.io/mirror-of").map(String::as_str),
        Some("static")
    );
    assert!(
        annotations
            .get("rundmc.io/source")
            .unwrap()
            .ends_with("static.yaml#1")
    );
    let owner = &mirror.metadata.owner_references.clone().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", NODE));
    assert_eq!(mirror.spec.node_name.as_deref(), Some(NODE));

    // Edits to a mirror are never acted on.
    let mut edited = mirror.clone();
    edited.spec.process = Some(rundmc::api::ProcessSpec {
        args: vec!["false".into()],
        ..Default::default()
    });
    edited.metadata.managed_fields = None;
    edited.metadata.resource_version = None;
    k.api()
        .patch(
            "static-node-1",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(&edited),
        )
        .await
        .unwrap();
    // Like kubelet with mirror pods, the agent publishes it anew from the file.
    let restored = k
        .wait("mirror restored", "static-node-1", |c| {
            c.metadata.uid != mirror.metadata.uid && ready(c)
        })
        .await;
    assert_eq!(restored.spec.process, mirror.spec.process);
    assert_eq!(
        k.env.status_field("static", "restartCount").as_deref(),
        Some("0")
    );
    assert!(k.env.running("static"), "still the file's spec");

    // A deleted mirror comes back too.
    k.api()
        .delete("static-node-1", &DeleteParams::default())
        .await
        .unwrap();
    k.wait("mirror back after its deletion", "static-node-1", |c| {
        c.metadata.uid != restored.metadata.uid && ready(c)
    })
    .await;

    // Its status follows: stop it through the file.
    k.env.write(
        "static.yaml",
        &manifest(
            "static",
            "  process:\n    args: [\"sleep\", \"100000\"]\n  state: Stopped\n",
        ),
    );
    k.wait("mirror Stopped", "static-node-1", |c| {
        c.status.as_ref().and_then(|s| s.phase) == Some(Phase::Stopped)
    })
    .await;
    k.env.remove("static.yaml");
    k.server
        .wait_for(T, |s| {
            s.get::<Container>("default", "static-node-1").is_none()
        })
        .await
        .expect("mirror deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_someone_else_made_is_never_taken_for_a_mirror() {
    let k = Cluster::new("kube-mirror-taken", FakeApiServer::start().await).await;
    // A user's Container, for another node, that has the mirror's name.
    k.apply(&container("static-node-1", "node-2", |_| {})).await;
    let _agent = k.start();
    k.env.write(
        "static.yaml",
        &manifest("static", "  process:\n    args: [\"sleep\", \"100000\"]\n"),
    );
    let deadline = std::time::Instant::now() + T;
    while !k.env.running("static") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            k.env.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Given a resync (2 s in tests) or two to take it over, were it going to.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let theirs = k
        .server
        .get::<Container>("default", "static-node-1")
        .unwrap();
    assert_eq!(theirs.spec.node_name.as_deref(), Some("node-2"));
    let annotations = theirs.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key("rundmc.io/mirror-of"),
        "not made a mirror"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_published_in_the_namespace_given() {
    let mut k = Cluster::new("kube-mirror-ns", FakeApiServer::start().await).await;
    k.env
        .extra
        .extend(["--mirror-namespace", "rundmc-system"].map(String::from));
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some("rundmc-system".into());
    k.server.insert(&namespace);
    let _agent = k.start();
    k.env.write(
        "static.yaml",
        &manifest("static", "  process:\n    args: [\"sleep\", \"100000\"]\n"),
    );
    let mirror = k
        .server
        .wait_for_object::<Container>("rundmc-system", "static-node-1", T, ready)
        .await
        .unwrap_or_else(|_| panic!("no Running mirror in rundmc-system\n{}", k.env.agent_log()));
    assert_eq!(mirror.metadata.namespace.as_deref(), Some("rundmc-system"));
    assert!(
        k.server
            .get::<Container>("default", "static-node-1")
            .is_none()
    );
    k.env.remove("static.yaml");
    k.server
        .wait_for(T, |s| {
            s.get::<Container>("rundmc-system", "static-node-1")
                .is_none()
        })
        .await
        .expect("mirror deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_stays_observed_at_its_own_generation_across_a_restart() {
    let k = Cluster::new("kube-mirror-gen", FakeApiServer::start().await).await;
    let mut agent = k.start();
    let args = "  process:\n    args: [\"sleep\", \"100000\"]\n";
    k.env.write("static.yaml", &manifest("static", args));
    k.wait("mirror Running", "static-node-1", ready).await;
    // A spec edit through the file: the mirror's generation moves on.
    let edited = format!("{args}    env: [{{name: EDITION, value: \"2\"}}]\n");
    k.env.write("static.yaml", &manifest("static", &edited));
    let mirror = k
        .wait("mirror of the edit Ready", "static-node-1", |c| {
            c.metadata.generation == Some(2) && ready(c)
        })
        .await;
    assert_eq!(mirror.status.unwrap().observed_generation, Some(2));

    // A restarted agent counts its file's edits from scratch; what it
    // writes to the mirror must still be observed at the mirror's own.
    agent.kill9();
    k.server.reset_requests();
    let _agent = k.start();
    k.server
        .wait_for(T, |s| s.count("patch", "containers", None) >= 1)
        .await
        .expect("the restarted agent applies its mirror");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mirror = k
        .server
        .get::<Container>("default", "static-node-1")
        .unwrap();
    assert!(ready(&mirror), "{:?}", mirror.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_everything_without_a_status_write_storm() {
    let k = Cluster::new("kube-restart", FakeApiServer::start().await).await;
    let mut agent = k.start();
    for n in ["a", "b", "c"] {
        k.apply(&container(n, NODE, |_| {})).await;
    }
    for n in ["a", "b", "c"] {
        k.wait("Ready", n, ready).await;
    }
    let pids: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| k.env.main_pid(&format!("k8s_default_{n}")))
        .collect();
    agent.kill9();
    k.server.reset_requests();
    let _agent = k.start();
    // Let it list, adopt, and pass a resync (2 s in tests).
    k.server
        .wait_for(T, |s| {
            s.count("list", "containers", None) + s.count("watch", "containers", None) >= 2
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| k.env.main_pid(&format!("k8s_default_{n}")))
        .collect();
    assert_eq!(
        pids,
        after,
        "nothing restarted\n--- agent log ---\n{}",
        k.env.agent_log()
    );
    let status_writes = k.server.count("patch", "containers", Some("status"));
    assert_eq!(
        status_writes,
        0,
        "no status was rewritten: {:?}",
        k.server
            .requests()
            .iter()
            .filter(|r| r.verb == "patch")
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );
    let events = k
        .server
        .events()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Started"))
        .count();
    assert_eq!(events, 3, "no new Started events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_leaves_containers_running_and_the_agent_catches_up() {
    let k = Cluster::new("kube-outage", FakeApiServer::start().await).await;
    let _agent = k.start();
    k.apply(&container("web", NODE, |_| {})).await;
    k.wait("web Ready", "web", ready).await;
    let main = k.env.main_pid("k8s_default_web");
    k.server.set_unavailable(true).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        k.env.main_pid("k8s_default_web"),
        main,
        "untouched while the server is away"
    );
    assert_eq!(
        runc_status(&k.env, "k8s_default_web").as_deref(),
        Some("running")
    );
    // A resource created while the agent could not see it.
    k.server.insert(&{
        let mut c = container("late", NODE, |_| {});
        c.metadata.namespace = Some("default".into());
        c
    });
    k.server.set_unavailable(false).await;
    k.wait("late Ready", "late", ready).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_paths_are_admitted_only_when_allowed() {
    let mut k = Cluster::new("kube-paths", FakeApiServer::start().await).await;
    let allowed = k.env.env.dir.join("shared");
    std::fs::create_dir_all(allowed.join("data")).unwrap();
    std::os::unix::fs::symlink("/etc", allowed.join("escape")).unwrap();
    k.env.extra.extend([
        "--allowed-host-paths".to_string(),
        allowed.display().to_string(),
    ]);
    let _agent = k.start();
    let mount = |src: std::path::PathBuf| {
        move |s: &mut ContainerSpec| {
            s.mounts = vec![rundmc::api::Mount {
                source: src.display().to_string(),
                destination: "/data".into(),
                read_only: true,
            }]
        }
    };
    k.apply(&container("inside", NODE, mount(allowed.join("data"))))
        .await;
    k.apply(&container("escapes", NODE, mount(allowed.join("escape"))))
        .await;
    k.wait("inside Ready", "inside", ready).await;
    let refused = k.wait("escape refused", "escapes", forbidden).await;
    let msg = refused.status.unwrap().conditions[0]
        .message
        .clone()
        .unwrap();
    assert!(
        msg.contains("spec.mounts[0].source") && msg.contains("resolved to /etc"),
        "{msg}"
    );
    assert_eq!(runc_status(&k.env, "k8s_default_escapes"), None);

    // An allowed link is bound by what it resolved to when admitted, so a
    // link swapped afterwards leads nowhere new.
    std::os::unix::fs::symlink(allowed.join("data"), allowed.join("link")).unwrap();
    k.apply(&container("linked", NODE, mount(allowed.join("link"))))
        .await;
    k.wait("linked Ready", "linked", ready).await;
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(k.env.bundle("k8s_default_linked").join("config.json")).unwrap(),
    )
    .unwrap();
    let bound = config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/data")
        .unwrap();
    let data = std::fs::canonicalize(allowed.join("data")).unwrap();
    assert_eq!(bound["source"], data.display().to_string());
}
