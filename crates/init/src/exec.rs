//! One request, in a process init forked for it (the handler): read and
//! decode the request, fork the command, give it the requested user and
//! working directory, put the connection on its stdin, stdout and stderr,
//! and exec it; then wait for it within the timeout, kill whatever it left
//! behind, and write the trailer.
//!
//! Confinement is inherited, not rebuilt: the handler is a child of the
//! container's init, so the command is in every namespace and the cgroup of
//! the container, under its seccomp filter, LSM profile, no_new_privs,
//! rlimits and capability bounding set. Only the user is changed (the main
//! process's, as the agent asks), keeping the container's capabilities as
//! the runtime's exec would.
//!
//! The handler is a child subreaper: a daemon the command forks, even one
//! that starts its own session, is re-parented to the handler rather than to
//! init, and is killed before the trailer is written, so nothing a command
//! started outlives the request.

use crate::static_buf::Static;
use crate::sys;
use rundmc_init::{
    self as protocol, HEADER_LEN, Kind, MAX_ARGS, MAX_BODY, MAX_ENV, Request, Stage,
};

/// The request's body.
static BODY: Static<[u8; MAX_BODY]> = Static::new([0; MAX_BODY]);
/// The command's argv, null-terminated.
static ARGV: Static<[usize; MAX_ARGS + 1]> = Static::new([0; MAX_ARGS + 1]);
/// The command's environment, null-terminated.
static ENVP: Static<[usize; MAX_ENV + 1]> = Static::new([0; MAX_ENV + 1]);
/// Where a `PATH` entry and the command's name are joined.
static PATH_BUF: Static<[u8; 4096]> = Static::new([0; 4096]);
/// The text of `/proc/<pid>/task/<pid>/children`.
static CHILDREN: Static<[u8; 4096]> = Static::new([0; 4096]);

/// `PATH` when the environment has none (runc's default).
const DEFAULT_PATH: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// A request must arrive within this many seconds of the connection.
const REQUEST_TIMEOUT_SECS: i64 = 10;
/// How long the sweep of a command's descendants may take.
const SWEEP_MS: i64 = 5000;

/// Serve one connection and exit.
pub fn handle(conn: i32) -> ! {
    // SAFETY: this process is single-threaded and this is the body's only
    // borrow, held until it exits.
    let body = unsafe { BODY.get() };
    let Some(request) = read_request(conn, body) else {
        finish(conn, Kind::BadRequest, 0);
    };
    sys::become_subreaper();
    let Some((report_rd, report_wr)) = sys::pipe() else {
        finish(conn, Kind::SetupFailed, (Stage::Stdio as i32) << 16);
    };
    let pid = sys::fork();
    if pid == 0 {
        sys::close(report_rd);
        start_command(&request, conn, report_wr);
    }
    sys::close(report_wr);
    if pid < 0 {
        finish(
            conn,
            Kind::SetupFailed,
            (Stage::Stdio as i32) << 16 | (-pid) as i32,
        );
    }
    // The command's setup reports a failure on the pipe; a successful exec
    // closes it (close-on-exec) and the read sees the end.
    let mut report = [0u8; 5];
    if sys::read_exact(report_rd, &mut report) {
        sys::wait(pid, 0);
        sweep(pid);
        let value = i32::from_le_bytes([report[1], report[2], report[3], report[4]]);
        let kind = if report[0] == 0 {
            Kind::ExecFailed
        } else {
            Kind::SetupFailed
        };
        let value = if report[0] == 0 {
            value
        } else {
            (report[0] as i32) << 16 | value
        };
        finish(conn, kind, value);
    }
    sys::close(report_rd);
    let (kind, value) = wait_for(pid, request.timeout_ms as i64);
    sweep(pid);
    finish(conn, kind, value)
}

/// Write the trailer and exit.
fn finish(conn: i32, kind: Kind, value: i32) -> ! {
    sys::write_all(conn, &protocol::trailer(kind, value));
    sys::exit(0)
}

/// The request, read within [`REQUEST_TIMEOUT_SECS`].
fn read_request(conn: i32, body: &mut [u8; MAX_BODY]) -> Option<Request<'_>> {
    sys::set_read_timeout(conn, REQUEST_TIMEOUT_SECS);
    let mut header = [0u8; HEADER_LEN];
    if !sys::read_exact(conn, &mut header) {
        return None;
    }
    let len = protocol::body_len(&header)?;
    if !sys::read_exact(conn, &mut body[..len]) {
        return None;
    }
    sys::set_read_timeout(conn, 0);
    protocol::parse(&body[..len])
}

