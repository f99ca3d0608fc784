//! Observation: what one handle looks like right now, read from the depot,
//! the runtime's state and the main process's directory, all in-process.

use std::time::Duration;

use super::history::{MainFile, init_slot, sidecar_slot, slot_run_id};
use super::ops::{ContainerOps, MainRun};
use super::plan::{ContainerObs, InitObs, MainObs, Observed, SidecarObs};
use crate::api::{Handle, Reason, Termination};
use crate::containerizer::ContainerizerError;
use crate::containerizer::depot::{ContainerRecord, DepotError};
use crate::probe::Health;
use crate::process::{ExitRecord, ProcState, Process};
use crate::runtime::Status;

/// One handle, observed; `P` is a run of its main process.
#[derive(Debug)]
pub struct Observation<P = Process> {
    /// The depot record; `None` when absent or half-made.
    pub record: Option<ContainerRecord>,
    /// A depot directory without a record.
    pub half_made: bool,
    /// The runtime's status.
    pub runtime: Option<Status>,
    /// The main process's history.
    pub main_file: MainFile,
    /// The main process's state.
    pub main: MainObs,
    /// The current run's process, when it has started.
    pub main_process: Option<P>,
    /// How the last run of the main process ended.
    pub last_termination: Option<Termination>,
    /// What the current run's probes say (filled in by the controller).
    pub health: Health,
    /// The init processes, in the recorded spec's order.
    pub inits: Vec<InitSeen<P>>,
    /// The sidecars, in the recorded spec's order (their health filled in
    /// by the controller).
    pub sidecars: Vec<SidecarSeen<P>>,
}

/// One sidecar, observed; `P` is one of its runs.
#[derive(Debug)]
pub struct SidecarSeen<P> {
    /// The planner's view.
    pub obs: SidecarObs,
    /// Its current run, when it has started.
    pub process: Option<P>,
}

/// One init process, observed; `P` is one of its runs.
#[derive(Debug)]
pub struct InitSeen<P> {
    /// The planner's view.
    pub obs: InitObs,
    /// Its current run, when it has started.
    pub process: Option<P>,
    /// How its last run ended.
    pub last_termination: Option<Termination>,
}

impl<P> Observation<P> {
    /// Whether anything of the container exists: a record, a half-made
    /// directory or runtime state.
    pub fn exists(&self) -> bool {
        self.record.is_some() || self.half_made || self.runtime.is_some()
    }

    /// The planner's view.
    pub fn observed(&self) -> Observed<'_> {
        let container = match (&self.record, self.half_made) {
            (Some(r), _) => ContainerObs::Present {
                spec: &r.spec,
                runtime: self.runtime,
            },
            (None, true) => ContainerObs::HalfMade,
            (None, false) => ContainerObs::Absent,
        };
        Observed {
            container,
            main: self.main,
            history: self.main_file.history(),
            health: self.health.clone(),
            inits: self.inits.iter().map(|i| i.obs).collect(),
            sidecars: self.sidecars.iter().map(|s| s.obs.clone()).collect(),
        }
    }
}

/// Observe `handle`.
pub async fn observe<C: ContainerOps>(
    c: &C,
    handle: &Handle,
) -> Result<Observation<C::Run>, ContainerizerError> {
    let (record, half_made) = match c.record(handle) {
        Ok(Some(r)) => (Some(r), false),
        Ok(None) => (None, true),
        // No bundle, but a cgroup: what a container whose depot directory
        // went first left behind; destroyed like a half-made one.
        Err(DepotError::NotFound(_)) => (None, c.has_cgroup(handle)),
        // What no write of ours leaves: handled as half-made (destroyed,
        // and made again if declared), never as an error on every look.
        Err(DepotError::Corrupt { path, source }) => {
            tracing::warn!(%handle, path = %path.display(), error = %source, "unreadable container record: rebuilding the container");
            (None, true)
        }
        Err(e) => return Err(e.into()),
    };
    let mut obs = Observation {
        record,
        half_made,
        runtime: None,
        main_file: MainFile::default(),
        main: MainObs::NotStarted,
        main_process: None,
        last_termination: None,
        health: Health::default(),
        inits: Vec::new(),
        sidecars: Vec::new(),
    };
    let Some(record) = &obs.record else {
        return Ok(obs);
    };
    let inits: Vec<String> = record
        .spec
        .init_processes
        .iter()
        .map(|i| i.name.clone())
        .collect();
    obs.sidecars = record
        .spec
        .sidecars
        .iter()
        .map(|s| observe_sidecar(c, handle, &s.name))
        .collect();
    obs.runtime = c.runtime_status(handle).await?;
    obs.main_file = c.main_file(handle);
    if let Some(id) = obs.main_file.current_id()
        && let Ok(p) = c.attach(handle, &id)
    {
        let (main, term) = main_state(&p);
        obs.main = main;
        obs.last_termination = term;
        obs.main_process = Some(p);
    }
    if obs.last_termination.is_none() && obs.main_file.runs > 1 {
        let previous = super::history::run_id(obs.main_file.runs - 1);
        if let Ok(p) = c.attach(handle, &previous) {
            obs.last_termination = main_state(&p).1;
        }
    }
    let main_started = obs.main_file.runs > 0;
    obs.inits = inits
        .iter()
        .map(|name| observe_init(c, handle, name, main_started))
        .collect();
    Ok(obs)
}

