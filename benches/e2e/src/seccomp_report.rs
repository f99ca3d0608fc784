//! The seccomp section of `BENCHMARKS.md` (issue 15): its method, where
//! its target stands, and the table behind it.

use std::fmt::Write;

use crate::report::{f1, x};
use crate::seccomp::{BOUND, SeccompResults};
use crate::stats::Samples;

/// Appends the section.
pub fn render(s: &mut String, r: &SeccompResults) {
    s.push_str("\n## Seccomp (issue 15)\n");
    let _ = writeln!(
        s,
        "\n- **Drop to running, default profile against Unconfined**: one agent (4 workers, runc) \
         runs the same container twice, as it is (the built-in default profile: for the default \
         capabilities, {} rules naming {} syscalls, for the native architecture and those it also runs) and with `securityContext.seccompProfile.type: Unconfined`. \
         Measured as the drop to running above.\n- **Raw runc, same bundle**: the agent's own \
         `config.json` of the default container, with its `linux.seccomp`, and the same with \
         `linux.seccomp` taken out, run by hand as the raw baseline above (`run --detach`, exec of \
         the agent's `process.json`; runc loads the filter in init and again in the exec'd process).\n\
         - The four go in one order and the reverse on every other sample; two warm-up samples \
         are dropped; teardowns are not timed.",
        r.rules, r.names
    );
    targets(s, r);
    table(s, r);
}

fn targets(s: &mut String, r: &SeccompResults) {
    s.push_str("\n| target (issue 15) | measured | |\n|---|---|---|\n");
    let agent = r.agent_ratio();
    let mark = match agent.is_nan() {
        true => "not measured",
        false if agent <= BOUND => "met",
        false => "**missed**",
    };
    let _ = writeln!(
        s,
        "| Drop to running with the default profile ≤ {BOUND}× Unconfined | {} ({} ms against {} ms) | {mark} |",
        x(agent),
        f1(r.agent_default.p50()),
        f1(r.agent_unconfined.p50()),
    );
    let _ = writeln!(
        s,
        "| Raw runc, the same bundle with and without its filter (no bound; for comparison) | {} ({} ms against {} ms) | |",
        x(r.raw_ratio()),
        f1(r.raw_default.p50()),
        f1(r.raw_unconfined.p50()),
    );
    let _ = writeln!(
        s,
        "| Agent against raw runc, both with the default profile (no bound here) | {} | |",
        x(r.agent_to_raw()),
    );
}

fn table(s: &mut String, r: &SeccompResults) {
    s.push_str("\n| figure (ms) | n | p50 | p95 |\n|---|---|---|---|\n");
    let rows: [(&str, &Samples); 4] = [
        ("Drop to running, agent, default profile", &r.agent_default),
        ("Drop to running, agent, Unconfined", &r.agent_unconfined),
        ("Drop to running, raw runc, default profile", &r.raw_default),
        ("Drop to running, raw runc, no filter", &r.raw_unconfined),
    ];
    for (what, v) in rows {
        let _ = writeln!(
            s,
            "| {what} | {} | {} | {} |",
            v.len(),
            f1(v.p50()),
            f1(v.p95())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_compares_the_default_profile_with_unconfined() {
        let s = |v: &[f64]| Samples(v.to_vec());
        let r = SeccompResults {
            agent_default: s(&[104.0]),
            agent_unconfined: s(&[100.0]),
            raw_default: s(&[52.0]),
            raw_unconfined: s(&[50.0]),
            rules: 13,
            names: 370,
        };
        let mut text = String::new();
        render(&mut text, &r);
        let row = text.lines().find(|l| l.contains("≤ 1.05×")).unwrap_or("");
        assert!(
            row.contains("1.04× (104.0 ms against 100.0 ms)") && row.ends_with("| met |"),
            "{text}"
        );
        let slow = SeccompResults {
            agent_default: s(&[110.0]),
            ..r
        };
        let mut text = String::new();
        render(&mut text, &slow);
        assert!(text.contains("| **missed** |"), "{text}");
    }
}
