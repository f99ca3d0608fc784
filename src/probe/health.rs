//! The kubelet's probe rules, pure: a result changes only after
//! `successThreshold` or `failureThreshold` outcomes in a row; readiness
//! starts failed, liveness successful, startup unknown; until the startup
//! probe succeeds the other two do not count. [`RunHealth`] holds one run
//! of the main process's three trackers; [`Health`] is what planning and
//! status read of it; [`Saved`] is what a restarted agent resumes from.

use serde::{Deserialize, Serialize};

use crate::api::{ProbeKind, ProbeTiming, ProcessSpec};

/// One probe's standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    /// The reported result: `None` while unknown.
    pub result: Option<bool>,
    /// The last outcome, and how many in a row.
    last: Option<bool>,
    run: u32,
    timing: ProbeTiming,
}

impl Tracker {
    /// A tracker in the kubelet's initial state for `kind`.
    pub fn new(kind: ProbeKind, timing: ProbeTiming) -> Tracker {
        let result = match kind {
            ProbeKind::Startup => None,
            ProbeKind::Liveness => Some(true),
            ProbeKind::Readiness => Some(false),
        };
        Tracker {
            result,
            last: None,
            run: 0,
            timing,
        }
    }

    /// Count one outcome; true when the reported result changed.
    pub fn record(&mut self, ok: bool) -> bool {
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = match ok {
            true => self.timing.success_threshold,
            false => self.timing.failure_threshold,
        };
        if self.run < threshold || self.result == Some(ok) {
            return false;
        }
        self.result = Some(ok);
        true
    }
}

/// What one run of the main process's probes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHealth {
    /// The run, `main-<n>`.
    pub run: String,
    startup: Option<Tracker>,
    liveness: Option<Tracker>,
    readiness: Option<Tracker>,
    /// The last failed probe's output, for the Ready condition.
    pub last_failure: Option<(ProbeKind, String)>,
    /// Failures not yet announced as events.
    unannounced: Vec<(ProbeKind, String)>,
}

/// At most this many unannounced failures are kept (the oldest go).
const MAX_UNANNOUNCED: usize = 16;

impl RunHealth {
    /// A run's trackers, for the probes `process` declares.
    pub fn new(run: &str, process: &ProcessSpec) -> RunHealth {
        let tracker = |kind, probe: &Option<crate::api::Probe>| {
            probe.as_ref().map(|p| Tracker::new(kind, p.timing()))
        };
        RunHealth {
            run: run.to_string(),
            startup: tracker(ProbeKind::Startup, &process.startup_probe),
            liveness: tracker(ProbeKind::Liveness, &process.liveness_probe),
            readiness: tracker(ProbeKind::Readiness, &process.readiness_probe),
            last_failure: None,
            unannounced: Vec::new(),
        }
    }

    /// The tracker of `kind`, if that probe is declared.
    pub fn tracker(&self, kind: ProbeKind) -> Option<&Tracker> {
        match kind {
            ProbeKind::Startup => self.startup.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
            ProbeKind::Readiness => self.readiness.as_ref(),
        }
    }

    fn tracker_mut(&mut self, kind: ProbeKind) -> Option<&mut Tracker> {
        match kind {
            ProbeKind::Startup => self.startup.as_mut(),
            ProbeKind::Liveness => self.liveness.as_mut(),
            ProbeKind::Readiness => self.readiness.as_mut(),
        }
    }

    /// Whether `kind` is to be run now: declared, and (but for the startup
    /// probe) only once started; the startup probe only until it succeeds.
    pub fn due(&self, kind: ProbeKind) -> bool {
        match kind {
            ProbeKind::Startup => self
                .startup
                .as_ref()
                .is_some_and(|t| t.result != Some(true)),
            _ => self.tracker(kind).is_some() && self.started(),
        }
    }

    /// Count an outcome of `kind` (`Err` carries the failure's output);
    /// true when a result changed.
    pub fn record(&mut self, kind: ProbeKind, outcome: Result<(), String>) -> bool {
        let ok = outcome.is_ok();
        if let Err(output) = outcome {
            self.last_failure = Some((kind, output.clone()));
            if self.unannounced.len() == MAX_UNANNOUNCED {
                self.unannounced.remove(0);
            }
            self.unannounced.push((kind, output));
        }
        self.tracker_mut(kind).is_some_and(|t| t.record(ok))
    }

