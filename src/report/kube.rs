//! Reporting to Kubernetes: resource status by server-side apply on the
//! status subresource, written only when it changed; the cleanup finalizer;
//! Events through kube-runtime's recorder with this node as the reporting
//! instance; and read-only mirror `Container` objects for file-sourced
//! containers, owned by the Node, as kubelet does for static pods.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde_json::json;
use tokio::sync::OnceCell;

use super::events::EventType;
use super::status::at_generation;
use crate::api::{Container, ContainerSpec, ContainerStatus, Handle};
use crate::containerizer::depot::spec_hash;
use crate::reconcile::store::{Desired, Mirror, MirrorSight, Origin, Store};
use crate::source::kube::{FINALIZER, MIRROR_OF};

/// The field manager of everything rundmc writes.
pub const MANAGER: &str = "rundmc";
/// The field manager that owns only the finalizer.
pub const FINALIZER_MANAGER: &str = "rundmc-finalizer";
/// Annotation of a mirror: the manifest file and document it reflects.
pub const MIRROR_SOURCE: &str = "rundmc.io/source";

/// Writes status, finalizers, events and mirrors to the API server.
pub struct KubeReporter {
    client: Client,
    node: String,
    /// Where mirrors are published.
    mirror_namespace: String,
    store: Arc<Store>,
    recorder: Recorder,
    node_uid: OnceCell<String>,
}

fn apply_params(manager: &str) -> PatchParams {
    PatchParams::apply(manager).force()
}

