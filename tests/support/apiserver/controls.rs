//! The test-facing controls on [`FakeApiServer`]: direct store access that
//! bypasses HTTP (and admission), request records and counters, outages,
//! cutting watches, compaction, bookmarks, recorded Events, and waiting on
//! a condition, woken by every change and request rather than by polling.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use http::Method;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;

use super::FakeApiServer;
use super::handlers::is_watch;
use super::kinds::Kind;
use super::routes::Route;
use super::server::{Control, Outage};
use super::status::ApiError;
use super::store::{Managed, WriteCtx};

/// One request the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// get, list, watch, create, update, patch, delete, deletecollection
    /// (for non-resource paths: the lowercase method).
    pub verb: String,
    pub group: String,
    pub version: String,
    /// Plural resource name; "" for non-resource paths.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub field_manager: Option<String>,
    /// HTTP status of the answer (200 for watches, whatever they carried).
    pub code: u16,
}

impl RequestRecord {
    pub fn new(
        method: &Method,
        path: &str,
        query: &BTreeMap<String, String>,
        route: &Route,
        kind: Option<&Kind>,
    ) -> Self {
        let target = match route {
            Route::Resource(t) => Some(t),
            _ => None,
        };
        let has_name = target.is_some_and(|t| t.name.is_some());
        let verb = match (target.is_some(), method.as_str(), has_name) {
            (false, m, _) => m.to_lowercase(),
            (true, "GET", true) => "get".into(),
            (true, "GET", false) if is_watch(query) => "watch".into(),
            (true, "GET", false) => "list".into(),
            (true, "POST", _) => "create".into(),
            (true, "PUT", _) => "update".into(),
            (true, "PATCH", _) => "patch".into(),
            (true, "DELETE", true) => "delete".into(),
            (true, "DELETE", false) => "deletecollection".into(),
            (true, m, _) => m.to_lowercase(),
        };
        RequestRecord {
            verb,
            group: kind.map(|k| k.group.clone()).unwrap_or_default(),
            version: kind.map(|k| k.version.clone()).unwrap_or_default(),
            resource: kind.map(|k| k.plural.clone()).unwrap_or_default(),
            subresource: target.and_then(|t| t.subresource.clone()),
            namespace: target.and_then(|t| t.namespace.clone()),
            name: target.and_then(|t| t.name.clone()),
            path: path.to_string(),
            query: query.clone(),
            content_type: None,
            field_manager: None,
            code: 0,
        }
    }
}

/// A `wait_for` that ran out of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeout(pub Duration);

impl fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "condition not met within {:?}", self.0)
    }
}

impl std::error::Error for WaitTimeout {}

fn kind_index<K: Resource<DynamicType = ()>>(server: &FakeApiServer) -> usize {
    let (g, v, p) = (K::group(&()), K::version(&()), K::plural(&()));
    server
        .shared()
        .peek(|s| s.store.kind_index(&g, &v, &p))
        .unwrap_or_else(|| panic!("the fake does not serve {p}.{g}/{v}"))
}

fn typed<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("stored object deserializes")
}

impl FakeApiServer {
    /// Creates an object directly in the store (no HTTP, no namespace
    /// check), with uid, resourceVersion etc. set as on a POST.
    pub fn insert_value(&self, obj: Value) -> Result<Value, ApiError> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        self.shared().with(|s| {
            let k = s.store.kind_for(&api_version, &kind).ok_or_else(|| {
                ApiError::bad_request(format!("{api_version} {kind} is not served"))
            })?;
            let ns = match s.store.kinds[k].namespaced {
                true => obj
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string(),
                false => String::new(),
            };
            let w = WriteCtx {
                manager: "fake-apiserver-test",
                status: false,
                managed: Managed::Update,
                require_rv: false,
            };
            let mut created = s.store.create(k, &ns, obj.clone(), &w)?;
            if s.store.kinds[k].status_subresource && obj.get("status").is_some() {
                let mut with_status = created.clone();
                with_status["status"] = obj["status"].clone();
                let name = created["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                created =
                    s.store
                        .update(k, &ns, &name, with_status, &WriteCtx { status: true, ..w })?;
            }
            Ok(created)
        })
    }

    /// Creates a typed object directly (status included, written as through
    /// `/status`). Panics if it cannot be created.
    pub fn insert<K: Serialize + DeserializeOwned>(&self, obj: &K) -> K {
        let value = serde_json::to_value(obj).expect("object serializes");
        typed(self.insert_value(value).expect("insert"))
    }

    /// The stored object; `namespace` is "" for cluster-scoped kinds.
    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<K> {
        let k = kind_index::<K>(self);
        self.shared()
            .peek(|s| s.store.get(k, namespace, name).cloned())
            .map(typed)
    }

