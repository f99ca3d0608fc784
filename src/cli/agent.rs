//! `rundmc agent`: wires the rooms together — the runc adapter and the
//! containerizer, the desired store and work queue, the directory source,
//! the controller and the reporters — and runs until SIGTERM or SIGINT,
//! which stop the agent and leave every container and process running.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::AgentArgs;
use crate::api::SourceKind;
use crate::containerizer::depot::{Depot, DepotError};
use crate::containerizer::network::Networking;
use crate::containerizer::{Config, Containerizer, ContainerizerError};
use crate::fsutil::FsError;
use crate::image::gc::GcThresholds;
use crate::image::manager::{Manager, ManagerConfig, SecretSource};
use crate::image::pull::Puller;
use crate::image::store::{Store as ImageStore, StoreError};
use crate::network::attach::Cni;
use crate::network::cni::CniConfig;
use crate::reconcile::backoff::CrashLoopBackoff;
use crate::reconcile::controller::{Controller, ControllerConfig};
use crate::reconcile::images::ImageOps;
use crate::reconcile::queue::WorkQueue;
use crate::reconcile::store::{Changes, Store};
use crate::report::Reporters;
use crate::report::events::{EventLog, EventType};
use crate::report::files::StatusFiles;
use crate::report::kube::KubeReporter;
use crate::report::metrics::{AgentMetrics, ContainerCollector};
use crate::runtime::{Runc, RuntimeConfig};
use crate::server::Endpoint;
use crate::source::Update;
use crate::source::admission::Admission;
use crate::source::dir::DirSource;
use crate::source::kube::KubeSource;
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// How long the controller must have been quiet after reconciling before
/// the heap's free pages go back to the kernel (`crate::heap`).
const HEAP_QUIET: Duration = Duration::from_secs(1);

