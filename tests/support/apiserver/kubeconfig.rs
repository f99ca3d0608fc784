//! The kubeconfig that points clients at the fake: plain http on loopback,
//! one cluster, context and token user. kube-client accepts `http://`
//! servers (its connector is built with `https_or_http`).

use std::io;
use std::path::Path;

use super::FakeApiServer;

/// The context, cluster and user name in the written kubeconfig.
pub const CONTEXT: &str = "fake";
/// The bearer token of its user (the fake does not check it).
pub const TOKEN: &str = "fake-token";

impl FakeApiServer {
    /// The kubeconfig text for this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: {CONTEXT}\n  cluster:\n    server: {url}\n\
             contexts:\n\
             - name: {CONTEXT}\n  context:\n    cluster: {CONTEXT}\n    user: {CONTEXT}\n    namespace: default\n\
             current-context: {CONTEXT}\n\
             users:\n\
             - name: {CONTEXT}\n  user:\n    token: {TOKEN}\n",
            url = self.url()
        )
    }

    /// Writes the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// Writes the kubeconfig to `path` and builds a `kube::Client` from that
    /// file, the way the agent does with `--kubeconfig`.
    pub async fn client(&self, path: &Path) -> kube::Client {
        self.write_kubeconfig(path).expect("write kubeconfig");
        let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("read kubeconfig");
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .expect("kubeconfig to config");
        kube::Client::try_from(config).expect("client from config")
    }
}
