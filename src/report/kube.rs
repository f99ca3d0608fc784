//! Reporting to Kubernetes: resource status by server-side apply on the
//! status subresource, written only when it changed; the cleanup finalizer;
//! Events through [`EventRecorder`] with this node as the reporting
//! instance; and read-only mirror `Container` objects for file-sourced
//! containers, owned by the Node, as kubelet does for static pods. A mirror
//! that cannot be published (the CRD is not installed yet, say) gets no
//! status write and no events until it exists; its publication is retried
//! with backoff, and its cause logged once. What the server shows of
//! status and mirrors comes from the Kubernetes source as [`Sighting`]s.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::json;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::events::EventType;
use super::mirror::{Mirror, Mirrors};
use super::recorder::EventRecorder;
use crate::api::{
    Container, ContainerSpec, ContainerStatus, Desired, FINALIZER, Handle, MIRROR_OF, Origin,
    Reason, spec_hash,
};
use crate::source::{MirrorSight, Sighting};
use crate::sync::lock;

/// The field manager of everything rundmc writes.
pub const MANAGER: &str = "rundmc";
/// The field manager that owns only the finalizer.
pub const FINALIZER_MANAGER: &str = "rundmc-finalizer";
/// Annotation of a mirror: the manifest file and document it reflects.
pub const MIRROR_SOURCE: &str = "rundmc.io/source";

/// The first wait before publishing a mirror again; it doubles per failure.
const MIRROR_RETRY_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between attempts to publish a mirror.
const MIRROR_RETRY_MAX: Duration = Duration::from_secs(120);

/// Why status could not be reported to the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeReportError {
    /// A request failed.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// The mirror of a file-sourced container does not exist yet (why was
    /// logged when its publication failed); try again after `retry_in`.
    #[error("the mirror of {handle} is not published yet; next attempt in {retry_in:?}")]
    MirrorNotPublished {
        /// The file-sourced container.
        handle: Handle,
        /// When to try again.
        retry_in: Duration,
    },
}

/// Failed attempts to publish one mirror.
#[derive(Debug)]
struct MirrorFailures {
    attempts: u32,
    next_attempt: Instant,
    /// The cause last logged.
    cause: String,
}

/// Writes status, finalizers, events and mirrors to the API server.
pub struct KubeReporter {
    client: Client,
    node: String,
    /// Where mirrors are published.
    mirror_namespace: String,
    /// The mirrors published; the one owner of their bookkeeping.
    mirrors: Mirrors,
    /// The status each resource (or mirror) holds on the server, as last
    /// written or seen, to write only what changed.
    reported: Mutex<HashMap<Handle, ContainerStatus>>,
    recorder: EventRecorder,
    node_uid: OnceCell<String>,
    mirror_failures: Mutex<HashMap<Handle, MirrorFailures>>,
}

fn apply_params(manager: &str) -> PatchParams {
    PatchParams::apply(manager).force()
}

impl KubeReporter {
    /// A reporter for `node`, publishing mirrors in `mirror_namespace`.
    pub fn new(client: Client, node: String, mirror_namespace: String) -> Self {
        let recorder = EventRecorder::new(client.clone(), "rundmc", &node);
        Self {
            client,
            node,
            mirror_namespace,
            mirrors: Mirrors::default(),
            reported: Mutex::new(HashMap::new()),
            recorder,
            node_uid: OnceCell::new(),
            mirror_failures: Mutex::new(HashMap::new()),
        }
    }

    fn api(&self, namespace: &str) -> Api<Container> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The status the server holds for `handle`'s resource or mirror.
    pub fn reported(&self, handle: &Handle) -> Option<ContainerStatus> {
        lock(&self.reported).get(handle).cloned()
    }

    fn set_reported(&self, handle: &Handle, status: Option<ContainerStatus>) {
        let mut reported = lock(&self.reported);
        match status {
            Some(s) => reported.insert(handle.clone(), s),
            None => reported.remove(handle),
        };
    }

