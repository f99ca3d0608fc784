//! Self-test of the fake Kubernetes API server in `tests/support/apiserver`:
//! everything here goes through kube's real `Client` (built from the
//! kubeconfig file the fake writes), `watcher`, `reflector` and `Recorder`,
//! and checks what a controller would rely on.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/apiserver/mod.rs"]
mod apiserver;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apiserver::{FakeApiServer, Outage};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, VersionMatch, WatchEvent,
    WatchParams,
};
use kube::runtime::events::{Event as RecordedEvent, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, CustomResourceExt, Resource, ResourceExt};
use rundmc::api::{Container, ContainerSpec, ContainerStatus, Phase};
use serde_json::json;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
const FINALIZER: &str = "rundmc.io/cleanup";

/// A started fake and a client built from its kubeconfig file.
struct Fixture {
    server: FakeApiServer,
    client: Client,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fixture_with(server: FakeApiServer) -> Fixture {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("rundmc-fakeapi-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let client = server.client(&dir.join("kubeconfig")).await;
    Fixture {
        server,
        client,
        dir,
    }
}

async fn fixture() -> Fixture {
    fixture_with(FakeApiServer::start().await).await
}

fn container(name: &str, node: &str) -> Container {
    Container::new(
        name,
        ContainerSpec {
            node_name: Some(node.to_string()),
            rootfs: "/var/lib/rundmc/rootfs/busybox".into(),
            ..Default::default()
        },
    )
}

fn containers(f: &Fixture) -> Api<Container> {
    Api::namespaced(f.client.clone(), "default")
}

fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls a stream on its own task (watchers only act when polled).
fn forward<S>(stream: S) -> mpsc::UnboundedReceiver<S::Item>
where
    S: futures::Stream + Send + 'static,
    S::Item: Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx.send(item).is_err() {
                break;
            }
        }
    });
    rx
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("item within 10s")
        .expect("stream not ended")
}

async fn next<S: futures::Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("stream item within 10s")
        .expect("stream not ended")
}

#[tokio::test]
async fn version_reports_the_emulated_release() {
    let f = fixture_with(FakeApiServer::builder().version(24).start().await).await;
    let info = f.client.apiserver_version().await.unwrap();
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "24"));
    assert_eq!(info.git_version, "v1.24.0");
    let eks = FakeApiServer::builder()
        .version(24)
        .version_strings("24+", "v1.24.17-eks-1234")
        .start()
        .await;
    let g = fixture_with(eks).await;
    let info = g.client.apiserver_version().await.unwrap();
    assert_eq!(
        (info.minor.as_str(), info.git_version.as_str()),
        ("24+", "v1.24.17-eks-1234")
    );
}