/// Why the agent could not start.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The containerizer could not be set up.
    #[error(transparent)]
    Containerizer(#[from] ContainerizerError),
    /// A state file or directory could not be made.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A helper binary is missing.
    #[error("{what} not found at {path}; pass {flag}")]
    MissingBinary {
        /// Which binary.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The flag that sets it.
        flag: &'static str,
    },
    /// No usable Kubernetes client configuration.
    #[error("Kubernetes client configuration: {0}")]
    KubeConfig(#[source] KubeConfigError),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    /// The local API's socket could not be set up (issue 18).
    #[error(transparent)]
    LocalApi(#[from] crate::server::local::LocalApiError),
    /// The image store could not be opened.
    #[error("image store: {0}")]
    Images(#[source] StoreError),
    /// The registry settings or the node's credentials are unusable.
    #[error("registries: {0}")]
    Registry(String),
    /// The depot could not be opened.
    #[error(transparent)]
    Depot(#[from] DepotError),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The remote API could not start, or cannot without a Kubernetes client (issue 18).
    #[error(transparent)]
    RemoteApi(#[from] crate::server::remote::RemoteApiError),
    /// `--remote-api-listen` without `--kube`: no API server to review callers.
    #[error("--remote-api-listen needs --kube: callers are reviewed by the API server")]
    RemoteApiWithoutKube,
    /// Another agent holds the depot or the state directory.
    #[error(transparent)]
    Lock(#[from] super::lock::LockError),
}

/// Why no Kubernetes client could be made, with kube's own error.
#[derive(Debug, Error)]
pub enum KubeConfigError {
    /// The `--kubeconfig` file could not be read or used.
    #[error(transparent)]
    File(#[from] kube::config::KubeconfigError),
    /// Neither `KUBECONFIG` (or `~/.kube/config`) nor the in-cluster
    /// service account gave a configuration.
    #[error(transparent)]
    Infer(#[from] kube::config::InferConfigError),
    /// The configuration did not make a client (e.g. its TLS setup).
    #[error(transparent)]
    Client(#[from] kube::Error),
}

/// A binary shipped beside `rundmc` (or in /usr/lib/rundmc), unless given.
fn sibling(
    given: &Option<PathBuf>,
    name: &'static str,
    flag: &'static str,
) -> Result<PathBuf, AgentError> {
    if let Some(p) = given {
        // Absolute: the runtime resolves a bind mount's source from the
        // bundle directory, where a relative path names nothing.
        let path = std::path::absolute(p).unwrap_or_else(|_| p.clone());
        return match path.is_file() {
            true => Ok(path),
            false => Err(AgentError::MissingBinary {
                what: name,
                path,
                flag,
            }),
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)));
    let candidates = beside
        .into_iter()
        .chain([PathBuf::from("/usr/lib/rundmc").join(name)]);
    let mut last = PathBuf::from(name);
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
        last = c;
    }
    Err(AgentError::MissingBinary {
        what: name,
        path: last,
        flag,
    })
}

/// A client from `--kubeconfig`, else `KUBECONFIG` or in-cluster config.
/// kube's own retries are off: the work queue retries with its own backoff,
/// and a request must never hang a worker for minutes.
async fn kube_client(args: &AgentArgs) -> Result<kube::Client, AgentError> {
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| AgentError::KubeConfig(e.into()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| AgentError::KubeConfig(e.into()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| AgentError::KubeConfig(e.into()))?,
    };
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| AgentError::KubeConfig(e.into()))
}

/// Run the agent until a stop signal.
pub async fn run(args: AgentArgs) -> Result<(), AgentError> {
    // Before anything is touched: one agent per depot, state directory and
    // runtime root.
    let lock = super::lock::acquire(
        &[&args.depot, &args.state_dir, &args.runtime_root],
        args.wait_for_lock.map(Duration::from),
    )
    .await?;
    raise_open_files_limit();
    let runtime = Runc::new(RuntimeConfig {
        binary: args.runtime.clone(),
        root: args.runtime_root.clone(),
        timeout: args.runtime_timeout.into(),
    });
    let containerizer = Containerizer::new(containerizer_config(&args)?, runtime)?
        .with_networking(networking(&args))
        // User namespaces (spec.hostUsers).
        .with_user_namespaces(args.userns_range, !args.host_users_default)?
        .with_runtime_version(&runtime_version(&args.runtime))
        .with_seccomp_profile_root(args.seccomp_profile_root.clone());
    // Before anything looks at a container: an earlier version's bundles
    // move out of the depot, their containers running on.
    let adopted = containerizer.adopt_earlier_layout()?;
    if adopted > 0 {
        tracing::info!(adopted, "bundles of an earlier version adopted");
    }
    let containerizer = Arc::new(containerizer);
    let store = Arc::new(Store::new());
    let metrics = AgentMetrics::default();
    let activity = metrics.clone();
    tokio::spawn(crate::heap::give_back_when_idle(
        move || activity.reconciles_total(),
        HEAP_QUIET,
    ));
    let node = args.node_name();
    let client = match args.kube {
        true => Some(kube_client(&args).await?),
        false => None,
    };
    let reporters = Arc::new(Reporters {
        files: StatusFiles::open(args.state_dir.join("status"))?,
        events: EventLog::open(args.state_dir.join("events.jsonl"), args.events_keep)?,
        kube: client.clone().map(|c| {
            let namespace = args.mirror_namespace.clone();
            KubeReporter::new(c, node.clone(), namespace)
        }),
        cpu: metrics.report_cpu.clone(),
    });
    let queue = WorkQueue::new();
    let controller = Controller::new(
        Arc::clone(&containerizer),
        Arc::clone(&store),
        Arc::clone(&queue),
        Arc::clone(&reporters),
        image_manager(&args, client.clone())?,
        controller_config(&args, metrics.clone()),
    );
    let remote_client = client.clone();
    let updates = start_sources(&args, client, &node);
    let mut changes = start_writer(updates, Arc::clone(&store), Arc::clone(&reporters));
    tracing::info!(manifests = %args.manifests.display(), depot = %args.depot.display(), %node, kube = args.kube, "rundmc agent starting");

    // The first listing comes before anything is reconciled, so nothing
    // declared is mistaken for undeclared.
    if let Some(first) = changes.recv().await {
        tracing::debug!(?first, "first listing");
        dispatch(&store, &queue, &reporters, first).await;
        if store.is_synced(SourceKind::File) {
            prune_file_errors(&store, &reporters);
        }
    }
    controller.enqueue_at_start();
    let dispatcher = tokio::spawn(dispatch_all(
        changes,
        store.clone(),
        queue.clone(),
        Arc::clone(&reporters),
    ));
    if let Some(addr) = args.metrics_addr {
        let bound = serve_metrics(addr, &containerizer, &store, &metrics, args.kube).await?;
        tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
    }
    // Operator access (issue 18): the local API.
    serve_local_api(&args, &containerizer, &store, &reporters).await?;
    // Operator access from kubectl (issue 18): the remote API.
    serve_remote_api(&args, remote_client, &containerizer, &store, &reporters).await?;
    let workers = tokio::spawn(Arc::clone(&controller).run());
    until_stopped().await?;
    queue.shutdown();
    dispatcher.abort();
    // Let in-flight reconciles finish their step, but not forever.
    let _ = tokio::time::timeout(Duration::from_secs(10), workers).await;
    lock.hold_until_exit();
    Ok(())
}

/// The image store, the puller and the manager the controller asks for
/// images; its garbage collection keeps what the depot's containers use.
fn image_manager(
    args: &AgentArgs,
    client: Option<kube::Client>,
) -> Result<Arc<dyn ImageOps>, AgentError> {
    let store = Arc::new(ImageStore::open(&args.image_store).map_err(AgentError::Images)?);
    let (config, keyring) =
        super::image::registry(&args.registry).map_err(|e| AgentError::Registry(e.to_string()))?;
    let puller = Puller::new(Arc::clone(&store), config, keyring)
        .map_err(|e| AgentError::Registry(e.to_string()))?;
    let secrets = client.map(|c| Arc::new(KubeSecrets(c)) as Arc<dyn SecretSource>);
    let gc = GcThresholds {
        high_percent: args.image_gc_high_threshold,
        low_percent: args
            .image_gc_low_threshold
            .min(args.image_gc_high_threshold),
    };
    let config = ManagerConfig {
        gc,
        gc_min_age: args.image_minimum_gc_age.into(),
        ..ManagerConfig::default()
    };
    let manager = Manager::new(store, Arc::new(puller), secrets, config);
    let depot = Depot::open(&args.depot)?;
    let in_use = move || depot.images_in_use().map_err(|e| e.to_string());
    tokio::spawn(Arc::clone(&manager).collect_garbage(in_use));
    Ok(Arc::new(manager))
}

/// Image pull Secrets, read from the API server: `get` on Secrets of the
/// resource's namespace, nothing else.
struct KubeSecrets(kube::Client);

impl SecretSource for KubeSecrets {
    fn docker_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> futures_util::future::BoxFuture<'static, Result<Vec<u8>, String>> {
        let api: kube::Api<Secret> = kube::Api::namespaced(self.0.clone(), namespace);
        let name = name.to_string();
        Box::pin(async move {
            let secret = api.get(&name).await.map_err(|e| e.to_string())?;
            let type_ = secret.type_.as_deref().unwrap_or("Opaque");
            if type_ != "kubernetes.io/dockerconfigjson" {
                return Err(format!(
                    "is of type {type_}, not kubernetes.io/dockerconfigjson"
                ));
            }
            let data = secret.data.unwrap_or_default();
            data.get(".dockerconfigjson")
                .map(|b| b.0.clone())
                .ok_or_else(|| "has no .dockerconfigjson".to_string())
        })
    }
}

/// Lift the soft limit on open files to the hard one: each running
/// container holds an OOM watch, and each process in flight a pidfd.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let raised = getrlimit(Resource::RLIMIT_NOFILE).and_then(|(soft, hard)| match soft < hard {
        true => setrlimit(Resource::RLIMIT_NOFILE, hard, hard),
        false => Ok(()),
    });
    if let Err(e) = raised {
        tracing::warn!(error = %e, "cannot raise the open-files limit");
    }
}

/// The containerizer's settings from the flags.
fn containerizer_config(args: &AgentArgs) -> Result<Config, AgentError> {
    Ok(Config {
        depot: args.depot.clone(),
        // OCI bundles on the state directory's tmpfs, as /run: what a
        // reboot ends anyway, made without allocating disk inodes.
        bundles: Some(args.state_dir.join("bundles")),
        init_binary: sibling(&args.init_binary, "rundmc-init", "--init-binary")?,
        shim_binary: sibling(&args.shim_binary, "rundmc-shim", "--shim-binary")?,
        cgroup_parent: args.cgroup_parent.clone(),
        shim_cgroup: Some(
            args.shim_cgroup
                .clone()
                .unwrap_or_else(|| format!("{}-shims", args.cgroup_parent)),
        ),
        nstar_binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("rundmc")),
    })
}

/// What `<runtime> --version` prints (user namespaces: runc 1.1 cannot
/// join a network namespace the node owns); empty when it cannot be run.
fn runtime_version(runtime: &std::path::Path) -> String {
    std::process::Command::new(runtime)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// CNI, as the flags say. Without a configuration in `--cni-conf-dir`,
/// containers get loopback only, as before.
fn networking(args: &AgentArgs) -> Networking {
    let config = CniConfig {
        conf_dir: args.cni_conf_dir.clone(),
        bin_dirs: args.cni_bin_dir.clone(),
        cache_dir: args.cni_cache_dir.clone(),
        timeout: args.cni_plugin_timeout.into(),
    };
    Networking::new(Cni::new(config), args.state_dir.join("netns"))
}

/// The controller's settings from the flags.
fn controller_config(args: &AgentArgs, metrics: AgentMetrics) -> ControllerConfig {
    ControllerConfig {
        workers: args.workers,
        resync_period: args.resync_period.into(),
        crash_loop: CrashLoopBackoff {
            initial: args.crash_loop_initial.into(),
            max: args.crash_loop_max.into(),
            reset_after: Duration::from(args.crash_loop_max) * 2,
        },
        metrics,
        log_max_bytes: args.container_log_max_size,
        log_max_files: args.container_log_max_files,
    }
}

/// Start the directory source, and the Kubernetes one with a client; both
/// send what they see on the returned channel, for [`start_writer`].
fn start_sources(
    args: &AgentArgs,
    client: Option<kube::Client>,
    node: &str,
) -> mpsc::Receiver<Update> {
    let (tx, updates) = mpsc::channel::<Update>(64);
    let admission = Admission {
        allow_privileged: args.allow_privileged,
        allow_host_network: args.allow_host_network,
        allow_unconfined_seccomp: args.allow_unconfined_seccomp,
        allow_privileged_ports: args.allow_privileged_ports,
        allowed_host_paths: resolved(&args.allowed_host_paths),
        allowed_rootfs_paths: resolved(&args.allowed_rootfs_paths),
        allowed_registries: args.allowed_registries.clone(),
        allowed_capabilities: args.allowed_capabilities.clone(),
        allowed_unsafe_sysctls: args.allowed_unsafe_sysctls.clone(),
    };
    let dir = DirSource::new(&args.manifests, args.relist_period.into())
        .with_admission(args.admit_files.then(|| admission.clone()));
    if let Some(client) = client {
        let source = KubeSource::new(client, node.to_owned(), admission);
        tokio::spawn(source.run(tx.clone()));
    }
    tokio::spawn(dir.run(tx));
    updates
}

/// Start the one writer of what the sources see, on its own task (so a
/// slow report never holds the store back): each update is applied, and
/// what it changed (and every listing, changed or not) is sent on the
/// returned channel.
fn start_writer(
    mut updates: mpsc::Receiver<Update>,
    store: Arc<Store>,
    reporters: Arc<Reporters>,
) -> mpsc::Receiver<Changes> {
    let (tx, changes) = mpsc::channel::<Changes>(64);
    tokio::spawn(async move {
        while let Some(update) = updates.recv().await {
            let listing = matches!(update, Update::Listed { .. });
            let c = apply(&store, &reporters, update);
            let news = listing || !c.handles.is_empty() || !c.files.is_empty();
            if news && tx.send(c).await.is_err() {
                return;
            }
        }
    });
    changes
}

/// Apply one update: declarations to the store, what the server shows of
/// status and mirrors to the reporters. What changed, with the
/// file-sourced containers whose mirror someone else changed.
fn apply(store: &Store, reporters: &Reporters, update: Update) -> Changes {
    let stale = reporters.seen(update.sightings(), |h| {
        store.declared_by(h, SourceKind::File)
    });
    let mut changes = store.apply(update);
    changes.handles.extend(stale);
    changes
}

/// Paths through their symlinks, as the paths checked against them are
/// (one that does not exist yet stays as given).
fn resolved(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect()
}

/// Hand every change from the sources to the queue and the reporters.
async fn dispatch_all(
    mut changes: mpsc::Receiver<Changes>,
    store: Arc<Store>,
    queue: Arc<WorkQueue>,
    reporters: Arc<Reporters>,
) {
    let mut pruned = false;
    while let Some(c) = changes.recv().await {
        dispatch(&store, &queue, &reporters, c).await;
        if !pruned && store.is_synced(SourceKind::File) {
            prune_file_errors(&store, &reporters);
            pruned = true;
        }
    }
}

/// Once the directory has been listed: remove the statuses of manifest
/// files that no longer have errors of their own (gone, or fixed, while the
/// agent was down).
fn prune_file_errors(store: &Store, reporters: &Reporters) {
    let keep = store
        .files_in_error()
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    reporters.files.prune_file_errors(&keep);
}

/// Wait for SIGTERM or SIGINT.
async fn until_stopped() -> Result<(), AgentError> {
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping the agent, leaving containers running"),
        _ = int.recv() => tracing::info!("SIGINT: stopping the agent, leaving containers running"),
    }
    Ok(())
}

/// Operator access (issue 18): serve the local API on its socket.
async fn serve_local_api(
    args: &AgentArgs,
    containerizer: &Arc<Containerizer<Runc>>,
    store: &Arc<Store>,
    reporters: &Arc<Reporters>,
) -> Result<(), AgentError> {
    let path = args
        .api_socket
        .clone()
        .unwrap_or_else(|| args.state_dir.join("rundmc.sock"));
    let config = crate::server::local::SocketConfig {
        path: path.clone(),
        group: args.api_group.clone(),
    };
    let node = crate::server::local::node::Node {
        containerizer: Arc::clone(containerizer),
        store: Arc::clone(store),
        reporters: Arc::clone(reporters),
        events_path: args.state_dir.join("events.jsonl"),
        console_dir: args.state_dir.join("console"),
    };
    crate::server::local::serve(config, node).await?;
    tracing::info!(socket = %path.display(), "serving the local API");
    Ok(())
}

/// Operator access from kubectl (issue 18): serve the remote API when
/// `--remote-api-listen` asks, reviewing callers through the agent's client.
async fn serve_remote_api(
    args: &AgentArgs,
    client: Option<kube::Client>,
    containerizer: &Arc<Containerizer<Runc>>,
    store: &Arc<Store>,
    reporters: &Arc<Reporters>,
) -> Result<(), AgentError> {
    use crate::server::remote::{RemoteConfig, review::KubeReviews};
    let (Some(listen), Some(cert), Some(key)) = (
        args.remote_api_listen,
        args.remote_api_tls_cert.clone(),
        args.remote_api_tls_key.clone(),
    ) else {
        return Ok(());
    };
    let client = client.ok_or(AgentError::RemoteApiWithoutKube)?;
    let config = RemoteConfig {
        listen,
        cert,
        key,
        client_ca: args.remote_api_client_ca.clone(),
    };
    let node = crate::server::local::node::Node {
        containerizer: Arc::clone(containerizer),
        store: Arc::clone(store),
        reporters: Arc::clone(reporters),
        events_path: args.state_dir.join("events.jsonl"),
        console_dir: args.state_dir.join("console"),
    };
    let reviews = Arc::new(KubeReviews::new(
        client,
        args.remote_api_token_audience.clone(),
    ));
    let bound = crate::server::remote::serve(&config, node, reviews).await?;
    tracing::info!(%bound, "serving the remote API (kubectl rundmc)");
    Ok(())
}

/// Serve the agent's metrics, per-container usage read from cgroups at
/// scrape time, and readiness: every enabled source has listed once.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    containerizer: &Arc<Containerizer<Runc>>,
    store: &Arc<Store>,
    metrics: &AgentMetrics,
    kube: bool,
) -> Result<std::net::SocketAddr, AgentError> {
    let c = Arc::clone(containerizer);
    let usage = move || {
        let handles = c.handles().unwrap_or_default();
        handles
            .into_iter()
            .filter_map(|h| {
                let m = c.metrics(&h).ok()?;
                Some((h.to_string(), m, c.network_counters(&h)))
            })
            .collect()
    };
    let store = Arc::clone(store);
    let ready = move || {
        if !store.is_synced(SourceKind::File) {
            return Err("the manifest directory has not been listed yet".to_string());
        }
        if kube && !store.is_synced(SourceKind::Kube) {
            return Err("Container resources have not been listed yet".to_string());
        }
        Ok(())
    };
    let registry =
        crate::report::metrics::registry(metrics, ContainerCollector::new(Box::new(usage)));
    Ok(crate::server::serve(
        addr,
        Endpoint {
            registry,
            ready: Box::new(ready),
        },
    )
    .await?)
}

