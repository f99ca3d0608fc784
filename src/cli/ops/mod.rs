//! The operator's verbs: `ps`, `get`, `describe`, `logs`, `exec`, ...
//! They talk only to the agent's local API (docs/api.md), never to runc
//! or the depot, so they see what the agent sees and need only the
//! socket's permission.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use clap::ValueEnum;

pub mod client;
pub mod cp;
pub mod exec;
pub mod logs;
pub mod show;
pub mod watch;

pub(crate) use crate::server::local::escape;
use crate::server::local::wire::{Detail, Summary};
use client::{Client, ClientError};

/// `rundmc ps [-a] [-o wide|json|yaml]`.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Every container, not only the live ones (also the finished, the
    /// stopped, the invalid and the undeclared).
    #[arg(long, short)]
    pub all: bool,
    /// Output format (default: a table).
    #[arg(long, short, value_enum)]
    pub output: Option<PsFormat>,
}

/// How `ps` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PsFormat {
    /// The table with the handle, source and image.
    Wide,
    /// A JSON array.
    Json,
    /// A YAML list.
    Yaml,
}

/// `rundmc get NAME [-o yaml|json]`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The container: a file-sourced container's name, or `namespace/name`.
    pub name: String,
    /// Output format (default: the `ps` row).
    #[arg(long, short, value_enum)]
    pub output: Option<GetFormat>,
}

/// How `get` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetFormat {
    /// The resource, as YAML.
    Yaml,
    /// The resource, as JSON.
    Json,
}

/// `rundmc describe NAME`.
#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// The container: a file-sourced container's name, or `namespace/name`.
    pub name: String,
}

/// The API path of container `name`.
pub fn container_path(name: &str) -> String {
    format!("/v1/containers/{}", escape(name))
}

/// The socket the CLI uses: the flag or `RUNDMC_API_SOCKET` (clap reads
/// both), else the default.
pub fn socket(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| PathBuf::from(client::DEFAULT_SOCKET))
}

fn colour() -> bool {
    show::use_colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR"),
    )
}

/// Write `text` to stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// `rundmc ps`.
pub async fn ps(client: &Client, args: &PsArgs) -> Result<(), ClientError> {
    let path = format!("/v1/containers?all={}", args.all);
    let rows: Vec<Summary> = client.get_json(&path).await?;
    let text = match args.output {
        None => show::ps_table(&rows, false, colour(), SystemTime::now()),
        Some(PsFormat::Wide) => show::ps_table(&rows, true, colour(), SystemTime::now()),
        Some(PsFormat::Json) => serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n",
        Some(PsFormat::Yaml) => show::yaml(&rows),
    };
    print(&text);
    Ok(())
}

/// `rundmc get`.
pub async fn get(client: &Client, args: &GetArgs) -> Result<(), ClientError> {
    let detail: Detail = client.get_json(&container_path(&args.name)).await?;
    let text = match args.output {
        None => show::ps_table(&[detail.summary], false, colour(), SystemTime::now()),
        Some(GetFormat::Json) => {
            serde_json::to_string_pretty(&show::resource(&detail)).unwrap_or_default() + "\n"
        }
        Some(GetFormat::Yaml) => show::yaml(&show::resource(&detail)),
    };
    print(&text);
    Ok(())
}

/// `rundmc describe`.
pub async fn describe(client: &Client, args: &DescribeArgs) -> Result<(), ClientError> {
    let detail: Detail = client.get_json(&container_path(&args.name)).await?;
    print(&show::describe(&detail, SystemTime::now()));
    Ok(())
}
