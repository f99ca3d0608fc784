//! `BENCHMARKS.md`: the machine, the method, every figure with its median,
//! p95 and ratio to the raw runtime measured in the same run, and where each
//! of issue 6's targets stands.

use std::fmt::Write;
use std::time::Duration;

use crate::burst::{Bursts, Side};
use crate::exit::Exits;
use crate::images::ImageResults;
use crate::latency::Latencies;
use crate::procfs::Mem;
use crate::stats::{Samples, ratio};
use crate::steady::{Idle, Restarts, Resync};

/// One runtime's latency and burst figures.
#[derive(Debug)]
pub struct RuntimeResults {
    /// `runc` or `crun`.
    pub runtime: String,
    /// One at a time.
    pub latency: Latencies,
    /// Many at once.
    pub bursts: Bursts,
    /// Many at once beside a CPU hog (issue 19), when stress-ng is there.
    pub saturated: Option<Bursts>,
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Results {
    /// (what, value) of the machine.
    pub machine: Vec<(String, String)>,
    /// Per runtime.
    pub runtimes: Vec<RuntimeResults>,
    /// Exit detection (runc).
    pub exits: Option<Exits>,
    /// Idle agent with 0, 100, 300 containers.
    pub idle: Vec<Idle>,
    /// One supervisor's and one init's memory.
    pub shim_init: Option<(Mem, Mem)>,
    /// Restarts, by container count.
    pub restarts: Vec<Restarts>,
    /// Resync cost, by container count.
    pub resyncs: Vec<Resync>,
    /// The images phase (issue 13).
    pub images: Option<ImageResults>,
    /// The network phase (issue 14).
    pub network: Option<crate::network::NetResults>,
    /// The seccomp phase (issue 15).
    pub seccomp: Option<crate::seccomp::SeccompResults>,
    /// The probes phase (issue 16).
    pub probes: Option<crate::probes::ProbeResults>,
    /// The peers phase (issue 19).
    pub peers: Option<crate::peers::PeerResults>,
    /// The scale phase (issue 19).
    pub scale: Option<crate::scale::ScaleResults>,
    /// What was skipped or went wrong, and why.
    pub notes: Vec<String>,
    /// Hand-written findings (`benches/e2e/FINDINGS.md`), appended as they are.
    pub findings: Option<String>,
    /// How long the run took.
    pub took: Duration,
}

pub fn f1(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.1}")
    }
}

