//! What the local API reads about containers: declarations from the store,
//! the status last reported, the depot's record, the runtime's state and
//! the processes' directories. It reads only; it never changes a container
//! except through the containerizer's `run` and streams.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::wire::{ApiError, Detail, ErrorKind, EventRow, ProcessRow, Summary};
use crate::api::{ContainerSpec, ContainerStatus, Desired, Handle, Origin};
use crate::containerizer::Containerizer;
use crate::containerizer::depot::ContainerRecord;
use crate::process::ProcState;
use crate::reconcile::history::{MainFile, run_id};
use crate::reconcile::store::Store;
use crate::report::Reporters;
use crate::runtime::Runc;

/// Events `describe` shows at most.
const RECENT_EVENTS: usize = 20;

/// The agent's pieces the API reads.
pub struct Node {
    /// Containers, processes, streams.
    pub containerizer: Arc<Containerizer<Runc>>,
    /// What is declared.
    pub store: Arc<Store>,
    /// What was reported.
    pub reporters: Arc<Reporters>,
    /// The event log (`<state-dir>/events.jsonl`).
    pub events_path: PathBuf,
    /// Where console sockets of execs with a terminal listen (root only).
    pub console_dir: PathBuf,
}

impl Node {
    /// Every handle declared or in the depot.
    fn handles(&self) -> BTreeSet<Handle> {
        let mut all: BTreeSet<Handle> = self.store.handles().into_iter().collect();
        all.extend(self.containerizer.handles().unwrap_or_default());
        all
    }

    /// The container `name` names: a handle, or `namespace/name` of a resource.
    pub fn resolve(&self, name: &str) -> Result<Handle, ApiError> {
        let handle = match name.split_once('/') {
            Some((ns, n)) => Handle::for_resource(ns, n),
            None => Handle::new(name),
        }
        .map_err(|_| ApiError::not_found(name))?;
        let exists = self.store.get(&handle).is_some()
            || matches!(self.containerizer.depot().record(&handle), Ok(Some(_)));
        match exists {
            true => Ok(handle),
            false => Err(ApiError::not_found(name)),
        }
    }

    /// Rows of every container; only the live ones unless `all`.
    pub async fn list(&self, all: bool) -> Vec<Summary> {
        let mut rows = Vec::new();
        for handle in self.handles() {
            let row = self.summary(&handle).await;
            if all || is_live(&row.phase) {
                rows.push(row);
            }
        }
        rows
    }

    /// The row of `handle`.
    pub async fn summary(&self, handle: &Handle) -> Summary {
        let desired = self.store.get(handle);
        let record = self.containerizer.depot().record(handle).ok().flatten();
        let status = desired.as_ref().and_then(|d| self.reporters.previous(d));
        let runtime = self.runtime_status(handle).await;
        summarize(
            handle,
            desired.as_ref(),
            record.as_ref(),
            status.as_ref(),
            runtime,
        )
    }

    /// Everything about `handle`.
    pub async fn detail(&self, handle: &Handle) -> Result<Detail, ApiError> {
        let desired = self.store.get(handle);
        let record = self.containerizer.depot().record(handle).ok().flatten();
        let status = desired.as_ref().and_then(|d| self.reporters.previous(d));
        let state = self
            .containerizer
            .runtime_state(handle)
            .await
            .map_err(internal)?;
        let runtime = state
            .as_ref()
            .map(|s| format!("{:?}", s.status).to_lowercase());
        let summary = summarize(
            handle,
            desired.as_ref(),
            record.as_ref(),
            status.as_ref(),
            runtime.clone(),
        );
        let spec = desired
            .as_ref()
            .and_then(|d| d.spec.clone())
            .or_else(|| record.as_ref().map(|r| r.spec.clone()));
        Ok(Detail {
            summary,
            spec,
            status,
            error: desired.and_then(|d| d.error.map(|e| e.message)),
            runtime_status: runtime,
            init_pid: state.and_then(|s| s.pid),
            processes: self.processes(handle),
            events: self.events(handle),
        })
    }

    async fn runtime_status(&self, handle: &Handle) -> Option<String> {
        let state = self.containerizer.runtime_state(handle).await.ok()??;
        Some(format!("{:?}", state.status).to_lowercase())
    }

    /// The processes of `handle`, from their directories.
    pub fn processes(&self, handle: &Handle) -> Vec<ProcessRow> {
        let list = self.containerizer.processes(handle).unwrap_or_default();
        list.into_iter()
            .map(|p| {
                let (state, exit_code, detail) = match p.state {
                    ProcState::Running => ("Running", None, None),
                    ProcState::Exited(r) => ("Exited", Some(r.exit_code), Some(r.finished_at)),
                    ProcState::Lost { reason } => ("Lost", None, Some(reason)),
                };
                ProcessRow {
                    id: p.id,
                    pid: p.pid,
                    state: state.to_string(),
                    exit_code,
                    detail,
                }
            })
            .collect()
    }

