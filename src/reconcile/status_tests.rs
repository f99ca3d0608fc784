use std::time::{Duration, SystemTime};

use super::*;
use crate::api::{DeclReason, ProcessSpec, RestartPolicy};
use crate::reconcile::plan::MainHistory;
use crate::runtime::Status;

fn spec() -> ContainerSpec {
    ContainerSpec {
        rootfs: "/img".into(),
        process: Some(ProcessSpec {
            args: vec!["x".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn obs(spec: &ContainerSpec, main: MainObs) -> Observed<'_> {
    Observed {
        container: ContainerObs::Present {
            spec,
            runtime: Some(Status::Running),
        },
        main,
        history: MainHistory {
            restarts: 2,
            ..Default::default()
        },
        health: Default::default(),
        inits: vec![],
        sidecars: vec![],
    }
}

fn exited(code: i32) -> MainObs {
    MainObs::Exited {
        code: Some(code),
        finished_at: SystemTime::UNIX_EPOCH,
        ran_for: Duration::ZERO,
    }
}

fn input<'a>(spec: &'a ContainerSpec, observed: &'a Observed<'a>) -> StatusInput<'a> {
    StatusInput {
        image_wait: None,
        image: None,
        image_id: None,
        pod_ips: &[],
        spec: Some(spec),
        generation: 3,
        invalid: None,
        terminating: false,
        observed,
        last_termination: None,
        init_terminations: &[],
        main_process: None,
        waiting: None,
        error: None,
        handle: "web",
        previous: None,
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

fn summary(s: &ContainerStatus) -> (Phase, String, String) {
    let ready = &s.conditions[0];
    (
        s.phase.unwrap(),
        ready.status.clone(),
        ready.reason.clone().unwrap(),
    )
}

#[test]
fn running_is_ready() {
    let s = spec();
    let o = obs(&s, MainObs::Running);
    let st = compute(&input(&s, &o));
    assert_eq!(
        summary(&st),
        (Phase::Running, "True".into(), "Started".into())
    );
    assert_eq!(st.observed_generation, Some(3));
    assert_eq!(st.conditions[0].observed_generation, Some(3));
    assert_eq!(st.restart_count, 2);
    assert_eq!(st.handle.as_deref(), Some("web"));
}

#[test]
fn crash_loop_is_running_but_not_ready() {
    let s = spec();
    let o = obs(&s, exited(1));
    let mut i = input(&s, &o);
    i.waiting = Some(Waiting::BackOff {
        delay: Duration::from_secs(20),
        remaining: Duration::from_secs(5),
    });
    let st = compute(&i);
    assert_eq!(
        summary(&st),
        (Phase::Running, "False".into(), "CrashLoopBackOff".into())
    );
    assert_eq!(
        st.message.as_deref(),
        Some("back-off 20s restarting failed main process")
    );
}

#[test]
fn terminal_exits() {
    let never = ContainerSpec {
        restart_policy: RestartPolicy::Never,
        ..spec()
    };
    let ok = obs(&never, exited(0));
    assert_eq!(
        summary(&compute(&input(&never, &ok))),
        (Phase::Succeeded, "False".into(), "Completed".into())
    );
    let bad = obs(&never, exited(3));
    assert_eq!(
        summary(&compute(&input(&never, &bad))),
        (Phase::Failed, "False".into(), "Error".into())
    );
    let mut oom = input(&never, &bad);
    oom.last_termination = Some(Termination {
        exit_code: 137,
        signal: Some("SIGKILL".into()),
        reason: "OOMKilled".into(),
        message: None,
        finished_at: None,
    });
    assert_eq!(
        summary(&compute(&oom)),
        (Phase::Failed, "False".into(), "OOMKilled".into())
    );
}

#[test]
fn stopped_idle_and_terminating() {
    let stopped = ContainerSpec {
        state: DesiredState::Stopped,
        ..spec()
    };
    let o = obs(&stopped, exited(143));
    assert_eq!(
        summary(&compute(&input(&stopped, &o))),
        (Phase::Stopped, "False".into(), "Stopped".into())
    );
    let idle = ContainerSpec {
        process: None,
        ..spec()
    };
    let o = obs(&idle, MainObs::NotStarted);
    assert_eq!(
        summary(&compute(&input(&idle, &o))),
        (Phase::Running, "True".into(), "Started".into())
    );
    let mut t = input(&idle, &o);
    t.terminating = true;
    assert_eq!(summary(&compute(&t)).0, Phase::Terminating);
}

#[test]
fn invalid_manifest_keeps_running_with_a_condition() {
    let s = spec();
    let o = obs(&s, MainObs::Running);
    let mut i = input(&s, &o);
    i.invalid = Some((
        DeclReason::InvalidManifest,
        "/m/web.yaml: document 1: spec.rootfs: bad",
    ));
    let st = compute(&i);
    assert_eq!(
        summary(&st),
        (Phase::Running, "True".into(), "Started".into())
    );
    let valid = &st.conditions[1];
    assert_eq!(
        (valid.type_.as_str(), valid.status.as_str()),
        ("Valid", "False")
    );
    assert!(valid.message.as_deref().unwrap().contains("spec.rootfs"));
}

#[test]
fn transition_time_holds_while_status_holds() {
    let s = spec();
    let o = obs(&s, MainObs::Running);
    let first = compute(&input(&s, &o));
    let mut later = input(&s, &o);
    later.now += Duration::from_secs(60);
    later.previous = Some(&first);
    assert_eq!(
        compute(&later),
        first,
        "a resync computes the identical status"
    );
    let o2 = obs(&s, exited(1));
    let mut changed = input(&s, &o2);
    changed.now += Duration::from_secs(60);
    changed.previous = Some(&first);
    let st = compute(&changed);
    assert_ne!(
        st.conditions[0].last_transition_time,
        first.conditions[0].last_transition_time
    );
}

#[test]
fn a_status_can_be_restated_at_another_generation() {
    let st = ContainerStatus {
        observed_generation: Some(1),
        conditions: vec![
            Condition {
                type_: "Ready".into(),
                status: "True".into(),
                observed_generation: Some(1),
                ..Default::default()
            },
            Condition {
                type_: "Valid".into(),
                status: "False".into(),
                observed_generation: Some(1),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let moved = st.at_generation(7);
    assert_eq!(moved.observed_generation, Some(7));
    assert!(
        moved
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(7))
    );
    assert_eq!(moved.conditions.len(), 2);
    assert_eq!(moved.at_generation(1), st, "nothing else changes");
}

#[test]
fn a_main_process_that_cannot_start_is_pending_until_it_first_ran() {
    let s = spec();
    let mut o = obs(&s, MainObs::NotStarted);
    o.history.restarts = 0;
    let mut i = input(&s, &o);
    i.error = Some((
        FailedStep::MainProcess,
        "web: spec.process.user: no user nobody2",
    ));
    let st = compute(&i);
    assert_eq!(
        summary(&st),
        (
            Phase::Pending,
            "False".into(),
            "CreateContainerError".into()
        )
    );
    assert!(st.message.unwrap().contains("no user nobody2"));

    let o = obs(&s, MainObs::NotStarted);
    let mut i = input(&s, &o);
    i.error = Some((FailedStep::MainProcess, "disk full"));
    assert_eq!(
        summary(&compute(&i)),
        (
            Phase::Running,
            "False".into(),
            "CreateContainerError".into()
        ),
        "a restart that cannot start: the container ran before"
    );

    i.error = Some((FailedStep::Container, "runc failed"));
    assert_eq!(
        summary(&compute(&i)),
        (Phase::Running, "False".into(), "Failed".into())
    );

    i.error = Some((FailedStep::Config, "seccomp profile missing"));
    assert_eq!(
        summary(&compute(&i)),
        (
            Phase::Pending,
            "False".into(),
            "CreateContainerConfigError".into()
        ),
        "a spec this node cannot make a container of"
    );
}

#[test]
fn the_running_main_process_is_named_with_its_pid() {
    let spec = spec();
    let running = obs(&spec, MainObs::Running);
    let st = compute(&StatusInput {
        main_process: Some(("main-2", Some(23624))),
        ..input(&spec, &running)
    });
    let main = st.main_process.unwrap();
    assert_eq!((main.id.as_str(), main.pid), ("main-2", Some(23624)));
    // Exited: no run is running.
    let exited = obs(&spec, exited(1));
    let st = compute(&StatusInput {
        main_process: Some(("main-2", Some(23624))),
        ..input(&spec, &exited)
    });
    assert_eq!(st.main_process, None);
}

fn pod_spec() -> ContainerSpec {
    ContainerSpec {
        init_processes: vec![crate::api::InitProcess {
            name: "setup".into(),
            args: vec!["x".into()],
            ..Default::default()
        }],
        sidecars: vec![crate::api::Sidecar {
            name: "side".into(),
            args: vec!["x".into()],
            ..Default::default()
        }],
        ..spec()
    }
}

#[test]
fn every_process_is_listed_and_ready_needs_every_sidecar() {
    let s = pod_spec();
    let mut o = obs(&s, MainObs::Running);
    o.inits = vec![crate::reconcile::plan::InitObs {
        completed: true,
        run: exited(0),
        history: MainHistory::default(),
    }];
    o.sidecars = vec![crate::reconcile::plan::SidecarObs {
        name: "side".into(),
        run: MainObs::Running,
        health: crate::probe::Health {
            ready: false,
            kill: None,
            message: Some("Readiness probe failed: no".into()),
        },
        ..Default::default()
    }];
    let st = compute(&input(&s, &o));
    let states: Vec<_> = st
        .processes
        .iter()
        .map(|p| (p.name.as_str(), p.role, p.state, p.ready))
        .collect();
    use crate::api::{ProcessRole as R, ProcessState as S};
    assert_eq!(
        states,
        [
            ("setup", R::Init, S::Terminated, true),
            ("main", R::Main, S::Running, true),
            ("side", R::Sidecar, S::Running, false),
        ]
    );
    assert_eq!(
        summary(&st),
        (Phase::Running, "False".into(), "Unhealthy".into())
    );
    let message = st.conditions[0].message.clone().unwrap_or_default();
    assert_eq!(
        message,
        "sidecar side is not ready: Readiness probe failed: no"
    );
    o.sidecars[0].health.ready = true;
    let st = compute(&input(&s, &o));
    assert_eq!(
        summary(&st),
        (Phase::Running, "True".into(), "Started".into())
    );
}

#[test]
fn a_container_without_init_processes_or_sidecars_lists_no_processes() {
    let s = spec();
    let o = obs(&s, MainObs::Running);
    assert_eq!(compute(&input(&s, &o)).processes, vec![]);
}