    /// Whether a mirror is known for `handle`.
    pub fn has_mirror(&self, handle: &Handle) -> bool {
        self.mirrors.get(handle).is_some()
    }

    /// Take in what the server shows. `file_declared` tells whether a
    /// handle is declared by the directory: then a mirror someone else
    /// changed or deleted is stale, and its handle returned, to reconcile
    /// (and so publish it anew).
    pub fn seen(
        &self,
        sighting: &Sighting,
        file_declared: impl Fn(&Handle) -> bool,
    ) -> Option<Handle> {
        match sighting {
            Sighting::Status { handle, status } => {
                self.set_reported(handle, status.as_deref().cloned());
                None
            }
            Sighting::Mirror { handle, uid, sight } => (file_declared(handle)
                && self.mirrors.seen(handle, uid, sight))
            .then(|| handle.clone()),
        }
    }

    /// Write `status` for `d` (its resource, or its mirror) unless the
    /// server already holds exactly that. A mirror is published first; one
    /// that cannot be gets no status write.
    pub async fn status(
        &self,
        d: &Desired,
        spec: Option<&ContainerSpec>,
        status: &ContainerStatus,
    ) -> Result<(), KubeReportError> {
        match &d.origin {
            Origin::Kube {
                namespace, name, ..
            } => Ok(self
                .write_status(namespace, name, &d.handle, status)
                .await?),
            Origin::File { path, document } => {
                let Some(spec) = spec else { return Ok(()) };
                let source = format!("{}#{document}", path.display());
                let (name, generation) = self.publish_mirror(&d.handle, spec, &source).await?;
                let status = status.at_generation(generation);
                let written = self
                    .write_status(&self.mirror_namespace, &name, &d.handle, &status)
                    .await;
                if let Err(kube::Error::Api(e)) = &written
                    && e.code == 404
                {
                    // Deleted behind our back (while the watch was away):
                    // published anew on the retry.
                    let uid = self.mirrors.get(&d.handle).map(|m| m.uid);
                    let uid = uid.as_deref().unwrap_or_default();
                    self.mirrors.seen(&d.handle, uid, &MirrorSight::Deleted);
                }
                Ok(written?)
            }
        }
    }

    /// [`Self::ensure_mirror`], unless an earlier attempt failed and its
    /// backoff has not run out. A failure is logged when its cause is new.
    async fn publish_mirror(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        source: &str,
    ) -> Result<(String, i64), KubeReportError> {
        let waiting = lock(&self.mirror_failures)
            .get(handle)
            .map(|f| f.next_attempt.saturating_duration_since(Instant::now()))
            .filter(|wait| !wait.is_zero());
        if let Some(retry_in) = waiting {
            return Err(KubeReportError::MirrorNotPublished {
                handle: handle.clone(),
                retry_in,
            });
        }
        match self.ensure_mirror(handle, spec, source).await {
            Ok(published) => {
                if lock(&self.mirror_failures).remove(handle).is_some() {
                    tracing::info!(%handle, mirror = %published.0, namespace = %self.mirror_namespace, "published the mirror");
                }
                Ok(published)
            }
            Err(e) => Err(self.mirror_failed(handle, &e)),
        }
    }

    /// Note a failed publication of `handle`'s mirror: when to try again,
    /// and a log line when the cause is not the one logged last.
    fn mirror_failed(&self, handle: &Handle, error: &kube::Error) -> KubeReportError {
        let cause = mirror_failure_cause(error, &self.mirror_namespace);
        let mut failures = lock(&self.mirror_failures);
        let entry = failures
            .entry(handle.clone())
            .or_insert_with(|| MirrorFailures {
                attempts: 0,
                next_attempt: Instant::now(),
                cause: String::new(),
            });
        entry.attempts += 1;
        let retry_in = mirror_retry_delay(entry.attempts);
        entry.next_attempt = Instant::now() + retry_in;
        if entry.cause != cause {
            tracing::warn!(%handle, namespace = %self.mirror_namespace, error = %cause, "cannot publish the mirror of a file-sourced container; retrying with backoff (logged again only if the cause changes)");
            entry.cause = cause;
        } else {
            tracing::debug!(%handle, error = %cause, ?retry_in, "mirror still not published");
        }
        KubeReportError::MirrorNotPublished {
            handle: handle.clone(),
            retry_in,
        }
    }

