//! The Kubernetes source: `Container` resources whose `spec.nodeName` is
//! this node, through kube-runtime's watcher. Where the server supports
//! field selectors on custom resources (1.31 and later, with the CRD's
//! `selectableFields`), the node filter runs server-side; elsewhere it runs
//! here. Which applies is found by asking, not configured. Disconnects, 410
//! Gone and an unreachable server are routine: the watcher relists, and
//! nothing is removed from the store until a complete relist says so.
//! Each event becomes an [`Update`] for the store's writer, with what the
//! server shows of status and mirrors ([`Sighting`]s) for the reporter.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;

use super::admission::Admission;
use super::{MirrorSight, Sighting, Update};
use crate::api::{
    Container, DeclError, DeclReason, Desired, FINALIZER, Handle, MIRROR_OF, Origin, SourceKind,
    spec_hash, validate,
};

/// Where the node filter runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFilter {
    /// The server filters with `fieldSelector=spec.nodeName=<node>`.
    Server,
    /// The server lists everything; this side keeps its own.
    Client,
}

/// What one resource means to this node.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A declaration for this node.
    Declared(Box<Desired>),
    /// The mirror of a file-sourced container (its status is ours to keep).
    Mirror(Handle),
    /// Another node's, or not a valid object.
    Ignored,
}

/// Read one resource: the handle, the spec (or why it cannot run here),
/// keeping `previous`'s spec when the new one is refused.
pub fn declare(
    obj: &Container,
    node: &str,
    admission: &Admission,
    previous: Option<&Desired>,
) -> Seen {
    let meta = &obj.metadata;
    // Another node's, mirrors included (a client-side filter sees them all).
    if obj.spec.node_name.as_deref() != Some(node) {
        return Seen::Ignored;
    }
    if let Some(h) = meta.annotations.as_ref().and_then(|a| a.get(MIRROR_OF)) {
        return Handle::new(h.clone())
            .map(Seen::Mirror)
            .unwrap_or(Seen::Ignored);
    }
    let (Some(namespace), Some(name)) = (meta.namespace.clone(), meta.name.clone()) else {
        return Seen::Ignored;
    };
    let Ok(handle) = Handle::for_resource(&namespace, &name) else {
        return Seen::Ignored;
    };
    let admitted = validate(&obj.spec)
        .map_err(|e| DeclError {
            reason: DeclReason::InvalidManifest,
            message: format!("{namespace}/{name}: {e}"),
        })
        .and_then(|()| {
            admission
                .admit(&obj.spec, |p: &Path| std::fs::canonicalize(p))
                .map_err(|e| DeclError {
                    reason: DeclReason::Forbidden,
                    message: format!("{namespace}/{name}: {e}"),
                })
        });
    let (spec, error) = match admitted {
        Ok(spec) => (Some(spec), None),
        Err(e) => (previous.and_then(|p| p.spec.clone()), Some(e)),
    };
    Seen::Declared(Box::new(Desired {
        handle,
        origin: Origin::Kube {
            namespace,
            name,
            uid: meta.uid.clone().unwrap_or_default(),
        },
        spec,
        generation: meta.generation.unwrap_or(1),
        error,
        deleting: meta.deletion_timestamp.is_some(),
        finalizer: meta.finalizers.iter().flatten().any(|f| f == FINALIZER),
    }))
}

/// The Kubernetes source for one node.
pub struct KubeSource {
    api: Api<Container>,
    node: String,
    admission: Admission,
    /// What this source declares now, to keep a refused resource's last
    /// admitted spec and to tell its own deletions.
    declared: HashMap<Handle, Desired>,
}

impl KubeSource {
    /// Watch `Container`s for `node` through `client`.
    pub fn new(client: kube::Client, node: String, admission: Admission) -> Self {
        Self {
            api: Api::all(client),
            node,
            admission,
            declared: HashMap::new(),
        }
    }