#[tokio::test]
async fn create_get_list_and_conflicts() {
    let f = fixture().await;
    let api = containers(&f);
    let mut web = container("web", "node-1");
    web.status = Some(ContainerStatus {
        phase: Some(Phase::Running),
        ..Default::default()
    });
    let created = api.create(&PostParams::default(), &web).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(
        created.status, None,
        "status is dropped on create with a status subresource"
    );
    assert_eq!(created.namespace().as_deref(), Some("default"));

    let got = api.get("web").await.unwrap();
    assert_eq!(got.spec, web.spec);
    assert_eq!(got.resource_version(), created.resource_version());
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(
        list.metadata.resource_version,
        Some(f.server.resource_version().to_string())
    );
    let mut labelled = container("labelled", "node-2");
    labelled.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
    api.create(&PostParams::default(), &labelled).await.unwrap();
    let dbs = api
        .list(&ListParams::default().labels("app in (db,cache)"))
        .await
        .unwrap();
    assert_eq!(
        dbs.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(),
        ["labelled"]
    );
    let all: Api<Container> = Api::all(f.client.clone());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );

    let dup = api_error(api.create(&PostParams::default(), &web).await.unwrap_err());
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    let missing = api_error(api.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "containers.rundmc.io \"nope\" not found");
    let namespaces: Api<Namespace> = Api::all(f.client.clone());
    let default = namespaces.get("default").await.unwrap();
    assert_eq!(default.status.unwrap().phase.as_deref(), Some("Active"));
    let elsewhere: Api<Container> = Api::namespaced(f.client.clone(), "no-such-ns");
    let err = api_error(
        elsewhere
            .create(&PostParams::default(), &web)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"no-such-ns\" not found")
    );

    let mut stale = got.clone();
    stale.spec.hostname = Some("a".into());
    api.replace("web", &PostParams::default(), &stale)
        .await
        .unwrap();
    stale.spec.hostname = Some("b".into());
    let err = api_error(
        api.replace("web", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    stale.metadata.resource_version = None;
    let err = api_error(
        api.replace("web", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        err.code, 422,
        "custom resources refuse unconditional updates: {}",
        err.message
    );
}

#[tokio::test]
async fn generation_follows_spec_and_status_is_a_subresource() {
    let f = fixture().await;
    let api = containers(&f);
    api.create(&PostParams::default(), &container("web", "node-1"))
        .await
        .unwrap();

    let status = json!({"status": {"phase": "Running", "observedGeneration": 1}});
    let after_status = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        after_status.metadata.generation,
        Some(1),
        "status writes keep generation"
    );
    assert_eq!(
        after_status.status.as_ref().unwrap().phase,
        Some(Phase::Running)
    );

    let spec = json!({"spec": {"hostname": "web-1"}, "status": {"phase": "Failed"}});
    let after_spec = api
        .patch("web", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    assert_eq!(
        after_spec.metadata.generation,
        Some(2),
        "spec changes bump generation"
    );
    assert_eq!(
        after_spec.status.unwrap().phase,
        Some(Phase::Running),
        "status is ignored on the main resource"
    );

    let sneaky = json!({"spec": {"hostname": "other"}, "metadata": {"labels": {"a": "b"}}, "status": {"phase": "Stopped"}});
    let after = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&sneaky))
        .await
        .unwrap();
    assert_eq!(
        after.spec.hostname.as_deref(),
        Some("web-1"),
        "spec is ignored on /status"
    );
    assert!(
        after.metadata.labels.is_none(),
        "metadata is ignored on /status"
    );
    assert_eq!(after.status.unwrap().phase, Some(Phase::Stopped));
    assert_eq!(after.metadata.generation, Some(2));

    let rv = f.server.resource_version();
    let same = json!({"spec": {"hostname": "web-1"}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(&same))
        .await
        .unwrap();
    assert_eq!(
        f.server.resource_version(),
        rv,
        "a no-op write stores nothing"
    );
    assert_eq!(f.server.count("patch", "containers", Some("status")), 2);
    assert_eq!(f.server.count("patch", "containers", None), 2);
}

#[tokio::test]
async fn server_side_apply_of_status() {
    let f = fixture().await;
    let api = containers(&f);
    api.create(&PostParams::default(), &container("web", "node-1"))
        .await
        .unwrap();
    let apply = |status: serde_json::Value| json!({"apiVersion": "rundmc.io/v1alpha1", "kind": "Container", "status": status});
    let pp = PatchParams::apply("rundmc").force();
    let first = apply(json!({"phase": "Failed", "message": "boom", "restartCount": 1}));
    let applied = api
        .patch_status("web", &pp, &Patch::Apply(&first))
        .await
        .unwrap();
    let status = applied.status.clone().unwrap();
    assert_eq!(
        (status.phase, status.message.as_deref()),
        (Some(Phase::Failed), Some("boom"))
    );
    let entry = applied
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|e| e.manager.as_deref() == Some("rundmc"))
        .expect("managedFields entry for rundmc");
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    let owned = entry.fields_v1.unwrap().0;
    assert!(owned["f:status"]["f:message"].is_object(), "{owned}");

    let rv = f.server.resource_version();
    api.patch_status("web", &pp, &Patch::Apply(&first))
        .await
        .unwrap();
    assert_eq!(
        f.server.resource_version(),
        rv,
        "re-applying the same status writes nothing"
    );

    let second = apply(json!({"phase": "Running", "restartCount": 1}));
    let status = api
        .patch_status("web", &pp, &Patch::Apply(&second))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(
        status.message, None,
        "a field the manager stopped applying is removed"
    );

    let other = apply(json!({"phase": "Stopped"}));
    let err = api
        .patch_status(
            "web",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&other),
        )
        .await
        .unwrap_err();
    let err = api_error(err);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("conflict with \"rundmc\""),
        "{}",
        err.message
    );
    let forced = PatchParams::apply("someone-else").force();
    let status = api
        .patch_status("web", &forced, &Patch::Apply(&other))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.phase, Some(Phase::Stopped));

    let err = api_error(
        api.patch_status("nope", &pp, &Patch::Apply(&first))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404, "apply to the status of a missing object");
}