/// Hand a source's changes to the queue, and report errors that belong to
/// no container (and new manifest errors of those that do).
async fn dispatch(store: &Store, queue: &WorkQueue, reporters: &Reporters, changes: Changes) {
    for path in &changes.files {
        reporters.file_errors(path, &store.file_errors(path));
    }
    for handle in changes.handles {
        if let Some(d) = store.get(&handle)
            && let Some(err) = &d.error
        {
            reporters
                .event(
                    Some(&d),
                    &handle,
                    EventType::Warning,
                    err.reason.reason(),
                    err.message.clone(),
                )
                .await;
        }
        queue.add(handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_helper_binary_given_by_a_relative_path_is_made_absolute_and_must_exist() {
        let dir = std::env::temp_dir().join(format!("rundmc-sibling-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rundmc-init"), b"").unwrap();
        let cwd = std::env::current_dir().unwrap();
        let relative = pathdiff(&dir.join("rundmc-init"), &cwd);
        let found = sibling(&Some(relative), "rundmc-init", "--init-binary").unwrap();
        assert!(found.is_absolute(), "{}", found.display());
        assert_eq!(
            found.canonicalize().unwrap(),
            dir.join("rundmc-init").canonicalize().unwrap()
        );
        let missing = sibling(
            &Some(PathBuf::from("no/such/rundmc-init")),
            "rundmc-init",
            "--init-binary",
        );
        let message = missing.unwrap_err().to_string();
        assert!(message.contains("pass --init-binary"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `path` relative to `base` (both absolute), through `..` as needed.
    fn pathdiff(path: &std::path::Path, base: &std::path::Path) -> PathBuf {
        let up = base.components().count() - 1;
        let mut out = PathBuf::new();
        for _ in 0..up {
            out.push("..");
        }
        out.join(path.strip_prefix("/").unwrap())
    }
}
