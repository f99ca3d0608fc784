//! A fake Kubernetes API server for tests: real HTTP on 127.0.0.1, the real
//! wire protocol (JSON objects, `Status` errors, chunked watch streams), and
//! an in-memory store that follows the apiserver's documented semantics for
//! resourceVersions, generation, the status subresource, finalizers,
//! patches, server-side apply and selectors. Tests drive it through a real
//! `kube::Client` built from the kubeconfig it writes, and steer it through
//! the controls on [`FakeApiServer`] (outages, cut watches, compaction,
//! request counts, direct store access).
//!
//! Where the fake simplifies, the module that does so says how.
//!
//! Rooms: `kinds` (served kinds), `store` (objects, revisions, history),
//! `strategy` (registry rules on writes), `fields` (managedFields, apply),
//! `patch` (patch bodies), `selectors`, `watch` (streams), `routes` (URL to
//! target), `handlers` (dispatch, reads), `writes` (create, update, patch,
//! delete), `discovery` (/version, /api, /apis, /openapi), `reviews` (TokenReview,
//! SubjectAccessReview), `nodeproxy` (nodes/proxy to a node), `server`
//! (listener, connections, outages), `controls` (the test-facing handle
//! methods), `kubeconfig`.

// Shared by several test crates, each of which uses a different subset.
#![allow(dead_code)]

pub mod controls;
pub mod discovery;
pub mod fields;
pub mod handlers;
pub mod kinds;
pub mod kubeconfig;
pub mod nodeproxy;
pub mod patch;
pub mod reviews;
pub mod routes;
pub mod selectors;
pub mod server;
pub mod status;
pub mod store;
pub mod strategy;
pub mod watch;
pub mod writes;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, watch as notify};

#[allow(unused_imports)]
pub use controls::{RequestRecord, WaitTimeout};
pub use kinds::Kind;
pub use server::Outage;
#[allow(unused_imports)]
pub use status::ApiError;

use store::Store;
use watch::WatchHub;

/// Mutable server state, behind one lock so that a write and its fan-out to
/// watches are atomic (watchers see changes in revision order).
pub struct State {
    pub store: Store,
    pub hub: WatchHub,
    pub requests: Vec<RequestRecord>,
    pub outage: Outage,
    /// Watches answered 410 Expired (their resourceVersion was compacted).
    pub expired_watches: usize,
}

/// What the handle, the listener and the connections share.
pub struct Shared {
    state: Mutex<State>,
    /// Bumped after every change and every request: `wait_for` sleeps on it.
    pub activity: notify::Sender<u64>,
    /// Bumped to drop every open connection.
    pub kill: notify::Sender<u64>,
    /// Emulated Kubernetes version.
    pub version: discovery::VersionInfo,
    pub addr: SocketAddr,
    /// TokenReviews and SubjectAccessReviews: the test's decisions, what was asked.
    pub reviews: Mutex<reviews::Reviews>,
    /// The node proxy subresource: the test's decisions, the kubelet client.
    pub node_proxy: Mutex<nodeproxy::NodeProxy>,
}

impl Shared {
    /// Runs `f` on the state, then fans committed changes out to watches and
    /// wakes waiters.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let result = {
            let mut state = self.lock();
            let result = f(&mut state);
            let State { store, hub, .. } = &mut *state;
            for change in store.drain_outbox() {
                hub.dispatch(&change);
            }
            result
        };
        self.activity.send_modify(|n| *n += 1);
        result
    }

    /// Reads the state without waking waiters (nothing changes).
    pub fn peek<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge the server for the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Options for [`FakeApiServer::builder`].
pub struct Builder {
    version: discovery::VersionInfo,
    kinds: Vec<Kind>,
}

impl Builder {
    /// Emulate Kubernetes 1.`minor` (`/version`, and version-dependent
    /// behaviour such as CRD field selectors from 1.31).
    pub fn version(mut self, minor: u32) -> Builder {
        self.version = discovery::VersionInfo::new(minor);
        self
    }

    /// Override the `minor` and `gitVersion` strings `/version` sends, as
    /// providers do (`"24+"`, `"v1.24.17-eks-1234"`), keeping the emulated
    /// behaviour of the last [`Builder::version`].
    pub fn version_strings(mut self, minor: &str, git_version: &str) -> Builder {
        self.version.minor_text = minor.to_string();
        self.version.git_version = git_version.to_string();
        self
    }

    /// Also serve `kind`.
    pub fn kind(mut self, kind: Kind) -> Builder {
        self.kinds.push(kind);
        self
    }

    /// Do not serve a resource until its CRD is POSTed (e.g. to test an agent
    /// against a cluster without the Container CRD).
    pub fn without(mut self, group: &str, plural: &str) -> Builder {
        self.kinds
            .retain(|k| !(k.group == group && k.plural == plural));
        self
    }

    /// Binds 127.0.0.1:0 and starts serving on the current tokio runtime.
    pub async fn start(self) -> FakeApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let mut store = Store::new(self.kinds);
        let ns_kind = store.kind_index("", "v1", "namespaces");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            if let Some(k) = ns_kind {
                let obj = serde_json::json!({"metadata": {"name": ns}});
                let w = store::WriteCtx {
                    manager: "kube-apiserver",
                    status: false,
                    managed: store::Managed::Update,
                    require_rv: false,
                };
                store.create(k, "", obj, &w).expect("system namespace");
            }
        }
        store.drain_outbox();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                store,
                hub: WatchHub::default(),
                requests: Vec::new(),
                outage: Outage::None,
                expired_watches: 0,
            }),
            activity: notify::channel(0).0,
            kill: notify::channel(0).0,
            version: self.version,
            addr,
            reviews: Mutex::default(),
            node_proxy: Mutex::default(),
        });
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        tokio::spawn(server::accept_loop(shared.clone(), listener, ctl_rx));
        FakeApiServer { shared, ctl }
    }
}

/// The running fake. Dropping it stops the listener and drops connections.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    ctl: mpsc::UnboundedSender<server::Control>,
}

impl FakeApiServer {
    /// Options: version, extra kinds.
    pub fn builder() -> Builder {
        Builder {
            version: discovery::VersionInfo::new(31),
            kinds: kinds::default_kinds(),
        }
    }

    /// A Kubernetes 1.31 fake serving the default kinds.
    pub async fn start() -> FakeApiServer {
        FakeApiServer::builder().start().await
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The emulated minor version.
    pub fn minor_version(&self) -> u32 {
        self.shared.version.minor
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.kill.send_modify(|n| *n += 1);
        self.shared.with(|s| s.hub.cut_all());
    }
}
