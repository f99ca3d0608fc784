//! The `rundmc` binary: parse the command line and hand over to the library.

use anyhow::Context;
use clap::Parser;
use rundmc::cli::{Cli, Command, LogFormat, NstarDirection, ops};
use rundmc::containerizer::nstar;

fn main() -> anyhow::Result<()> {
    rundmc_shim::abort_on_panic();
    if invoked_as_kubectl_plugin() {
        let plugin = rundmc::cli::kubectl::PluginCli::parse();
        std::process::exit(kubectl(&plugin.args));
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Agent(mut args) => {
            bound_heap_retention();
            init_logging(args.log_format, "info");
            args.api_socket = cli.api_socket.clone();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime
                .block_on(rundmc::cli::agent::run(*args))
                .context("rundmc agent")?;
            // Exit-watch tasks may still wait on supervisors: do not wait for them.
            runtime.shutdown_background();
            Ok(())
        }
        Command::Image(args) => {
            // A command's output is its own: the library's logs only when asked (RUST_LOG).
            init_logging(LogFormat::Text, "warn");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            if let Err(e) = runtime.block_on(rundmc::cli::image::run(args)) {
                eprintln!("rundmc image: {e}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Ps(_)
        | Command::Get(_)
        | Command::Describe(_)
        | Command::Logs(_)
        | Command::Exec(_)
        | Command::Cp(_)
        | Command::Attach(_)
        | Command::Stats(_)
        | Command::Events(_) => {
            init_logging(LogFormat::Text, "warn");
            let code = operator(cli);
            std::process::exit(code);
        }
        Command::Kubectl(args) => std::process::exit(kubectl(&args)),
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "rundmc", &mut std::io::stdout());
            Ok(())
        }
        Command::Crd(args) => {
            print!(
                "{}",
                rundmc::api::crd::crd_yaml(args.kube_version).context("rendering the CRD")?
            );
            Ok(())
        }
        // Runs before any thread exists: setns(CLONE_NEWNS) needs that.
        Command::Nstar(args) => {
            let direction = match args.direction {
                NstarDirection::In => nstar::Direction::In,
                NstarDirection::Out => nstar::Direction::Out,
            };
            // The agent shows stderr to the user: one line, no backtrace.
            if let Err(e) = nstar::run(direction, args.pid, &args.path, args.user) {
                eprintln!("{e}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Run an operator verb against the agent's API; its exit code.
fn operator(cli: Cli) -> i32 {
    let client = ops::client::Client::new(ops::socket(cli.api_socket));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rundmc: cannot start the async runtime: {e}");
            return ops::client::EXIT_FAILED;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Ps(a) => ops::ps(&client, a).await.map(|()| 0),
            Command::Get(a) => ops::get(&client, a).await.map(|()| 0),
            Command::Describe(a) => ops::describe(&client, a).await.map(|()| 0),
            Command::Logs(a) => ops::logs::logs(&client, a).await.map(|()| 0),
            Command::Exec(a) => ops::exec::exec(&client, a).await,
            Command::Cp(a) => ops::cp::cp(&client, a).await.map(|()| 0),
            Command::Attach(a) => ops::watch::attach(&client, a).await,
            Command::Stats(a) => ops::watch::stats(&client, a).await.map(|()| 0),
            Command::Events(a) => ops::watch::events(&client, a).await.map(|()| 0),
            _ => Ok(0),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rundmc: {e}");
            e.exit_code()
        }
    }
}

/// Whether this binary runs as `kubectl-rundmc` (kubectl's plugin name, a
/// symlink or a copy), issue 18.
fn invoked_as_kubectl_plugin() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "kubectl-rundmc"))
        .unwrap_or(false)
}

/// `kubectl rundmc ...`: its exit code.
fn kubectl(args: &rundmc::cli::kubectl::KubectlArgs) -> i32 {
    init_logging(LogFormat::Text, "warn");
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(rundmc::cli::kubectl::run(args)),
        Err(e) => {
            eprintln!("kubectl-rundmc: cannot start the async runtime: {e}");
            ops::client::EXIT_FAILED
        }
    }
}

/// Log to stderr, as text or JSON, filtered by RUST_LOG (default: `level`).
fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Fixes glibc's mmap threshold at its default, 128 KiB. Left dynamic, it
/// grows with every large block freed, and the trim threshold with it (to
/// 64 MiB), so the heap a burst frees stays resident: with 1,000 containers
/// made at once the agent kept about 20 MiB it no longer used (issue 19).
fn bound_heap_retention() {
    // SAFETY: mallopt takes a documented parameter and a value; it runs
    // before any other thread exists.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
}
