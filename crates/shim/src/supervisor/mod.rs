//! The supervisor's life, from detaching to the last `exit.json`; the file
//! protocol is documented in `rundmc_shim::protocol`.

pub mod args;
mod leftovers;
mod output;
mod pump;
mod sys;

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Command as Cmd, ExitStatus, Stdio};

use rundmc_shim::atomic::{self, Durability};
use rundmc_shim::procstat;
use rundmc_shim::protocol::{
    CONTROL_FIFO, EXIT_JSON, ExitRecord, PID_FILE, RUNTIME_LOG, Ready, SHIM_JSON,
    START_ERROR_EXIT_CODE, STDIN_FIFO, ShimRecord, last_runtime_error,
};
use rundmc_shim::status::{Ending, signal_name};

use args::Args;
use output::{LogWriter, now};
use pump::{Pump, StdinRelay};

/// Forks away from the launcher and supervises; never returns.
pub fn start(args: Args) -> ! {
    match sys::fork() {
        Ok(false) => sys::exit_now(0),
        Ok(true) => {}
        Err(e) => {
            ready(&Ready::Failed {
                message: format!("rundmc-shim: fork: {e}"),
            });
            sys::exit_now(1);
        }
    }
    let code = match supervise(&args) {
        Ok(()) => 0,
        Err(Failure::Start(message)) => {
            eprintln!("rundmc-shim: {message}");
            let message = end_leftovers(message);
            ready(&Ready::Failed {
                message: message.clone(),
            });
            let record = exit_record_for_start_error(message);
            if let Err(e) = write_atomic(&args.dir, EXIT_JSON, &record) {
                eprintln!("rundmc-shim: writing {EXIT_JSON}: {e}");
            }
            1
        }
        Err(Failure::Supervise(e)) => {
            eprintln!("rundmc-shim: {e}");
            1
        }
    };
    sys::reap_exited_children();
    sys::exit_now(code)
}

/// After a failed start and before the agent hears of it (it answers with
/// another start): nothing the runtime started may run beside that one.
/// The message says what was killed, so the failure is told as it was.
fn end_leftovers(message: String) -> String {
    let killed = leftovers::kill_children();
    if killed.is_empty() {
        return message;
    }
    eprintln!("rundmc-shim: killed what the failed start left running: {killed:?}");
    format!("{message} (it left pids {killed:?} running: killed)")
}

enum Failure {
    /// The process did not start; the message says why.
    Start(String),
    /// Supervising a started process failed.
    Supervise(io::Error),
}

fn start_err(what: &str) -> impl FnOnce(io::Error) -> Failure + '_ {
    move |e| Failure::Start(format!("{what}: {e}"))
}

fn supervise(args: &Args) -> Result<(), Failure> {
    sys::detach().map_err(start_err("setsid/subreaper"))?;
    let record = ShimRecord {
        pid: std::process::id() as i32,
        start_time: procstat::own_start_time().map_err(start_err("reading /proc/self/stat"))?,
        log_dir: args.log_dir.clone(),
    };
    write_atomic(&args.dir, SHIM_JSON, &record).map_err(start_err("writing shim.json"))?;
    let oom_before = args.oom_file.as_deref().and_then(read_oom_kills);

    let (mut pump, child_stdio) = open_stdio(args).map_err(start_err("setting up stdio"))?;
    let status = run_runtime(
        &args.runtime_argv,
        child_stdio,
        &args.join_cgroups,
        &mut pump,
    )?;
    if !status.success() {
        let _ = pump.drain();
        let log = fs::read_to_string(args.dir.join(RUNTIME_LOG)).unwrap_or_default();
        let message =
            last_runtime_error(&log).unwrap_or_else(|| format!("runtime exited with {status}"));
        return Err(Failure::Start(message));
    }
    let pid =
        read_pid(&args.dir.join(PID_FILE)).map_err(start_err("reading the runtime's pid file"))?;
    let pidfd = sys::pidfd_open(pid).map_err(start_err("pidfd_open on the process"))?;
    ready(&Ready::Started { pid });

    pump.run_until(pidfd.as_fd(), Some(pidfd.as_fd()))
        .map_err(Failure::Supervise)?;
    let ending = sys::wait_pidfd(pidfd.as_fd()).map_err(Failure::Supervise)?;
    pump.drain().map_err(Failure::Supervise)?;
    // Let go of the control fifo before the exit is recorded: whoever sees
    // the record and then signals finds no reader, and is told the process
    // is not running.
    drop(pump);
    let oom_after = args.oom_file.as_deref().and_then(read_oom_kills);
    let record = exit_record(ending, oom_before, oom_after);
    write_atomic(&args.dir, EXIT_JSON, &record).map_err(Failure::Supervise)
}

/// Moves the supervisor into the given cgroups, out of the agent's: stopping
/// the agent's service or pod, which kills that cgroup, leaves it be (the
/// runtime's exec, forked just before, stays behind; it only lives until the
/// process runs). A failure is logged and not fatal: the process runs all
/// the same.
fn join_cgroups(procs_files: &[std::path::PathBuf]) {
    let pid = std::process::id().to_string();
    for file in procs_files {
        if let Err(e) = fs::write(file, &pid) {
            eprintln!(
                "rundmc-shim: joining {}: {e}; staying in the agent's cgroup there",
                file.display()
            );
        }
    }
}

