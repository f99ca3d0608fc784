//! The probes section of `BENCHMARKS.md` (issue 16): its method, where its
//! targets stand, and the table behind them.

use std::fmt::Write;

use crate::probes::{CPU_BOUND, IDLE_BOUND_PCT, ProbeResults, mean};
use crate::report::x;
use crate::stats::Samples;

/// Appends the section.
pub fn render(s: &mut String, r: &ProbeResults) {
    s.push_str("\n## Probes (issue 16)\n");
    s.push_str(
        "\n- **Per exec probe**: one container of the agent's (runc); the same command (`true`) \
         run alternately by the container's init over its socket (the agent's request, as it \
         sends it) and by `runc exec` (what an exec probe is for the kubelet), three warm-up \
         rounds dropped. CPU for the init: the calling thread's own CPU (the agent's side) plus \
         the container's cgroup (init's handler and the command). CPU for `runc exec`: a cgroup \
         of its own holding the `runc` process, plus the container's cgroup (`runc init` and the \
         command).\n\
         - **At rest**: one agent (default flags) with every container serving HTTP on its own \
         loopback, each with an exec liveness probe (`cat`) and an HTTP readiness probe every \
         10 s, watched once every prober is past its first period. The agent's CPU cgroup holds \
         the agent, its supervisors and any runtime call; the containers' hold init's handlers, \
         the probe commands and the servers answering.\n",
    );
    targets(s, r);
    table(s, r);
}

fn mark(ok: bool, measured: bool) -> &'static str {
    match (measured, ok) {
        (false, _) => "not measured",
        (true, true) => "met",
        (true, false) => "**missed**",
    }
}

fn targets(s: &mut String, r: &ProbeResults) {
    s.push_str("\n| target (issue 16) | measured | |\n|---|---|---|\n");
    let ratio = r.cpu_ratio();
    let _ = writeln!(
        s,
        "| CPU per exec probe ≤ {CPU_BOUND}× a `runc exec` of the same command | {} ({:.2} ms against {:.2} ms) | {} |",
        x(ratio),
        mean(&r.init_cpu_ms),
        mean(&r.runc_cpu_ms),
        mark(ratio <= CPU_BOUND, !ratio.is_nan()),
    );
    if let Some(idle) = &r.idle {
        let _ = writeln!(
            s,
            "| {} containers, exec liveness + HTTP readiness every 10 s: agent and supervisors ≤ {IDLE_BOUND_PCT}% of a core | {:.2}% (the containers' side: {:.2}%) over {:.0} s | {} |",
            idle.containers,
            idle.agent_pct,
            idle.containers_pct,
            idle.seconds,
            mark(idle.agent_pct <= IDLE_BOUND_PCT, true),
        );
    }
}

fn table(s: &mut String, r: &ProbeResults) {
    s.push_str("\n| figure (ms) | n | mean | p50 | p95 |\n|---|---|---|---|---|\n");
    let rows: [(&str, &Samples); 4] = [
        ("Exec probe by the init, wall", &r.init_ms),
        ("`runc exec`, wall", &r.runc_ms),
        ("Exec probe by the init, CPU", &r.init_cpu_ms),
        ("`runc exec`, CPU", &r.runc_cpu_ms),
    ];
    for (what, v) in rows {
        let _ = writeln!(
            s,
            "| {what} | {} | {:.2} | {:.2} | {:.2} |",
            v.len(),
            mean(v),
            v.p50(),
            v.p95()
        );
    }
}