    /// What a restarted agent resumes from: each probe's result.
    pub fn saved(&self) -> Saved {
        let result = |t: &Option<Tracker>| t.as_ref().and_then(|t| t.result);
        Saved {
            run: self.run.clone(),
            startup: result(&self.startup),
            liveness: result(&self.liveness),
            readiness: result(&self.readiness),
        }
    }

    /// `process`'s trackers for `run`, with the results `saved` for the
    /// same run. Counts in a row start again: a failing process needs its
    /// whole threshold again before it is killed, and a ready one stays
    /// ready until its readiness probe has failed its threshold.
    pub fn resume(run: &str, process: &ProcessSpec, saved: &Saved) -> RunHealth {
        let mut health = RunHealth::new(run, process);
        if saved.run != run {
            return health;
        }
        for (kind, result) in [
            (ProbeKind::Startup, saved.startup),
            (ProbeKind::Liveness, saved.liveness),
            (ProbeKind::Readiness, saved.readiness),
        ] {
            if let (Some(t), Some(r)) = (health.tracker_mut(kind), result) {
                t.result = Some(r);
            }
        }
        health
    }

    /// The failures since the last call, to announce.
    pub fn take_unannounced(&mut self) -> Vec<(ProbeKind, String)> {
        std::mem::take(&mut self.unannounced)
    }

    /// No startup probe, or it succeeded.
    pub fn started(&self) -> bool {
        self.startup.as_ref().is_none_or(|t| t.result == Some(true))
    }

    /// What planning and status read.
    pub fn health(&self) -> Health {
        let failed = |t: &Option<Tracker>| t.as_ref().is_some_and(|t| t.result == Some(false));
        let kill = if failed(&self.startup) {
            Some(ProbeKind::Startup)
        } else if self.started() && failed(&self.liveness) {
            Some(ProbeKind::Liveness)
        } else {
            None
        };
        let readiness_ok = self
            .readiness
            .as_ref()
            .is_none_or(|t| t.result == Some(true));
        let ready = self.started() && readiness_ok;
        let message = match (ready, &self.last_failure) {
            (true, _) => None,
            (false, Some((kind, output))) => Some(failure_message(*kind, output)),
            (false, None) if !self.started() => {
                Some("Startup probe has not succeeded yet".to_string())
            }
            (false, None) => Some("Readiness probe has not succeeded yet".to_string()),
        };
        Health {
            ready,
            kill,
            message,
        }
    }
}

/// Each probe's result for one run, as kept in the run's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The run, `main-<n>`.
    pub run: String,
    /// The startup probe's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<bool>,
    /// The liveness probe's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<bool>,
    /// The readiness probe's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<bool>,
}

/// `Liveness probe failed: <output>`, as the kubelet's event says.
pub fn failure_message(kind: ProbeKind, output: &str) -> String {
    format!("{} probe failed: {output}", kind.as_str())
}

/// What the probes of the current run say, for planning and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Started, and the readiness probe (if any) succeeds.
    pub ready: bool,
    /// The probe whose failure means the main process must be restarted.
    pub kill: Option<ProbeKind>,
    /// Why it is not ready.
    pub message: Option<String>,
}

