//! The `rundmc` binary: parse the command line and hand over to the library.

use anyhow::Context;
use clap::Parser;
use rundmc::cli::{Cli, Command, NstarDirection};
use rundmc::containerizer::nstar;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!(
                "{}",
                rundmc::api::crd::crd_yaml().context("rendering the CRD")?
            );
            Ok(())
        }
        // Runs before any thread exists: setns(CLONE_NEWNS) needs that.
        Command::Nstar(args) => {
            let direction = match args.direction {
                NstarDirection::In => nstar::Direction::In,
                NstarDirection::Out => nstar::Direction::Out,
            };
            nstar::run(direction, args.pid, &args.path, args.user).context("nstar")?;
            Ok(())
        }
    }
}
