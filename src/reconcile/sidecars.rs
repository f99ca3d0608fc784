//! Sidecars, executed: each one a supervised run of its own slot
//! (`sidecar-<name>-<n>`), started, killed, restarted and removed without
//! touching the main process, and probed by a prober of their own whose
//! keys map back to the container (the prober knows one run per key).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::controller::{Controller, grace_period};
use super::history::{MainFile, sidecar_slot, slot_run_id};
use super::images::PlanImages;
use super::observe::Observation;
use super::ops::{ContainerOps, MainRun};
use super::plan::{MainObs, should_restart};
use super::reporting::ReportOps;
use super::store::Desired;
use crate::api::{ContainerSpec, Handle, ProbeKind, ProcessSpec, Reason, Sidecar};
use crate::containerizer::{ContainerizerError, ErrorKind};
use crate::probe::check::default_host;
use crate::probe::{ExecProbe, Subject, Wake, failure_message};
use crate::report::events::EventType;
use crate::sync::lock;

/// The prober's key of each probed sidecar: (container, sidecar name).
pub type SidecarKeys = Arc<Mutex<HashMap<Handle, (Handle, String)>>>;

/// The prober's key of sidecar `name` of `handle`: a handle of its own,
/// whatever the lengths of the two.
fn probe_key(handle: &Handle, name: &str) -> Option<Handle> {
    let hash = crate::api::handle::fnv1a64(format!("{handle}/{name}").as_bytes());
    Handle::new(format!("sidecar.{hash:016x}")).ok()
}

/// What wakes the container's reconcile when a sidecar's probe says so.
pub fn sidecar_wake(keys: SidecarKeys, wake: Wake) -> Wake {
    Arc::new(move |key: &Handle| {
        let container = lock(&keys).get(key).map(|(h, _)| h.clone());
        if let Some(h) = container {
            wake(&h);
        }
    })
}

/// Exec probes of sidecars, run where the sidecar runs (its container, or
/// its pea) as the sidecar's user (or its image's).
pub struct SidecarExec<C> {
    /// The containerizer.
    pub containerizer: Arc<C>,
    /// Which sidecar each key is.
    pub keys: SidecarKeys,
}

impl<C: ContainerOps> ExecProbe for SidecarExec<C> {
    fn exec<'a>(
        &'a self,
        key: &'a Handle,
        command: &'a [String],
        timeout: Duration,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let (handle, name) = lock(&self.keys)
                .get(key)
                .cloned()
                .ok_or("the sidecar is gone")?;
            let record = self.containerizer.record(&handle).ok().flatten();
            let sidecar = record
                .and_then(|r| r.spec.sidecars.into_iter().find(|s| s.name == name))
                .ok_or("the sidecar is gone")?;
            if !sidecar.is_pea() {
                return self
                    .containerizer
                    .exec_probe(&handle, command, sidecar.user, timeout)
                    .await;
            }
            let image = self.containerizer.pea_image(&handle, &name).ok().flatten();
            let user = sidecar.user.or_else(|| image.and_then(|i| i.defaults.user));
            self.containerizer
                .exec_probe_in_pea(&handle, &name, command, user, timeout)
                .await
        })
    }
}

impl<C: ContainerOps, P: ReportOps> Controller<C, P> {
    /// Start (or, after `restart_delay` of backoff, restart) sidecar `index`
    /// of `spec`; a pea that is not running is made first, from its image
    /// in `images` when it has one.
    pub(super) async fn start_sidecar(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
        index: usize,
        restart_delay: Option<Duration>,
        images: &PlanImages,
    ) -> Result<(), ContainerizerError> {
        let Some(sidecar) = spec.sidecars.get(index) else {
            return Ok(());
        };
        let slot = sidecar_slot(&sidecar.name);
        let name = &sidecar.name;
        let pea = sidecar.is_pea().then_some(name.as_str());
        let process = match pea {
            Some(pea) => self.make_pea(handle, spec, sidecar, pea, images).await,
            None => self.sidecar_process(handle, spec, sidecar),
        };
        let process = match process {
            Ok(process) => process,
            Err(e) => {
                let msg = format!("Error: sidecar {name}: {e}");
                self.event(desired, handle, EventType::Warning, Reason::Failed, msg)
                    .await;
                return Err(e);
            }
        };
        let what = format!("sidecar {name}");
        self.start_announced(handle, desired, &what, &slot, &process, pea, restart_delay)
            .await
    }

