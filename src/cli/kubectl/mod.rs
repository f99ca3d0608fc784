//! `kubectl rundmc logs|exec|attach` (the `kubectl-rundmc` plugin: this binary
//! under that name, or `rundmc kubectl ...`): read a `Container` resource
//! with the user's kubeconfig, find the node its agent runs on, and reach
//! that agent's remote API, directly (the node's address, the user's
//! bearer token) or through the API server's node proxy
//! (`--via-apiserver`). The agent decides who may do what, by TokenReview
//! and SubjectAccessReview; docs/security.md has the trust model.

use std::path::PathBuf;

use thiserror::Error;

pub mod connect;

use super::ops::client::{EXIT_FAILED, EXIT_NOT_FOUND, EXIT_PERMISSION};
use super::ops::exec::ExecArgs;
use super::ops::logs::LogsArgs;
use super::ops::watch::AttachArgs;

/// The remote API's port when neither `--port` nor `--address` says
/// (the chart's default).
pub const DEFAULT_PORT: u16 = 10260;

/// `kubectl-rundmc`, as kubectl runs it.
#[derive(Debug, clap::Parser)]
#[command(
    name = "kubectl-rundmc",
    version,
    about = "kubectl access to rundmc Containers"
)]
pub struct PluginCli {
    /// What to do.
    #[command(flatten)]
    pub args: KubectlArgs,
}

/// `rundmc kubectl [flags] logs|exec|attach ...`.
#[derive(Debug, clap::Args)]
pub struct KubectlArgs {
    /// The verb.
    #[command(subcommand)]
    pub verb: Verb,
    /// Where to reach the agent, and as whom.
    #[command(flatten)]
    pub how: Access,
}

/// How the plugin reaches the agent.
#[derive(Debug, Clone, clap::Args)]
pub struct Access {
    /// The kubeconfig (default: KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The Container's namespace (default: the context's), unless NAME is `NS/NAME`.
    #[arg(long, short, global = true)]
    pub namespace: Option<String>,
    /// Go through the API server's node proxy (`nodes/proxy`) instead of
    /// connecting to the node.
    #[arg(long, global = true)]
    pub via_apiserver: bool,
    /// The agent's remote API port on the node.
    #[arg(long, global = true, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Connect to HOST:PORT instead of the node's address (direct access).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub address: Option<String>,
    /// CA (PEM) that signed the agent's serving certificate (default: the
    /// kubeconfig cluster's CA).
    #[arg(long, global = true, value_name = "FILE")]
    pub certificate_authority: Option<PathBuf>,
    /// The bearer token to present to the agent (default: the kubeconfig user's).
    #[arg(
        long,
        global = true,
        env = "KUBECTL_RUNDMC_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// The plugin's verbs.
#[derive(Debug, clap::Subcommand)]
pub enum Verb {
    /// Print a Container's log (`-f` to follow).
    Logs(LogsArgs),
    /// Run a command in a Container (`-it` for a shell).
    Exec(ExecArgs),
    /// Follow a Container's main process (`-i` to feed its stdin).
    Attach(AttachArgs),
}

/// What went wrong.
#[derive(Debug, Error)]
pub enum PluginError {
    /// No usable kubeconfig.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// The API server refused or failed a request.
    #[error("{what}: {source}")]
    Kube {
        /// What was asked.
        what: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// The Container names no node, or the node no address.
    #[error("{0}")]
    NoNode(String),
    /// The TLS settings are unusable, or a file unreadable.
    #[error("{0}")]
    Setup(String),
    /// The agent could not be reached.
    #[error("cannot reach the rundmc agent at {address}: {message}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        message: String,
    },
    /// The agent refused the request.
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The agent's (or the API server's) reason.
        message: String,
    },
    /// The stream failed midway.
    #[error("talking to the rundmc agent: {0}")]
    Protocol(String),
}

impl PluginError {
    /// The exit code this error ends the plugin with.
    pub fn exit_code(&self) -> i32 {
        match self {
            PluginError::Refused {
                status: 401 | 403, ..
            } => EXIT_PERMISSION,
            PluginError::Refused { status: 404, .. } => EXIT_NOT_FOUND,
            PluginError::Kube {
                source: kube::Error::Api(e),
                ..
            } if e.code == 404 => EXIT_NOT_FOUND,
            PluginError::Kube {
                source: kube::Error::Api(e),
                ..
            } if e.code == 401 || e.code == 403 => EXIT_PERMISSION,
            _ => EXIT_FAILED,
        }
    }
}

/// `NS/NAME`, or NAME in `namespace` (pure).
pub fn split_name(name: &str, namespace: &str) -> Result<(String, String), PluginError> {
    let (ns, n) = name.split_once('/').unwrap_or((namespace, name));
    match (ns.is_empty(), n.is_empty() || n.contains('/')) {
        (false, false) => Ok((ns.to_string(), n.to_string())),
        _ => Err(PluginError::Setup(format!(
            "{name:?}: name a Container as NAME (with -n NAMESPACE) or NAMESPACE/NAME"
        ))),
    }
}

/// Run the plugin; its exit code.
pub async fn run(args: &KubectlArgs) -> i32 {
    let result = match &args.verb {
        Verb::Logs(a) => logs(&args.how, a).await.map(|()| 0),
        Verb::Exec(a) => exec(&args.how, a).await,
        Verb::Attach(a) => attach(&args.how, a).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kubectl-rundmc: {e}");
            e.exit_code()
        }
    }
}

async fn logs(how: &Access, args: &LogsArgs) -> Result<(), PluginError> {
    let agent = connect::Agent::find(how, &args.name).await?;
    let query = super::ops::logs::logs_path(args)
        .split_once('?')
        .map(|(_, q)| q.to_string())
        .unwrap_or_default();
    agent.logs(&query, args.timestamps).await
}

async fn exec(how: &Access, args: &ExecArgs) -> Result<i32, PluginError> {
    use std::io::IsTerminal;
    if args.tty && !std::io::stdin().is_terminal() {
        return Err(PluginError::Setup("-t needs a terminal on stdin".into()));
    }
    let agent = connect::Agent::find(how, &args.name).await?;
    agent.exec(args).await
}

async fn attach(how: &Access, args: &AttachArgs) -> Result<i32, PluginError> {
    let agent = connect::Agent::find(how, &args.name).await?;
    agent.attach(args).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_take_a_namespace_or_the_default() {
        let ok = |n: &str| split_name(n, "dflt").unwrap();
        assert_eq!(ok("web"), ("dflt".into(), "web".into()));
        assert_eq!(ok("team/web"), ("team".into(), "web".into()));
        for bad in ["", "/web", "team/", "a/b/c"] {
            assert!(split_name(bad, "dflt").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refusals_exit_with_no_permission() {
        let refused = |status| PluginError::Refused {
            status,
            message: String::new(),
        };
        assert_eq!(refused(403).exit_code(), EXIT_PERMISSION);
        assert_eq!(refused(401).exit_code(), EXIT_PERMISSION);
        assert_eq!(refused(404).exit_code(), EXIT_NOT_FOUND);
        assert_eq!(refused(500).exit_code(), EXIT_FAILED);
    }
}
