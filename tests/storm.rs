//! A seeded storm: churn (create, edit, delete) against the real agent
//! while its runtime fails at random (before or after doing the work, per
//! verb) and the agent itself is SIGKILLed and restarted. Then the faults
//! stop, and what an operator checks must hold:
//! - every declared container runs in `runc state`, with exactly one main
//!   process (its init beside it, nothing else) running the declared spec;
//! - nothing is left of a deleted one: no depot directory, runtime state,
//!   cgroup or status file;
//! - the status files are exactly the declarations;
//! - one supervisor per main process, none left over.
//!
//! `RUNDMC_STORM_SEED` replays a storm; `RUNDMC_STORM_ACTIONS` lengthens it
//! (`make soak` runs a long one).

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/faulty_runtime.rs"]
mod faulty_runtime;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use faulty_runtime::{Fault, FaultyRuntime, Mode};
use support::agent::{Agent, AgentEnv, manifest};
use support::eventually;

/// How long the storm may take to settle once the faults stop.
const SETTLE: Duration = Duration::from_secs(90);

/// A small seeded generator (xorshift64*): the same seed, the same storm.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The faults of the storm: every verb the agent uses fails now and then,
/// before or after the runtime did the work, and deletes and kills hang
/// now and then (until `--runtime-timeout` ends them).
fn faults() -> Vec<Fault> {
    let f = |verb: &str, mode: Mode, p: f64| Fault::new(verb, mode).probability(p);
    vec![
        f("exec", Mode::FailAfter, 0.25),
        f("exec", Mode::FailBefore, 0.10),
        f("run", Mode::FailBefore, 0.15),
        f("run", Mode::FailAfter, 0.08),
        f("delete", Mode::FailAfter, 0.10),
        f("delete", Mode::FailBefore, 0.05),
        f("kill", Mode::FailBefore, 0.10),
        f("update", Mode::FailBefore, 0.10),
        f("delete", Mode::Hang, 0.03).hang_secs(30),
        f("kill", Mode::Hang, 0.03).hang_secs(30),
    ]
}

/// A service whose output carries `token`, so the running spec can be told.
fn service(name: &str, token: u64) -> String {
    let spec = format!(
        "  env: [{{name: TOKEN, value: \"{token}\"}}]\n  process:\n    args: [\"/bin/sh\", \"-c\", \"echo token $TOKEN; exec sleep 100000\"]\n"
    );
    manifest(name, &spec)
}

fn start(a: &AgentEnv) -> Agent {
    a.start()
}

