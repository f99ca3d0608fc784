//! The system calls init makes, directly: no libc. x86_64 and aarch64.
//! Every wrapper returns the kernel's raw result: a value, or `-errno`.

use core::arch::{asm, global_asm};

/// All signals, in the kernel's 64-bit sigset.
pub const ALL_SIGNALS: u64 = u64::MAX;
/// `sizeof(kernel_sigset_t)`.
const SIGSET_SIZE: usize = 8;
const SIG_BLOCK: usize = 0;
const SIG_SETMASK: usize = 2;
/// `waitpid` flag: do not block.
pub const WNOHANG: usize = 1;
/// `SIGKILL`.
pub const SIGKILL: usize = 9;
/// `SIGCHLD`.
pub const SIGCHLD: usize = 17;
/// `EINTR`.
pub const EINTR: isize = 4;
/// `ECHILD`.
pub const ECHILD: isize = 10;
/// `ENOENT`.
pub const ENOENT: isize = 2;
/// `ENOTDIR`.
pub const ENOTDIR: isize = 20;
/// `EACCES`.
pub const EACCES: isize = 13;
/// `O_CLOEXEC` (also `SOCK_CLOEXEC`, `SFD_CLOEXEC`).
pub const O_CLOEXEC: usize = 0o2000000;
/// `O_NONBLOCK` (also `SFD_NONBLOCK`).
pub const O_NONBLOCK: usize = 0o4000;
/// `poll` event: readable.
pub const POLLIN: i16 = 1;
/// `poll` events that end a listener: error, hang-up, not open.
pub const POLL_DEAD: i16 = 0x8 | 0x10 | 0x20;
const SOL_SOCKET: usize = 1;
const SO_PEERCRED: usize = 17;
const SO_ACCEPTCONN: usize = 30;
const SO_RCVTIMEO: usize = 20;
const F_SETFL: usize = 4;
const F_DUPFD_CLOEXEC: usize = 1030;
const PR_SET_KEEPCAPS: usize = 8;
const PR_SET_CHILD_SUBREAPER: usize = 36;
const CLOCK_MONOTONIC: usize = 1;
const AT_FDCWD: isize = -100;
const CAP_V3: u32 = 0x2008_0522;

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const CLOSE: usize = 3;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const GETPID: usize = 39;
    pub const CLONE: usize = 56;
    pub const EXECVE: usize = 59;
    pub const EXIT: usize = 60;
    pub const WAIT4: usize = 61;
    pub const KILL: usize = 62;
    pub const FCNTL: usize = 72;
    pub const CHDIR: usize = 80;
    pub const GETUID: usize = 102;
    pub const GETGID: usize = 104;
    pub const SETSID: usize = 112;
    pub const GETGROUPS: usize = 115;
    pub const SETGROUPS: usize = 116;
    pub const SETRESUID: usize = 117;
    pub const SETRESGID: usize = 119;
    pub const CAPGET: usize = 125;
    pub const CAPSET: usize = 126;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const PRCTL: usize = 157;
    pub const CLOCK_GETTIME: usize = 228;
    pub const EXIT_GROUP: usize = 231;
    pub const OPENAT: usize = 257;
    pub const PPOLL: usize = 271;
    pub const ACCEPT4: usize = 288;
    pub const SIGNALFD4: usize = 289;
    pub const DUP3: usize = 292;
    pub const PIPE2: usize = 293;
    pub const GETSOCKOPT: usize = 55;
    pub const SETSOCKOPT: usize = 54;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const READ: usize = 63;
    pub const WRITE: usize = 64;
    pub const CLOSE: usize = 57;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const GETPID: usize = 172;
    pub const CLONE: usize = 220;
    pub const EXECVE: usize = 221;
    pub const EXIT: usize = 93;
    pub const WAIT4: usize = 260;
    pub const KILL: usize = 129;
    pub const FCNTL: usize = 25;
    pub const CHDIR: usize = 49;
    pub const GETUID: usize = 174;
    pub const GETGID: usize = 176;
    pub const SETSID: usize = 157;
    pub const GETGROUPS: usize = 158;
    pub const SETGROUPS: usize = 159;
    pub const SETRESUID: usize = 147;
    pub const SETRESGID: usize = 149;
    pub const CAPGET: usize = 90;
    pub const CAPSET: usize = 91;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const PRCTL: usize = 167;
    pub const CLOCK_GETTIME: usize = 113;
    pub const EXIT_GROUP: usize = 94;
    pub const OPENAT: usize = 56;
    pub const PPOLL: usize = 73;
    pub const ACCEPT4: usize = 242;
    pub const SIGNALFD4: usize = 74;
    pub const DUP3: usize = 24;
    pub const PIPE2: usize = 59;
    pub const GETSOCKOPT: usize = 209;
    pub const SETSOCKOPT: usize = 208;
}

