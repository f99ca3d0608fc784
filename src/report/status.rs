//! Status: computed purely from what was declared and observed, then
//! written back where the declaration came from. This file owns the
//! computation; writers live beside it.

use std::time::SystemTime;

use crate::api::{
    Condition, ContainerSpec, ContainerStatus, DesiredState, MainProcess, Phase, Termination,
};
use crate::reconcile::plan::{ContainerObs, MainObs, Observed, Waiting, should_restart};

/// Why a Ready or Valid condition is what it is (kubelet's words where one fits).
pub mod reason {
    /// The main process (or init, for idle containers) runs.
    pub const STARTED: &str = "Started";
    /// Stopped on request.
    pub const STOPPED: &str = "Stopped";
    /// Waiting out crash-loop backoff.
    pub const CRASH_LOOP: &str = "CrashLoopBackOff";
    /// Exited 0, not restarted.
    pub const COMPLETED: &str = "Completed";
    /// Exited non-zero, not restarted.
    pub const ERROR: &str = "Error";
    /// Killed by the OOM killer.
    pub const OOM_KILLED: &str = "OOMKilled";
    /// Its supervisor died without recording an exit.
    pub const LOST: &str = "Lost";
    /// Being made.
    pub const CREATING: &str = "Creating";
    /// Being destroyed.
    pub const TERMINATING: &str = "Terminating";
    /// The last reconcile failed.
    pub const FAILED: &str = "Failed";
    /// The main process could not be started (kubelet's waiting reason
    /// for a container it could not create).
    pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
    /// The manifest is invalid; the last good spec runs.
    pub const INVALID_MANIFEST: &str = "InvalidManifest";
    /// The manifest is valid.
    pub const VALID: &str = "Valid";
    /// The node's admission policy refuses the spec.
    pub const FORBIDDEN: &str = "Forbidden";
}

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
}

/// Everything status is computed from.
#[derive(Debug)]
pub struct StatusInput<'a> {
    /// The spec being run (the last good one).
    pub spec: Option<&'a ContainerSpec>,
    /// The declaration's generation.
    pub generation: i64,
    /// The declaration's error, if invalid or refused: (reason, message).
    pub invalid: Option<(&'a str, &'a str)>,
    /// Being deleted.
    pub terminating: bool,
    /// What was observed after acting.
    pub observed: &'a Observed<'a>,
    /// The last termination of the main process.
    pub last_termination: Option<Termination>,
    /// The main process's current run (id, pid), when it has started.
    pub main_process: Option<(&'a str, Option<i32>)>,
    /// Why the plan is waiting.
    pub waiting: Option<Waiting>,
    /// The error of this reconcile, if it failed, and the step that did.
    pub error: Option<(FailedStep, &'a str)>,
    /// The handle.
    pub handle: &'a str,
    /// The status written last time, for transition times.
    pub previous: Option<&'a ContainerStatus>,
    /// Now.
    pub now: SystemTime,
}

/// Phase, Ready's status, its reason and a message.
fn phase(input: &StatusInput<'_>) -> (Phase, bool, &'static str, Option<String>) {
    if input.terminating {
        return (Phase::Terminating, false, reason::TERMINATING, None);
    }
    if let Some((step, err)) = input.error {
        return failed(input, step, err);
    }
    let Some(spec) = input.spec else {
        // Never valid or never admitted: say why on Ready too.
        let (why, msg) = input.invalid.unwrap_or((reason::INVALID_MANIFEST, ""));
        let why = if why == reason::FORBIDDEN {
            reason::FORBIDDEN
        } else {
            reason::INVALID_MANIFEST
        };
        return (Phase::Pending, false, why, Some(msg.to_string()));
    };
    let healthy = matches!(
        input.observed.container,
        ContainerObs::Present {
            runtime: Some(crate::runtime::Status::Running),
            ..
        }
    );
    if !healthy {
        return (Phase::Creating, false, reason::CREATING, None);
    }
    if spec.process.is_none() {
        return (Phase::Running, true, reason::STARTED, None);
    }
    if spec.state == DesiredState::Stopped {
        return (Phase::Stopped, false, reason::STOPPED, None);
    }
    match (input.observed.main, input.waiting) {
        (MainObs::Running, _) => (Phase::Running, true, reason::STARTED, None),
        (MainObs::NotStarted, _) => (Phase::Creating, false, reason::CREATING, None),
        (MainObs::Exited { .. }, Some(Waiting::BackOff { delay, .. })) => (
            Phase::Running,
            false,
            reason::CRASH_LOOP,
            Some(format!(
                "back-off {} restarting failed main process",
                humantime::format_duration(delay)
            )),
        ),
        (MainObs::Exited { code, .. }, None) => {
            let term_reason = input.last_termination.as_ref().map(|t| t.reason.as_str());
            let r = match term_reason {
                Some(reason::OOM_KILLED) => reason::OOM_KILLED,
                Some(reason::LOST) => reason::LOST,
                _ if code == Some(0) => reason::COMPLETED,
                _ => reason::ERROR,
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

/// Phase and Ready of a failed reconcile. A main process that could not be
/// started is not running: the phase is Pending until it first ran, as a
/// pod's is while its container waits in `CreateContainerError`.
fn failed(
    input: &StatusInput<'_>,
    step: FailedStep,
    err: &str,
) -> (Phase, bool, &'static str, Option<String>) {
    let present = matches!(input.observed.container, ContainerObs::Present { .. });
    let ever_ran = input.observed.history.restarts > 0 || input.last_termination.is_some();
    let (phase, why) = match step {
        FailedStep::MainProcess if ever_ran => (Phase::Running, reason::CREATE_CONTAINER_ERROR),
        FailedStep::MainProcess => (Phase::Pending, reason::CREATE_CONTAINER_ERROR),
        FailedStep::Container if present => (Phase::Running, reason::FAILED),
        FailedStep::Container => (Phase::Pending, reason::FAILED),
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
        conditions.push(condition(input, VALID, false, why, Some(msg.to_string())));
    }
    ContainerStatus {
        phase: Some(phase),
        observed_generation: Some(input.generation),
        conditions,
        handle: Some(input.handle.to_string()),
        restart_count: i64::from(input.observed.history.restarts),
        last_termination: input.last_termination.clone(),
        main_process: main_process(input),
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

/// `status` as observed at `generation`: the status and every condition.
/// A mirror's generation is the API server's count of its spec changes,
/// which a restarted agent cannot derive from the manifest file.
pub fn at_generation(status: &ContainerStatus, generation: i64) -> ContainerStatus {
    let mut status = status.clone();
    status.observed_generation = Some(generation);
    for condition in &mut status.conditions {
        condition.observed_generation = Some(generation);
    }
    status
}

/// A condition whose transition time is kept while its status holds.
fn condition(
    input: &StatusInput<'_>,
    type_: &str,
    status: bool,
    why: &str,
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
