//! Planning: a pure function of what is declared and what is observed,
//! giving the steps that bring one container to its declaration. All the
//! reconciler's logic lives here; the controller only observes and executes.

use std::time::{Duration, SystemTime};

use crate::api::{ContainerSpec, DesiredState, RestartPolicy};
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

/// The main process as observed in its process directory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MainObs {
    /// Not started since the container was made (or since a stop).
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

/// Everything observed about one handle.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed<'a> {
    /// The container.
    pub container: ContainerObs<'a>,
    /// Its main process.
    pub main: MainObs,
    /// The main process's history.
    pub history: MainHistory,
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

/// Classify the change from `have` to `want`.
pub fn classify(have: &ContainerSpec, want: &ContainerSpec) -> Change {
    if have == want {
        return Change::None;
    }
    let baked = have.rootfs != want.rootfs
        || have.image != want.image
        || have.hostname != want.hostname
        || have.env != want.env
        || have.process != want.process
        || have.mounts != want.mounts
        || have.privileged != want.privileged
        || have.security_context != want.security_context
        || have.host_network != want.host_network;
    if baked {
        Change::Recreate
    } else if have.limits != want.limits {
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
            let mut plan = match classify(have, want) {
                Change::Recreate => return Plan::of(recreate(want)),
                Change::LimitsOnly => Plan::of(vec![Step::UpdateLimits]),
                Change::RecordOnly => Plan::of(vec![Step::UpdateRecord]),
                Change::None => Plan::default(),
            };
            let main = main_plan(want, obs, backoff, now);
            plan.steps.extend(main.steps);
            plan.requeue_after = main.requeue_after;
            plan.waiting = main.waiting;
            plan
        }
    }
}

fn create_and_start(want: &ContainerSpec) -> Vec<Step> {
    let mut steps = vec![Step::Create];
    if want.runs_main() && want.state == DesiredState::Running {
        steps.push(Step::StartMain);
    }
    steps
}

fn recreate(want: &ContainerSpec) -> Vec<Step> {
    let mut steps = vec![Step::Destroy];
    steps.extend(create_and_start(want));
    steps
}

/// What the main process of an existing, healthy container needs.
fn main_plan(
    want: &ContainerSpec,
    obs: &Observed<'_>,
    backoff: &CrashLoopBackoff,
    now: SystemTime,
) -> Plan {
    if !want.runs_main() {
        return Plan::default();
    }
    match (want.state, obs.main) {
        (DesiredState::Stopped, MainObs::Running) => Plan::of(vec![Step::StopMain]),
        (DesiredState::Stopped, _) => Plan::default(),
        (DesiredState::Running, MainObs::NotStarted) => Plan::of(vec![Step::StartMain]),
        (DesiredState::Running, MainObs::Running) => Plan::default(),
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