// The kernel enters `_start` with the stack 16-byte aligned and no return
// address; set up a frame the Rust ABI expects and call main.
#[cfg(target_arch = "x86_64")]
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call rundmc_init_main",
    "ud2",
);

#[cfg(target_arch = "aarch64")]
global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, #0",
    "mov x30, #0",
    "bl rundmc_init_main",
    "brk #0",
);

#[cfg(target_arch = "x86_64")]
unsafe fn syscall6(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments valid for syscall `n`.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a[0], in("rsi") a[1],
             in("rdx") a[2], in("r10") a[3], in("r8") a[4], in("r9") a[5],
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn syscall6(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments valid for syscall `n`.
    unsafe {
        asm!("svc 0", in("x8") n, inlateout("x0") a[0] as isize => ret, in("x1") a[1],
             in("x2") a[2], in("x3") a[3], in("x4") a[4], in("x5") a[5], options(nostack));
    }
    ret
}

/// A system call whose arguments are plain numbers or pointers the caller
/// keeps alive for the call.
fn call(n: usize, a: [usize; 6]) -> isize {
    // SAFETY: every wrapper below passes pointers to memory it owns or
    // borrows for the duration of the call, with the lengths that memory has.
    unsafe { syscall6(n, a) }
}

/// Block every signal; SIGKILL and SIGSTOP stay deliverable, as ever.
pub fn block_all_signals() {
    let set = ALL_SIGNALS;
    call(
        nr::RT_SIGPROCMASK,
        [SIG_BLOCK, &set as *const u64 as usize, 0, SIGSET_SIZE, 0, 0],
    );
}

/// Unblock every signal: a command starts with none blocked.
pub fn unblock_all_signals() {
    let set = 0u64;
    call(
        nr::RT_SIGPROCMASK,
        [
            SIG_SETMASK,
            &set as *const u64 as usize,
            0,
            SIGSET_SIZE,
            0,
            0,
        ],
    );
}

/// A kernel timespec.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Timespec {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds.
    pub nsec: i64,
}

/// Sleep until any signal in `set` (blocked, hence pending) arrives, and
/// consume it; with `timeout`, give up when it passes.
pub fn wait_for_signal(set: u64, timeout: Option<&Timespec>) -> isize {
    let t = timeout.map_or(0, |t| t as *const Timespec as usize);
    call(
        nr::RT_SIGTIMEDWAIT,
        [&set as *const u64 as usize, 0, t, SIGSET_SIZE, 0, 0],
    )
}

/// Milliseconds on the monotonic clock.
pub fn now_ms() -> i64 {
    let mut t = Timespec { sec: 0, nsec: 0 };
    call(
        nr::CLOCK_GETTIME,
        [
            CLOCK_MONOTONIC,
            &mut t as *mut Timespec as usize,
            0,
            0,
            0,
            0,
        ],
    );
    t.sec * 1000 + t.nsec / 1_000_000
}

/// `wait4(pid, &status, flags)`: the pid reaped (0 if none, `-errno`) and
/// its raw status.
pub fn wait(pid: isize, flags: usize) -> (isize, i32) {
    let mut status: i32 = 0;
    let r = call(
        nr::WAIT4,
        [
            pid as usize,
            &mut status as *mut i32 as usize,
            flags,
            0,
            0,
            0,
        ],
    );
    (r, status)
}

/// Reap one exited child; false when none is waiting (or none exist).
pub fn reap_one() -> bool {
    wait(-1, WNOHANG).0 > 0
}

/// `fork()`: 0 in the child, the child's pid in the parent, or `-errno`.
pub fn fork() -> isize {
    call(nr::CLONE, [SIGCHLD, 0, 0, 0, 0, 0])
}

/// `kill(pid, sig)`.
pub fn kill(pid: isize, sig: usize) -> isize {
    call(nr::KILL, [pid as usize, sig, 0, 0, 0, 0])
}

/// This process's id.
pub fn getpid() -> isize {
    call(nr::GETPID, [0; 6])
}

