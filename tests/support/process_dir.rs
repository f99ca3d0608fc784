//! Directories a test process makes once (test images, a test CA) and
//! removes when it exits, whatever its tests did.

#![allow(dead_code)]

use std::path::PathBuf;

/// Directories made once per test process, removed when it exits.
static PROCESS_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

extern "C" fn remove_process_dirs() {
    if let Ok(dirs) = PROCESS_DIRS.lock() {
        for d in dirs.iter() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A fresh directory `name-<pid>` under the temp dir, removed at exit.
pub fn process_dir(name: &str) -> PathBuf {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn()` that touches only a
        // static; the test harness ends with `exit`, which runs it.
        unsafe { libc::atexit(remove_process_dirs) };
    });
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    PROCESS_DIRS.lock().unwrap().push(dir.clone());
    dir
}
