//! Planning: a pure function of what is declared and what is observed,
//! giving the steps that bring one container to its declaration. All the
//! reconciler's logic lives here; the controller only observes and executes.

use std::time::{Duration, SystemTime};

use crate::api::{ContainerSpec, DesiredState, ProbeKind, RestartPolicy, Termination};
use crate::probe::Health;
use crate::runtime::Status;

use super::backoff::CrashLoopBackoff;

/// The container as observed in the depot and the runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerObs<'a> {
    /// No depot directory.
    Absent,
    /// A depot directory without a record: a create or destroy was cut short.
    HalfMade,
    /// A complete bundle, made from `spec`, and what the runtime says of it.
    Present {
        /// The spec recorded in the depot.
        spec: &'a ContainerSpec,
        /// The runtime's status; `None` when the runtime lost it.
        runtime: Option<Status>,
    },
}

/// The main process (or another process of the container) as observed in
/// its process directory.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum MainObs {
    /// Not started since the container was made (or since a stop).
    #[default]
    NotStarted,
    /// Running.
    Running,
    /// Ended.
    Exited {
        /// Exit code (128+signal for signals); `None` when its supervisor
        /// died without recording one.
        code: Option<i32>,
        /// When it ended (when the loss was noticed, for a lost one).
        finished_at: SystemTime,
        /// How long it ran.
        ran_for: Duration,
    },
}

/// What the depot remembers of the main process between starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MainHistory {
    /// Restarts so far.
    pub restarts: u32,
    /// The backoff delay waited before the current run, if it was a restart.
    pub last_delay: Option<Duration>,
    /// The current run was ended by `state: Stopped`, not by itself.
    pub stopped: bool,
}

/// An init process as observed: whether it completed (recorded in the
/// depot), its current run, and its history.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InitObs {
    /// It ran to completion since the container was made.
    pub completed: bool,
    /// Its current run.
    pub run: MainObs,
    /// Its starts, restarts and backoff.
    pub history: MainHistory,
}

/// A sidecar as observed, by name: its current run, history, probes and
/// last termination.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SidecarObs {
    /// Its name in the recorded spec.
    pub name: String,
    /// Its current run.
    pub run: MainObs,
    /// Its starts, restarts and backoff.
    pub history: MainHistory,
    /// What its current run's probes say.
    pub health: Health,
    /// How its last run ended.
    pub last_termination: Option<Termination>,
}

/// Everything observed about one handle.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed<'a> {
    /// The container.
    pub container: ContainerObs<'a>,
    /// Its main process.
    pub main: MainObs,
    /// The main process's history.
    pub history: MainHistory,
    /// What the running main process's probes say.
    pub health: Health,
    /// The init processes, in the spec's order.
    pub inits: Vec<InitObs>,
    /// The sidecars of the recorded spec.
    pub sidecars: Vec<SidecarObs>,
}

/// One step of a plan, executed in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Stop gracefully and destroy the container.
    Destroy,
    /// Create the container.
    Create,
    /// Apply new limits in place (`runc update`).
    UpdateLimits,
    /// Record a spec change that needs no action on the container.
    UpdateRecord,
    /// Start the main process (first time, or after a stop).
    StartMain,
    /// Restart the main process after it ended; `delay` is the backoff waited.
    RestartMain {
        /// The crash-loop delay that was waited.
        delay: Duration,
    },
    /// Stop every process but init, keeping the container.
    StopMain,
    /// Kill the main process, which failed `probe`; the restart policy
    /// takes it from there, as after any exit.
    KillUnhealthy {
        /// The probe that failed.
        probe: ProbeKind,
    },
    /// Start init process `index` (first time, or after a stop).
    StartInit {
        /// Its place in `spec.initProcesses`.
        index: usize,
    },
    /// Run init process `index` again after it failed; `delay` is the
    /// backoff waited.
    RestartInit {
        /// Its place in `spec.initProcesses`.
        index: usize,
        /// The crash-loop delay that was waited.
        delay: Duration,
    },
    /// Record in the depot that init process `index` completed.
    InitDone {
        /// Its place in `spec.initProcesses`.
        index: usize,
    },
    /// Start sidecar `index` of the declared spec (first time, after a
    /// stop, or after an edit made it new).
    StartSidecar {
        /// Its place in the declared `spec.sidecars`.
        index: usize,
    },
    /// Restart sidecar `index` after it ended; `delay` is the backoff waited.
    RestartSidecar {
        /// Its place in the declared `spec.sidecars`.
        index: usize,
        /// The crash-loop delay that was waited.
        delay: Duration,
    },
    /// Kill sidecar `index`, which failed `probe`; its restart policy takes
    /// it from there.
    KillSidecar {
        /// Its place in the declared `spec.sidecars`.
        index: usize,
        /// The probe that failed.
        probe: ProbeKind,
    },
    /// Stop sidecar `index` of the recorded spec and forget its history:
    /// it was removed or changed.
    RemoveSidecar {
        /// Its place in the recorded `spec.sidecars`.
        index: usize,
    },
}

