//! What the agent reports for declarations that go wrong, as an operator
//! sees it in the status files and the event log: a status file exists
//! exactly while its declaration does; a manifest turned into something
//! that cannot be read is an error on that file, not a deletion; a main
//! process that cannot be started says so in the phase and an event.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

mod support;

use std::path::Path;
use std::time::Duration;

use support::agent::{AgentEnv, manifest};

const T: Duration = Duration::from_secs(30);

const SERVICE: &str =
    "  process:\n    args: [\"/bin/sh\", \"-c\", \"echo up; exec sleep 100000\"]\n";

/// A document rundmc cannot accept (`apiVersion` misspelt) that names `name`.
fn invalid(name: &str) -> String {
    manifest(name, SERVICE).replace("rundmc.io/v1alpha1", "rundmc.io/v1alpah1")
}

fn status_path(a: &AgentEnv, name: &str) -> std::path::PathBuf {
    a.state.join("status").join(format!("{name}.yaml"))
}

#[test]
fn status_files_of_invalid_documents_go_with_their_declaration() {
    let a = AgentEnv::new("decl-ghost");
    let mut agent = a.start();
    a.write("f.yaml", &invalid("ghosta"));
    a.wait("ghosta reported invalid", T, || {
        a.condition("ghosta", "Valid")
            .is_some_and(|c| c.1 == "InvalidManifest")
    });
    assert_eq!(
        a.status_field("ghosta", "phase").as_deref(),
        Some("Pending")
    );

    // Deleted: its status goes.
    a.remove("f.yaml");
    a.wait("ghosta's status removed", T, || {
        !status_path(&a, "ghosta").exists()
    });

    // Renamed: the old name's status goes, the new one's comes.
    a.write("g.yaml", &invalid("ghostb"));
    a.wait("ghostb reported", T, || a.status("ghostb").is_some());
    a.write("g.yaml", &invalid("ghostc"));
    a.wait("ghostc reported", T, || a.status("ghostc").is_some());
    a.wait("ghostb's status removed", T, || {
        !status_path(&a, "ghostb").exists()
    });

    // Deleted while the agent is down: gone once it has listed again, and
    // so is the status of a file broken beyond parsing.
    a.write("junk.yaml", "spec: [unclosed\n");
    let junk = a.state.join("status/files/junk.yaml.yaml");
    a.wait("junk.yaml reported", T, || junk.exists());
    agent.kill9();
    a.remove("g.yaml");
    a.remove("junk.yaml");
    let _agent = a.start();
    a.wait("ghostc's status removed after a restart", T, || {
        !status_path(&a, "ghostc").exists()
    });
    a.wait("junk.yaml's status removed after a restart", T, || {
        !junk.exists()
    });
}

/// Replace `file` in the manifest directory, atomically, by what `make`
/// creates at a temporary name.
fn replace(a: &AgentEnv, file: &str, make: impl FnOnce(&Path)) {
    let tmp = a.manifests.join(format!(".{file}.tmp"));
    make(&tmp);
    std::fs::rename(&tmp, a.manifests.join(file)).unwrap();
}

#[test]
fn a_manifest_turned_unreadable_keeps_its_container_and_says_why() {
    let a = AgentEnv::new("decl-unreadable");
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", SERVICE));
    a.wait("web running", T, || a.running("web"));
    let init = a.env.init_pid("web");
    let a = &a;
    let valid_says = |what: &'static str| {
        move || {
            a.condition("web", "Valid")
                .is_some_and(|c| c.0 == "False" && c.2.contains(what))
        }
    };

    replace(a, "web.yaml", |p| {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
    });
    a.wait("the FIFO reported", T, valid_says("FIFO"));
    assert!(a.running("web"), "the last good spec keeps running");

    replace(a, "web.yaml", |p| {
        std::os::unix::fs::symlink(a.manifests.join("nowhere.yaml"), p).unwrap()
    });
    a.wait(
        "the dangling symlink reported",
        T,
        valid_says("No such file"),
    );
    assert!(a.running("web"));

    let web = a.manifests.join("web.yaml");
    replace(a, "web.yaml", |p| {
        std::os::unix::fs::symlink(&web, p).unwrap()
    });
    a.wait("the symlink loop reported", T, valid_says("symbolic links"));
    assert!(a.running("web"));
    assert_eq!(a.env.init_pid("web"), init, "never recreated");
    let destroyed = a
        .events()
        .iter()
        .any(|e| e["reason"] == "Destroyed" && e["handle"] == "web");
    assert!(!destroyed, "{:?}", a.events());

    a.write("web.yaml", &manifest("web", SERVICE));
    a.wait("valid again", T, || a.condition("web", "Valid").is_none());
    assert_eq!(a.env.init_pid("web"), init, "same container");
}

#[test]
fn a_main_process_that_cannot_start_is_pending_with_a_warning() {
    let a = AgentEnv::new("decl-nouser");
    let _agent = a.start();
    let with_user = |user: &str| format!("{SERVICE}    user: {user}\n");
    a.write("web.yaml", &manifest("web", &with_user("nosuchuser")));
    a.wait("CreateContainerError", T, || {
        a.condition("web", "Ready")
            .is_some_and(|c| c.1 == "CreateContainerError" && c.2.contains("nosuchuser"))
    });
    assert_eq!(a.status_field("web", "phase").as_deref(), Some("Pending"));
    let warned = a.events().iter().any(|e| {
        e["reason"] == "Failed"
            && e["type"] == "Warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("nosuchuser"))
    });
    assert!(warned, "{:?}", a.events());

    a.write("web.yaml", &manifest("web", &with_user("nobody")));
    a.wait("running once the user exists", T, || a.running("web"));
}