    /// Make pea `pea` of sidecar `sidecar` unless it runs; the process it
    /// then runs, over the defaults of the image it was made from.
    async fn make_pea(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        sidecar: &Sidecar,
        pea: &str,
        images: &PlanImages,
    ) -> Result<ProcessSpec, ContainerizerError> {
        let layers = images.pea(pea);
        self.containerizer
            .ensure_pea(handle, pea, layers.as_ref())
            .await?;
        self.sidecar_process(handle, spec, sidecar)
    }

    /// The process sidecar `sidecar` runs: its own fields, over the
    /// defaults of its pea's image, as the depot records it (so a restart
    /// needs neither the registry nor the store).
    fn sidecar_process(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        sidecar: &Sidecar,
    ) -> Result<ProcessSpec, ContainerizerError> {
        let defaults = match sidecar.image {
            Some(_) => self
                .containerizer
                .pea_image(handle, &sidecar.name)?
                .map(|i| i.defaults)
                .unwrap_or_default(),
            None => Default::default(),
        };
        sidecar.process(spec, &defaults).map_err(|e| {
            let index = spec
                .sidecars
                .iter()
                .position(|s| s.name == sidecar.name)
                .unwrap_or_default();
            ContainerizerError::at(
                handle,
                ErrorKind::Invalid {
                    errors: crate::api::ValidationErrors(vec![crate::api::FieldError::new(
                        format!("spec.sidecars[{index}]"),
                        e.to_string(),
                    )]),
                },
            )
        })
    }

    /// Kill sidecar `index`, which failed `probe`; its restart policy
    /// takes it from there.
    pub(super) async fn kill_sidecar(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
        index: usize,
        probe: ProbeKind,
    ) -> Result<(), ContainerizerError> {
        let Some(sidecar) = spec.sidecars.get(index) else {
            return Ok(());
        };
        let slot = sidecar_slot(&sidecar.name);
        let msg = format!(
            "Sidecar {} failed {} probe, will be restarted",
            sidecar.name,
            probe.as_str().to_lowercase()
        );
        self.event(desired, handle, EventType::Normal, Reason::Killing, msg)
            .await;
        if let Some(key) = probe_key(handle, &sidecar.name) {
            self.sidecar_prober.stop(&key);
        }
        let Some(id) = self
            .containerizer
            .slot_file(handle, &slot)
            .current_slot_id(&slot)
        else {
            return Ok(());
        };
        self.stop_run(handle, &id, grace_period(spec)).await
    }

    /// Stop sidecar `index` of the recorded spec `have` and forget it: its
    /// history and runs go, so that a sidecar of that name starts afresh.
    pub(super) async fn remove_sidecar(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        have: &ContainerSpec,
        index: usize,
    ) -> Result<(), ContainerizerError> {
        let Some(sidecar) = have.sidecars.get(index) else {
            return Ok(());
        };
        let slot = sidecar_slot(&sidecar.name);
        let file = self.containerizer.slot_file(handle, &slot);
        if let Some(key) = probe_key(handle, &sidecar.name) {
            self.sidecar_prober.stop(&key);
            lock(&self.sidecar_keys).remove(&key);
        }
        if let Some(id) = file.current_slot_id(&slot) {
            let msg = format!("Stopping sidecar {}: the spec changed", sidecar.name);
            self.event(desired, handle, EventType::Normal, Reason::Killing, msg)
                .await;
            self.stop_run(handle, &id, grace_period(have)).await?;
        }
        if sidecar.is_pea() {
            self.containerizer
                .destroy_pea(handle, &sidecar.name)
                .await?;
        }
        self.containerizer
            .save_slot_file(handle, &slot, &MainFile::default())?;
        for n in file.runs.saturating_sub(1)..=file.runs {
            if n > 0 {
                self.containerizer
                    .remove_run(handle, &slot_run_id(&slot, n));
            }
        }
        Ok(())
    }