    async fn write_status(
        &self,
        namespace: &str,
        name: &str,
        handle: &Handle,
        status: &ContainerStatus,
    ) -> Result<(), kube::Error> {
        if self.reported(handle).as_ref() == Some(status) {
            return Ok(());
        }
        let body = json!({"apiVersion": Container::api_version(&()), "kind": "Container", "status": status});
        self.api(namespace)
            .patch_status(name, &apply_params(MANAGER), &Patch::Apply(body))
            .await?;
        self.set_reported(handle, Some(status.clone()));
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
        reason: Reason,
        message: &str,
    ) -> Result<(), kube::Error> {
        let reference = match &d.origin {
            Origin::Kube {
                namespace,
                name,
                uid,
            } => reference(namespace, name, uid),
            Origin::File { .. } => match self.mirrors.get(&d.handle) {
                Some(m) if m.published() => reference(&self.mirror_namespace, &m.name, &m.uid),
                _ => return Ok(()),
            },
        };
        let note: String = message.chars().take(1000).collect();
        self.recorder
            .publish(&reference, type_, reason.as_str(), &note)
            .await
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
        let mut mirror = match self.mirrors.get(handle) {
            Some(m) if m.stale => {
                // Forget its uid first, so its deletion is not news.
                self.mirrors.set(handle, Some(Mirror::default()));
                self.delete_mirror(&m.name).await?;
                Mirror::default()
            }
            Some(m) if m.published() && m.spec_hash == hash => return Ok((m.name, m.generation)),
            Some(m) => m,
            None => Mirror::default(),
        };
        let previous = mirror.clone();
        mirror.spec_hash = hash;
        self.mirrors.set(handle, Some(mirror));
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
        let applied = match self
            .api(&self.mirror_namespace)
            // Not forced: a Container of that name someone else made is
            // theirs (the apply conflicts), never taken over as a mirror.
            .patch(&name, &PatchParams::apply(MANAGER), &Patch::Apply(body))
            .await
        {
            Ok(applied) => applied,
            Err(e) => {
                // Not applied: the spec it holds is still the one before.
                self.mirrors
                    .set(handle, previous.published().then_some(previous));
                return Err(e);
            }
        };
        let uid = applied.metadata.uid.unwrap_or_default();
        let generation = applied.metadata.generation.unwrap_or(1);
        let mirror = Mirror {
            name: name.clone(),
            uid,
            generation,
            spec_hash: spec_hash(&spec),
            stale: false,
        };
        self.mirrors.set(handle, Some(mirror));
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
        self.mirrors.set(handle, None);
        lock(&self.mirror_failures).remove(handle);
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

/// The wait before attempt `attempts + 1` to publish a mirror.
fn mirror_retry_delay(attempts: u32) -> Duration {
    MIRROR_RETRY_FIRST
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MIRROR_RETRY_MAX)
}

/// Why a mirror could not be published, said so an operator can act.
fn mirror_failure_cause(error: &kube::Error, namespace: &str) -> String {
    match error {
        kube::Error::Api(e) if e.code == 404 => format!(
            "{error}: is the Container CRD installed (kubectl get crd containers.rundmc.io) and does namespace {namespace} exist (--mirror-namespace)?"
        ),
        other => other.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_retries_back_off_to_a_ceiling() {
        let delays: Vec<_> = (1..=8).map(mirror_retry_delay).collect();
        assert_eq!(delays[0], MIRROR_RETRY_FIRST);
        assert_eq!(delays[1], MIRROR_RETRY_FIRST * 2);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert_eq!(delays[7], MIRROR_RETRY_MAX);
        assert_eq!(mirror_retry_delay(u32::MAX), MIRROR_RETRY_MAX);
    }
}