impl Default for Health {
    /// A main process without probes: ready, nothing to kill.
    fn default() -> Health {
        Health {
            ready: true,
            kill: None,
            message: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::{Probe, TcpSocketAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn probe(success: i32, failure: i32) -> Option<Probe> {
        Some(Probe {
            tcp_socket: Some(TcpSocketAction {
                port: IntOrString::Int(80),
                host: None,
            }),
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            period_seconds: Some(1),
            ..Probe::default()
        })
    }

    fn fail() -> Result<(), String> {
        Err("connection refused".into())
    }

    #[test]
    fn a_result_changes_only_after_its_threshold_in_a_row() {
        let process = ProcessSpec {
            readiness_probe: probe(2, 3),
            ..ProcessSpec::default()
        };
        let mut h = RunHealth::new("main-1", &process);
        assert!(!h.health().ready, "readiness starts failed");
        assert!(!h.record(ProbeKind::Readiness, Ok(())));
        assert!(h.record(ProbeKind::Readiness, Ok(())), "two in a row");
        assert!(h.health().ready);
        assert!(!h.record(ProbeKind::Readiness, fail()));
        assert!(
            !h.record(ProbeKind::Readiness, Ok(())),
            "the run was broken"
        );
        for _ in 0..2 {
            assert!(!h.record(ProbeKind::Readiness, fail()));
        }
        assert!(h.record(ProbeKind::Readiness, fail()), "three in a row");
        let health = h.health();
        assert!(!health.ready);
        assert_eq!(health.kill, None, "readiness never restarts");
        assert_eq!(
            health.message.as_deref(),
            Some("Readiness probe failed: connection refused")
        );
    }

    #[test]
    fn liveness_failing_its_threshold_asks_for_a_restart() {
        let process = ProcessSpec {
            liveness_probe: probe(1, 2),
            ..ProcessSpec::default()
        };
        let mut h = RunHealth::new("main-1", &process);
        assert_eq!(h.health(), Health::default(), "liveness starts successful");
        h.record(ProbeKind::Liveness, fail());
        assert_eq!(h.health().kill, None);
        h.record(ProbeKind::Liveness, fail());
        assert_eq!(h.health().kill, Some(ProbeKind::Liveness));
        assert_eq!(h.take_unannounced().len(), 2);
        assert!(h.take_unannounced().is_empty());
    }

    #[test]
    fn the_startup_probe_gates_the_others_and_can_restart() {
        let process = ProcessSpec {
            startup_probe: probe(1, 2),
            liveness_probe: probe(1, 1),
            readiness_probe: probe(1, 1),
            ..ProcessSpec::default()
        };
        let mut h = RunHealth::new("main-1", &process);
        assert!(h.due(ProbeKind::Startup));
        assert!(!h.due(ProbeKind::Liveness) && !h.due(ProbeKind::Readiness));
        assert_eq!(
            h.health().message.as_deref(),
            Some("Startup probe has not succeeded yet")
        );
        h.record(ProbeKind::Startup, Ok(()));
        assert!(!h.due(ProbeKind::Startup), "done once it succeeded");
        assert!(h.due(ProbeKind::Liveness) && h.due(ProbeKind::Readiness));

        let mut never = RunHealth::new("main-2", &process);
        never.record(ProbeKind::Startup, fail());
        never.record(ProbeKind::Startup, fail());
        assert_eq!(never.health().kill, Some(ProbeKind::Startup));
    }

    #[test]
    fn a_resumed_run_keeps_its_results_and_starts_its_counts_again() {
        let process = ProcessSpec {
            startup_probe: probe(1, 1),
            liveness_probe: probe(1, 2),
            readiness_probe: probe(1, 2),
            ..ProcessSpec::default()
        };
        let mut before = RunHealth::new("main-3", &process);
        before.record(ProbeKind::Startup, Ok(()));
        before.record(ProbeKind::Readiness, Ok(()));
        before.record(ProbeKind::Liveness, fail());
        let saved = before.saved();
        let mut after = RunHealth::resume("main-3", &process, &saved);
        assert!(after.started(), "the startup probe is not run again");
        assert!(after.health().ready, "a ready process stays ready");
        after.record(ProbeKind::Liveness, fail());
        assert_eq!(after.health().kill, None, "the whole threshold again");
        let other = RunHealth::resume("main-4", &process, &saved);
        assert!(!other.started(), "another run's results are not taken");
    }

    #[test]
    fn the_kubelets_default_timing_is_used() {
        let process = ProcessSpec {
            liveness_probe: probe(1, 3),
            ..ProcessSpec::default()
        };
        let h = RunHealth::new("main-1", &process);
        let timing = h.tracker(ProbeKind::Liveness).map(|t| t.timing);
        assert_eq!(timing.map(|t| t.timeout), Some(Duration::from_secs(1)));
    }
}
