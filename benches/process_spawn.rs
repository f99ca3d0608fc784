//! Starting a process under `rundmc-shim` against a bare `runc exec -d` of
//! the same process spec into the same container, in the same run; and the
//! supervisor's memory while it supervises a sleeping process.
//! Run: `cargo bench --bench process_spawn` (as root).

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "../tests/support/common.rs"]
mod common;
#[path = "../tests/support/process_container.rs"]
mod container;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use container::{Options, TestContainer, shim_binary};
use rundmc::process::{Tracker, cleanup};

const RUNS: usize = 25;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `Rss` and `Pss` of `pid` in KiB, from `/proc/<pid>/smaps_rollup`.
fn rss_pss(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (field("Rss:"), field("Pss:"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let tracker = Tracker::new(shim_binary());
    let c = TestContainer::start("bench", Options::default());
    let (mut bare, mut shim) = (Vec::new(), Vec::new());
    let mut first = None;
    let mut last = None;
    for i in 0..RUNS {
        let dir = c.process_dir(&format!("bare-{i}"), &["sleep", "100000"]);
        let argv = c.runtime_argv(&dir, &c.id);
        let started = Instant::now();
        let status = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        bare.push(started.elapsed());
        assert!(status.success(), "bare runc exec failed");

        let launch = c.launch(&format!("shim-{i}"), &["sleep", "100000"]);
        let started = Instant::now();
        let p = tracker.spawn(launch).await.unwrap();
        shim.push(started.elapsed());
        if i == 0 {
            first = Some(rss_pss(p.supervisor().pid));
        }
        last = Some(p);
    }
    let (rss1, pss1) = first.unwrap();
    let (rss_n, pss_n) = rss_pss(last.unwrap().supervisor().pid);
    let (b, s) = (median(bare), median(shim));
    println!("process_spawn: {RUNS} runs each, process `sleep 100000`");
    println!(
        "  bare runc exec -d         median {:>8.2} ms",
        b.as_secs_f64() * 1e3
    );
    println!(
        "  Tracker::spawn (to Ready) median {:>8.2} ms",
        s.as_secs_f64() * 1e3
    );
    println!(
        "  ratio spawn / bare        {:.3}",
        s.as_secs_f64() / b.as_secs_f64()
    );
    println!("  shim memory, 1 shim running:   RSS {rss1} KiB, PSS {pss1} KiB");
    println!("  shim memory, {RUNS} shims running: RSS {rss_n} KiB, PSS {pss_n} KiB");
    c.destroy();
    cleanup(&c.processes, Duration::from_secs(5)).await.unwrap();
}