    /// Find where the node filter can run, retrying while the server is
    /// away or does not serve Containers yet (each cause logged once).
    pub async fn detect_filter(&self) -> NodeFilter {
        let params = ListParams::default().fields(&self.selector()).limit(1);
        let mut delay = Duration::from_millis(500);
        let mut logged = None;
        loop {
            match self.api.list_metadata(&params).await {
                Ok(_) => return NodeFilter::Server,
                Err(kube::Error::Api(e)) if e.code == 400 => return NodeFilter::Client,
                Err(e) => {
                    let cause = unavailable_cause(&e);
                    if logged.as_ref() != Some(&cause) {
                        tracing::warn!(error = %e, "{cause}; retrying with backoff (logged again only if the cause changes)");
                        logged = Some(cause);
                    } else {
                        tracing::debug!(error = %e, retry_in = ?delay, "Container resources still unavailable");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn selector(&self) -> String {
        format!("spec.nodeName={}", self.node)
    }

    /// Watch until `updates` closes, sending what every event shows. When
    /// the server stops serving the node selector (its CRD replaced by one
    /// without `selectableFields`), find out again where the filter runs,
    /// and watch anew.
    pub async fn run(mut self, updates: mpsc::Sender<Update>) {
        loop {
            let filter = self.detect_filter().await;
            tracing::info!(node = %self.node, ?filter, "watching Container resources");
            match self.watch(filter, &updates).await {
                WatchEnd::ChangesClosed => return,
                WatchEnd::SelectorRefused => tracing::warn!(
                    "the API server no longer filters Containers by spec.nodeName (a CRD without selectableFields?); finding out where to filter again"
                ),
            }
        }
    }

    async fn watch(&mut self, filter: NodeFilter, updates: &mpsc::Sender<Update>) -> WatchEnd {
        let mut config = watcher::Config::default();
        if filter == NodeFilter::Server {
            config = config.fields(&self.selector());
        }
        let mut stream = watcher::watcher(self.api.clone(), config)
            .default_backoff()
            .boxed();
        let mut buffer: Vec<Container> = Vec::new();
        while let Some(event) = stream.next().await {
            let update = match event {
                Ok(Event::Init) => {
                    buffer.clear();
                    continue;
                }
                Ok(Event::InitApply(obj)) => {
                    buffer.push(obj);
                    continue;
                }
                Ok(Event::InitDone) => Some(self.relisted(std::mem::take(&mut buffer))),
                Ok(Event::Apply(obj)) => self.applied(&obj),
                Ok(Event::Delete(obj)) => self.deleted(&obj),
                Err(e) if filter == NodeFilter::Server && selector_refused(&e) => {
                    return WatchEnd::SelectorRefused;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Container watch interrupted; it resumes by itself");
                    continue;
                }
            };
            if let Some(u) = update
                && updates.send(u).await.is_err()
            {
                return WatchEnd::ChangesClosed;
            }
        }
        WatchEnd::ChangesClosed
    }

    fn see(&self, obj: &Container) -> Seen {
        let previous = resource_handle(obj).and_then(|h| self.declared.get(&h));
        declare(obj, &self.node, &self.admission, previous)
    }

    /// A complete listing: everything declared, and what the server shows.
    pub fn relisted(&mut self, objects: Vec<Container>) -> Update {
        let mut declared = HashMap::new();
        let mut seen = Vec::new();
        for obj in &objects {
            match self.see(obj) {
                Seen::Declared(d) => {
                    seen.push(status_of(&d.handle, obj));
                    declared.insert(d.handle.clone(), *d);
                }
                Seen::Mirror(h) => {
                    seen.push(status_of(&h, obj));
                    seen.push(mirror_sighting(h, obj, true));
                }
                Seen::Ignored => {}
            }
        }
        tracing::debug!(listed = objects.len(), declared = ?declared.keys().map(Handle::as_str).collect::<Vec<_>>(), "relisted");
        self.declared = declared;
        Update::Listed {
            kind: SourceKind::Kube,
            declared: self.declared.values().cloned().collect(),
            file_errors: Default::default(),
            seen,
        }
    }

    /// One resource added or changed.
    pub fn applied(&mut self, obj: &Container) -> Option<Update> {
        match self.see(obj) {
            Seen::Declared(d) => {
                let seen = vec![status_of(&d.handle, obj)];
                self.declared.insert(d.handle.clone(), (*d).clone());
                Some(Update::Declared { desired: d, seen })
            }
            Seen::Mirror(h) => Some(Update::Seen(vec![
                status_of(&h, obj),
                mirror_sighting(h, obj, true),
            ])),
            // No longer this node's (its nodeName changed): forget it.
            Seen::Ignored => self.deleted(obj),
        }
    }

    /// One resource deleted.
    pub fn deleted(&mut self, obj: &Container) -> Option<Update> {
        if let Seen::Mirror(h) = self.see(obj) {
            return Some(Update::Seen(vec![mirror_sighting(h, obj, false)]));
        }
        let handle = resource_handle(obj)?;
        self.declared.remove(&handle)?;
        Some(Update::Undeclared {
            kind: SourceKind::Kube,
            seen: vec![Sighting::Status {
                handle: handle.clone(),
                status: None,
            }],
            handle,
        })
    }
}

/// The handle of resource `obj`, by its namespace and name.
fn resource_handle(obj: &Container) -> Option<Handle> {
    let meta = &obj.metadata;
    meta.namespace
        .as_deref()
        .zip(meta.name.as_deref())
        .and_then(|(ns, n)| Handle::for_resource(ns, n).ok())
}

/// The status `obj` holds, for `handle`.
fn status_of(handle: &Handle, obj: &Container) -> Sighting {
    Sighting::Status {
        handle: handle.clone(),
        status: obj.status.clone().map(Box::new),
    }
}

/// Why a watch ended.
enum WatchEnd {
    /// Nobody listens any more.
    ChangesClosed,
    /// The server answers the node selector with 400 Bad Request.
    SelectorRefused,
}

/// Whether `e` is the server refusing the field selector.
fn selector_refused(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(e))
        | watcher::Error::WatchStartFailed(kube::Error::Api(e))
        | watcher::Error::WatchFailed(kube::Error::Api(e)) => e.code == 400,
        watcher::Error::WatchError(status) => status.code == 400,
        _ => false,
    }
}

/// Why Container resources cannot be listed, in an operator's words.
fn unavailable_cause(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(e) if e.code == 404 => {
            "the API server does not serve Container resources: \
             is the Container CRD installed? (kubectl get crd containers.rundmc.io)"
                .to_string()
        }
        kube::Error::Api(e) => format!("the API server refuses to list Containers ({})", e.code),
        _ => "cannot reach the Kubernetes API".to_string(),
    }
}

/// The server shows mirror `obj` of `handle` (`exists`, or just deleted).
fn mirror_sighting(handle: Handle, obj: &Container, exists: bool) -> Sighting {
    let sight = match exists {
        true => MirrorSight::At {
            generation: obj.metadata.generation.unwrap_or(0),
            spec_hash: spec_hash(&obj.spec),
        },
        false => MirrorSight::Deleted,
    };
    Sighting::Mirror {
        handle,
        uid: obj.metadata.uid.clone().unwrap_or_default(),
        sight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ContainerSpec;

    fn container(node: &str, spec: ContainerSpec) -> Container {
        let mut c = Container::new(
            "web",
            ContainerSpec {
                node_name: Some(node.into()),
                ..spec
            },
        );
        c.metadata.namespace = Some("team-a".into());
        c.metadata.uid = Some("uid-1".into());
        c.metadata.generation = Some(4);
        c.metadata.finalizers = Some(vec![FINALIZER.into()]);
        c
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            rootfs: "/tmp".into(),
            ..Default::default()
        }
    }

    /// The default policy, but rootfs paths (resolved on this machine, so
    /// real ones) allowed anywhere.
    fn policy() -> Admission {
        Admission {
            allowed_rootfs_paths: vec!["/".into()],
            ..Admission::default()
        }
    }

    #[test]
    fn this_nodes_resources_are_declared() {
        let Seen::Declared(d) = declare(&container("n1", spec()), "n1", &policy(), None) else {
            panic!("not declared")
        };
        assert_eq!(d.handle.as_str(), "k8s_team-a_web");
        assert_eq!(d.generation, 4);
        assert!(d.finalizer && !d.deleting && d.error.is_none());
        assert_eq!(d.spec.unwrap().rootfs, "/tmp");
        assert_eq!(
            declare(&container("n2", spec()), "n1", &policy(), None),
            Seen::Ignored
        );
    }

    #[test]
    fn refused_and_invalid_keep_the_previous_spec() {
        let ok = declare(&container("n1", spec()), "n1", &policy(), None);
        let Seen::Declared(prev) = ok else { panic!() };
        let privileged = ContainerSpec {
            privileged: true,
            rootfs: "/var/tmp".into(),
            ..spec()
        };
        let Seen::Declared(d) = declare(&container("n1", privileged), "n1", &policy(), Some(&prev))
        else {
            panic!()
        };
        let err = d.error.unwrap();
        assert_eq!(err.reason.as_str(), "Forbidden");
        assert!(
            err.message.starts_with("team-a/web: spec.privileged:"),
            "{}",
            err.message
        );
        assert_eq!(d.spec.unwrap().rootfs, "/tmp", "the admitted spec stays");

        let bad = ContainerSpec {
            rootfs: "relative".into(),
            ..spec()
        };
        let Seen::Declared(d) = declare(&container("n1", bad), "n1", &policy(), None) else {
            panic!()
        };
        assert_eq!(d.error.unwrap().reason.as_str(), "InvalidManifest");
        assert_eq!(d.spec, None, "never valid");
    }

    #[test]
    fn mirrors_are_recognised_not_declared() {
        let mut c = container("n1", spec());
        c.metadata.annotations = Some([(MIRROR_OF.to_string(), "web".to_string())].into());
        assert_eq!(
            declare(&c, "n1", &policy(), None),
            Seen::Mirror(Handle::new("web").unwrap())
        );
    }

    /// A source on a client that is never called: the tests below feed it
    /// events by hand.
    fn source() -> KubeSource {
        let url = "http://127.0.0.1:9".parse().expect("a URL");
        let client = kube::Client::try_from(kube::Config::new(url)).expect("a client");
        KubeSource::new(client, "n1".into(), policy())
    }

    #[tokio::test]
    async fn events_become_updates_and_a_refusal_keeps_what_the_source_admitted() {
        let mut src = source();
        let Update::Listed { kind, declared, .. } =
            src.relisted(vec![container("n1", spec()), container("n2", spec())])
        else {
            panic!("a relist is a listing")
        };
        assert_eq!(kind, SourceKind::Kube);
        assert_eq!(declared.len(), 1, "only this node's");

        // Nothing reads the store: the last admitted spec is the source's own.
        let privileged = ContainerSpec {
            privileged: true,
            rootfs: "/var/tmp".into(),
            ..spec()
        };
        let Some(Update::Declared { desired, seen }) = src.applied(&container("n1", privileged))
        else {
            panic!("a change is a declaration")
        };
        assert_eq!(desired.error.unwrap().reason, DeclReason::Forbidden);
        assert_eq!(
            desired.spec.unwrap().rootfs,
            "/tmp",
            "the admitted spec stays"
        );
        assert!(matches!(&seen[..], [Sighting::Status { status: None, .. }]));

        let gone = src.deleted(&container("n1", spec()));
        let Some(Update::Undeclared { handle, seen, .. }) = gone else {
            panic!("a deletion undeclares: {gone:?}")
        };
        assert_eq!(handle.as_str(), "k8s_team-a_web");
        assert!(matches!(&seen[..], [Sighting::Status { status: None, .. }]));
        assert_eq!(
            src.deleted(&container("n1", spec())),
            None,
            "what it no longer declares is not undeclared twice"
        );
    }

    #[tokio::test]
    async fn a_mirror_is_seen_not_declared() {
        let mut src = source();
        let mut c = container("n1", spec());
        c.metadata.annotations = Some([(MIRROR_OF.to_string(), "web".to_string())].into());
        let Some(Update::Seen(seen)) = src.deleted(&c) else {
            panic!("a mirror's deletion is a sighting")
        };
        let [Sighting::Mirror { handle, uid, sight }] = &seen[..] else {
            panic!("{seen:?}")
        };
        assert_eq!((handle.as_str(), uid.as_str()), ("web", "uid-1"));
        assert_eq!(*sight, MirrorSight::Deleted);
    }
}
