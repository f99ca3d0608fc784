//! Taking a lock. The agent aborts on any panic (`panic = "abort"` in
//! Cargo.toml's `profile.dev` and `profile.release`, and in every build
//! the hook `main` installs, [`rundmc_shim::abort_on_panic`]), so no thread
//! of the agent ever unwinds while holding a lock and no lock is ever
//! poisoned: there is no poisoned state to recover from, and these
//! functions carry no code for one. Only the library's own tests unwind
//! (the test harness needs it); there a poisoned lock means a thread
//! already panicked, and the test has failed.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

const POISONED: &str = "a lock is never poisoned: every profile aborts on panic";

/// Lock `m`.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect(POISONED)
}

/// Take `l` for reading.
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().expect(POISONED)
}

/// Take `l` for writing.
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().expect(POISONED)
}
