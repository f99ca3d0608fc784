//! Process-wide buffers in `.bss`: zeroed by the kernel when it loads the
//! binary, so using them needs no `memset` (there is no libc to call), and
//! large enough that they would not belong on the stack. Each forked
//! request handler has its own copy-on-write copy.

use core::cell::UnsafeCell;

/// A buffer of `T` that one thread uses at a time.
pub struct Static<T>(UnsafeCell<T>);

// SAFETY: init and each process it forks are single-threaded; a `Static` is
// only reached through `get`, whose caller takes the exclusive borrow.
unsafe impl<T> Sync for Static<T> {}

impl<T> Static<T> {
    /// A buffer holding `value`.
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// The buffer.
    ///
    /// # Safety
    /// No other borrow of this buffer may be alive (each process is
    /// single-threaded, so a borrow that ends before the next `get` is one).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut T {
        // SAFETY: exclusive by the caller's promise.
        unsafe { &mut *self.0.get() }
    }
}
