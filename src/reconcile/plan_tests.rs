use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;
use crate::api::{EnvVar, ProcessSpec};

fn spec() -> ContainerSpec {
    ContainerSpec {
        rootfs: "/img".into(),
        process: Some(ProcessSpec {
            args: vec!["sleep".into(), "1000".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

const NOW: fn() -> SystemTime = || SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
const B: CrashLoopBackoff = CrashLoopBackoff {
    initial: Duration::from_secs(10),
    max: Duration::from_secs(300),
    reset_after: Duration::from_secs(600),
};

fn present(spec: &ContainerSpec, main: MainObs) -> Observed<'_> {
    Observed {
        container: ContainerObs::Present {
            spec,
            runtime: Some(Status::Running),
        },
        main,
        history: MainHistory::default(),
    }
}

fn exited(code: i32, ago: u64, ran: u64) -> MainObs {
    MainObs::Exited {
        code: Some(code),
        finished_at: NOW() - Duration::from_secs(ago),
        ran_for: Duration::from_secs(ran),
    }
}

fn steps(desired: Option<&ContainerSpec>, obs: &Observed<'_>) -> Vec<Step> {
    plan(desired, obs, &B, NOW()).steps
}

#[test]
fn absent_and_undeclared_is_left_alone() {
    let obs = Observed {
        container: ContainerObs::Absent,
        main: MainObs::NotStarted,
        history: MainHistory::default(),
    };
    assert_eq!(plan(None, &obs, &B, NOW()), Plan::default());
}

#[test]
fn undeclared_containers_are_destroyed() {
    let s = spec();
    assert_eq!(
        steps(None, &present(&s, MainObs::Running)),
        vec![Step::Destroy]
    );
    let half = Observed {
        container: ContainerObs::HalfMade,
        main: MainObs::NotStarted,
        history: MainHistory::default(),
    };
    assert_eq!(steps(None, &half), vec![Step::Destroy]);
}

#[test]
fn declared_and_absent_is_created_and_started() {
    let obs = Observed {
        container: ContainerObs::Absent,
        main: MainObs::NotStarted,
        history: MainHistory::default(),
    };
    assert_eq!(
        steps(Some(&spec()), &obs),
        vec![Step::Create, Step::StartMain]
    );
    let idle = ContainerSpec {
        process: None,
        ..spec()
    };
    assert_eq!(
        steps(Some(&idle), &obs),
        vec![Step::Create],
        "no process: init idles"
    );
    let stopped = ContainerSpec {
        state: DesiredState::Stopped,
        ..spec()
    };
    assert_eq!(
        steps(Some(&stopped), &obs),
        vec![Step::Create],
        "Stopped: created, not started"
    );
}

#[test]
fn half_made_is_finished_then_created() {
    let obs = Observed {
        container: ContainerObs::HalfMade,
        main: MainObs::NotStarted,
        history: MainHistory::default(),
    };
    assert_eq!(
        steps(Some(&spec()), &obs),
        vec![Step::Destroy, Step::Create, Step::StartMain]
    );
}

#[test]
fn runtime_lost_or_stopped_is_repaired() {
    let s = spec();
    for runtime in [None, Some(Status::Stopped), Some(Status::Created)] {
        let obs = Observed {
            container: ContainerObs::Present { spec: &s, runtime },
            main: MainObs::Running,
            history: MainHistory::default(),
        };
        assert_eq!(
            steps(Some(&s), &obs),
            vec![Step::Destroy, Step::Create, Step::StartMain],
            "{runtime:?}"
        );
    }
    let paused = Observed {
        container: ContainerObs::Present {
            spec: &s,
            runtime: Some(Status::Paused),
        },
        main: MainObs::Running,
        history: MainHistory::default(),
    };
    assert_eq!(
        steps(Some(&s), &paused),
        vec![],
        "a paused container is someone's choice"
    );
}

#[test]
fn running_and_unchanged_needs_nothing() {
    let s = spec();
    assert_eq!(
        plan(Some(&s), &present(&s, MainObs::Running), &B, NOW()),
        Plan::default()
    );
}

#[test]
fn baked_in_changes_recreate() {
    let have = spec();
    let changes: Vec<fn(&mut ContainerSpec)> = vec![
        |s| s.rootfs = "/other".into(),
        |s| s.hostname = Some("h".into()),
        |s| {
            s.env = vec![EnvVar {
                name: "A".into(),
                value: "1".into(),
            }]
        },
        |s| {
            s.process = Some(ProcessSpec {
                args: vec!["true".into()],
                ..Default::default()
            })
        },
        |s| {
            s.mounts = vec![crate::api::Mount {
                source: "/a".into(),
                destination: "/b".into(),
                read_only: false,
            }]
        },
        |s| s.privileged = true,
        |s| s.host_network = true,
        |s| {
            s.security_context = Some(crate::api::SecurityContext {
                read_only_root_filesystem: Some(true),
                ..Default::default()
            })
        },
    ];
    for change in changes {
        let mut want = have.clone();
        change(&mut want);
        assert_eq!(classify(&have, &want), Change::Recreate);
        assert_eq!(
            steps(Some(&want), &present(&have, MainObs::Running)),
            vec![Step::Destroy, Step::Create, Step::StartMain]
        );
    }
}

#[test]
fn limits_alone_update_in_place() {
    let have = spec();
    let mut want = have.clone();
    want.limits.memory = Some(Quantity("64Mi".into()));
    assert_eq!(classify(&have, &want), Change::LimitsOnly);
    assert_eq!(
        steps(Some(&want), &present(&have, MainObs::Running)),
        vec![Step::UpdateLimits]
    );
    want.env.push(EnvVar {
        name: "X".into(),
        value: "y".into(),
    });
    assert_eq!(
        classify(&have, &want),
        Change::Recreate,
        "limits with a baked change recreate"
    );
}

#[test]
fn other_fields_are_only_recorded() {
    let have = spec();
    let mut want = have.clone();
    want.properties.insert("team".into(), "web".into());
    want.restart_policy = RestartPolicy::Never;
    want.termination_grace_period_seconds = Some(3);
    assert_eq!(
        steps(Some(&want), &present(&have, MainObs::Running)),
        vec![Step::UpdateRecord]
    );
}

#[test]
fn stopped_stops_the_main_process_and_keeps_the_container() {
    let have = spec();
    let want = ContainerSpec {
        state: DesiredState::Stopped,
        ..have.clone()
    };
    assert_eq!(
        steps(Some(&want), &present(&have, MainObs::Running)),
        vec![Step::UpdateRecord, Step::StopMain]
    );
    let recorded = want.clone();
    assert_eq!(
        steps(Some(&want), &present(&recorded, exited(143, 1, 5))),
        vec![],
        "already stopped"
    );
}

#[test]
fn running_again_after_stopped_starts_without_a_restart() {
    let s = spec();
    let mut obs = present(&s, exited(143, 1, 5));
    obs.history.stopped = true;
    obs.history.restarts = 2;
    assert_eq!(steps(Some(&s), &obs), vec![Step::StartMain]);
    assert_eq!(
        steps(Some(&s), &present(&s, MainObs::NotStarted)),
        vec![Step::StartMain]
    );
}

#[test]
fn restart_policy_decides() {
    let decide = |policy, code| {
        let s = ContainerSpec {
            restart_policy: policy,
            ..spec()
        };
        steps(Some(&s), &present(&s, exited(code, 3600, 1)))
    };
    let restart = vec![Step::RestartMain { delay: B.initial }];
    assert_eq!(decide(RestartPolicy::Always, 0), restart);
    assert_eq!(decide(RestartPolicy::Always, 1), restart);
    assert_eq!(decide(RestartPolicy::OnFailure, 0), vec![], "succeeded");
    assert_eq!(decide(RestartPolicy::OnFailure, 1), restart);
    assert_eq!(decide(RestartPolicy::Never, 1), vec![], "failed for good");
    assert!(
        should_restart(RestartPolicy::OnFailure, None),
        "a lost process counts as failed"
    );
}

#[test]
fn crash_loop_waits_out_the_backoff() {
    let s = spec();
    let mut obs = present(&s, exited(1, 4, 1));
    obs.history.last_delay = Some(Duration::from_secs(20));
    let p = plan(Some(&s), &obs, &B, NOW());
    assert_eq!(p.steps, vec![]);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(36)));
    assert_eq!(
        p.waiting,
        Some(Waiting::BackOff {
            delay: Duration::from_secs(40),
            remaining: Duration::from_secs(36)
        })
    );

    let obs = present(&s, exited(1, 40, 1));
    let mut obs2 = obs.clone();
    obs2.history.last_delay = Some(Duration::from_secs(20));
    assert_eq!(
        plan(Some(&s), &obs2, &B, NOW()).steps,
        vec![Step::RestartMain {
            delay: Duration::from_secs(40)
        }]
    );
}

#[test]
fn a_long_clean_run_resets_the_backoff() {
    let s = spec();
    let mut obs = present(&s, exited(1, 10, 3600));
    obs.history.last_delay = Some(Duration::from_secs(300));
    assert_eq!(
        plan(Some(&s), &obs, &B, NOW()).steps,
        vec![Step::RestartMain {
            delay: Duration::from_secs(10)
        }]
    );
}

#[test]
fn lost_main_is_restarted_like_a_failure() {
    let s = spec();
    let obs = present(
        &s,
        MainObs::Exited {
            code: None,
            finished_at: NOW() - Duration::from_secs(30),
            ran_for: Duration::ZERO,
        },
    );
    assert_eq!(
        steps(Some(&s), &obs),
        vec![Step::RestartMain { delay: B.initial }]
    );
}
