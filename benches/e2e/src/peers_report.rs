//! The peers table of `BENCHMARKS.md` (issue 19).

use std::fmt::Write;

use crate::peers::PeerResults;
use crate::report::{f1, x};
use crate::stats::ratio;

/// Renders the peers section.
pub fn render(s: &mut String, p: &PeerResults) {
    let _ = writeln!(
        s,
        "\n## Peers (issue 19)\n\nEvery system runs `/bin/sh -c 'touch /mark/<name>; exec sleep 100000'` on the same busybox rootfs, \
a host directory bound at `/mark`; an inotify watch on it timestamps each file as it appears. Systems are interleaved \
sample by sample and round by round, the order rotating. **Start**: from the command's spawn (rundmc: the manifest's \
rename into the watched directory) until the mark. **Teardown**: until the command returns (rundmc: from the manifest's \
removal until the depot directory is gone). **Burst**: {} at once (rundmc: every manifest written; others: {} threads), \
containers/s until the last mark, median over rounds; burst teardown likewise. With the first burst's {} running: the \
median **supervisor PSS**, the **daemon RSS**, and the CPU of daemon and supervisors (their process CPU clocks) over \
{} s idle. rundmc and raw runc mount an overlay of the rootfs per container; `podman --rootfs` and `ctr run --rootfs` \
use the directory as it is. Ratios are to raw runc from the same run.\n",
        p.burst,
        crate::phases::WORKERS,
        p.burst,
        p.idle_secs
    );
    s.push_str("| system | start p50 ms | start p95 ms | start p50 ÷ raw | teardown p50 ms | burst /s | burst ÷ raw | burst teardown /s | supervisor PSS | daemon RSS | idle CPU, daemon + supervisors |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    let raw = p.systems.iter().find(|r| r.name == "raw runc");
    let (raw_start, raw_burst) =
        raw.map_or((f64::NAN, f64::NAN), |r| (r.start.p50(), r.burst.p50()));
    for r in &p.systems {
        let pss = match (r.supervisor, r.supervisor_pss_kib) {
            ("none", _) => "none".to_string(),
            (what, Some(k)) => format!("{k} KiB ({what})"),
            (what, None) => format!("– ({what})"),
        };
        let rss = match (r.daemon, r.daemon_rss_kib) {
            ("none", _) => "none".to_string(),
            (what, Some(k)) => format!("{:.1} MiB ({what})", k as f64 / 1024.0),
            (what, None) => format!("– ({what})"),
        };
        let cpu = r
            .idle_cpu_pct
            .map_or("–".into(), |c| format!("{c:.3}% of a core"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {pss} | {rss} | {cpu} |",
            r.name,
            f1(r.start.p50()),
            f1(r.start.p95()),
            x(ratio(r.start.p50(), raw_start)),
            f1(r.teardown.p50()),
            f1(r.burst.p50()),
            x(ratio(r.burst.p50(), raw_burst)),
            f1(r.burst_down.p50()),
        );
    }
    for why in &p.skipped {
        let _ = writeln!(s, "\nSkipped: {why}.");
    }
}

/// The scale section (issue 19).
pub fn render_scale(s: &mut String, r: &crate::scale::ScaleResults) {
    let n = r.containers;
    let _ = writeln!(
        s,
        "\n## Scale: {n} containers on one agent (issue 19)\n\nConverge: every manifest written at once into an empty node's directory, until every main process's first line is in its log and every status says Running (polled every 100 ms). Restart and resync as in the steady state above; teardown: every manifest removed until every depot directory is gone.\n"
    );
    s.push_str("| figure | value |\n|---|---|\n");
    let resync = r.resync.as_ref();
    let rows = [
        (
            "Converge from empty",
            format!(
                "{:.1} s ({:.1} containers/s)",
                r.converge_s,
                n as f64 / r.converge_s.max(1e-9)
            ),
        ),
        (
            "Agent RSS / PSS with all running",
            format!(
                "{:.1} MiB / {:.1} MiB",
                r.mem.rss_kib as f64 / 1024.0,
                r.mem.pss_kib as f64 / 1024.0
            ),
        ),
        (
            "Agent RSS / PSS after a restart with all running",
            format!(
                "{:.1} MiB / {:.1} MiB",
                r.mem_restarted.rss_kib as f64 / 1024.0,
                r.mem_restarted.pss_kib as f64 / 1024.0
            ),
        ),
        ("Agent open files with all running", r.fds.to_string()),
        (
            "Restart until ready, p50 / max",
            format!(
                "{} / {} ms (n = {})",
                f1(r.restarts.ready.p50()),
                f1(r.restarts.ready.max()),
                r.restarts.ready.len()
            ),
        ),
        ("Nothing restarted", restart_proof(&r.restarts)),
        (
            "Full resync CPU, agent cgroup / process",
            resync.map_or("–".into(), |x| {
                format!(
                    "{} ms / {} ms (period {:?})",
                    f1(x.cgroup_ms),
                    f1(x.process_ms),
                    x.period
                )
            }),
        ),
        (
            "Teardown of all",
            format!(
                "{:.1} s ({:.1} containers/s)",
                r.teardown_s,
                n as f64 / r.teardown_s.max(1e-9)
            ),
        ),
    ];
    for (what, v) in rows {
        let _ = writeln!(s, "| {what} | {v} |");
    }
    s.push_str("\nNode limits for this many containers, as the run had them:\n\n| limit | value | why |\n|---|---|---|\n");
    for (limit, value, why) in &r.limits {
        let _ = writeln!(s, "| `{limit}` | {value} | {why} |");
    }
}

fn restart_proof(r: &crate::steady::Restarts) -> String {
    if r.violations.is_empty() {
        "yes: same pids, statuses, events".into()
    } else {
        let shown: Vec<&String> = r.violations.iter().take(3).collect();
        format!("**no** ({} violations): {shown:?}", r.violations.len())
    }
}

/// The scale targets.
pub fn scale_rows(r: &crate::scale::ScaleResults, rows: &mut Vec<crate::report::TargetRow>) {
    let cpu = r.resync.as_ref().map(|x| x.cgroup_ms);
    rows.push((
        "Full resync of 1,000 ≤ 250 ms CPU (issue 19)",
        cpu.map_or(String::new(), |c| {
            format!("{} ms ({} containers)", f1(c), r.containers)
        }),
        cpu.map(|c| c <= 250.0),
    ));
    let rss = r.mem.rss_kib;
    rows.push((
        "Agent RSS with 1,000 ≤ 40 MiB (issue 19)",
        format!(
            "{:.1} MiB ({} containers)",
            rss as f64 / 1024.0,
            r.containers
        ),
        Some(rss <= 40 * 1024),
    ));
    let ready = r.restarts.ready.max();
    rows.push((
        "Restart with 1,000 until ready ≤ 1 s, nothing restarted (issue 19)",
        format!("{} ms max; {}", f1(ready), restart_proof(&r.restarts)),
        ready
            .is_finite()
            .then_some(ready <= 1000.0 && r.restarts.violations.is_empty()),
    ));
}
