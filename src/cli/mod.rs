//! The `rundmc` command line: its subcommands and flags. Parsing only; each
//! subcommand's work lives in the room that owns it, and `main` wires them.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub mod agent;
pub mod image;
pub mod kubectl;
pub mod lock;
pub mod ops;

/// rundmc keeps this machine's containers equal to what is declared for it.
#[derive(Debug, Parser)]
#[command(name = "rundmc", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// The agent's API socket (the agent serves it; the other verbs use it).
    /// Default: /run/rundmc/rundmc.sock, the agent's `<state-dir>/rundmc.sock`.
    #[arg(long, global = true, env = "RUNDMC_API_SOCKET", value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Keep this machine's containers equal to the manifests (and resources) declared for it.
    Agent(Box<AgentArgs>),
    /// Print the Container CustomResourceDefinition as YAML.
    Crd(CrdArgs),
    /// Pull, list, remove, prune and import images in the node's image store.
    Image(ImageArgs),
    /// List containers, with their phase, readiness and restarts.
    Ps(ops::PsArgs),
    /// Show one container (`-o yaml|json`: as a resource, with its status).
    Get(ops::GetArgs),
    /// Show one container in detail: spec, status, conditions, processes, events.
    Describe(ops::DescribeArgs),
    /// Print a container's log (its main process's, or another process's).
    Logs(ops::logs::LogsArgs),
    /// Run a command in a container (`-it` for a shell).
    Exec(ops::exec::ExecArgs),
    /// Copy files and directories between a container and here (`NAME:/path`).
    Cp(ops::cp::CpArgs),
    /// Follow a container's main process's output from now until it ends (`-i`: and send it stdin).
    Attach(ops::watch::AttachArgs),
    /// Show what containers use: CPU, memory, pids, network and block I/O.
    Stats(ops::watch::StatsArgs),
    /// Print what happened to containers (`-f`: as it happens).
    Events(ops::watch::EventsArgs),
    /// kubectl access to Container resources (`kubectl rundmc`, issue 18).
    Kubectl(kubectl::KubectlArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Stream a tar into or out of a container's mount namespace (internal).
    #[command(hide = true)]
    Nstar(NstarArgs),
}

/// `rundmc crd [--kube-version VERSION]`.
#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// The API server's version (`kubectl version` shows it): from 1.31 the
    /// CRD has `selectableFields`, so the server filters Containers by
    /// node. Without it: a CRD every supported server (1.24+) accepts.
    #[arg(long, value_name = "VERSION")]
    pub kube_version: Option<crate::api::crd::KubeVersion>,
}

/// `rundmc image pull|ls|rm|prune|import`.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ImageCommand,
    /// The store and the depot.
    #[command(flatten)]
    pub store: ImageStoreArgs,
}

/// The image subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image into the store (`busybox`, `ghcr.io/org/app:1.2`).
    Pull {
        /// The image reference.
        reference: String,
        /// How to reach registries.
        #[command(flatten)]
        registry: RegistryArgs,
        /// No progress, only the image's id.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List the images in the store.
    #[command(alias = "list")]
    Ls {
        /// Only the ids.
        #[arg(long, short)]
        quiet: bool,
        /// One JSON object per image.
        #[arg(long)]
        json: bool,
    },
    /// Remove images by name or id; one a container uses stays.
    #[command(alias = "remove")]
    Rm {
        /// Names or ids.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove every image no container uses, and their layers.
    Prune,
    /// Import an OCI layout, an OCI archive or a docker-archive tar
    /// (`docker save`, `skopeo copy ... oci-archive:`, `make image`).
    Import {
        /// The directory or tar file.
        path: PathBuf,
    },
}

/// Where the image store is, and the depot whose containers use it.
#[derive(Debug, Clone, clap::Args)]
pub struct ImageStoreArgs {
    /// The image store: unpacked layers, shared by every container.
    #[arg(long, global = true, default_value = "/var/lib/rundmc/images")]
    pub image_store: PathBuf,
    /// The depot whose containers' images are in use (and never removed).
    #[arg(long, global = true, default_value = "/var/lib/rundmc/depot")]
    pub depot: PathBuf,
}

/// How the node reaches registries.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryArgs {
    /// A Docker config.json with the node's registry credentials (default:
    /// the kubelet's lookup: /var/lib/kubelet/config.json, ./config.json,
    /// $HOME/.docker/config.json, /.docker/config.json and .dockercfg).
    #[arg(long, value_name = "FILE")]
    pub image_credentials: Option<PathBuf>,
    /// Trust this PEM CA besides the system's, for every registry. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub registry_ca: Vec<PathBuf>,
    /// Speak plain HTTP to this registry (`HOST:PORT`). Repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
}

