//! The four system calls init needs, made directly: signal mask, signal wait,
//! reap, exit. x86_64 and aarch64.

use core::arch::{asm, global_asm};

/// All signals, in the kernel's 64-bit sigset.
const ALL_SIGNALS: u64 = u64::MAX;
/// `sizeof(kernel_sigset_t)`.
const SIGSET_SIZE: usize = 8;
const SIG_BLOCK: usize = 0;
const WNOHANG: usize = 1;

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const RT_SIGPROCMASK: usize = 14;
    pub const WAIT4: usize = 61;
    pub const EXIT: usize = 60;
    pub const RT_SIGTIMEDWAIT: usize = 128;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const RT_SIGPROCMASK: usize = 135;
    pub const WAIT4: usize = 260;
    pub const EXIT: usize = 93;
    pub const RT_SIGTIMEDWAIT: usize = 137;
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
unsafe fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments valid for syscall `n`.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a, in("rsi") b,
             in("rdx") c, in("r10") d, lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments valid for syscall `n`.
    unsafe {
        asm!("svc 0", in("x8") n, inlateout("x0") a as isize => ret, in("x1") b,
             in("x2") c, in("x3") d, options(nostack));
    }
    ret
}

/// Block every signal; SIGKILL and SIGSTOP stay deliverable, as ever.
pub fn block_all_signals() {
    let set = ALL_SIGNALS;
    // SAFETY: `set` outlives the call; the old mask is not wanted.
    unsafe {
        syscall4(
            nr::RT_SIGPROCMASK,
            SIG_BLOCK,
            &set as *const u64 as usize,
            0,
            SIGSET_SIZE,
        )
    };
}

/// Sleep until any (blocked, hence pending) signal arrives, and consume it.
pub fn wait_for_any_signal() {
    let set = ALL_SIGNALS;
    // SAFETY: `set` outlives the call; no siginfo or timeout is passed.
    unsafe {
        syscall4(
            nr::RT_SIGTIMEDWAIT,
            &set as *const u64 as usize,
            0,
            0,
            SIGSET_SIZE,
        )
    };
}

/// Reap one exited child; false when none is waiting (or none exist).
pub fn reap_one() -> bool {
    let mut status: i32 = 0;
    // SAFETY: `status` outlives the call; pid -1 means any child.
    let pid = unsafe {
        syscall4(
            nr::WAIT4,
            usize::MAX,
            &mut status as *mut i32 as usize,
            WNOHANG,
            0,
        )
    };
    pid > 0
}

/// Exit the process.
pub fn exit(code: usize) -> ! {
    loop {
        // SAFETY: exit takes no pointers.
        unsafe { syscall4(nr::EXIT, code, 0, 0, 0) };
    }
}