#[test]
fn a_seeded_storm_of_faults_and_agent_kills_converges_with_no_duplicate_and_no_leak() {
    let seed = env_u64("RUNDMC_STORM_SEED", 3);
    let actions = env_u64("RUNDMC_STORM_ACTIONS", 60);
    let names: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    let mut a = AgentEnv::new("storm");
    let runtime = FaultyRuntime::new(&a.env.dir.join("faulty"), "runc", seed, &faults());
    a.extra = vec![
        "--runtime".into(),
        runtime.path().display().to_string(),
        "--runtime-timeout".into(),
        "5s".into(),
    ];
    let mut dice = Dice(seed | 1);
    let mut declared: BTreeMap<String, u64> = BTreeMap::new();
    let mut agent = start(&a);
    let mut kills = 0;
    for step in 0..actions {
        let name = &names[dice.below(names.len() as u64) as usize];
        let file = format!("{name}.yaml");
        match declared.get(name) {
            Some(_) if dice.below(3) == 0 => {
                a.remove(&file);
                declared.remove(name);
            }
            _ => {
                let token = step + 1;
                a.write(&file, &service(name, token));
                declared.insert(name.clone(), token);
            }
        }
        std::thread::sleep(Duration::from_millis(30 + dice.below(200)));
        if dice.below(8) == 0 {
            agent.kill9();
            kills += 1;
            std::thread::sleep(Duration::from_millis(dice.below(300)));
            agent = start(&a);
        }
    }
    // The last blow: every main is killed, and each one's next start is
    // reported failed by a runtime that did start it (a fresh runtime, so
    // its counts start at 0, and so an agent restart).
    runtime.clear();
    let mut by_mode: BTreeMap<String, usize> = BTreeMap::new();
    for c in runtime.injected() {
        *by_mode
            .entry(format!("{} {}", c.verb, c.mode.unwrap_or_default()))
            .or_default() += 1;
    }
    let churned: usize = by_mode.values().sum();
    let runtime = FaultyRuntime::new(&a.env.dir.join("faulty-last"), "runc", seed, &[]);
    agent.kill9();
    a.extra[1] = runtime.path().display().to_string();
    agent = start(&a);
    a.wait("the storm's containers to come up", SETTLE, || {
        declared.keys().all(|n| a.running(n))
    });
    runtime.set(&[Fault::new("exec", Mode::FailAfter).times(1)]);
    for name in declared.keys() {
        let Some(pid) = a.main_pid(name) else {
            continue;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let blown = || {
        let hit = runtime.injected();
        declared.keys().all(|n| hit.iter().any(|c| &c.id == n))
    };
    a.wait("a failed-after exec for every container", SETTLE, blown);
    runtime.clear();
    let injected = churned + runtime.injected().len();
    eprintln!(
        "storm: seed {seed:#x}, {actions} actions, {kills} agent kills, {injected} faults injected: {by_mode:?}"
    );
    assert!(injected > 0, "the storm injected no fault");

    let settled = eventually(SETTLE, || violations(&a, &names, &declared).is_empty());
    assert!(
        settled,
        "seed {seed:#x}: not converged: {:#?}\n--- agent log (tail) ---\n{}",
        violations(&a, &names, &declared),
        tail(&a.agent_log(), 80)
    );
    drop(agent);
}

/// Everything that does not hold yet, in words.
fn violations(a: &AgentEnv, names: &[String], declared: &BTreeMap<String, u64>) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        match declared.get(name) {
            Some(token) => running_once(a, name, *token, &mut out),
            None => nothing_left(a, name, &mut out),
        }
    }
    let mut statuses: Vec<String> = std::fs::read_dir(a.state.join("status"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_file())
                .map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .trim_end_matches(".yaml")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    statuses.sort();
    let want: Vec<String> = declared.keys().cloned().collect();
    if statuses != want {
        out.push(format!("status files {statuses:?}, declared {want:?}"));
    }
    let shims = procs(&shim_cgroup(a)).len();
    if shims != declared.len() {
        out.push(format!("{shims} supervisors for {} mains", declared.len()));
    }
    out
}

/// `name` runs in runc with its init and exactly one other process, which
/// printed `token`.
fn running_once(a: &AgentEnv, name: &str, token: u64, out: &mut Vec<String>) {
    if a.env.runc_status(name).as_deref() != Some("running") {
        out.push(format!("{name}: not running in runc"));
        return;
    }
    let pids = procs(&a.env.cgroup_dir("pids", name));
    if pids.len() != 2 {
        out.push(format!(
            "{name}: {} processes in its cgroup, want init and one main: {pids:?}",
            pids.len()
        ));
    }
    if !a.main_log(name).contains(&format!("token {token}")) {
        out.push(format!(
            "{name}: the main process does not run token {token}"
        ));
    }
    if a.status_field(name, "phase").as_deref() != Some("Running") {
        out.push(format!("{name}: phase {:?}", a.status_field(name, "phase")));
    }
}

/// Nothing of `name` is left.
fn nothing_left(a: &AgentEnv, name: &str, out: &mut Vec<String>) {
    if a.env.depot.join(name).exists() {
        out.push(format!("{name}: depot directory left"));
    }
    if a.env.runc_status(name).is_some() {
        out.push(format!("{name}: runtime state left"));
    }
    for controller in ["pids", "memory", "cpu", "freezer"] {
        if a.env.cgroup_dir(controller, name).exists() {
            out.push(format!("{name}: {controller} cgroup left"));
        }
    }
}

/// The supervisors' cgroup (pids controller, or v2).
fn shim_cgroup(a: &AgentEnv) -> std::path::PathBuf {
    let v1 = Path::new("/sys/fs/cgroup/pids");
    let base = if v1.is_dir() {
        v1.to_path_buf()
    } else {
        Path::new("/sys/fs/cgroup").to_path_buf()
    };
    base.join(a.env.shim_cgroup())
}

/// The pids in a cgroup (none when it does not exist).
fn procs(cgroup: &Path) -> Vec<i32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