/// `rundmc nstar in|out --pid PID --path PATH [--user UID:GID]`.
#[derive(Debug, clap::Args)]
pub struct NstarArgs {
    /// `in` unpacks stdin into PATH; `out` packs PATH to stdout.
    pub direction: NstarDirection,
    /// Host pid of a process in the container (its init).
    #[arg(long)]
    pub pid: i32,
    /// Path inside the container.
    #[arg(long)]
    pub path: PathBuf,
    /// Numeric `uid:gid` to act as.
    #[arg(long, value_parser = parse_uid_gid)]
    pub user: Option<(u32, u32)>,
}

/// Stream direction.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NstarDirection {
    /// Into the container.
    In,
    /// Out of the container.
    Out,
}

/// A size in bytes, as a quantity (`10Mi`, `500k`, `1048576`), at least 1Ki.
fn parse_size(s: &str) -> Result<u64, String> {
    match crate::api::quantity::bytes(s) {
        Ok(n) if n >= 1024 => Ok(n),
        Ok(_) => Err(format!("{s:?} is below the minimum of 1Ki")),
        Err(e) => Err(e.to_string()),
    }
}

/// A Kubernetes namespace name: an RFC 1123 label.
fn parse_namespace(s: &str) -> Result<String, String> {
    let valid_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let valid_ends = !s.starts_with('-') && !s.ends_with('-');
    if !s.is_empty() && s.len() <= 63 && valid_chars && valid_ends {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a namespace name: at most 63 lowercase letters, digits or '-', \
             starting and ending with a letter or digit"
        ))
    }
}

fn parse_uid_gid(s: &str) -> Result<(u32, u32), String> {
    let (u, g) = s.split_once(':').ok_or("expected uid:gid")?;
    Ok((
        u.parse().map_err(|_| "bad uid")?,
        g.parse().map_err(|_| "bad gid")?,
    ))
}

