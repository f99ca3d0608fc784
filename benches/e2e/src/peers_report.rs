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
    let (raw_start, raw_burst) = raw.map_or((f64::NAN, f64::NAN), |r| (r.start.p50(), r.burst.p50()));
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
        let cpu = r.idle_cpu_pct.map_or("–".into(), |c| format!("{c:.3}% of a core"));
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