/// Sidecar `name` of `handle`.
fn observe_sidecar<C: ContainerOps>(c: &C, handle: &Handle, name: &str) -> SidecarSeen<C::Run> {
    let slot = sidecar_slot(name);
    let file = c.slot_file(handle, &slot);
    let mut seen = SidecarSeen {
        obs: SidecarObs {
            name: name.to_string(),
            history: file.history(),
            ..SidecarObs::default()
        },
        process: None,
    };
    if let Some(id) = file.current_slot_id(&slot)
        && let Ok(p) = c.attach(handle, &id)
    {
        (seen.obs.run, seen.obs.last_termination) = main_state(&p);
        seen.process = Some(p);
    }
    if seen.obs.last_termination.is_none()
        && file.runs > 1
        && let Ok(p) = c.attach(handle, &slot_run_id(&slot, file.runs - 1))
    {
        seen.obs.last_termination = main_state(&p).1;
    }
    seen
}

/// Init process `name` of `handle`. Once the main process has started,
/// every init process counts as completed whatever its files say.
fn observe_init<C: ContainerOps>(
    c: &C,
    handle: &Handle,
    name: &str,
    main_started: bool,
) -> InitSeen<C::Run> {
    let slot = init_slot(name);
    let file = c.slot_file(handle, &slot);
    let mut seen = InitSeen {
        obs: InitObs {
            completed: file.completed || main_started,
            run: MainObs::NotStarted,
            history: file.history(),
        },
        process: None,
        last_termination: None,
    };
    if let Some(id) = file.current_slot_id(&slot)
        && let Ok(p) = c.attach(handle, &id)
    {
        (seen.obs.run, seen.last_termination) = main_state(&p);
        seen.process = Some(p);
    }
    if seen.last_termination.is_none()
        && file.runs > 1
        && let Ok(p) = c.attach(handle, &slot_run_id(&slot, file.runs - 1))
    {
        seen.last_termination = main_state(&p).1;
    }
    seen
}

/// The planner's view of one run, and how it ended.
fn main_state(p: &impl MainRun) -> (MainObs, Option<Termination>) {
    let started = p.started_at();
    match p.state() {
        Ok(ProcState::Running) | Err(_) => (MainObs::Running, None),
        Ok(ProcState::Exited(rec)) => {
            let finished = humantime::parse_rfc3339(&rec.finished_at).unwrap_or(started);
            let ran_for = finished.duration_since(started).unwrap_or_default();
            (
                MainObs::Exited {
                    code: Some(rec.exit_code),
                    finished_at: finished,
                    ran_for,
                },
                Some(termination(&rec)),
            )
        }
        Ok(ProcState::Lost { reason: why }) => {
            let term = Termination {
                exit_code: -1,
                signal: None,
                reason: Reason::Lost.to_string(),
                message: Some(why),
                finished_at: None,
            };
            (
                MainObs::Exited {
                    code: None,
                    finished_at: started,
                    ran_for: Duration::ZERO,
                },
                Some(term),
            )
        }
    }
}

/// The status's view of an exit record.
pub fn termination(rec: &ExitRecord) -> Termination {
    let why = if rec.start_error.is_some() {
        Reason::StartError
    } else if rec.oom_killed {
        Reason::OomKilled
    } else if rec.exit_code == 0 {
        Reason::Completed
    } else {
        Reason::Error
    };
    Termination {
        exit_code: rec.exit_code,
        signal: rec.signal_name.clone(),
        reason: why.to_string(),
        message: rec.start_error.clone(),
        finished_at: Some(rec.finished_at.clone()),
    }
}