impl KubeReporter {
    /// A reporter for `node`, publishing mirrors in `mirror_namespace`.
    pub fn new(client: Client, node: String, mirror_namespace: String, store: Arc<Store>) -> Self {
        let reporter = Reporter {
            controller: "rundmc".into(),
            instance: Some(node.clone()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            node,
            mirror_namespace,
            store,
            recorder,
            node_uid: OnceCell::new(),
        }
    }

    fn api(&self, namespace: &str) -> Api<Container> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Write `status` for `d` (its resource, or its mirror) unless the
    /// server already holds exactly that.
    pub async fn status(
        &self,
        d: &Desired,
        spec: Option<&ContainerSpec>,
        status: &ContainerStatus,
    ) -> Result<(), kube::Error> {
        match &d.origin {
            Origin::Kube {
                namespace, name, ..
            } => self.write_status(namespace, name, &d.handle, status).await,
            Origin::File { path, document } => {
                let Some(spec) = spec else { return Ok(()) };
                let source = format!("{}#{document}", path.display());
                let (name, generation) = self.ensure_mirror(&d.handle, spec, &source).await?;
                let status = at_generation(status, generation);
                let written = self
                    .write_status(&self.mirror_namespace, &name, &d.handle, &status)
                    .await;
                if let Err(kube::Error::Api(e)) = &written
                    && e.code == 404
                {
                    // Deleted behind our back (while the watch was away):
                    // published anew on the retry.
                    let uid = self.store.mirror(&d.handle).map(|m| m.uid);
                    let uid = uid.as_deref().unwrap_or_default();
                    self.store.mirror_seen(&d.handle, uid, MirrorSight::Deleted);
                }
                written
            }
        }
    }

    async fn write_status(
        &self,
        namespace: &str,
        name: &str,
        handle: &Handle,
        status: &ContainerStatus,
    ) -> Result<(), kube::Error> {
        if self.store.reported(handle).as_ref() == Some(status) {
            return Ok(());
        }
        let body = json!({"apiVersion": Container::api_version(&()), "kind": "Container", "status": status});
        self.api(namespace)
            .patch_status(name, &apply_params(MANAGER), &Patch::Apply(body))
            .await?;
        self.store.set_reported(handle, Some(status.clone()));
        Ok(())
    }

    /// Add the cleanup finalizer, owned by its own field manager so that
    /// server-side apply leaves every other finalizer alone.
    pub async fn add_finalizer(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        self.apply_finalizers(namespace, name, &[FINALIZER]).await
    }

    /// Drop the cleanup finalizer; a resource already gone is fine.
    pub async fn remove_finalizer(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        match self.apply_finalizers(namespace, name, &[]).await {
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            other => other,
        }
    }

    async fn apply_finalizers(
        &self,
        namespace: &str,
        name: &str,
        finalizers: &[&str],
    ) -> Result<(), kube::Error> {
        let body = json!({
            "apiVersion": Container::api_version(&()),
            "kind": "Container",
            "metadata": {"name": name, "namespace": namespace, "finalizers": finalizers},
        });
        self.api(namespace)
            .patch(name, &apply_params(FINALIZER_MANAGER), &Patch::Apply(body))
            .await
            .map(drop)
    }

    /// Publish an event about `d`'s resource (or mirror, once it exists).
    pub async fn event(
        &self,
        d: &Desired,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let reference = match &d.origin {
            Origin::Kube {
                namespace,
                name,
                uid,
            } => reference(namespace, name, uid),
            Origin::File { .. } => match self.store.mirror(&d.handle) {
                Some(m) => reference(&self.mirror_namespace, &m.name, &m.uid),
                None => return Ok(()),
            },
        };
        let type_ = match type_ {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        };
        let note: String = message.chars().take(1000).collect();
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        self.recorder.publish(&ev, &reference).await
    }

    /// Apply the mirror of a file-sourced container when its spec changed
    /// (or on first sight); returns its name and generation. A mirror
    /// someone else edited or deleted is deleted and published anew, as
    /// kubelet does with mirror pods: an apply would leave their fields.
    async fn ensure_mirror(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        source: &str,
    ) -> Result<(String, i64), kube::Error> {
        let spec = ContainerSpec {
            node_name: Some(self.node.clone()),
            ..spec.clone()
        };
        let hash = spec_hash(&spec);
        let name = handle.with_suffix(&self.node);
        let mut mirror = match self.store.mirror(handle) {
            Some(m) if m.stale => {
                // Forget its uid first, so its deletion is not news.
                self.store.set_mirror(handle, Some(Mirror::default()));
                self.delete_mirror(&m.name).await?;
                Mirror::default()
            }
            Some(m) if m.spec_hash == hash => return Ok((m.name, m.generation)),
            Some(m) => m,
            None => Mirror::default(),
        };
        mirror.spec_hash = hash;
        self.store.set_mirror(handle, Some(mirror));
        let mut metadata = json!({
            "name": name,
            "namespace": self.mirror_namespace,
            "annotations": {MIRROR_OF: handle.as_str(), MIRROR_SOURCE: source},
            "labels": {"app.kubernetes.io/managed-by": "rundmc", "rundmc.io/mirror": "true"},
        });
        if let Some(owner) = self.node_owner().await {
            metadata["ownerReferences"] = json!([owner]);
        }
        let body = json!({"apiVersion": Container::api_version(&()), "kind": "Container", "metadata": metadata, "spec": spec});
        let applied = self
            .api(&self.mirror_namespace)
            // Not forced: a Container of that name someone else made is
            // theirs (the apply conflicts), never taken over as a mirror.
            .patch(&name, &PatchParams::apply(MANAGER), &Patch::Apply(body))
            .await?;
        let uid = applied.metadata.uid.unwrap_or_default();
        let generation = applied.metadata.generation.unwrap_or(1);
        let mirror = Mirror {
            name: name.clone(),
            uid,
            generation,
            spec_hash: spec_hash(&spec),
            stale: false,
        };
        self.store.set_mirror(handle, Some(mirror));
        Ok((name, generation))
    }

    /// The Node as owner of mirrors; looked up once.
    async fn node_owner(&self) -> Option<OwnerReference> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let uid = self
            .node_uid
            .get_or_try_init(|| async { nodes.get(&self.node).await.map(|n| n.metadata.uid.unwrap_or_default()) })
            .await
            .map_err(|e| tracing::warn!(node = %self.node, error = %e, "mirrors get no owner: cannot read the Node"))
            .ok()?;
        Some(OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: self.node.clone(),
            uid: uid.clone(),
            ..Default::default()
        })
    }

    /// Delete the mirror of `handle`, if this agent published one.
    pub async fn forget_mirror(&self, handle: &Handle) -> Result<(), kube::Error> {
        self.store.set_mirror(handle, None);
        self.delete_mirror(&handle.with_suffix(&self.node)).await
    }

    /// Delete mirror object `name`; one already gone is fine.
    async fn delete_mirror(&self, name: &str) -> Result<(), kube::Error> {
        match self
            .api(&self.mirror_namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            other => other.map(drop),
        }
    }
}

fn reference(namespace: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(Container::api_version(&()).into_owned()),
        kind: Some("Container".into()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: Some(uid.into()),
        ..Default::default()
    }
}