/// The process's ends of its stdio, handed to the runtime.
struct ChildStdio {
    stdin: Stdio,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

fn open_stdio(args: &Args) -> io::Result<(Pump, ChildStdio)> {
    let (out_r, out_w) = sys::pipe()?;
    let (err_r, err_w) = sys::pipe()?;
    sys::set_nonblocking(out_r.as_fd())?;
    sys::set_nonblocking(err_r.as_fd())?;
    let control = fifo(&args.dir.join(CONTROL_FIFO), libc::O_RDWR)?;
    let (stdin, relay) = if args.stdin {
        // Read-write, the shim is a writer too: the fifo never reads end of
        // file, so attach sessions come and go (a restarted agent's too).
        let mode = match args.keep_stdin_open {
            true => libc::O_RDWR,
            false => libc::O_RDONLY,
        };
        let fifo = fifo(&args.dir.join(STDIN_FIFO), mode)?;
        let (in_r, in_w) = sys::pipe()?;
        sys::set_nonblocking(in_w.as_fd())?;
        (Stdio::from(in_r), Some(StdinRelay::new(fifo, in_w)))
    } else {
        (Stdio::null(), None)
    };
    let log = LogWriter::open(args.log_dir(), args.log_max_bytes, args.log_max_files)?;
    let pump = Pump::new(log, out_r, err_r, control, relay);
    Ok((
        pump,
        ChildStdio {
            stdin,
            stdout: out_w,
            stderr: err_w,
        },
    ))
}

fn fifo(path: &Path, mode: libc::c_int) -> io::Result<OwnedFd> {
    sys::mkfifo(path)
        .map_err(|e| io::Error::new(e.kind(), format!("mkfifo {}: {e}", path.display())))?;
    sys::open(path, mode | libc::O_NONBLOCK)
}

/// Runs the runtime's detached exec, serving output meanwhile, and reaps it.
/// Runs the runtime's detached exec and serves its output until it exits.
/// The supervisor joins its cgroups (`join`) while the runtime works: off
/// the path to the process running, and within a millisecond of its fork.
fn run_runtime(
    argv: &[OsString],
    stdio: ChildStdio,
    join: &[std::path::PathBuf],
    pump: &mut Pump,
) -> Result<ExitStatus, Failure> {
    let mut child = Cmd::new(&argv[0])
        .args(&argv[1..])
        .stdin(stdio.stdin)
        .stdout(stdio.stdout)
        .stderr(stdio.stderr)
        .spawn()
        .map_err(|e| Failure::Start(format!("cannot run {}: {e}", argv[0].to_string_lossy())))?;
    // The Command held the only other copies of the pipes' child ends.
    let pidfd =
        sys::pidfd_open(child.id() as i32).map_err(start_err("pidfd_open on the runtime"))?;
    join_cgroups(join);
    pump.run_until(pidfd.as_fd(), None)
        .map_err(start_err("serving output"))?;
    child.wait().map_err(start_err("waiting for the runtime"))
}

fn read_pid(path: &Path) -> io::Result<i32> {
    let text = fs::read_to_string(path)?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("not a pid: {text:?}")))
}

/// The `oom_kill N` counter of a cgroup v1 `memory.oom_control` or v2 `memory.events`.
fn read_oom_kills(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    parse_oom_kills(&text)
}

fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

fn exit_record(ending: Ending, oom_before: Option<u64>, oom_after: Option<u64>) -> ExitRecord {
    let oom_grew = matches!((oom_before, oom_after), (Some(b), Some(a)) if a > b)
        || matches!((oom_before, oom_after), (None, Some(a)) if a > 0);
    ExitRecord {
        exit_code: ending.exit_code(),
        signal: ending.signal(),
        signal_name: ending.signal().map(signal_name),
        oom_killed: ending.signal() == Some(libc::SIGKILL) && oom_grew,
        finished_at: now(),
        start_error: None,
    }
}

fn exit_record_for_start_error(message: String) -> ExitRecord {
    ExitRecord {
        exit_code: START_ERROR_EXIT_CODE,
        signal: None,
        signal_name: None,
        oom_killed: false,
        finished_at: now(),
        start_error: Some(message),
    }
}

/// Writes the Ready line to the launcher's stdout and lets go of it.
fn ready(line: &Ready) {
    if let Ok(mut text) = serde_json::to_vec(line) {
        text.push(b'\n');
        let _ = io::stdout().lock().write_all(&text);
    }
    if let Err(e) = sys::redirect_to_null(1) {
        eprintln!("rundmc-shim: closing stdout: {e}");
    }
}

/// Writes `value` as JSON to `dir/name` atomically. Never fsynced:
/// `shim.json` and `exit.json` describe processes a reboot ends, and the
/// agent recreates their containers after one; an fsync would only add
/// milliseconds to starts and exits.
fn write_atomic(dir: &Path, name: &str, value: &impl serde::Serialize) -> io::Result<()> {
    let bytes = serde_json::to_vec(value)?;
    atomic::write(&dir.join(name), &bytes, Durability::Volatile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_oom_kill_from_v1_and_v2_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 5\noom 3\noom_kill 3\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(v1), Some(2));
        assert_eq!(parse_oom_kills(v2), Some(3));
        assert_eq!(parse_oom_kills("oom 1\n"), None);
    }

    #[test]
    fn oom_killed_needs_sigkill_and_a_grown_counter() {
        let kill = Ending::Killed(libc::SIGKILL);
        assert!(exit_record(kill, Some(1), Some(2)).oom_killed);
        assert!(!exit_record(kill, Some(2), Some(2)).oom_killed);
        assert!(!exit_record(kill, None, None).oom_killed);
        assert!(!exit_record(Ending::Killed(libc::SIGTERM), Some(0), Some(1)).oom_killed);
        let term = exit_record(Ending::Killed(libc::SIGTERM), None, None);
        assert_eq!(
            (term.exit_code, term.signal_name.as_deref()),
            (143, Some("SIGTERM"))
        );
        assert_eq!(exit_record(Ending::Exited(3), None, None).exit_code, 3);
    }
}