/// Why a plan is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Crash-loop backoff before restarting the main process.
    BackOff {
        /// The whole delay.
        delay: Duration,
        /// What is left of it.
        remaining: Duration,
    },
    /// Crash-loop backoff before running init process `index` again.
    InitBackOff {
        /// Its place in `spec.initProcesses`.
        index: usize,
        /// The whole delay.
        delay: Duration,
        /// What is left of it.
        remaining: Duration,
    },
}

/// The steps for one handle, and when to look again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In order.
    pub steps: Vec<Step>,
    /// Reconcile again after this long, even without an event.
    pub requeue_after: Option<Duration>,
    /// Set while waiting on purpose.
    pub waiting: Option<Waiting>,
}

impl Plan {
    fn of(steps: Vec<Step>) -> Self {
        Self {
            steps,
            ..Self::default()
        }
    }
}

/// How a spec change must be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Identical.
    None,
    /// Only fields that need no action on the container (properties, policy...).
    RecordOnly,
    /// Limits changed, and nothing else that needs a new container.
    LimitsOnly,
    /// Something baked into the bundle or the main process changed.
    Recreate,
}

/// Classify the change from `have` to `want`. Every field of the spec is
/// named here, so a new one does not compile until it is classified.
pub fn classify(have: &ContainerSpec, want: &ContainerSpec) -> Change {
    if have == want {
        return Change::None;
    }
    let ContainerSpec {
        // Only picks the node; a container on another is not ours.
        node_name: _,
        // Read at each create, or by the main process's plan.
        image_pull_policy: _,
        image_pull_secrets: _,
        restart_policy: _,
        state: _,
        properties: _,
        termination_grace_period_seconds: _,
        limits,
        // Baked into the bundle, its network or the main process.
        image,
        rootfs,
        hostname,
        env,
        process,
        // Init processes run once per make of the container.
        init_processes,
        // Each is stopped and started on its own (sidecar_plan).
        sidecars: _,
        // Fixed in the peas' bundles when they are made: simplest made
        // again with everything.
        share_process_namespace,
        mounts,
        privileged,
        security_context,
        host_users,
        host_network,
        network,
        ports,
        dns,
    } = want;
    let baked = have.image != *image
        || have.rootfs != *rootfs
        || have.hostname != *hostname
        || have.env != *env
        || have.process != *process
        || have.init_processes != *init_processes
        || have.share_process_namespace != *share_process_namespace
        || have.mounts != *mounts
        || have.privileged != *privileged
        || have.security_context != *security_context
        || have.host_users != *host_users
        || have.host_network != *host_network
        || have.network != *network
        || have.ports != *ports
        || have.dns != *dns;
    if baked {
        Change::Recreate
    } else if have.limits != *limits {
        Change::LimitsOnly
    } else {
        Change::RecordOnly
    }
}

/// Whether a main process that ended with `code` is restarted under `policy`.
pub fn should_restart(policy: RestartPolicy, code: Option<i32>) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => code != Some(0),
        RestartPolicy::Never => false,
    }
}

