//! Pure builders of the OCI runtime's command lines. Nothing here runs a
//! process or touches a file: each function returns the words for one verb,
//! and [`command`] puts the binary, the global flags and a verb together.
//! runc and crun accept the same words for every verb built here.

use std::ffi::OsString;
use std::path::Path;

/// How often `runc events` samples stats. rundmc only wants the OOM
/// notifications from that stream, so the sampling is pushed far apart to
/// keep each watcher idle.
pub const EVENTS_STATS_INTERVAL: &str = "24h";

/// Global flags: the state root, and a JSON log file the runtime appends its
/// own error messages to.
pub fn global(root: &Path, log: &Path) -> Vec<OsString> {
    vec![
        "--root".into(),
        root.into(),
        "--log".into(),
        log.into(),
        "--log-format".into(),
        "json".into(),
    ]
}

/// The whole command line: `binary`, the global flags, then the verb's words.
pub fn command(binary: &Path, root: &Path, log: &Path, verb: Vec<OsString>) -> Vec<OsString> {
    let mut argv = Vec::with_capacity(1 + 6 + verb.len());
    argv.push(binary.into());
    argv.extend(global(root, log));
    argv.extend(verb);
    argv
}

/// `create --bundle B ID`. The container's pid is read from the state
/// directory afterwards, so no `--pid-file` is asked for.
pub fn create(id: &str, bundle: &Path) -> Vec<OsString> {
    vec!["create".into(), "--bundle".into(), bundle.into(), id.into()]
}

/// `run --detach --bundle B ID`: `create` and `start` in one runtime
/// process, which returns once the init runs.
pub fn run_detached(id: &str, bundle: &Path) -> Vec<OsString> {
    vec![
        "run".into(),
        "--detach".into(),
        "--bundle".into(),
        bundle.into(),
        id.into(),
    ]
}

/// `start ID`.
pub fn start(id: &str) -> Vec<OsString> {
    vec!["start".into(), id.into()]
}

/// `kill [--all] ID SIG`, the signal by number (both runtimes accept it).
pub fn kill(id: &str, signal: i32, all: bool) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec!["kill".into()];
    if all {
        argv.push("--all".into());
    }
    argv.push(id.into());
    argv.push(signal.to_string().into());
    argv
}

/// `delete [--force] ID`.
pub fn delete(id: &str, force: bool) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec!["delete".into()];
    if force {
        argv.push("--force".into());
    }
    argv.push(id.into());
    argv
}

/// `state ID`.
pub fn state(id: &str) -> Vec<OsString> {
    vec!["state".into(), id.into()]
}

/// `list --format json`.
pub fn list() -> Vec<OsString> {
    vec!["list".into(), "--format".into(), "json".into()]
}

/// `events --stats ID`: one stats sample, then exit.
pub fn stats(id: &str) -> Vec<OsString> {
    vec!["events".into(), "--stats".into(), id.into()]
}

/// `events --interval I ID`: a stream of JSON lines until the container's
/// cgroup goes away.
pub fn events(id: &str) -> Vec<OsString> {
    vec![
        "events".into(),
        "--interval".into(),
        EVENTS_STATS_INTERVAL.into(),
        id.into(),
    ]
}

/// `update --resources - ID`: the resources JSON is read from stdin.
pub fn update(id: &str) -> Vec<OsString> {
    vec!["update".into(), "--resources".into(), "-".into(), id.into()]
}

/// `exec --detach --pid-file P --process J ID`: start the process described
/// by the OCI process JSON `J`, write its host pid to `P`, and return as soon
/// as it runs. The process inherits the caller's stdio.
pub fn exec(id: &str, process_json: &Path, pid_file: &Path) -> Vec<OsString> {
    vec![
        "exec".into(),
        "--detach".into(),
        "--pid-file".into(),
        pid_file.into(),
        "--process".into(),
        process_json.into(),
        id.into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(argv: &[OsString]) -> Vec<&str> {
        argv.iter().map(|w| w.to_str().unwrap()).collect()
    }

    #[test]
    fn global_flags_name_root_and_json_log() {
        let argv = global(Path::new("/run/rundmc"), Path::new("/run/rundmc/.x.log"));
        assert_eq!(
            words(&argv),
            [
                "--root",
                "/run/rundmc",
                "--log",
                "/run/rundmc/.x.log",
                "--log-format",
                "json"
            ]
        );
    }

    #[test]
    fn command_puts_binary_then_globals_then_verb() {
        let argv = command(
            Path::new("/usr/sbin/runc"),
            Path::new("/r"),
            Path::new("/r/l"),
            start("web"),
        );
        assert_eq!(
            words(&argv),
            [
                "/usr/sbin/runc",
                "--root",
                "/r",
                "--log",
                "/r/l",
                "--log-format",
                "json",
                "start",
                "web"
            ]
        );
    }

    #[test]
    fn create_names_bundle_then_id() {
        assert_eq!(
            words(&create("web", Path::new("/depot/web"))),
            ["create", "--bundle", "/depot/web", "web"]
        );
    }

    #[test]
    fn run_detaches_and_names_bundle_then_id() {
        assert_eq!(
            words(&run_detached("web", Path::new("/run/rundmc/bundles/web"))),
            [
                "run",
                "--detach",
                "--bundle",
                "/run/rundmc/bundles/web",
                "web"
            ]
        );
    }

    #[test]
    fn start_and_state_take_the_id() {
        assert_eq!(words(&start("web")), ["start", "web"]);
        assert_eq!(words(&state("web")), ["state", "web"]);
    }

    #[test]
    fn kill_signal_goes_after_id_and_all_before() {
        assert_eq!(words(&kill("web", 15, false)), ["kill", "web", "15"]);
        assert_eq!(words(&kill("web", 9, true)), ["kill", "--all", "web", "9"]);
    }

    #[test]
    fn delete_force_is_optional() {
        assert_eq!(words(&delete("web", false)), ["delete", "web"]);
        assert_eq!(words(&delete("web", true)), ["delete", "--force", "web"]);
    }

    #[test]
    fn list_asks_for_json() {
        assert_eq!(words(&list()), ["list", "--format", "json"]);
    }

    #[test]
    fn stats_is_a_single_events_sample() {
        assert_eq!(words(&stats("web")), ["events", "--stats", "web"]);
    }

    #[test]
    fn events_streams_with_a_long_stats_interval() {
        assert_eq!(
            words(&events("web")),
            ["events", "--interval", "24h", "web"]
        );
    }

    #[test]
    fn update_reads_resources_from_stdin() {
        assert_eq!(words(&update("web")), ["update", "--resources", "-", "web"]);
    }

    #[test]
    fn exec_is_detached_with_pid_file_and_process_json() {
        let argv = exec("web", Path::new("/p/process.json"), Path::new("/p/pid"));
        assert_eq!(
            words(&argv),
            [
                "exec",
                "--detach",
                "--pid-file",
                "/p/pid",
                "--process",
                "/p/process.json",
                "web"
            ]
        );
    }
}