    /// Stored objects of a kind, in one namespace or all.
    pub fn list<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        namespace: Option<&str>,
    ) -> Vec<K> {
        let k = kind_index::<K>(self);
        let values = self
            .shared()
            .peek(|s| s.store.list(k, namespace, None))
            .expect("current list");
        values.into_iter().map(typed).collect()
    }

    /// Deletes at once, ignoring finalizers, as if etcd lost it. True if it existed.
    pub fn remove<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) -> bool {
        let k = kind_index::<K>(self);
        self.shared()
            .with(|s| s.store.remove(k, namespace, name))
            .is_some()
    }

    /// Recorded events.k8s.io/v1 Events (what kube's `Recorder` writes).
    pub fn events(&self) -> Vec<Event> {
        self.list::<Event>(None)
    }

    /// Recorded core/v1 Events.
    pub fn core_events(&self) -> Vec<CoreEvent> {
        self.list::<CoreEvent>(None)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared().peek(|s| s.store.resource_version())
    }

    /// Forgets history: watches and exact lists from an older
    /// resourceVersion, and continue tokens issued before, get 410 Gone.
    pub fn compact(&self) {
        self.shared().with(|s| s.store.compact());
    }

    /// Ends every open watch stream cleanly; returns how many were open.
    pub fn cut_watches(&self) -> usize {
        self.shared().with(|s| s.hub.cut_all())
    }

    /// Watch streams whose client is connected.
    pub fn open_watches(&self) -> usize {
        self.shared().peek(|s| s.hub.open())
    }

    /// Sends a BOOKMARK at the current resourceVersion to every watch that
    /// allowed bookmarks (real servers send them about once a minute).
    pub fn send_bookmarks(&self) {
        self.shared().with(|s| {
            let rv = s.store.resource_version();
            s.hub.bookmark_all(&s.store.kinds, rv);
        });
    }

    /// `true`: refuse connections (listener closed, connections dropped);
    /// `false`: serve again on the same port.
    pub async fn set_unavailable(&self, unavailable: bool) {
        let outage = if unavailable {
            Outage::Refuse
        } else {
            Outage::None
        };
        self.set_outage(outage).await;
    }

    /// Switches the outage mode; returns once the listener is in the new state.
    pub async fn set_outage(&self, outage: Outage) {
        self.shared().with(|s| {
            s.outage = outage;
            if outage != Outage::None {
                s.hub.cut_all();
            }
        });
        let (ack, done) = oneshot::channel();
        let command = match outage {
            Outage::Refuse => Control::Close(ack),
            _ => Control::Open(ack),
        };
        if self.ctl.send(command).is_ok() {
            let _ = done.await;
        }
        if outage == Outage::Refuse {
            self.shared().kill.send_modify(|n| *n += 1);
        }
    }

    /// How many watches were answered 410 Expired.
    pub fn expired_watches(&self) -> usize {
        self.shared().peek(|s| s.expired_watches)
    }

    /// Replaces a stored object as an update would (a spec change bumps
    /// `metadata.generation`; status is kept), bypassing HTTP: for changes
    /// made while the server refuses connections.
    pub fn update<K: Resource<DynamicType = ()> + Serialize + DeserializeOwned>(
        &self,
        obj: &K,
    ) -> K {
        let k = kind_index::<K>(self);
        let value = serde_json::to_value(obj).expect("object serializes");
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let name = obj.meta().name.clone().expect("a name");
        let w = WriteCtx {
            manager: "fake-apiserver-test",
            status: false,
            managed: Managed::Update,
            require_rv: false,
        };
        typed(
            self.shared()
                .with(|s| s.store.update(k, &ns, &name, value, &w))
                .expect("update"),
        )
    }

    /// Every request answered so far (since the last reset).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared().peek(|s| s.requests.clone())
    }

    /// How many requests had this verb, resource and subresource.
    pub fn count(&self, verb: &str, resource: &str, subresource: Option<&str>) -> usize {
        self.shared().peek(|s| {
            s.requests
                .iter()
                .filter(|r| {
                    r.verb == verb
                        && r.resource == resource
                        && r.subresource.as_deref() == subresource
                })
                .count()
        })
    }

    /// Forgets recorded requests.
    pub fn reset_requests(&self) {
        self.shared().with(|s| s.requests.clear());
    }

    /// Waits until `condition` holds, re-checking after every change and
    /// every request.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&FakeApiServer) -> bool,
    ) -> Result<(), WaitTimeout> {
        let mut activity = self.shared().activity.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            activity.borrow_and_update();
            if condition(self) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, activity.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(WaitTimeout(timeout)),
            }
        }
    }

    /// Waits until the object exists and satisfies `condition`; returns it.
    pub async fn wait_for_object<K>(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
        mut condition: impl FnMut(&K) -> bool,
    ) -> Result<K, WaitTimeout>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let mut found = None;
        self.wait_for(timeout, |s| {
            found = s.get::<K>(namespace, name).filter(|o| condition(o));
            found.is_some()
        })
        .await?;
        Ok(found.expect("wait_for returned Ok only when found"))
    }
}