/// The plan for one handle: `desired` is `None` when nothing declares it.
pub fn plan(
    desired: Option<&ContainerSpec>,
    obs: &Observed<'_>,
    backoff: &CrashLoopBackoff,
    now: SystemTime,
) -> Plan {
    let Some(want) = desired else {
        return match obs.container {
            ContainerObs::Absent => Plan::default(),
            _ => Plan::of(vec![Step::Destroy]),
        };
    };
    match &obs.container {
        ContainerObs::Absent => Plan::of(create_and_start(want)),
        ContainerObs::HalfMade => Plan::of(recreate(want)),
        ContainerObs::Present { runtime, .. }
            if !matches!(runtime, Some(Status::Running | Status::Paused)) =>
        {
            Plan::of(recreate(want))
        }
        ContainerObs::Present { spec: have, .. } => {
            let record = match classify(have, want) {
                Change::Recreate => return Plan::of(recreate(want)),
                Change::LimitsOnly => Some(Step::UpdateLimits),
                Change::RecordOnly => Some(Step::UpdateRecord),
                Change::None => None,
            };
            // Removed and changed sidecars go before the record says they
            // did, so a crash in between leaves them to go again.
            let (mut steps, fresh) = sidecar_edits(have, want);
            steps.extend(record);
            let main = main_plan(want, obs, backoff, now);
            let mut sidecars = Plan::default();
            if want.state == DesiredState::Running && inits_done(want, obs, backoff, now) {
                sidecars = sidecar_plan(want, obs, &fresh, backoff, now);
            }
            // Sidecars start before the main process.
            let at = main
                .steps
                .iter()
                .position(|s| matches!(s, Step::StartMain | Step::RestartMain { .. }))
                .unwrap_or(main.steps.len());
            let mut main_steps = main.steps;
            let tail = main_steps.split_off(at);
            steps.extend(main_steps);
            steps.extend(sidecars.steps);
            steps.extend(tail);
            let requeue_after = match (main.requeue_after, sidecars.requeue_after) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            Plan {
                steps,
                requeue_after,
                waiting: main.waiting,
            }
        }
    }
}

/// Whether the init processes have all completed (or will have, once this
/// plan records it): only then do sidecars start.
fn inits_done(
    want: &ContainerSpec,
    obs: &Observed<'_>,
    backoff: &CrashLoopBackoff,
    now: SystemTime,
) -> bool {
    obs.main != MainObs::NotStarted || init_plan(want, obs, backoff, now).is_ok()
}

/// The sidecars an edit removed or changed, to stop (by their place in the
/// recorded spec); and the names of those to start afresh (changed or new).
fn sidecar_edits(have: &ContainerSpec, want: &ContainerSpec) -> (Vec<Step>, Vec<String>) {
    let mut steps = vec![];
    for (index, h) in have.sidecars.iter().enumerate() {
        if !want.sidecars.contains(h) {
            steps.push(Step::RemoveSidecar { index });
        }
    }
    let fresh = want
        .sidecars
        .iter()
        .filter(|w| !have.sidecars.contains(w))
        .map(|w| w.name.clone())
        .collect();
    (steps, fresh)
}

/// What each declared sidecar needs, on its own; `fresh` ones (new or
/// changed by this edit) start anew.
fn sidecar_plan(
    want: &ContainerSpec,
    obs: &Observed<'_>,
    fresh: &[String],
    backoff: &CrashLoopBackoff,
    now: SystemTime,
) -> Plan {
    let mut plan = Plan::default();
    for (index, sidecar) in want.sidecars.iter().enumerate() {
        let seen = obs.sidecars.iter().find(|o| o.name == sidecar.name);
        let seen = match seen {
            Some(seen) if !fresh.contains(&sidecar.name) => seen,
            _ => {
                plan.steps.push(Step::StartSidecar { index });
                continue;
            }
        };
        match seen.run {
            MainObs::NotStarted => plan.steps.push(Step::StartSidecar { index }),
            MainObs::Running => {
                if let Some(probe) = seen.health.kill {
                    plan.steps.push(Step::KillSidecar { index, probe });
                }
            }
            MainObs::Exited { .. } if seen.history.stopped => {
                plan.steps.push(Step::StartSidecar { index });
            }
            MainObs::Exited {
                code,
                finished_at,
                ran_for,
            } => {
                if !should_restart(sidecar.policy(), code) {
                    continue;
                }
                let delay = backoff.next_delay(seen.history.last_delay, ran_for);
                let waited = now.duration_since(finished_at).unwrap_or_default();
                match delay.checked_sub(waited).filter(|r| !r.is_zero()) {
                    None => plan.steps.push(Step::RestartSidecar { index, delay }),
                    Some(remaining) => {
                        let r = plan.requeue_after.map_or(remaining, |r| r.min(remaining));
                        plan.requeue_after = Some(r);
                    }
                }
            }
        }
    }
    plan
}

fn create_and_start(want: &ContainerSpec) -> Vec<Step> {
    let mut steps = vec![Step::Create];
    if want.state != DesiredState::Running {
        return steps;
    }
    if !want.init_processes.is_empty() {
        steps.push(Step::StartInit { index: 0 });
        return steps;
    }
    steps.extend((0..want.sidecars.len()).map(|index| Step::StartSidecar { index }));
    if want.runs_main() {
        steps.push(Step::StartMain);
    }
    steps
}

fn recreate(want: &ContainerSpec) -> Vec<Step> {
    let mut steps = vec![Step::Destroy];
    steps.extend(create_and_start(want));
    steps
}