#[tokio::test]
async fn strategic_merge_is_refused_and_json_patch_works() {
    let f = fixture().await;
    let api = containers(&f);
    api.create(&PostParams::default(), &container("web", "node-1"))
        .await
        .unwrap();
    let smp = json!({"metadata": {"finalizers": [FINALIZER]}});
    let err = api_error(
        api.patch("web", &PatchParams::default(), &Patch::Strategic(&smp))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (415, "UnsupportedMediaType")
    );

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
    ]))
    .unwrap();
    let patched = api
        .patch("web", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .unwrap();
    assert_eq!(patched.finalizers(), [FINALIZER]);

    let nodes: Api<Node> = Api::all(f.client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]},
    }))
    .unwrap();
    let created = nodes.create(&PostParams::default(), &node).await.unwrap();
    assert!(
        created.status.is_some(),
        "a Node keeps the status it is created with"
    );
    let labels = json!({"metadata": {"labels": {"rundmc.io/agent": "true"}}});
    let node = nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Strategic(&labels),
        )
        .await
        .unwrap();
    assert_eq!(
        node.labels()["rundmc.io/agent"],
        "true",
        "built-in kinds take strategic merge"
    );
}

#[tokio::test]
async fn delete_waits_for_finalizers_and_watch_sees_it() {
    let f = fixture().await;
    let api = containers(&f);
    let created = api
        .create(&PostParams::default(), &container("web", "node-1"))
        .await
        .unwrap();
    let mut events = api
        .watch(
            &WatchParams::default(),
            &created.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let add = json!({"metadata": {"finalizers": [FINALIZER]}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(&add))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut events).await.unwrap(),
        WatchEvent::Modified(_)
    ));

    let deleted = api.delete("web", &DeleteParams::default()).await.unwrap();
    let marked = deleted
        .left()
        .expect("the object comes back while finalizers remain");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(
        marked.metadata.generation,
        Some(2),
        "marking for deletion bumps generation"
    );
    let WatchEvent::Modified(seen) = next(&mut events).await.unwrap() else {
        panic!("MODIFIED expected")
    };
    assert!(seen.metadata.deletion_timestamp.is_some());
    assert!(
        api.get("web").await.is_ok(),
        "still there while the finalizer is"
    );
    let rv = f.server.resource_version();
    let again = api
        .delete("web", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(
        again.metadata.generation,
        Some(2),
        "a second delete changes nothing"
    );
    assert_eq!(f.server.resource_version(), rv);

    let more = json!({"metadata": {"finalizers": [FINALIZER, "other/x"]}});
    let err = api_error(
        api.patch("web", &PatchParams::default(), &Patch::Merge(&more))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (422, "Invalid"),
        "{}",
        err.message
    );

    let clear = json!({"metadata": {"finalizers": null}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(&clear))
        .await
        .unwrap();
    let WatchEvent::Deleted(gone) = next(&mut events).await.unwrap() else {
        panic!("DELETED expected")
    };
    assert_eq!(gone.name_any(), "web");
    assert_eq!(api_error(api.get("web").await.unwrap_err()).code, 404);

    api.create(&PostParams::default(), &container("plain", "node-1"))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut events).await.unwrap(),
        WatchEvent::Added(_)
    ));
    api.delete("plain", &DeleteParams::default()).await.unwrap();
    assert!(
        matches!(next(&mut events).await.unwrap(), WatchEvent::Deleted(_)),
        "no finalizers: gone at once"
    );
}

#[tokio::test]
async fn watch_delivers_changes_in_order() {
    let f = fixture().await;
    let api = containers(&f);
    let start = f.server.resource_version().to_string();
    api.create(&PostParams::default(), &container("a", "node-1"))
        .await
        .unwrap();
    let hostname = json!({"spec": {"hostname": "h"}});
    api.patch("a", &PatchParams::default(), &Patch::Merge(&hostname))
        .await
        .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    // Started after the fact: the history since `start` is replayed.
    let mut events = api
        .watch(&WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (kind, rv) = match next(&mut events).await.unwrap() {
            WatchEvent::Added(c) => ("ADDED", c.resource_version()),
            WatchEvent::Modified(c) => ("MODIFIED", c.resource_version()),
            WatchEvent::Deleted(c) => ("DELETED", c.resource_version()),
            other => panic!("unexpected {other:?}"),
        };
        seen.push((kind, rv.unwrap().parse::<u64>().unwrap()));
    }
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        ["ADDED", "MODIFIED", "DELETED"]
    );
    assert!(
        seen.windows(2).all(|w| w[0].1 < w[1].1),
        "resourceVersions increase: {seen:?}"
    );
}

