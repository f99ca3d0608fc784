//! Manifest files are read strictly, as `kubectl` validates: a field the
//! agent does not know makes the document invalid, named with its line and
//! the field it was probably meant to be, and a running container keeps its
//! last good spec. Kubernetes metadata stays accepted.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

mod support;

use std::time::Duration;

use support::agent::{AgentEnv, manifest};

const T: Duration = Duration::from_secs(30);

const SERVICE: &str = "  process:\n    args: [\"/bin/sh\", \"-c\", \"exec sleep 100000\"]\n";

#[test]
fn a_misspelt_field_is_invalid_and_the_last_good_spec_keeps_running() {
    let a = AgentEnv::new("strict");
    let _agent = a.start();
    let with_metadata = manifest("web", SERVICE).replace(
        "  name: web\n",
        "  name: web\n  namespace: default\n  labels: {app: web}\n  annotations: {team: infra}\n  uid: 3f1c\n  resourceVersion: \"7\"\n  generation: 2\n",
    );
    a.write("web.yaml", &with_metadata);
    a.write(
        "typo.yaml",
        &manifest("typo", &format!("{SERVICE}  limts: {{memory: 16Mi}}\n")),
    );
    a.wait("web running", T, || a.running("web"));
    let typo = format!(
        "{}: document 1, line 9: spec.limts: unknown field; did you mean \"limits\"?",
        a.manifests.join("typo.yaml").display()
    );
    a.wait("typo reported", T, || {
        a.condition("typo", "Valid")
            .is_some_and(|c| c.0 == "False" && c.2 == typo)
    });
    assert!(a.env.runc_status("typo").is_none(), "nothing made for it");

    // The running container gains the typo: it is flagged, and runs on.
    let (init, main) = (a.env.init_pid("web"), a.main_pid("web"));
    a.write(
        "web.yaml",
        &format!("{with_metadata}  limts:\n    memory: 16Mi\n"),
    );
    let web = format!(
        "{}: document 1, line 15: spec.limts: unknown field; did you mean \"limits\"?",
        a.manifests.join("web.yaml").display()
    );
    a.wait("web flagged invalid", T, || {
        a.condition("web", "Valid")
            .is_some_and(|c| c.0 == "False" && c.2 == web)
    });
    assert!(a.running("web"), "the last good spec keeps running");
    assert_eq!((a.env.init_pid("web"), a.main_pid("web")), (init, main));
    let limit = a
        .env
        .cgroup_dir("memory", "web")
        .join("memory.limit_in_bytes");
    let limit = std::fs::read_to_string(limit).unwrap_or_default();
    assert_ne!(limit.trim(), "16777216", "the typo was never applied");
}
