//! A one-node cluster for tests: the fake API server (`support/apiserver`,
//! the real wire protocol on loopback), a client of it, and an agent
//! environment started with `--kube` for [`NODE`]. Included by the test
//! crates that talk to the API server, beside `apiserver`:
//! `#[path = "support/cluster.rs"] mod cluster;`.

#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use rundmc::api::Container;

use crate::apiserver::FakeApiServer;
use crate::support::agent::{Agent, AgentEnv};

/// How long a wait on the cluster may take.
pub const T: Duration = Duration::from_secs(60);
/// The node the agent runs as.
pub const NODE: &str = "node-1";

/// The fake server, a client of it, and an agent environment for [`NODE`].
pub struct Cluster {
    pub server: FakeApiServer,
    pub client: Client,
    pub env: AgentEnv,
}

impl Cluster {
    pub async fn new(name: &str, server: FakeApiServer) -> Self {
        let mut env = AgentEnv::new(name);
        let kubeconfig = env.env.dir.join("kubeconfig");
        let client = server.client(&kubeconfig).await;
        let mut node = Node::default();
        node.metadata.name = Some(NODE.into());
        server.insert(&node);
        env.extra = ["--kube", "--node-name", NODE, "--kubeconfig"]
            .map(String::from)
            .to_vec();
        env.extra.push(kubeconfig.display().to_string());
        // The test image stands outside the default /var/lib/rundmc/rootfs.
        let images = crate::support::image()
            .parent()
            .unwrap()
            .display()
            .to_string();
        env.extra.extend(["--allowed-rootfs-paths".into(), images]);
        Cluster {
            server,
            client,
            env,
        }
    }

    pub fn start(&self) -> Agent {
        self.env.start()
    }

    pub fn api(&self) -> Api<Container> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// `kubectl apply --server-side --force-conflicts`.
    pub async fn apply(&self, c: &Container) {
        let name = c.metadata.name.clone().unwrap();
        self.api()
            .patch(
                &name,
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(c),
            )
            .await
            .unwrap();
    }

    /// Wait until `name` satisfies `cond`, then return it.
    pub async fn wait(
        &self,
        what: &str,
        name: &str,
        cond: impl FnMut(&Container) -> bool,
    ) -> Container {
        match self
            .server
            .wait_for_object::<Container>("default", name, T, cond)
            .await
        {
            Ok(c) => c,
            Err(_) => panic!(
                "timed out waiting for {what}; object: {:?}\n--- agent log ---\n{}",
                self.server.get::<Container>("default", name),
                self.env.agent_log()
            ),
        }
    }

    /// Wait, off the async runtime, for a condition on the node.
    pub async fn until(&self, what: &str, cond: impl FnMut() -> bool + Send + 'static) {
        let ok = tokio::task::spawn_blocking(move || crate::support::eventually(T, cond))
            .await
            .unwrap();
        assert!(
            ok,
            "timed out waiting for {what}\n--- agent log ---\n{}",
            self.env.agent_log()
        );
    }

    /// The events about object `name`, as `kubectl describe` lists them.
    pub fn events_about(&self, name: &str, reason: &str) -> Vec<Event> {
        self.server
            .events()
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.reason.as_deref() == Some(reason)
            })
            .collect()
    }
}