/// What the main process of an existing, healthy container needs; its
/// init processes first, while it has not started.
fn main_plan(
    want: &ContainerSpec,
    obs: &Observed<'_>,
    backoff: &CrashLoopBackoff,
    now: SystemTime,
) -> Plan {
    let mut done = vec![];
    match (want.state, obs.main) {
        (DesiredState::Running, MainObs::NotStarted) => match init_plan(want, obs, backoff, now) {
            Ok(steps) => done = steps,
            Err(plan) => return plan,
        },
        (DesiredState::Stopped, _)
            if obs.inits.iter().any(|i| i.run == MainObs::Running)
                || obs.sidecars.iter().any(|s| s.run == MainObs::Running) =>
        {
            return Plan::of(vec![Step::StopMain]);
        }
        _ => {}
    }
    if !want.runs_main() {
        return Plan::of(done);
    }
    after(done, process_plan(want, obs, backoff, now))
}

/// The init processes, in order, until every one has completed: `Ok` with
/// the steps recording completions when all have (the main process may
/// start after them), or the plan that runs or waits on the first that has
/// not.
fn init_plan(
    want: &ContainerSpec,
    obs: &Observed<'_>,
    backoff: &CrashLoopBackoff,
    now: SystemTime,
) -> Result<Vec<Step>, Plan> {
    let mut steps = vec![];
    for index in 0..want.init_processes.len() {
        let init = obs.inits.get(index).copied().unwrap_or_default();
        if init.completed {
            continue;
        }
        let stop = |plan: Plan| Err(after(steps.clone(), plan));
        match init.run {
            MainObs::NotStarted => return stop(Plan::of(vec![Step::StartInit { index }])),
            MainObs::Running => return stop(Plan::default()),
            MainObs::Exited { .. } if init.history.stopped => {
                return stop(Plan::of(vec![Step::StartInit { index }]));
            }
            MainObs::Exited { code: Some(0), .. } => steps.push(Step::InitDone { index }),
            MainObs::Exited {
                finished_at,
                ran_for,
                ..
            } => {
                // As the kubelet: a failed init process runs again unless
                // the policy is Never.
                if want.restart_policy == RestartPolicy::Never {
                    return stop(Plan::default());
                }
                let delay = backoff.next_delay(init.history.last_delay, ran_for);
                let waited = now.duration_since(finished_at).unwrap_or_default();
                return stop(match delay.checked_sub(waited).filter(|r| !r.is_zero()) {
                    None => Plan::of(vec![Step::RestartInit { index, delay }]),
                    Some(remaining) => Plan {
                        steps: vec![],
                        requeue_after: Some(remaining),
                        waiting: Some(Waiting::InitBackOff {
                            index,
                            delay,
                            remaining,
                        }),
                    },
                });
            }
        }
    }
    Ok(steps)
}

/// `plan`, after `steps`.
fn after(mut steps: Vec<Step>, mut plan: Plan) -> Plan {
    steps.append(&mut plan.steps);
    plan.steps = steps;
    plan
}

/// What the main process needs, once its init processes have completed.
fn process_plan(
    want: &ContainerSpec,
    obs: &Observed<'_>,
    backoff: &CrashLoopBackoff,
    now: SystemTime,
) -> Plan {
    match (want.state, obs.main) {
        (DesiredState::Stopped, MainObs::Running) => Plan::of(vec![Step::StopMain]),
        (DesiredState::Stopped, _) => Plan::default(),
        (DesiredState::Running, MainObs::NotStarted) => Plan::of(vec![Step::StartMain]),
        (DesiredState::Running, MainObs::Running) => match obs.health.kill {
            Some(probe) => Plan::of(vec![Step::KillUnhealthy { probe }]),
            None => Plan::default(),
        },
        (DesiredState::Running, MainObs::Exited { .. }) if obs.history.stopped => {
            Plan::of(vec![Step::StartMain])
        }
        (
            DesiredState::Running,
            MainObs::Exited {
                code,
                finished_at,
                ran_for,
            },
        ) => {
            if !should_restart(want.restart_policy, code) {
                return Plan::default();
            }
            let delay = backoff.next_delay(obs.history.last_delay, ran_for);
            let waited = now.duration_since(finished_at).unwrap_or_default();
            match delay.checked_sub(waited).filter(|r| !r.is_zero()) {
                None => Plan::of(vec![Step::RestartMain { delay }]),
                Some(remaining) => Plan {
                    steps: vec![],
                    requeue_after: Some(remaining),
                    waiting: Some(Waiting::BackOff { delay, remaining }),
                },
            }
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