/// How the command ended: its exit, or a timeout (it is then killed).
fn wait_for(pid: isize, timeout_ms: i64) -> (Kind, i32) {
    let deadline = sys::now_ms() + timeout_ms.max(1);
    loop {
        // Reap everything that has exited, the command or an orphan of it.
        loop {
            let (r, status) = sys::wait(-1, sys::WNOHANG);
            if r == pid {
                return decode_status(status);
            }
            if r <= 0 {
                break;
            }
        }
        let left = deadline - sys::now_ms();
        if left <= 0 {
            sys::kill(pid, sys::SIGKILL);
            sys::wait(pid, 0);
            return (Kind::TimedOut, 0);
        }
        let t = sys::Timespec {
            sec: left / 1000,
            nsec: (left % 1000) * 1_000_000,
        };
        sys::wait_for_signal(1 << (sys::SIGCHLD - 1), Some(&t));
    }
}

/// A wait status as (exited, code) or (signaled, signal).
fn decode_status(status: i32) -> (Kind, i32) {
    let signal = status & 0x7f;
    match signal {
        0 => (Kind::Exited, (status >> 8) & 0xff),
        _ => (Kind::Signaled, signal),
    }
}

/// Kill and reap every descendant the command left: its process group,
/// then whatever was re-parented to this subreaper, until none is left or
/// [`SWEEP_MS`] pass.
fn sweep(pid: isize) {
    sys::kill(-pid, sys::SIGKILL);
    let deadline = sys::now_ms() + SWEEP_MS;
    loop {
        kill_children();
        let (r, _) = sys::wait(-1, sys::WNOHANG);
        if r == -sys::ECHILD || sys::now_ms() > deadline {
            return;
        }
        if r == 0 {
            let t = sys::Timespec {
                sec: 0,
                nsec: 10_000_000,
            };
            sys::wait_for_signal(1 << (sys::SIGCHLD - 1), Some(&t));
        }
    }
}

/// SIGKILL every child listed in `/proc/<pid>/task/<pid>/children`.
fn kill_children() {
    // SAFETY: single-threaded; the only borrows, each ending here.
    let (path, text) = unsafe { (PATH_BUF.get(), CHILDREN.get()) };
    let mut len = 0;
    let me = sys::getpid();
    for part in [&b"/proc/"[..], b"", b"/task/", b"", b"/children\0"] {
        let digits;
        let part = if part.is_empty() {
            digits = decimal(me as u64);
            &digits.0[digits.1..]
        } else {
            part
        };
        path[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    let fd = sys::open_read(&path[..len]);
    if fd < 0 {
        return;
    }
    let n = sys::read(fd as i32, text);
    sys::close(fd as i32);
    let text = &text[..n.max(0) as usize];
    for word in text.split(|&b| b == b' ' || b == b'\n') {
        if let Some(child) = parse_decimal(word) {
            sys::kill(child as isize, sys::SIGKILL);
        }
    }
}

/// The decimal digits of `n`: a buffer and where they start in it.
fn decimal(mut n: u64) -> ([u8; 20], usize) {
    let mut out = [b'0'; 20];
    let mut i = 20;
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return (out, i);
        }
    }
}

fn parse_decimal(word: &[u8]) -> Option<u64> {
    if word.is_empty() || word.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &b in word {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (b - b'0') as u64;
    }
    Some(n)
}