/// `rundmc agent` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Directory of Container manifests to keep running.
    #[arg(long, default_value = "/etc/rundmc/manifests")]
    pub manifests: PathBuf,
    /// The depot: one OCI bundle per container. The source of truth.
    #[arg(long, default_value = "/var/lib/rundmc/depot")]
    pub depot: PathBuf,
    /// Where status files and the event log go.
    #[arg(long, default_value = "/run/rundmc")]
    pub state_dir: PathBuf,
    /// The OCI runtime's state root (its --root).
    #[arg(long, default_value = "/run/rundmc/runc")]
    pub runtime_root: PathBuf,
    /// The OCI runtime binary: runc, crun, or a path.
    #[arg(long, default_value = "runc")]
    pub runtime: PathBuf,
    /// This node's name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Reconcile everything this often, to catch what events miss.
    #[arg(long, default_value = "30s")]
    pub resync_period: humantime::Duration,
    /// List the manifest directory in full this often, besides watching it.
    #[arg(long, default_value = "20s")]
    pub relist_period: humantime::Duration,
    /// Containers reconciled in parallel.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The cgroup under which every container's cgroup is made. It is
    /// rundmc's own: a cgroup under it that no container accounts for is
    /// taken for a lost container's, and its processes are killed.
    #[arg(long, default_value = "rundmc")]
    pub cgroup_parent: String,
    /// The cgroup supervisors move into once started, so that stopping the
    /// agent's service or pod never kills them (default: <cgroup-parent>-shims).
    #[arg(long)]
    pub shim_cgroup: Option<String>,
    /// rundmc-init (default: beside rundmc, then /usr/lib/rundmc).
    #[arg(long)]
    pub init_binary: Option<PathBuf>,
    /// rundmc-shim (default: beside rundmc, then /usr/lib/rundmc).
    #[arg(long)]
    pub shim_binary: Option<PathBuf>,
    /// Upper bound on any one runtime call.
    #[arg(long, default_value = "60s")]
    pub runtime_timeout: humantime::Duration,
    /// First crash-loop backoff delay (kubelet: 10s).
    #[arg(long, default_value = "10s")]
    pub crash_loop_initial: humantime::Duration,
    /// Largest crash-loop backoff delay (kubelet: 5m); a run twice as long resets it.
    #[arg(long, default_value = "5m")]
    pub crash_loop_max: humantime::Duration,
    /// Rotate a container's main-process log past this size (kubelet's
    /// containerLogMaxSize), e.g. 10Mi.
    #[arg(long, default_value = "10Mi", value_parser = parse_size)]
    pub container_log_max_size: u64,
    /// Log files kept per main process, the current one included (kubelet's
    /// containerLogMaxFiles).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub container_log_max_files: u32,
    /// Events kept in events.jsonl.
    #[arg(long, default_value_t = 1000)]
    pub events_keep: usize,
    /// Also run the Container resources whose spec.nodeName is this node.
    #[arg(long)]
    pub kube: bool,
    /// kubeconfig to use (default: KUBECONFIG, then in-cluster config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace the mirrors of file-sourced containers are published in.
    #[arg(long, default_value = "default", value_parser = parse_namespace)]
    pub mirror_namespace: String,
    /// Let resources from the API ask for privileged containers.
    #[arg(long)]
    pub allow_privileged: bool,
    // Seccomp (issue 15): Localhost profiles' root, and who may go without.
    /// Where `securityContext.seccompProfile.localhostProfile` paths are
    /// read from (relative to it, never above it).
    #[arg(long, default_value = crate::containerizer::seccomp::DEFAULT_PROFILE_ROOT)]
    pub seccomp_profile_root: PathBuf,
    /// Let resources from the API ask for `seccompProfile.type: Unconfined`
    /// (no seccomp filter).
    #[arg(long)]
    pub allow_unconfined_seccomp: bool,
    /// Host paths (and what is below them) that resources from the API may
    /// bind-mount, checked after resolving symlinks. Comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub allowed_host_paths: Vec<PathBuf>,
    /// Let resources from the API use the host's network namespace.
    #[arg(long)]
    pub allow_host_network: bool,
    /// CNI network configurations: containers join the first by file name
    /// unless their spec.network names another (or `none`).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugins are looked for, in order. Comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "/usr/lib/cni,/opt/cni/bin"
    )]
    pub cni_bin_dir: Vec<PathBuf>,
    /// What each attachment's DEL needs (libcni's cache of results).
    #[arg(long, default_value = "/var/lib/rundmc/cni")]
    pub cni_cache_dir: PathBuf,
    /// Upper bound on one CNI plugin's run.
    #[arg(long, default_value = "30s")]
    pub cni_plugin_timeout: humantime::Duration,
    /// Let resources from the API publish host ports under 1024.
    #[arg(long)]
    pub allow_privileged_ports: bool,
    /// Directories (and what is below them) that resources from the API may
    /// use as their rootfs image, checked after resolving symlinks.
    /// Comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "/var/lib/rundmc/rootfs")]
    pub allowed_rootfs_paths: Vec<PathBuf>,
    /// Hold manifest files to the same admission as resources (by default
    /// the node's own directory is trusted).
    #[arg(long)]
    pub admit_files: bool,
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 0.0.0.0:9710).
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The image store: unpacked layers, shared by every container.
    #[arg(long, default_value = "/var/lib/rundmc/images")]
    pub image_store: PathBuf,
    /// How the node reaches registries.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Registries (`HOST[:PORT]`, `docker.io` for Docker Hub) that
    /// containers may pull from; all when empty. Comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub allowed_registries: Vec<String>,
    /// Collect unused images when the store's disk is this full, in percent
    /// (kubelet's imageGCHighThresholdPercent).
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub image_gc_high_threshold: u8,
    /// ...down to this, in percent (kubelet's imageGCLowThresholdPercent).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..100))]
    pub image_gc_low_threshold: u8,
    /// Never collect an image pulled or used more recently than this
    /// (kubelet's imageMinimumGCAge).
    #[arg(long, default_value = "2m")]
    pub image_minimum_gc_age: humantime::Duration,
    // -- lock (issue 20): one agent per depot and state directory --
    /// When another agent holds the depot's or the state directory's lock,
    /// wait up to this long (e.g. 2m) for it to exit, then take over;
    /// without it, the agent refuses to start.
    #[arg(long, value_name = "DURATION")]
    pub wait_for_lock: Option<humantime::Duration>,

    // securityContext admission (secctx).
    /// Capabilities (`NET_ADMIN`, or `ALL`) that resources from the API may
    /// add beyond the default set. Comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_capability)]
    pub allowed_capabilities: Vec<String>,
    /// Namespaced sysctls off the kubelet's safe list that resources from
    /// the API may set: names or prefixes ending in `*` (`kernel.msg*`),
    /// as the kubelet's --allowed-unsafe-sysctls. Comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_sysctl_pattern)]
    pub allowed_unsafe_sysctls: Vec<String>,

    // --- User namespaces (spec.hostUsers) ---
    /// Host ids the agent gives user-namespaced containers (`hostUsers:
    /// false`) 65,536 at a time, as FIRST:COUNT, both multiples of 65536.
    /// The default is the kubelet's: 110 containers' worth from 65536.
    #[arg(long, default_value = "65536:7208960")]
    pub userns_range: crate::containerizer::userns::IdRange,
    /// What a container whose spec leaves `hostUsers` unset gets: `true`
    /// (the node's user namespace, as Kubernetes), or `false` (one of its
    /// own, as Garden; privileged and hostNetwork containers still get the
    /// node's).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub host_users_default: bool,

    // --- Operator access (issue 18): the local API ---
    /// The API socket; set from the global `--api-socket`, else
    /// `<state-dir>/rundmc.sock`.
    #[arg(skip)]
    pub api_socket: Option<PathBuf>,
    /// The group (name or gid) that may use the API socket besides root.
    #[arg(long, value_name = "GROUP")]
    pub api_group: Option<String>,

    // --- Operator access from kubectl (issue 18): the remote API ---
    /// Serve `kubectl rundmc logs|exec|attach` over HTTPS on ADDR:PORT
    /// (off without it; needs --kube, --remote-api-tls-cert and -key).
    /// Callers are authenticated by TokenReview and authorised by
    /// SubjectAccessReview, as by the kubelet (docs/security.md).
    #[arg(long, value_name = "ADDR:PORT", requires_all = ["remote_api_tls_cert", "remote_api_tls_key"])]
    pub remote_api_listen: Option<std::net::SocketAddr>,
    /// The remote API's serving certificate (PEM, the chain from the leaf).
    #[arg(long, value_name = "FILE")]
    pub remote_api_tls_cert: Option<PathBuf>,
    /// The serving certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub remote_api_tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates authenticate as their subject's
    /// CN (user) and O (groups); without it only bearer tokens do.
    #[arg(long, value_name = "FILE")]
    pub remote_api_client_ca: Option<PathBuf>,
    /// An audience a bearer token must be meant for (TokenReview
    /// `audiences`). Repeatable; none: the API server's own audiences.
    #[arg(long, value_name = "AUDIENCE")]
    pub remote_api_token_audience: Vec<String>,
}

