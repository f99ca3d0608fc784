//! The `rundmc` command line: its subcommands and flags. Parsing only; each
//! subcommand's work lives in the room that owns it, and `main` wires them.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// rundmc keeps this machine's containers equal to what is declared for it.
#[derive(Debug, Parser)]
#[command(name = "rundmc", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the Container CustomResourceDefinition as YAML.
    Crd,
    /// Stream a tar into or out of a container's mount namespace (internal).
    #[command(hide = true)]
    Nstar(NstarArgs),
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

fn parse_uid_gid(s: &str) -> Result<(u32, u32), String> {
    let (u, g) = s.split_once(':').ok_or("expected uid:gid")?;
    Ok((
        u.parse().map_err(|_| "bad uid")?,
        g.parse().map_err(|_| "bad gid")?,
    ))
}