/// In the command's process: set it up and exec it; on failure, write
/// (stage, errno) to `report` and exit 127. Stage 0 is the exec itself.
fn start_command(request: &Request<'_>, conn: i32, report: i32) -> ! {
    sys::unblock_all_signals();
    sys::setsid();
    if let Err((stage, errno)) = setup(request, conn) {
        fail(report, stage, errno);
    }
    // SAFETY: single-threaded; the only borrows of these buffers.
    let (argv, envp, path) = unsafe { (ARGV.get(), ENVP.get(), PATH_BUF.get()) };
    let mut strings = request.strings();
    let _cwd = strings.next();
    for (i, s) in strings.by_ref().take(request.argc()).enumerate() {
        argv[i] = s.as_ptr() as usize;
    }
    argv[request.argc()] = 0;
    let mut search = DEFAULT_PATH;
    for (i, s) in strings.take(request.envc()).enumerate() {
        envp[i] = s.as_ptr() as usize;
        if let Some(value) = s.strip_prefix(b"PATH=") {
            search = &value[..value.len() - 1];
        }
    }
    envp[request.envc()] = 0;
    let name = request.strings().nth(1).unwrap_or(b"\0");
    let errno = exec_searching(
        name,
        search,
        argv.as_ptr().cast(),
        envp.as_ptr().cast(),
        path,
    );
    fail(report, 0, errno)
}

/// Write (stage, errno) on the report pipe and exit.
fn fail(report: i32, stage: u8, errno: isize) -> ! {
    let e = (errno as i32).to_le_bytes();
    sys::write_all(report, &[stage, e[0], e[1], e[2], e[3]]);
    sys::exit(127)
}

/// The connection on stdin, stdout and stderr; the requested user with the
/// container's capabilities kept; the working directory.
fn setup(request: &Request<'_>, conn: i32) -> Result<(), (u8, isize)> {
    stdio(conn).map_err(|e| (Stage::Stdio as u8, e))?;
    switch_user(request)?;
    let cwd = request.strings().next().unwrap_or(b"/\0");
    check(sys::chdir(cwd), Stage::Cwd)
}

fn check(r: isize, stage: Stage) -> Result<(), (u8, isize)> {
    if r < 0 {
        Err((stage as u8, -r))
    } else {
        Ok(())
    }
}

/// Put `conn` on fds 0, 1 and 2 and close it.
fn stdio(conn: i32) -> Result<(), isize> {
    // Moved above 2 first, so that putting it on one of 0..2 cannot close it.
    let high = sys::dup_above(conn, 3);
    if high < 0 {
        return Err(-high);
    }
    for fd in 0..3 {
        let r = sys::dup_onto(high as i32, fd);
        if r < 0 {
            return Err(-r);
        }
    }
    sys::close(high as i32);
    sys::close(conn);
    Ok(())
}

/// Become the requested user when it is not who init runs as, keeping the
/// permitted capabilities and raising them effective again, as the
/// runtime's exec gives a process of the container's capability set.
fn switch_user(request: &Request<'_>) -> Result<(), (u8, isize)> {
    let (uid, gid) = sys::ids();
    let mut current = [0u32; protocol::MAX_GROUPS];
    let n = sys::getgroups(&mut current);
    let same_groups = n >= 0
        && n as usize == request.group_count()
        && (0..request.group_count()).all(|i| current[i] == request.group(i));
    if uid == request.uid && gid == request.gid && same_groups {
        return Ok(());
    }
    check(sys::keep_caps(true), Stage::Caps)?;
    if !same_groups {
        check(sys::setgroups(request.groups_bytes()), Stage::Groups)?;
    }
    check(sys::setgid(request.gid), Stage::Gid)?;
    check(sys::setuid(request.uid), Stage::Uid)?;
    check(sys::raise_effective_to_permitted(), Stage::Caps)?;
    check(sys::keep_caps(false), Stage::Caps)
}

/// Exec `name` (with its NUL), directly when it holds a `/`, else from each
/// directory of `search` in turn, as a shell and the runtime do. Returns
/// the errno that the last attempt failed with.
fn exec_searching(
    name: &[u8],
    search: &[u8],
    argv: *const *const u8,
    envp: *const *const u8,
    path: &mut [u8; 4096],
) -> isize {
    if name.contains(&b'/') {
        return -sys::execve(name.as_ptr(), argv, envp);
    }
    let mut errno = sys::ENOENT;
    for dir in search.split(|&b| b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let len = dir.len() + 1 + name.len();
        if len > path.len() {
            continue;
        }
        path[..dir.len()].copy_from_slice(dir);
        path[dir.len()] = b'/';
        path[dir.len() + 1..len].copy_from_slice(name);
        let e = -sys::execve(path.as_ptr(), argv, envp);
        if e == sys::EACCES {
            errno = e;
        } else if e != sys::ENOENT && e != sys::ENOTDIR {
            return e;
        }
    }
    errno
}