#[tokio::test]
async fn compaction_expires_history_and_the_watcher_relists() {
    let f = fixture().await;
    let api = containers(&f);
    api.create(&PostParams::default(), &container("a", "node-1"))
        .await
        .unwrap();
    let old_rv = f.server.resource_version().to_string();
    let page = api.list(&ListParams::default().limit(1)).await.unwrap();
    assert!(
        page.metadata.continue_.is_none(),
        "one object fits one page"
    );
    api.create(&PostParams::default(), &container("b", "node-1"))
        .await
        .unwrap();
    let page = api.list(&ListParams::default().limit(1)).await.unwrap();
    let token = page.metadata.continue_.clone().expect("a second page");

    let (reader, writer) = reflector::store::<Container>();
    let watch = watcher(api.clone(), watcher::Config::default()).default_backoff();
    let mut events = forward(reflector::reflector(writer, watch));
    while !matches!(recv(&mut events).await, Ok(watcher::Event::InitDone)) {}
    assert_eq!(reader.state().len(), 2);
    f.server
        .wait_for(WAIT, |s| s.open_watches() == 1)
        .await
        .unwrap();

    api.create(&PostParams::default(), &container("c", "node-2"))
        .await
        .unwrap();
    assert!(matches!(
        recv(&mut events).await,
        Ok(watcher::Event::Apply(_))
    ));
    f.server.compact();
    let mut stale = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    let Ok(WatchEvent::Error(gone)) = next(&mut stale).await else {
        panic!("ERROR event expected")
    };
    assert_eq!(
        (gone.code, gone.reason.as_str()),
        (410, "Expired"),
        "{}",
        gone.message
    );
    let end = tokio::time::timeout(WAIT, stale.next()).await.unwrap();
    assert!(end.is_none(), "the stream ends after the 410");
    let exact = ListParams::default()
        .at(&old_rv)
        .matching(VersionMatch::Exact);
    let err = api_error(api.list(&exact).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));
    let err = api_error(
        api.list(&ListParams::default().limit(1).continue_token(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        err.code, 410,
        "continue tokens from before the compaction expire"
    );

    // The open watch survives compaction. Take the server down, change
    // something and compact while the watcher cannot reach it: its resume
    // from its old resourceVersion gets 410, so it relists and still sees
    // the change.
    f.server.set_unavailable(true).await;
    f.server.insert(&container("d", "node-1"));
    f.server.compact();
    f.server.set_unavailable(false).await;
    let mut saw_410 = false;
    loop {
        match recv(&mut events).await {
            Err(watcher::Error::WatchError(status)) if status.code == 410 => saw_410 = true,
            Ok(watcher::Event::Init) if saw_410 => break,
            Ok(watcher::Event::Apply(c)) => panic!("resumed without a relist: {}", c.name_any()),
            _ => {}
        }
    }
    while !matches!(recv(&mut events).await, Ok(watcher::Event::InitDone)) {}
    let d = reader.get(&reflector::ObjectRef::new("d").within("default"));
    assert!(d.is_some(), "no update lost across the relist");
    assert_eq!(reader.state().len(), 4);
}

#[tokio::test]
async fn field_selector_on_spec_node_name_needs_1_31() {
    for (minor, supported) in [(31, true), (24, false)] {
        let f = fixture_with(FakeApiServer::builder().version(minor).start().await).await;
        let api = containers(&f);
        for (name, node) in [("a", "node-1"), ("b", "node-2"), ("c", "node-1")] {
            api.create(&PostParams::default(), &container(name, node))
                .await
                .unwrap();
        }
        let lp = ListParams::default().fields("spec.nodeName=node-1");
        match (api.list(&lp).await, supported) {
            (Ok(list), true) => {
                let names: Vec<String> = list.items.iter().map(|c| c.name_any()).collect();
                assert_eq!(names, ["a", "c"]);
            }
            (Err(e), false) => {
                let e = api_error(e);
                assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
                assert_eq!(e.message, "field label not supported: spec.nodeName");
                let wp = WatchParams::default().fields("spec.nodeName=node-1");
                assert_eq!(
                    api_error(api.watch(&wp, "0").await.err().unwrap()).code,
                    400
                );
            }
            (other, _) => panic!("1.{minor}: unexpected {:?}", other.map(|l| l.items.len())),
        }
        let by_name = api
            .list(&ListParams::default().fields("metadata.name=b"))
            .await
            .unwrap();
        assert_eq!(
            by_name.items.len(),
            1,
            "metadata.name works on every version"
        );
    }
}

#[tokio::test]
async fn watch_with_field_selector_sees_objects_leave() {
    let f = fixture().await;
    let api = containers(&f);
    api.create(&PostParams::default(), &container("a", "node-1"))
        .await
        .unwrap();
    let wp = WatchParams::default().fields("spec.nodeName=node-1");
    let mut events = api.watch(&wp, "0").await.unwrap().boxed();
    assert!(
        matches!(next(&mut events).await.unwrap(), WatchEvent::Added(_)),
        "initial state"
    );
    api.create(&PostParams::default(), &container("elsewhere", "node-2"))
        .await
        .unwrap();
    let moved = json!({"spec": {"nodeName": "node-2"}});
    api.patch("a", &PatchParams::default(), &Patch::Merge(&moved))
        .await
        .unwrap();
    let WatchEvent::Deleted(left) = next(&mut events).await.unwrap() else {
        panic!("DELETED expected")
    };
    assert_eq!(
        left.name_any(),
        "a",
        "the other node's container was never sent"
    );
}

#[tokio::test]
async fn recorder_events_are_stored() {
    let f = fixture().await;
    let api = containers(&f);
    let web = api
        .create(&PostParams::default(), &container("web", "node-1"))
        .await
        .unwrap();
    let reporter = Reporter {
        controller: "rundmc".into(),
        instance: Some("node-1".into()),
    };
    let recorder = Recorder::new(f.client.clone(), reporter);
    let event = RecordedEvent {
        type_: EventType::Warning,
        reason: "StartFailed".into(),
        note: Some("runc said no".into()),
        action: "Start".into(),
        secondary: None,
    };
    let reference = web.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    let stored = f.server.events();
    assert_eq!(stored.len(), 1);
    let e = &stored[0];
    assert_eq!(e.reason.as_deref(), Some("StartFailed"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.reporting_controller.as_deref(), Some("rundmc"));
    assert_eq!(e.reporting_instance.as_deref(), Some("node-1"));
    let regarding = e.regarding.as_ref().unwrap();
    assert_eq!(
        (regarding.kind.as_deref(), regarding.name.as_deref()),
        (Some("Container"), Some("web"))
    );
    assert_eq!(regarding.uid, web.metadata.uid);

    recorder.publish(&event, &reference).await.unwrap();
    let stored = f.server.events();
    assert_eq!(stored.len(), 1, "a repeat patches the series");
    assert_eq!(stored[0].series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(f.server.count("create", "events", None), 1);
    assert_eq!(f.server.count("patch", "events", None), 1);
}

#[tokio::test]
async fn cut_watches_makes_the_watcher_reconnect() {
    let f = fixture().await;
    let api = containers(&f);
    let mut objects = forward(watcher(api.clone(), watcher::Config::default()).applied_objects());
    api.create(&PostParams::default(), &container("a", "node-1"))
        .await
        .unwrap();
    assert_eq!(recv(&mut objects).await.unwrap().name_any(), "a");
    f.server
        .wait_for(WAIT, |s| s.open_watches() == 1)
        .await
        .unwrap();
    let watches_before = f.server.count("watch", "containers", None);
    assert_eq!(f.server.cut_watches(), 1);
    f.server
        .wait_for(WAIT, |s| {
            s.count("watch", "containers", None) == watches_before + 1
        })
        .await
        .expect("the watcher watches again");
    let hostname = json!({"spec": {"hostname": "after-cut"}});
    api.patch("a", &PatchParams::default(), &Patch::Merge(&hostname))
        .await
        .unwrap();
    let seen = recv(&mut objects).await.unwrap();
    assert_eq!(seen.spec.hostname.as_deref(), Some("after-cut"));
    assert_eq!(
        f.server.count("list", "containers", None),
        1,
        "resumed without a relist"
    );
    assert_eq!(f.server.open_watches(), 1);
}

#[tokio::test]
async fn outages_fail_requests_until_recovery() {
    let f = fixture().await;
    let api = containers(&f);
    api.create(&PostParams::default(), &container("a", "node-1"))
        .await
        .unwrap();

    f.server.set_unavailable(true).await;
    let err = api.get("a").await.unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "no HTTP answer while down: {err:?}"
    );
    assert!(api.list(&ListParams::default()).await.is_err());
    f.server.set_unavailable(false).await;
    assert_eq!(api.get("a").await.unwrap().name_any(), "a");

    // kube's default retry layer retries 503s with backoff, so a request
    // made during a 503 outage succeeds once the server recovers.
    f.server.set_outage(Outage::ServiceUnavailable).await;
    f.server.reset_requests();
    let pending = tokio::spawn({
        let api = api.clone();
        async move { api.get("a").await }
    });
    f.server
        .wait_for(WAIT, |s| s.requests().iter().any(|r| r.code == 503))
        .await
        .unwrap();
    f.server.set_outage(Outage::None).await;
    let got = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert_eq!(got.unwrap().name_any(), "a");
    let codes: Vec<u16> = f.server.requests().iter().map(|r| r.code).collect();
    assert_eq!(codes.last(), Some(&200), "{codes:?}");
    assert!(codes.contains(&503), "{codes:?}");
}

#[tokio::test]
async fn crd_can_be_posted_and_serves_its_kind() {
    let server = FakeApiServer::builder()
        .without("rundmc.io", "containers")
        .start()
        .await;
    let f = fixture_with(server).await;
    let api = containers(&f);
    assert_eq!(
        api_error(api.list(&ListParams::default()).await.unwrap_err()).code,
        404
    );
    let crds: Api<CustomResourceDefinition> = Api::all(f.client.clone());
    let crd = crds
        .create(&PostParams::default(), &Container::crd())
        .await
        .unwrap();
    let conditions = crd.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    api.create(&PostParams::default(), &container("a", "node-1"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &container("b", "node-2"))
        .await
        .unwrap();
    let on_node_2 = api
        .list(&ListParams::default().fields("spec.nodeName=node-2"))
        .await
        .unwrap();
    assert_eq!(
        on_node_2.items.len(),
        1,
        "selectableFields come from the posted CRD"
    );
    let status = json!({"status": {"phase": "Running"}});
    api.patch_status("a", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[tokio::test]
async fn direct_store_access_and_waiting() {
    let f = fixture().await;
    let mut seeded = container("seeded", "node-1");
    seeded.status = Some(ContainerStatus {
        phase: Some(Phase::Pending),
        ..Default::default()
    });
    let stored = f.server.insert(&seeded);
    assert_eq!(stored.status.unwrap().phase, Some(Phase::Pending));
    let api = containers(&f);
    assert_eq!(
        api.get("seeded").await.unwrap().metadata.uid,
        stored.metadata.uid
    );

    let client = f.client.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let api: Api<Container> = Api::namespaced(client, "default");
        let status = json!({"status": {"phase": "Running"}});
        api.patch_status("seeded", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    });
    let running = f
        .server
        .wait_for_object::<Container>("default", "seeded", WAIT, |c| {
            c.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
        })
        .await
        .unwrap();
    assert_eq!(running.metadata.generation, Some(1));
    writer.await.unwrap();
    assert!(
        f.server
            .wait_for(Duration::from_millis(100), |s| s
                .list::<Container>(None)
                .len()
                == 2)
            .await
            .is_err()
    );
    assert!(f.server.remove::<Container>("default", "seeded"));
    assert!(f.server.get::<Container>("default", "seeded").is_none());
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_then_bookmark() {
    let f = fixture().await;
    let api = containers(&f);
    api.create(&PostParams::default(), &container("a", "node-1"))
        .await
        .unwrap();
    let config = watcher::Config::default().streaming_lists();
    let mut events = forward(watcher(api.clone(), config));
    assert!(matches!(recv(&mut events).await, Ok(watcher::Event::Init)));
    let Ok(watcher::Event::InitApply(a)) = recv(&mut events).await else {
        panic!("initial ADDED expected")
    };
    assert_eq!(a.name_any(), "a");
    assert!(
        matches!(recv(&mut events).await, Ok(watcher::Event::InitDone)),
        "the initial-events-end bookmark closes the initial state"
    );
    api.create(&PostParams::default(), &container("b", "node-1"))
        .await
        .unwrap();
    let Ok(watcher::Event::Apply(b)) = recv(&mut events).await else {
        panic!("live event expected")
    };
    assert_eq!(b.name_any(), "b");
    assert_eq!(f.server.count("list", "containers", None), 0, "no LIST");
}
