//! `rundmc-shim`: the supervisor of one process of a rundmc container. It
//! runs the runtime's detached exec, adopts the process, owns its stdio and
//! logs, carries out signals, and records how it ended. See
//! `rundmc_shim::protocol` for the files it shares with the agent.

mod supervisor;

fn main() {
    rundmc_shim::abort_on_panic();
    match supervisor::args::parse(std::env::args_os().skip(1)) {
        Ok(args) => supervisor::start(args),
        Err(e) => {
            eprintln!("rundmc-shim: {e}\n{}", supervisor::args::USAGE);
            std::process::exit(2);
        }
    }
}