    /// The id of `handle`'s current main run, or the one before it.
    pub fn main_run(&self, handle: &Handle, previous: bool) -> Option<String> {
        let main = MainFile::load(&self.containerizer.depot_dir(handle));
        match previous {
            false => main.current_id(),
            true => (main.runs > 1).then(|| run_id(main.runs - 1)),
        }
    }

    /// The newest events about `handle` in the event log.
    fn events(&self, handle: &Handle) -> Vec<EventRow> {
        let text = std::fs::read_to_string(&self.events_path).unwrap_or_default();
        let mut rows: Vec<EventRow> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<EventRow>(l).ok())
            .filter(|e| e.handle == handle.as_str())
            .collect();
        let cut = rows.len().saturating_sub(RECENT_EVENTS);
        rows.drain(..cut);
        rows
    }
}

/// Whether `ps` without `-a` shows a container in `phase`.
fn is_live(phase: &str) -> bool {
    matches!(phase, "Pending" | "Creating" | "Running" | "Terminating")
}

/// A containerizer failure as an API error: a missing container is 404, a
/// container in the wrong state 409, anything else 500.
pub fn internal(e: crate::containerizer::ContainerizerError) -> ApiError {
    use crate::containerizer::ErrorKind as K;
    let kind = match e.kind() {
        Some(K::WrongState { .. }) => ErrorKind::Conflict,
        Some(K::Invalid { .. } | K::User { .. } | K::BadProcessId { .. }) => ErrorKind::BadRequest,
        _ => match e {
            crate::containerizer::ContainerizerError::Depot(
                crate::containerizer::depot::DepotError::NotFound(_),
            ) => ErrorKind::NotFound,
            _ => ErrorKind::Internal,
        },
    };
    ApiError::new(kind, e.to_string())
}

/// The name `get` takes for `handle` declared as `desired`.
fn display_name(handle: &Handle, desired: Option<&Desired>) -> String {
    match desired.map(|d| &d.origin) {
        Some(Origin::Kube {
            namespace, name, ..
        }) => format!("{namespace}/{name}"),
        _ => handle.to_string(),
    }
}

/// Where `desired` was declared, in one word.
fn source(desired: Option<&Desired>) -> String {
    match desired.map(|d| &d.origin) {
        Some(Origin::File { path, document }) => format!("file:{}#{document}", path.display()),
        Some(Origin::Kube {
            namespace, name, ..
        }) => format!("kube:{namespace}/{name}"),
        None => "-".to_string(),
    }
}

/// The `ps` row, from what is known (pure).
fn summarize(
    handle: &Handle,
    desired: Option<&Desired>,
    record: Option<&ContainerRecord>,
    status: Option<&ContainerStatus>,
    runtime: Option<String>,
) -> Summary {
    let spec: Option<&ContainerSpec> = desired
        .and_then(|d| d.spec.as_ref())
        .or(record.map(|r| &r.spec));
    let phase = match (status.and_then(|s| s.phase), desired, runtime) {
        (Some(p), _, _) => format!("{p:?}"),
        (None, Some(d), _) if d.error.is_some() => "Invalid".to_string(),
        (None, None, Some(r)) => format!("Undeclared ({r})"),
        _ => "Unknown".to_string(),
    };
    let ready = status.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status == "True")
    });
    let image = spec
        .map(|s| s.image.clone().unwrap_or_else(|| s.rootfs.clone()))
        .unwrap_or_default();
    Summary {
        name: display_name(handle, desired),
        handle: handle.to_string(),
        source: source(desired),
        phase,
        ready,
        restarts: status.map(|s| s.restart_count).unwrap_or_default(),
        created: record.map(|r| r.created_at.clone()),
        image,
        ip: status.and_then(|s| s.pod_ip.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, Phase};

    #[test]
    fn a_resource_is_named_by_namespace_and_name() {
        let handle = Handle::for_resource("team", "web").unwrap();
        let d = Desired {
            handle: handle.clone(),
            origin: Origin::Kube {
                namespace: "team".into(),
                name: "web".into(),
                uid: "u".into(),
            },
            spec: None,
            generation: 1,
            error: None,
            deleting: false,
            finalizer: false,
        };
        let status = ContainerStatus {
            phase: Some(Phase::Running),
            restart_count: 2,
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let row = summarize(&handle, Some(&d), None, Some(&status), None);
        assert_eq!(row.name, "team/web");
        assert_eq!(row.source, "kube:team/web");
        assert_eq!(
            (row.phase.as_str(), row.ready, row.restarts),
            ("Running", Some(true), 2)
        );
    }

    #[test]
    fn an_undeclared_container_shows_the_runtime_status() {
        let handle = Handle::new("old").unwrap();
        let row = summarize(&handle, None, None, None, Some("running".into()));
        assert_eq!(
            (row.source.as_str(), row.phase.as_str()),
            ("-", "Undeclared (running)")
        );
        assert!(!is_live(&row.phase));
    }
}