/// A capability name for `--allowed-capabilities`.
fn parse_capability(name: &str) -> Result<String, String> {
    match crate::api::capability::parse(name) {
        Some(_) => Ok(name.to_string()),
        None => Err(format!(
            "{name:?} is not a capability: a name such as NET_ADMIN (capabilities(7)), or ALL"
        )),
    }
}

/// A pattern for `--allowed-unsafe-sysctls`.
fn parse_sysctl_pattern(pattern: &str) -> Result<String, String> {
    crate::api::sysctl::check_pattern(pattern).map(|()| pattern.to_string())
}

impl AgentArgs {
    /// The node name, defaulting to the hostname.
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        })
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_rfc1123_labels() {
        for good in ["default", "rundmc-system", "a", "x1"] {
            assert_eq!(parse_namespace(good).as_deref(), Ok(good));
        }
        for bad in ["", "Default", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(parse_namespace(bad).is_err(), "{bad:?}");
        }
        let err = Cli::try_parse_from(["rundmc", "agent", "--mirror-namespace", "Kube_System"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--mirror-namespace")
                && err.contains("\"Kube_System\" is not a namespace name"),
            "{err}"
        );
    }

    #[test]
    fn sizes_are_quantities_of_at_least_1ki() {
        assert_eq!(parse_size("10Mi"), Ok(10 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("512").unwrap_err().contains("minimum of 1Ki"));
        assert!(parse_size("lots").is_err());
    }
}