    /// Kill the main process, which failed `probe`, and nothing beside it:
    /// its sidecars run on (the restart policy takes the main process from
    /// there, as after any exit).
    pub(super) async fn kill_unhealthy_main(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        spec: &ContainerSpec,
        probe: ProbeKind,
    ) -> Result<(), ContainerizerError> {
        let grace = self
            .before_unhealthy_kill(handle, desired, spec, probe)
            .await;
        let Some(id) = self.containerizer.main_file(handle).current_id() else {
            return Ok(());
        };
        self.stop_run(handle, &id, grace).await
    }

    /// Stop run `id` alone: SIGTERM, then SIGKILL after `grace`.
    pub(super) async fn stop_run(
        &self,
        handle: &Handle,
        id: &str,
        grace: Duration,
    ) -> Result<(), ContainerizerError> {
        let Ok(run) = self.containerizer.attach(handle, id) else {
            return Ok(());
        };
        if !matches!(run.state(), Ok(crate::process::ProcState::Running)) {
            return Ok(());
        }
        if self.containerizer.signal(handle, id, libc::SIGTERM).is_ok()
            && tokio::time::timeout(grace, run.ended()).await.is_ok()
        {
            return Ok(());
        }
        self.containerizer.signal(handle, id, libc::SIGKILL)?;
        let _ = tokio::time::timeout(Duration::from_secs(5), run.ended()).await;
        Ok(())
    }

    /// Before the container's processes are stopped together: a main
    /// process beside sidecars is stopped first, as Kubernetes stops
    /// native sidecars after the main containers. Returns the grace left.
    pub(super) async fn stop_main_first(
        &self,
        handle: &Handle,
        main: Option<&C::Run>,
        spec: &ContainerSpec,
        grace: Duration,
    ) -> Duration {
        let Some(run) = main.filter(|_| !spec.sidecars.is_empty()) else {
            return grace;
        };
        let started = tokio::time::Instant::now();
        if let Err(e) = self.stop_run(handle, run.id(), grace).await {
            tracing::debug!(%handle, error = %e, "stopping the main process before its sidecars");
        }
        grace.saturating_sub(started.elapsed())
    }

    /// Stop every running sidecar of `spec`, together, within `grace`:
    /// after the main process, and before what is left of the container is
    /// stopped at once (a pea's processes are in a cgroup of their own).
    pub(super) async fn stop_sidecars(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        grace: Duration,
    ) {
        let ids: Vec<String> = spec
            .sidecars
            .iter()
            .filter_map(|s| {
                let slot = sidecar_slot(&s.name);
                self.containerizer
                    .slot_file(handle, &slot)
                    .current_slot_id(&slot)
            })
            .collect();
        let stops = ids.iter().map(|id| self.stop_run(handle, id, grace));
        for (id, result) in ids.iter().zip(futures_util::future::join_all(stops).await) {
            if let Err(e) = result {
                tracing::debug!(%handle, process = %id, error = %e, "stopping a sidecar");
            }
        }
    }

    /// Fill in what the probes of each running sidecar say.
    pub(super) fn read_sidecar_health(&self, handle: &Handle, obs: &mut Observation<C::Run>) {
        let Some(record) = &obs.record else {
            return;
        };
        for seen in &mut obs.sidecars {
            let declared = record
                .spec
                .sidecars
                .iter()
                .find(|s| s.name == seen.obs.name);
            let (Some(sidecar), Some(p), MainObs::Running) =
                (declared, &seen.process, seen.obs.run)
            else {
                continue;
            };
            let Some(key) = probe_key(handle, &sidecar.name) else {
                continue;
            };
            seen.obs.health = self
                .sidecar_prober
                .health(&key, p.id(), &sidecar.as_process());
        }
    }

