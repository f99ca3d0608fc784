//! The chart's part of one agent per node (issue 20): the agent it runs
//! waits for the lock of an agent still running on the node (`waitForLock`),
//! and a surge pod, which would wait unready for that lock, is refused.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/chart.rs"]
mod chart;
#[path = "support/common.rs"]
mod common;

use chart::{helm_chart, render};

#[test]
fn the_agent_waits_for_the_lock_of_an_agent_still_running() {
    assert_eq!(render(&[]).flag("--wait-for-lock").as_deref(), Some("2m"));
    let r = render(&["--set", "waitForLock=90s"]);
    assert_eq!(r.flag("--wait-for-lock").as_deref(), Some("90s"));
    // Empty: refuse at once, and let the kubelet restart it.
    let r = render(&["--set", "waitForLock="]);
    assert!(!r.args().contains(&"--wait-for-lock".to_string()));

    let out = helm_chart("template", &["--set", "waitForLock=soon"]);
    assert!(!out.status.success(), "waitForLock=soon was accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("waitForLock"));

    let out = helm_chart(
        "template",
        &["--set", "updateStrategy.rollingUpdate.maxSurge=1"],
    );
    assert!(!out.status.success(), "maxSurge=1 was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("maxSurge must be 0") && stderr.contains("lock"),
        "{stderr}"
    );
}
