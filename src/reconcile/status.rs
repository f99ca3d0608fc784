//! Status: computed purely from what was declared and observed; the
//! reporters write it back where the declaration came from. Reasons stay
//! [`Reason`]s until a condition is made.

use std::time::SystemTime;

use super::plan::{ContainerObs, InitObs, MainObs, Observed, SidecarObs, Waiting, should_restart};
use crate::api::{
    Condition, ContainerSpec, ContainerStatus, DeclReason, DesiredState, MAIN_NAME, MainProcess,
    Phase, ProcessRole, ProcessState, ProcessStatus, Reason, RestartPolicy, Termination,
};

/// Condition types.
pub const READY: &str = "Ready";
/// Whether the current declaration could be applied.
pub const VALID: &str = "Valid";

/// Which step of a reconcile failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedStep {
    /// Making, changing or destroying the container.
    Container,
    /// Starting the main process: it is not running.
    MainProcess,
    /// The spec cannot be made into a container on this node as it is (a
    /// Localhost seccomp profile that is missing or invalid): nothing runs.
    Config,
}

/// Everything status is computed from.
#[derive(Debug)]
pub struct StatusInput<'a> {
    /// The spec being run (the last good one).
    pub spec: Option<&'a ContainerSpec>,
    /// The declaration's generation.
    pub generation: i64,
    /// The declaration's error, if invalid or refused: (reason, message).
    pub invalid: Option<(DeclReason, &'a str)>,
    /// Being deleted.
    pub terminating: bool,
    /// What was observed after acting.
    pub observed: &'a Observed<'a>,
    /// The last termination of the main process.
    pub last_termination: Option<Termination>,
    /// The last termination of each init process, in the spec's order.
    pub init_terminations: &'a [Option<Termination>],
    /// The main process's current run (id, pid), when it has started.
    pub main_process: Option<(&'a str, Option<i32>)>,
    /// Why the plan is waiting.
    pub waiting: Option<Waiting>,
    /// The error of this reconcile, if it failed, and the step that did.
    pub error: Option<(FailedStep, &'a str)>,
    /// Why the container waits for its image, when it does: (reason, message).
    pub image_wait: Option<(Reason, &'a str)>,
    /// The normalised image reference the spec names.
    pub image: Option<String>,
    /// The id of the image the container was made from.
    pub image_id: Option<&'a str>,
    /// The container's addresses on its network.
    pub pod_ips: &'a [String],
    /// The handle.
    pub handle: &'a str,
    /// The status written last time, for transition times.
    pub previous: Option<&'a ContainerStatus>,
    /// Now.
    pub now: SystemTime,
}

/// Phase, Ready's status, its reason and a message.
fn phase(input: &StatusInput<'_>) -> (Phase, bool, Reason, Option<String>) {
    if input.terminating {
        return (Phase::Terminating, false, Reason::Terminating, None);
    }
    if let Some((step, err)) = input.error {
        return failed(input, step, err);
    }
    if let Some((why, msg)) = input.image_wait {
        let present = matches!(input.observed.container, ContainerObs::Present { .. });
        let phase = if present {
            Phase::Running
        } else {
            Phase::Pending
        };
        return (phase, false, why, Some(msg.to_string()));
    }
    let Some(spec) = input.spec else {
        // Never valid or never admitted: say why on Ready too.
        let (why, msg) = input.invalid.unwrap_or((DeclReason::InvalidManifest, ""));
        return (Phase::Pending, false, why.reason(), Some(msg.to_string()));
    };
    let healthy = matches!(
        input.observed.container,
        ContainerObs::Present {
            runtime: Some(crate::runtime::Status::Running),
            ..
        }
    );
    if !healthy {
        return (Phase::Creating, false, Reason::Creating, None);
    }
    if spec.state == DesiredState::Running
        && input.observed.main == MainObs::NotStarted
        && let Some(initializing) = init_phase(spec, input)
    {
        return initializing;
    }
    if !spec.runs_main() && spec.state == DesiredState::Running {
        return match sidecar_unready(spec, input.observed) {
            None => (Phase::Running, true, Reason::Started, None),
            Some(msg) => (Phase::Running, false, Reason::Unhealthy, Some(msg)),
        };
    }
    if !spec.runs_main() {
        return (Phase::Running, true, Reason::Started, None);
    }
    if spec.state == DesiredState::Stopped {
        return (Phase::Stopped, false, Reason::Stopped, None);
    }
    match (input.observed.main, input.waiting) {
        (MainObs::Running, _) => match &input.observed.health {
            h if !h.ready => (Phase::Running, false, Reason::Unhealthy, h.message.clone()),
            _ => match sidecar_unready(spec, input.observed) {
                None => (Phase::Running, true, Reason::Started, None),
                Some(msg) => (Phase::Running, false, Reason::Unhealthy, Some(msg)),
            },
        },
        (MainObs::NotStarted, _) => (Phase::Creating, false, Reason::Creating, None),
        (MainObs::Exited { .. }, Some(Waiting::BackOff { delay, .. })) => (
            Phase::Running,
            false,
            Reason::CrashLoopBackOff,
            Some(format!(
                "back-off {} restarting failed main process",
                humantime::format_duration(delay)
            )),
        ),
        (MainObs::Exited { code, .. }, _) => {
            let term_reason = input
                .last_termination
                .as_ref()
                .and_then(|t| Reason::parse(&t.reason));
            let r = match term_reason {
                Some(Reason::OomKilled) => Reason::OomKilled,
                Some(Reason::Lost) => Reason::Lost,
                _ if code == Some(0) => Reason::Completed,
                _ => Reason::Error,
            };
            let restarting = should_restart(spec.restart_policy, code);
            let phase = match (restarting, code) {
                (true, _) => Phase::Running,
                (false, Some(0)) => Phase::Succeeded,
                (false, _) => Phase::Failed,
            };
            (phase, false, r, None)
        }
    }
}

/// While an init process has not completed: Pending and initializing, or
/// in backoff after it failed, or Failed when the policy is Never. The
/// message names the process and its exit code.
fn init_phase(
    spec: &ContainerSpec,
    input: &StatusInput<'_>,
) -> Option<(Phase, bool, Reason, Option<String>)> {
    let inits = &input.observed.inits;
    let index =
        (0..spec.init_processes.len()).find(|i| !inits.get(*i).is_some_and(|o| o.completed))?;
    let name = &spec.init_processes[index].name;
    let exit = input
        .init_terminations
        .get(index)
        .and_then(Option::as_ref)
        .map_or_else(String::new, |t| format!(" (exit code {})", t.exit_code));
    let run = inits.get(index).map(|o| o.run).unwrap_or_default();
    let failed = matches!(run, MainObs::Exited { code, .. } if code != Some(0));
    Some(match input.waiting {
        Some(Waiting::InitBackOff { delay, .. }) => (
            Phase::Pending,
            false,
            Reason::CrashLoopBackOff,
            Some(format!(
                "back-off {} restarting failed init process {name}{exit}",
                humantime::format_duration(delay)
            )),
        ),
        _ if failed && spec.restart_policy == RestartPolicy::Never => (
            Phase::Failed,
            false,
            Reason::Error,
            Some(format!("init process {name} failed{exit}")),
        ),
        _ => (
            Phase::Pending,
            false,
            Reason::Initializing,
            Some(format!(
                "init process {name} ({} of {})",
                index + 1,
                spec.init_processes.len()
            )),
        ),
    })
}

/// Why the first declared sidecar that is not ready is not, if one is not.
fn sidecar_unready(spec: &ContainerSpec, obs: &Observed<'_>) -> Option<String> {
    spec.sidecars.iter().find_map(|s| {
        let seen = obs.sidecars.iter().find(|o| o.name == s.name);
        match seen {
            Some(o) if o.run == MainObs::Running && o.health.ready => None,
            Some(o) if o.run == MainObs::Running => Some(format!(
                "sidecar {} is not ready: {}",
                s.name,
                o.health
                    .message
                    .as_deref()
                    .unwrap_or("its readiness probe has not succeeded")
            )),
            _ => Some(format!("sidecar {} is not running", s.name)),
        }
    })
}

/// Every process of a container that has more than its main one: the
/// init processes, the main process, then the sidecars.
fn processes(input: &StatusInput<'_>) -> Vec<ProcessStatus> {
    let Some(spec) = input
        .spec
        .filter(|s| !s.init_processes.is_empty() || !s.sidecars.is_empty())
    else {
        return vec![];
    };
    let obs = input.observed;
    let mut all: Vec<ProcessStatus> = spec
        .init_processes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let term = input.init_terminations.get(i).cloned().flatten();
            let init = obs.inits.get(i).copied().unwrap_or_default();
            init_status(&p.name, &init, term, spec.restart_policy, input.waiting)
        })
        .collect();
    if spec.runs_main() {
        let (state, reason) = match (obs.main, input.waiting) {
            (MainObs::Running, _) => (ProcessState::Running, None),
            (MainObs::NotStarted, _) => (ProcessState::Waiting, None),
            (MainObs::Exited { .. }, Some(Waiting::BackOff { .. })) => (
                ProcessState::Waiting,
                Some(Reason::CrashLoopBackOff.to_string()),
            ),
            (MainObs::Exited { .. }, _) => (
                ProcessState::Terminated,
                input.last_termination.as_ref().map(|t| t.reason.clone()),
            ),
        };
        all.push(ProcessStatus {
            name: MAIN_NAME.to_string(),
            role: ProcessRole::Main,
            state,
            reason,
            ready: obs.main == MainObs::Running && obs.health.ready,
            restart_count: i64::from(obs.history.restarts),
            last_termination: input.last_termination.clone(),
        });
    }
    all.extend(spec.sidecars.iter().map(|s| {
        let seen = obs.sidecars.iter().find(|o| o.name == s.name);
        sidecar_status(&s.name, seen, s.policy())
    }));
    all
}

/// One sidecar's status; `seen` is `None` before it was first started.
fn sidecar_status(name: &str, seen: Option<&SidecarObs>, policy: RestartPolicy) -> ProcessStatus {
    let default = SidecarObs::default();
    let o = seen.unwrap_or(&default);
    let (state, reason) = match o.run {
        MainObs::Running => (ProcessState::Running, None),
        MainObs::NotStarted => (ProcessState::Waiting, None),
        MainObs::Exited { code, .. } if should_restart(policy, code) && !o.history.stopped => (
            ProcessState::Waiting,
            Some(Reason::CrashLoopBackOff.to_string()),
        ),
        MainObs::Exited { .. } => (
            ProcessState::Terminated,
            o.last_termination.as_ref().map(|t| t.reason.clone()),
        ),
    };
    ProcessStatus {
        name: name.to_string(),
        role: ProcessRole::Sidecar,
        state,
        reason,
        ready: o.run == MainObs::Running && o.health.ready,
        restart_count: i64::from(o.history.restarts),
        last_termination: o.last_termination.clone(),
    }
}

/// One init process's status.
fn init_status(
    name: &str,
    init: &InitObs,
    last_termination: Option<Termination>,
    policy: RestartPolicy,
    waiting: Option<Waiting>,
) -> ProcessStatus {
    let backing_off = |w: Option<Waiting>| matches!(w, Some(Waiting::InitBackOff { .. }));
    let (state, reason) = match init.run {
        _ if init.completed => (ProcessState::Terminated, Some(Reason::Completed)),
        MainObs::Running => (ProcessState::Running, None),
        MainObs::NotStarted => (ProcessState::Waiting, None),
        MainObs::Exited { code: Some(0), .. } => {
            (ProcessState::Terminated, Some(Reason::Completed))
        }
        MainObs::Exited { .. } if policy == RestartPolicy::Never => {
            (ProcessState::Terminated, Some(Reason::Error))
        }
        MainObs::Exited { .. } if backing_off(waiting) => {
            (ProcessState::Waiting, Some(Reason::CrashLoopBackOff))
        }
        MainObs::Exited { .. } => (ProcessState::Waiting, None),
    };
    ProcessStatus {
        name: name.to_string(),
        role: ProcessRole::Init,
        state,
        reason: reason.map(|r| r.to_string()),
        ready: init.completed,
        restart_count: i64::from(init.history.restarts),
        last_termination,
    }
}

/// Phase and Ready of a failed reconcile. A main process that could not be
/// started is not running: the phase is Pending until it first ran, as a
/// pod's is while its container waits in `CreateContainerError`.
fn failed(
    input: &StatusInput<'_>,
    step: FailedStep,
    err: &str,
) -> (Phase, bool, Reason, Option<String>) {
    let present = matches!(input.observed.container, ContainerObs::Present { .. });
    let ever_ran = input.observed.history.restarts > 0 || input.last_termination.is_some();
    let (phase, why) = match step {
        FailedStep::MainProcess if ever_ran => (Phase::Running, Reason::CreateContainerError),
        FailedStep::MainProcess => (Phase::Pending, Reason::CreateContainerError),
        FailedStep::Config => (Phase::Pending, Reason::CreateContainerConfigError),
        FailedStep::Container if present => (Phase::Running, Reason::Failed),
        FailedStep::Container => (Phase::Pending, Reason::Failed),
    };
    (phase, false, why, Some(err.to_string()))
}

/// The status of one container.
pub fn compute(input: &StatusInput<'_>) -> ContainerStatus {
    let (phase, ready, ready_reason, message) = phase(input);
    let mut conditions = vec![condition(
        input,
        READY,
        ready,
        ready_reason,
        message.clone(),
    )];
    if let Some((why, msg)) = input.invalid {
        conditions.push(condition(
            input,
            VALID,
            false,
            why.reason(),
            Some(msg.to_string()),
        ));
    }
    ContainerStatus {
        phase: Some(phase),
        observed_generation: Some(input.generation),
        conditions,
        handle: Some(input.handle.to_string()),
        restart_count: i64::from(input.observed.history.restarts),
        last_termination: input.last_termination.clone(),
        main_process: main_process(input),
        processes: processes(input),
        pod_ip: input.pod_ips.first().cloned(),
        pod_ips: input
            .pod_ips
            .iter()
            .map(|ip| crate::api::PodIp { ip: ip.clone() })
            .collect(),
        image: input.image.clone(),
        image_id: input.image_id.map(str::to_string),
        message,
        properties: input.spec.map(|s| s.properties.clone()).unwrap_or_default(),
    }
}

/// The main process's run while it runs.
fn main_process(input: &StatusInput<'_>) -> Option<MainProcess> {
    let (id, pid) = input.main_process?;
    matches!(input.observed.main, MainObs::Running).then(|| MainProcess {
        id: id.to_string(),
        pid,
    })
}

/// A condition whose transition time is kept while its status holds.
fn condition(
    input: &StatusInput<'_>,
    type_: &str,
    status: bool,
    why: Reason,
    message: Option<String>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let previous = input
        .previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_));
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(humantime::format_rfc3339_seconds(input.now).to_string()),
    };
    Condition {
        type_: type_.to_string(),
        status,
        reason: Some(why.to_string()),
        message,
        observed_generation: Some(input.generation),
        last_transition_time,
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