    /// Probe each running sidecar's current run; stop probing the others.
    pub(super) fn keep_probing_sidecars(&self, handle: &Handle, obs: &Observation<C::Run>) {
        let Some(record) = &obs.record else {
            return;
        };
        let ips = record
            .network
            .as_ref()
            .map(|n| n.ips.clone())
            .unwrap_or_default();
        for seen in &obs.sidecars {
            let declared = record
                .spec
                .sidecars
                .iter()
                .find(|s| s.name == seen.obs.name);
            let Some(key) = declared.and_then(|s| probe_key(handle, &s.name)) else {
                continue;
            };
            let (Some(sidecar), Some(p), MainObs::Running) =
                (declared, &seen.process, seen.obs.run)
            else {
                self.sidecar_prober.stop(&key);
                continue;
            };
            let Some(pid) = p.pid() else {
                continue;
            };
            lock(&self.sidecar_keys).insert(key.clone(), (handle.clone(), sidecar.name.clone()));
            let subject = Subject {
                run: p.id().to_string(),
                pid,
                running_for: SystemTime::now()
                    .duration_since(p.started_at())
                    .unwrap_or_default(),
                host: default_host(&ips),
                ports: record
                    .spec
                    .ports
                    .iter()
                    .map(|p| (p.name.clone(), p.container_port))
                    .collect(),
                process: sidecar.as_process(),
                saved: self.containerizer.run_file(handle, p.id(), "probes.json"),
            };
            self.sidecar_prober.ensure(&key, subject);
        }
    }

    /// One `Unhealthy` event per failed probe of a sidecar.
    pub(super) async fn announce_sidecar_probe_failures(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        obs: &Observation<C::Run>,
    ) {
        for seen in &obs.sidecars {
            let Some(key) = probe_key(handle, &seen.obs.name) else {
                continue;
            };
            for (kind, output) in self.sidecar_prober.take_unannounced(&key) {
                let msg = format!(
                    "sidecar {}: {}",
                    seen.obs.name,
                    failure_message(kind, &output)
                );
                self.event(desired, handle, EventType::Warning, Reason::Unhealthy, msg)
                    .await;
            }
        }
    }

    /// One `BackOff` event per run of a sidecar waiting out its crash-loop
    /// backoff, as the main process gets (remembered under the sidecar's
    /// probe key, so the main process's announcements are not touched).
    pub(super) async fn announce_sidecar_backoff(
        &self,
        handle: &Handle,
        desired: Option<&Desired>,
        obs: &Observation<C::Run>,
    ) {
        let Some(record) = &obs.record else {
            return;
        };
        for seen in &obs.sidecars {
            let declared = record
                .spec
                .sidecars
                .iter()
                .find(|s| s.name == seen.obs.name);
            let (Some(sidecar), Some(p), MainObs::Exited { code, .. }) =
                (declared, &seen.process, seen.obs.run)
            else {
                continue;
            };
            if seen.obs.history.stopped || !should_restart(sidecar.policy(), code) {
                continue;
            }
            let Some(key) = probe_key(handle, &sidecar.name) else {
                continue;
            };
            if self.first_time(&key, p.id(), Reason::BackOff) {
                let msg = format!("Back-off restarting failed sidecar {}", sidecar.name);
                self.event(desired, handle, EventType::Warning, Reason::BackOff, msg)
                    .await;
            }
        }
    }

    /// Mark every sidecar and unfinished init process of `spec` that ran
    /// as stopped, before a stop of the container's processes, so each
    /// starts afresh (without backoff) when the container runs again.
    pub(super) fn mark_stopped(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
    ) -> Result<(), ContainerizerError> {
        let inits = spec
            .init_processes
            .iter()
            .map(|i| super::history::init_slot(&i.name));
        let sidecars = spec.sidecars.iter().map(|s| sidecar_slot(&s.name));
        for slot in inits.chain(sidecars) {
            let file = self.containerizer.slot_file(handle, &slot);
            if file.runs > 0 && !file.completed {
                let stopped = MainFile {
                    stopped: true,
                    ..file
                };
                self.containerizer.save_slot_file(handle, &slot, &stopped)?;
            }
        }
        Ok(())
    }
}