pub fn x(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.2}×")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Renders the whole report.
pub fn render(r: &Results) -> String {
    let mut s = String::new();
    s.push_str(HEADER);
    let _ = writeln!(s, "Run took {:.1} min.\n", r.took.as_secs_f64() / 60.0);
    s.push_str("## Machine\n\n| | |\n|---|---|\n");
    for (k, v) in &r.machine {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s.push_str(METHOD);
    targets(&mut s, r);
    latency_table(&mut s, r);
    burst_table(&mut s, r);
    cpu_table(&mut s, r);
    if let Some(p) = &r.peers {
        crate::peers_report::render(&mut s, p);
    }
    exit_table(&mut s, r);
    steady_tables(&mut s, r);
    if let Some(scale) = &r.scale {
        crate::peers_report::render_scale(&mut s, scale);
    }
    if let Some(images) = &r.images {
        crate::images_report::render(&mut s, images);
    }
    if let Some(network) = &r.network {
        crate::network_report::render(&mut s, network);
    }
    if let Some(seccomp) = &r.seccomp {
        crate::seccomp_report::render(&mut s, seccomp);
    }
    if let Some(probes) = &r.probes {
        crate::probes_report::render(&mut s, probes);
    }
    if let Some(f) = &r.findings {
        s.push('\n');
        s.push_str(f.trim_end());
        s.push('\n');
    }
    if !r.notes.is_empty() {
        s.push_str("\n## Notes from this run\n\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

const HEADER: &str = "# Benchmarks\n\nWritten by `make bench` (`benches/e2e`, binary `rundmc-bench`): the release \
agent binary and the raw OCI runtime, driven in the same run on the same image and the agent's own \
bundle. Absolute times drift by more than 1.5× hour to hour on this machine, so the figures to \
compare are the ratios, agent ÷ raw, measured side by side.\n\n";

const METHOD: &str = "
## Method

- **Agent**: `target/release/rundmc agent` with default flags (4 workers, resync 30 s, relist 20 s) \
on a fresh manifest directory, depot, state directory and runtime root, in a CPU-accounting cgroup of \
its own. Manifests are written atomically (temp file, rename). The main process is \
`/bin/sh -c \"echo ready; exec sleep 100000\"`.
- **Raw**: the same runtime binary driven by hand on a copy of the agent's own `config.json` \
(hostname and cgroup path made its own) and its main `process.json`: `mkdir`, overlay mount of the \
image, `run --detach --pid-file` (create and start in one runtime process, as the agent does), \
`exec --detach` with stdout to a file. Teardown: `kill KILL`, \
wait for init on a pidfd, `delete` (never `--force`), unmount, remove.
- **Where files live**: depots on disk (as /var/lib: records, the overlay's upper and work, the \
processes' logs); state directories, OCI bundles (`config.json`, the rootfs mount point, process specs, \
pid files, the supervisors' process directories) and runtime roots on a tmpfs (as /run, where the \
agent's defaults put them; this VM's /run is not a tmpfs, so /dev/shm stands in), for agent and raw \
alike. The agent marks its depot's root `chattr +T`, and the raw bundles' directory on disk is \
marked the same, so ext4 spreads the containers' directories over its block groups.
- **Orphans**: the harness is a child subreaper and reaps at once what `exec --detach` orphans, as \
systemd would. This VM's PID 1 reaps only every second or two, and a dying pid namespace waits for \
every member to be reaped, which would otherwise add seconds to raw teardown.
- **Drop to running**: from the manifest's rename into the watched directory until the main process's \
first line is in its log (raw: from `mkdir` until the line is in its file), polled every 1 ms. Agent \
and raw samples alternate, the order flipping every sample; two warm-up samples are dropped. Ratio \
p50 = agent p50 ÷ raw p50; likewise p95.
- **Teardown of one**: from the manifest's removal until the container's depot directory is gone (raw: \
kill + wait + delete + unmount + remove).
- **Burst / teardown of N**: N manifests written (removed) at once until every main process's first line \
is in its log (every depot directory is gone); raw: the same N containers by as many threads as the \
agent has workers. Containers/s = N ÷ time to the last one, median over rounds; each container's time \
counts from the round's start. Rounds alternate which side goes first.
- **Exit detection**: containers with `restartPolicy: Never`; each main process SIGKILLed from the host; \
inotify marks when the supervisor renames `exit.json` into place and when the agent renames a status \
file that records the termination into place.
- **Idle CPU**: CPU of the agent's cgroup (the agent, every runtime process it spawned, and the \
supervisors, in ns) and of the agent process alone (`/proc/<pid>/stat`, 10 ms ticks) over the window, \
with the default periods. **RSS/PSS** from `/proc/<pid>/smaps_rollup`. Raw runc keeps no process \
running, so these figures are absolute.
- **Restart**: the agent SIGKILLed with everything running and started again; ready = it holds a \
pidfd on every main process's supervisor (it awaits every exit again), read from `/proc/<pid>/fdinfo`. \
Proof that nothing restarted: init, supervisor and main pids unchanged, every status `Running` with \
`restartCount: 0`, no new `Created`/`Started` event.
- **Resync**: the agent restarted with `--resync-period P --relist-period 1h`; cgroup CPU over a window \
of 10 periods whose edges fall half-way between ticks, divided by 10.
- **Micro-benchmark**: `cargo bench --bench process_spawn` compares the supervisor's spawn with a bare \
`runc exec -d` into one container; it is not part of this run.
";

fn targets(s: &mut String, r: &Results) {
    s.push_str("\n## Targets (issues 6 and 19)\n\n| target | measured | |\n|---|---|---|\n");
    for (target, measured, met) in target_rows(r) {
        let mark = match met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(s, "| {target} | {measured} | {mark} |");
    }
}

pub type TargetRow = (&'static str, String, Option<bool>);

fn target_rows(r: &Results) -> Vec<TargetRow> {
    let mut rows = Vec::new();
    if let Some(rt) = r.runtimes.iter().find(|x| x.runtime == "runc") {
        runc_rows(rt, &mut rows);
    }
    saturated_rows(r, &mut rows);
    if let Some(scale) = &r.scale {
        crate::peers_report::scale_rows(scale, &mut rows);
    }
    let exit = r.exits.as_ref().map(|e| e.in_status.p50());
    rows.push((
        "Exit detection p50 ≤ 10 ms",
        exit.map(|v| format!("{} ms", f1(v))).unwrap_or_default(),
        exit.map(|v| v <= 10.0),
    ));
    idle_rows(r, &mut rows);
    if let Some((shim, init)) = r.shim_init {
        let kib = |m: Mem| format!("{} KiB", m.pss_kib);
        let shim_ok = Some(shim.pss_kib <= 1024);
        rows.push(("Supervisor ≤ 1 MiB PSS", kib(shim), shim_ok));
        rows.push(("Init ≤ 200 KiB PSS", kib(init), Some(init.pss_kib <= 200)));
    }
    let resync = r.resyncs.iter().find(|x| x.containers == 300);
    rows.push((
        "Full resync of 300 ≤ 100 ms CPU",
        resync
            .map(|x| format!("{} ms", f1(x.cgroup_ms)))
            .unwrap_or_default(),
        resync.map(|x| x.cgroup_ms <= 100.0),
    ));
    rows
}

/// The targets stated as ratios to raw runc.
fn runc_rows(rt: &RuntimeResults, rows: &mut Vec<TargetRow>) {
    let (l, b) = (&rt.latency, &rt.bursts);
    let r50 = ratio(l.agent_drop.p50(), l.raw_drop.p50());
    let r95 = ratio(l.agent_drop.p95(), l.raw_drop.p95());
    rows.push(("Drop to running p50 ≤ 1.15× raw", x(r50), Some(r50 <= 1.15)));
    rows.push(("Drop to running p95 ≤ 1.3× raw", x(r95), Some(r95 <= 1.3)));
    let (agent, raw) = (b.agent_up.rates.p50(), b.raw_up.rates.p50());
    let share = ratio(agent, raw);
    let text = format!(
        "{:.0}% ({} vs {} containers/s)",
        share * 100.0,
        f1(agent),
        f1(raw)
    );
    rows.push(("Burst ≥ 90% of raw throughput", text, Some(share >= 0.9)));
    let t1 = ratio(l.agent_teardown.p50(), l.raw_teardown.p50());
    rows.push(("Teardown (one) p50 ≤ 1.3× raw", x(t1), Some(t1 <= 1.3)));
    let tn = ratio(b.agent_down.each.p50(), b.raw_down.each.p50());
    rows.push((
        "Teardown (of N, each) p50 ≤ 1.3× raw",
        x(tn),
        Some(tn <= 1.3),
    ));
    let cpu = b.cpu_up.agent.p50();
    rows.push((
        "Agent CPU per container in a burst, status and event writes in, ≤ 2 ms (issue 19)",
        format!("{cpu:.2} ms"),
        cpu.is_finite().then_some(cpu <= 2.0),
    ));
    let bare = without_writes(&b.cpu_up);
    rows.push((
        "Agent CPU per container in a burst without status and event writes, ≤ 1 ms (issue 19)",
        format!(
            "{bare:.2} ms (the raw driver's own: {:.2} ms)",
            b.cpu_up.raw_driver.p50()
        ),
        bare.is_finite().then_some(bare <= 1.0),
    ));
}

/// The agent's CPU per container less what it charged to statuses and
/// events, median over rounds (each round's difference).
fn without_writes(c: &crate::burst::CpuSide) -> f64 {
    let diffs: Vec<f64> = c
        .agent
        .0
        .iter()
        .zip(&c.report.0)
        .map(|(a, r)| a - r)
        .collect();
    crate::stats::Samples(diffs).p50()
}

/// Issue 19: burst throughput beside a CPU hog, against raw.
fn saturated_rows(r: &Results, rows: &mut Vec<TargetRow>) {
    for (runtime, target, floor) in [
        (
            "runc",
            "Burst, saturated, ≥ 0.97× raw runc (issue 19)",
            0.97,
        ),
        (
            "crun",
            "Burst, saturated, ≥ 0.95× raw crun (issue 19)",
            0.95,
        ),
    ] {
        let rt = r.runtimes.iter().find(|x| x.runtime == runtime);
        let Some(b) = rt.and_then(|rt| rt.saturated.as_ref()) else {
            rows.push((target, String::new(), None));
            continue;
        };
        let (agent, raw) = (b.agent_up.rates.p50(), b.raw_up.rates.p50());
        let share = ratio(agent, raw);
        let text = format!("{share:.3}× ({} vs {} containers/s)", f1(agent), f1(raw));
        rows.push((target, text, share.is_finite().then_some(share >= floor)));
    }
}

fn idle_rows(r: &Results, rows: &mut Vec<TargetRow>) {
    let at = |n: usize| r.idle.iter().find(|i| i.containers == n);
    let cpu = at(300).map(|i| i.cgroup_pct);
    rows.push((
        "Idle CPU with 300 ≤ 1% of a core",
        cpu.map(|c| format!("{c:.2}%")).unwrap_or_default(),
        cpu.map(|c| c <= 1.0),
    ));
    let rss0 = at(0).map(|i| i.mem.rss_kib);
    rows.push((
        "Agent RSS idle ≤ 20 MiB",
        rss0.map(mib).unwrap_or_default(),
        rss0.map(|k| k <= 20 * 1024),
    ));
    if let (Some(a), Some(b)) = (at(0), at(300)) {
        let per = (b.mem.rss_kib as f64 - a.mem.rss_kib as f64) / 300.0;
        rows.push((
            "Agent RSS ≤ 64 KiB more per container",
            format!("{per:.1} KiB"),
            Some(per <= 64.0),
        ));
    }
}

fn latency_table(s: &mut String, r: &Results) {
    s.push_str("\n## One at a time (ms)\n\n| figure | runtime | n | agent p50 | agent p95 | raw p50 | raw p95 | ratio p50 | ratio p95 |\n|---|---|---|---|---|---|---|---|---|\n");
    for rt in &r.runtimes {
        let l = &rt.latency;
        for (what, a, b) in [
            ("Drop to running", &l.agent_drop, &l.raw_drop),
            ("Teardown of one", &l.agent_teardown, &l.raw_teardown),
        ] {
            let _ = writeln!(
                s,
                "| {what} | {} | {} | {} | {} | {} | {} | {} | {} |",
                rt.runtime,
                a.len(),
                f1(a.p50()),
                f1(a.p95()),
                f1(b.p50()),
                f1(b.p95()),
                x(ratio(a.p50(), b.p50())),
                x(ratio(a.p95(), b.p95()))
            );
        }
    }
}

fn burst_table(s: &mut String, r: &Results) {
    s.push_str("\n## Many at once\n\n| figure | runtime | N × rounds | parallelism | agent containers/s | raw containers/s | ratio | agent each p50 / p95 ms | raw each p50 / p95 ms | ratio p50 / p95 |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for rt in &r.runtimes {
        let b = &rt.bursts;
        for (what, a, w) in [
            ("Burst", &b.agent_up, &b.raw_up),
            ("Teardown", &b.agent_down, &b.raw_down),
        ] {
            burst_row(s, what, &rt.runtime, b, a, w);
        }
        if let Some(b) = &rt.saturated {
            for (what, a, w) in [
                ("Burst, saturated", &b.agent_up, &b.raw_up),
                ("Teardown, saturated", &b.agent_down, &b.raw_down),
            ] {
                burst_row(s, what, &rt.runtime, b, a, w);
            }
        }
    }
    let _ = writeln!(
        s,
        "\nSaturated: the same bursts with `{}` running beside, for agent and raw alike.",
        crate::hog::WHAT
    );
}

fn burst_row(s: &mut String, what: &str, runtime: &str, b: &Bursts, a: &Side, w: &Side) {
    let _ = writeln!(
        s,
        "| {what} | {runtime} | {} × {} | {} | {} | {} | {} | {} / {} | {} / {} | {} / {} |",
        b.size,
        a.rates.len(),
        b.parallelism,
        f1(a.rates.p50()),
        f1(w.rates.p50()),
        x(ratio(a.rates.p50(), w.rates.p50())),
        f1(a.each.p50()),
        f1(a.each.p95()),
        f1(w.each.p50()),
        f1(w.each.p95()),
        x(ratio(a.each.p50(), w.each.p50())),
        x(ratio(a.each.p95(), w.each.p95()))
    );
}

fn cpu_table(s: &mut String, r: &Results) {
    s.push_str("\n## CPU per container in the bursts (issue 19; ms, median over rounds)\n\nAgent process: the agent's own threads (its process CPU clock, `clock_getcpuclockid`), from the manifests' writes until every status file says so and 200 ms more, so status and event writes are in. Status and events: what of it the agent charged to computing and writing statuses and events (`rundmc_report_cpu_seconds_total`, each thread's CPU clock around that work); the next column is the agent without them. Raw driver: the harness's own threads making (or removing) the same containers by hand: directories, the overlay mount, the bundle's files, spawning and reaping the runtime; the least any driver of the runtime pays on this disk. Agent cgroup: the agent, the runtime processes it spawned and the supervisors. Raw runtime: the runtime processes the harness spawned and reaped for the same containers.\n\n| runtime | phase | agent process | status and events | agent without them | raw driver | agent cgroup | raw runtime | agent threads (bursts) |\n|---|---|---|---|---|---|---|---|---|\n");
    for rt in &r.runtimes {
        let sat = rt.saturated.as_ref();
        let rows = [
            ("burst", Some(&rt.bursts.cpu_up)),
            ("teardown", Some(&rt.bursts.cpu_down)),
            ("burst, saturated", sat.map(|b| &b.cpu_up)),
            ("teardown, saturated", sat.map(|b| &b.cpu_down)),
        ];
        for (what, c) in rows {
            let Some(c) = c else { continue };
            let threads = match what.starts_with("burst") {
                true => crate::cpu::top_threads(&c.threads, 4),
                false => String::new(),
            };
            let _ = writeln!(
                s,
                "| {} | {what} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {threads} |",
                rt.runtime,
                c.agent.p50(),
                c.report.p50(),
                without_writes(c),
                c.raw_driver.p50(),
                f1(c.cgroup.p50()),
                f1(c.raw.p50()),
            );
        }
    }
}

fn exit_table(s: &mut String, r: &Results) {
    let Some(e) = &r.exits else { return };
    s.push_str("\n## Exit detection (runc, ms after SIGKILL)\n\n| until | n | p50 | p95 | max |\n|---|---|---|---|---|\n");
    for (what, v) in [
        (
            "the supervisor's `exit.json` is in place",
            &e.recorded_by_supervisor,
        ),
        ("the status file records the termination", &e.in_status),
    ] {
        let _ = writeln!(
            s,
            "| {what} | {} | {} | {} | {} |",
            v.len(),
            f1(v.p50()),
            f1(v.p95()),
            f1(v.max())
        );
    }
}

fn steady_tables(s: &mut String, r: &Results) {
    s.push_str("\n## Steady state (runc)\n\n| containers | idle window | CPU, agent cgroup | CPU, agent process | agent RSS | agent PSS |\n|---|---|---|---|---|---|\n");
    for i in &r.idle {
        let _ = writeln!(
            s,
            "| {} | {:.0} s | {:.3}% of a core | {:.3}% of a core | {} | {} |",
            i.containers,
            i.seconds,
            i.cgroup_pct,
            i.process_pct,
            mib(i.mem.rss_kib),
            mib(i.mem.pss_kib)
        );
    }
    if let Some((shim, init)) = r.shim_init {
        s.push_str("\n| one process | RSS | PSS |\n|---|---|---|\n");
        let _ = writeln!(
            s,
            "| supervisor (`rundmc-shim`) | {} KiB | {} KiB |",
            shim.rss_kib, shim.pss_kib
        );
        let _ = writeln!(
            s,
            "| init (`rundmc-init`) | {} KiB | {} KiB |",
            init.rss_kib, init.pss_kib
        );
    }
    restart_and_resync_tables(s, r);
}

fn restart_and_resync_tables(s: &mut String, r: &Results) {
    s.push_str("\n| restart with | n | ready p50 ms | ready p95 ms | nothing restarted |\n|---|---|---|---|---|\n");
    for x in &r.restarts {
        let proof = if x.violations.is_empty() {
            "yes: same pids, statuses, events".to_string()
        } else {
            format!("**no**: {}", x.violations.join("; "))
        };
        let _ = writeln!(
            s,
            "| {} containers | {} | {} | {} | {proof} |",
            x.containers,
            x.ready.len(),
            f1(x.ready.p50()),
            f1(x.ready.p95())
        );
    }
    s.push_str("\n| resync of | period | CPU per resync, agent cgroup | CPU per resync, agent process |\n|---|---|---|---|\n");
    for x in &r.resyncs {
        let _ = writeln!(
            s,
            "| {} containers | {:?} | {} ms | {} ms |",
            x.containers,
            x.period,
            f1(x.cgroup_ms),
            f1(x.process_ms)
        );
    }
}

/// `Samples` of a figure, for the terminal.
pub fn brief(what: &str, v: &Samples) -> String {
    format!(
        "{what}: n={} p50={} p95={}",
        v.len(),
        f1(v.p50()),
        f1(v.p95())
    )
}