/// `read(fd, buf)`.
pub fn read(fd: i32, buf: &mut [u8]) -> isize {
    call(
        nr::READ,
        [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
    )
}

/// `write(fd, buf)`.
pub fn write(fd: i32, buf: &[u8]) -> isize {
    call(
        nr::WRITE,
        [fd as usize, buf.as_ptr() as usize, buf.len(), 0, 0, 0],
    )
}

/// Read exactly `buf.len()` bytes, retrying short reads; false on EOF or
/// error first.
pub fn read_exact(fd: i32, buf: &mut [u8]) -> bool {
    let len = buf.len();
    whole(len, |done| read(fd, &mut buf[done..]))
}

/// Write all of `buf`, retrying short writes; false on error.
pub fn write_all(fd: i32, buf: &[u8]) -> bool {
    whole(buf.len(), |done| write(fd, &buf[done..]))
}

/// Repeat `step` (given how much is done, returning how much more it did)
/// until `len` is done; false when it ends or fails first (EINTR retried).
fn whole(len: usize, mut step: impl FnMut(usize) -> isize) -> bool {
    let mut done = 0;
    while done < len {
        let n = step(done);
        if n == -EINTR {
            continue;
        }
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

/// `close(fd)`.
pub fn close(fd: i32) {
    call(nr::CLOSE, [fd as usize, 0, 0, 0, 0, 0]);
}

/// `dup3(old, new, 0)`; a no-op when they are equal.
pub fn dup_onto(old: i32, new: i32) -> isize {
    if old == new {
        return new as isize;
    }
    call(nr::DUP3, [old as usize, new as usize, 0, 0, 0, 0])
}

/// A close-on-exec duplicate of `fd` at `min` or above.
pub fn dup_above(fd: i32, min: i32) -> isize {
    call(
        nr::FCNTL,
        [fd as usize, F_DUPFD_CLOEXEC, min as usize, 0, 0, 0],
    )
}

/// Make `fd` non-blocking.
pub fn set_nonblocking(fd: i32) -> isize {
    call(nr::FCNTL, [fd as usize, F_SETFL, O_NONBLOCK, 0, 0, 0])
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> Option<(i32, i32)> {
    let mut fds = [0i32; 2];
    let r = call(
        nr::PIPE2,
        [fds.as_mut_ptr() as usize, O_CLOEXEC, 0, 0, 0, 0],
    );
    (r == 0).then_some((fds[0], fds[1]))
}

/// `openat(AT_FDCWD, path, O_RDONLY|O_CLOEXEC)`; `path` ends with a NUL.
pub fn open_read(path: &[u8]) -> isize {
    call(
        nr::OPENAT,
        [
            AT_FDCWD as usize,
            path.as_ptr() as usize,
            O_CLOEXEC,
            0,
            0,
            0,
        ],
    )
}

fn sockopt_int(fd: i32, opt: usize) -> Option<i32> {
    let mut v: i32 = 0;
    let mut len: u32 = 4;
    let r = call(
        nr::GETSOCKOPT,
        [
            fd as usize,
            SOL_SOCKET,
            opt,
            &mut v as *mut i32 as usize,
            &mut len as *mut u32 as usize,
            0,
        ],
    );
    (r == 0).then_some(v)
}

/// Whether `fd` is a socket that listens.
pub fn is_listening_socket(fd: i32) -> bool {
    sockopt_int(fd, SO_ACCEPTCONN) == Some(1)
}

/// The pid of a connected unix socket's peer as this pid namespace sees it:
/// 0 when the peer is outside it.
pub fn peer_pid(fd: i32) -> Option<i32> {
    // struct ucred { pid, uid, gid }
    let mut cred = [0i32; 3];
    let mut len: u32 = 12;
    let r = call(
        nr::GETSOCKOPT,
        [
            fd as usize,
            SOL_SOCKET,
            SO_PEERCRED,
            cred.as_mut_ptr() as usize,
            &mut len as *mut u32 as usize,
            0,
        ],
    );
    (r == 0).then_some(cred[0])
}

/// Give reads on `fd` a timeout (0: none).
pub fn set_read_timeout(fd: i32, secs: i64) {
    let tv = [secs, 0i64];
    call(
        nr::SETSOCKOPT,
        [
            fd as usize,
            SOL_SOCKET,
            SO_RCVTIMEO,
            tv.as_ptr() as usize,
            16,
            0,
        ],
    );
}

/// Accept one connection, close-on-exec.
pub fn accept(fd: i32) -> isize {
    call(nr::ACCEPT4, [fd as usize, 0, 0, O_CLOEXEC, 0, 0])
}

/// A non-blocking, close-on-exec signalfd for every signal.
pub fn signalfd_all() -> isize {
    let set = ALL_SIGNALS;
    call(
        nr::SIGNALFD4,
        [
            usize::MAX,
            &set as *const u64 as usize,
            SIGSET_SIZE,
            O_CLOEXEC | O_NONBLOCK,
            0,
            0,
        ],
    )
}

/// One entry for [`poll`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PollFd {
    /// The descriptor.
    pub fd: i32,
    /// What to wait for.
    pub events: i16,
    /// What happened.
    pub revents: i16,
}

/// Wait, without timeout, until one of `fds` is ready.
pub fn poll(fds: &mut [PollFd]) -> isize {
    call(
        nr::PPOLL,
        [fds.as_mut_ptr() as usize, fds.len(), 0, 0, SIGSET_SIZE, 0],
    )
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: orphaned descendants come to us.
pub fn become_subreaper() -> isize {
    call(nr::PRCTL, [PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0, 0])
}

/// `prctl(PR_SET_KEEPCAPS, on)`.
pub fn keep_caps(on: bool) -> isize {
    call(nr::PRCTL, [PR_SET_KEEPCAPS, on as usize, 0, 0, 0, 0])
}

/// `setsid()`.
pub fn setsid() -> isize {
    call(nr::SETSID, [0; 6])
}

/// The real user and group ids.
pub fn ids() -> (u32, u32) {
    (
        call(nr::GETUID, [0; 6]) as u32,
        call(nr::GETGID, [0; 6]) as u32,
    )
}

/// The supplementary groups, into `buf`; how many (or `-errno`).
pub fn getgroups(buf: &mut [u32]) -> isize {
    call(
        nr::GETGROUPS,
        [buf.len(), buf.as_mut_ptr() as usize, 0, 0, 0, 0],
    )
}

/// `setgroups(n, groups)`, the groups as little-endian u32 bytes.
pub fn setgroups(groups: &[u8]) -> isize {
    call(
        nr::SETGROUPS,
        [groups.len() / 4, groups.as_ptr() as usize, 0, 0, 0, 0],
    )
}

/// `setresgid(g, g, g)`.
pub fn setgid(g: u32) -> isize {
    call(nr::SETRESGID, [g as usize, g as usize, g as usize, 0, 0, 0])
}

/// `setresuid(u, u, u)`.
pub fn setuid(u: u32) -> isize {
    call(nr::SETRESUID, [u as usize, u as usize, u as usize, 0, 0, 0])
}

/// Make the effective capabilities the permitted ones again (a change of
/// user clears the effective set even when the permitted one is kept).
pub fn raise_effective_to_permitted() -> isize {
    let mut header = [CAP_V3, 0u32];
    // Two { effective, permitted, inheritable } triples.
    let mut data = [0u32; 6];
    let r = call(
        nr::CAPGET,
        [
            header.as_mut_ptr() as usize,
            data.as_mut_ptr() as usize,
            0,
            0,
            0,
            0,
        ],
    );
    if r < 0 {
        return r;
    }
    data[0] = data[1];
    data[3] = data[4];
    call(
        nr::CAPSET,
        [header.as_ptr() as usize, data.as_ptr() as usize, 0, 0, 0, 0],
    )
}

/// `chdir(path)`; `path` ends with a NUL.
pub fn chdir(path: &[u8]) -> isize {
    call(nr::CHDIR, [path.as_ptr() as usize, 0, 0, 0, 0, 0])
}

/// `execve(path, argv, envp)`: returns only on failure, with `-errno`.
/// `path` ends with a NUL; both arrays end with a null pointer.
pub fn execve(path: *const u8, argv: *const *const u8, envp: *const *const u8) -> isize {
    call(
        nr::EXECVE,
        [path as usize, argv as usize, envp as usize, 0, 0, 0],
    )
}

/// Exit the process.
pub fn exit(code: usize) -> ! {
    loop {
        call(nr::EXIT_GROUP, [code, 0, 0, 0, 0, 0]);
        call(nr::EXIT, [code, 0, 0, 0, 0, 0]);
    }
}
