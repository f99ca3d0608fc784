use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;
use crate::api::{ContainerPort, DnsConfig, EnvVar, ProcessSpec, SecurityContext};

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
        health: Default::default(),
        inits: vec![],
        sidecars: vec![],
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
        health: Default::default(),
        inits: vec![],
        sidecars: vec![],
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
        health: Default::default(),
        inits: vec![],
        sidecars: vec![],
    };
    assert_eq!(steps(None, &half), vec![Step::Destroy]);
}

#[test]
fn declared_and_absent_is_created_and_started() {
    let obs = Observed {
        container: ContainerObs::Absent,
        main: MainObs::NotStarted,
        history: MainHistory::default(),
        health: Default::default(),
        inits: vec![],
        sidecars: vec![],
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
        health: Default::default(),
        inits: vec![],
        sidecars: vec![],
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
            health: Default::default(),
            inits: vec![],
            sidecars: vec![],
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
        health: Default::default(),
        inits: vec![],
        sidecars: vec![],
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
        |s| s.network = Some("none".into()),
        |s| {
            s.ports = vec![ContainerPort {
                container_port: 80,
                host_port: Some(8080),
                ..Default::default()
            }]
        },
        |s| {
            s.dns = Some(DnsConfig {
                nameservers: vec!["10.0.0.53".into()],
                ..Default::default()
            })
        },
        |s| s.host_users = Some(false),
        |s| {
            s.security_context = Some(SecurityContext {
                run_as_user: Some(1000),
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

fn with_inits(names: &[&str]) -> ContainerSpec {
    ContainerSpec {
        init_processes: names
            .iter()
            .map(|n| crate::api::InitProcess {
                name: n.to_string(),
                args: vec!["true".into()],
                ..Default::default()
            })
            .collect(),
        ..spec()
    }
}

fn init(completed: bool, run: MainObs) -> InitObs {
    InitObs {
        completed,
        run,
        history: MainHistory::default(),
    }
}

#[test]
fn init_processes_run_in_order_before_the_main_process() {
    let want = with_inits(&["a", "b"]);
    let absent = Observed {
        container: ContainerObs::Absent,
        ..present(&want, MainObs::NotStarted)
    };
    assert_eq!(
        steps(Some(&want), &absent),
        [Step::Create, Step::StartInit { index: 0 }]
    );
    let mut obs = present(&want, MainObs::NotStarted);
    obs.inits = vec![
        init(false, MainObs::Running),
        init(false, MainObs::NotStarted),
    ];
    assert_eq!(steps(Some(&want), &obs), []);
    obs.inits[0].run = exited(0, 0, 1);
    assert_eq!(
        steps(Some(&want), &obs),
        [Step::InitDone { index: 0 }, Step::StartInit { index: 1 }]
    );
    obs.inits[0].completed = true;
    obs.inits[1].run = exited(0, 0, 1);
    assert_eq!(
        steps(Some(&want), &obs),
        [Step::InitDone { index: 1 }, Step::StartMain]
    );
    obs.inits[1].completed = true;
    assert_eq!(steps(Some(&want), &obs), [Step::StartMain]);
}

#[test]
fn a_failed_init_process_backs_off_and_stops_the_line() {
    let want = with_inits(&["a", "b"]);
    let mut obs = present(&want, MainObs::NotStarted);
    obs.inits = vec![
        init(false, exited(3, 2, 1)),
        init(false, MainObs::NotStarted),
    ];
    let p = plan(Some(&want), &obs, &B, NOW());
    assert_eq!(p.steps, []);
    assert_eq!(
        p.waiting,
        Some(Waiting::InitBackOff {
            index: 0,
            delay: Duration::from_secs(10),
            remaining: Duration::from_secs(8),
        })
    );
    obs.inits[0].run = exited(3, 10, 1);
    assert_eq!(
        steps(Some(&want), &obs),
        [Step::RestartInit {
            index: 0,
            delay: Duration::from_secs(10)
        }]
    );
    let never = ContainerSpec {
        restart_policy: RestartPolicy::Never,
        ..want.clone()
    };
    let mut obs = present(&never, MainObs::NotStarted);
    obs.inits = vec![
        init(false, exited(3, 10, 1)),
        init(false, MainObs::NotStarted),
    ];
    assert_eq!(plan(Some(&never), &obs, &B, NOW()), Plan::default());
}

#[test]
fn init_processes_are_not_run_again_when_the_main_process_restarts() {
    let want = with_inits(&["a"]);
    let mut obs = present(&want, exited(1, 100, 1));
    obs.inits = vec![init(true, exited(0, 200, 1))];
    assert_eq!(
        steps(Some(&want), &obs),
        [Step::RestartMain {
            delay: Duration::from_secs(10)
        }]
    );
}

#[test]
fn a_stop_stops_a_running_init_process_and_a_start_runs_it_afresh() {
    let want = ContainerSpec {
        state: DesiredState::Stopped,
        ..with_inits(&["a"])
    };
    let mut obs = present(&want, MainObs::NotStarted);
    obs.inits = vec![init(false, MainObs::Running)];
    assert_eq!(steps(Some(&want), &obs), [Step::StopMain]);
    obs.inits[0].run = exited(137, 1, 1);
    obs.inits[0].history.stopped = true;
    assert_eq!(steps(Some(&want), &obs), []);
    let running = with_inits(&["a"]);
    // The state is recorded, and the init process runs afresh.
    assert_eq!(
        steps(Some(&running), &obs),
        [Step::UpdateRecord, Step::StartInit { index: 0 }]
    );
}

#[test]
fn changing_init_processes_recreates() {
    let have = with_inits(&["a"]);
    assert_eq!(classify(&have, &with_inits(&["b"])), Change::Recreate);
}

fn with_sidecars(names: &[&str]) -> ContainerSpec {
    ContainerSpec {
        sidecars: names
            .iter()
            .map(|n| crate::api::Sidecar {
                name: n.to_string(),
                args: vec!["sleep".into(), "9".into()],
                ..Default::default()
            })
            .collect(),
        ..spec()
    }
}

fn sidecar(name: &str, run: MainObs) -> SidecarObs {
    SidecarObs {
        name: name.into(),
        run,
        ..Default::default()
    }
}

#[test]
fn sidecars_start_before_the_main_process_and_after_init_processes() {
    let want = with_sidecars(&["a", "b"]);
    let absent = Observed {
        container: ContainerObs::Absent,
        ..present(&want, MainObs::NotStarted)
    };
    assert_eq!(
        steps(Some(&want), &absent),
        [
            Step::Create,
            Step::StartSidecar { index: 0 },
            Step::StartSidecar { index: 1 },
            Step::StartMain
        ]
    );
    let both = ContainerSpec {
        init_processes: with_inits(&["i"]).init_processes,
        ..want.clone()
    };
    let mut obs = present(&both, MainObs::NotStarted);
    obs.inits = vec![init(false, MainObs::Running)];
    assert_eq!(steps(Some(&both), &obs), []);
    obs.inits[0].run = exited(0, 0, 1);
    assert_eq!(
        steps(Some(&both), &obs),
        [
            Step::InitDone { index: 0 },
            Step::StartSidecar { index: 0 },
            Step::StartSidecar { index: 1 },
            Step::StartMain
        ]
    );
}

#[test]
fn a_sidecar_restarts_on_its_own_policy_without_the_main_process() {
    let mut want = with_sidecars(&["a", "b"]);
    want.sidecars[1].restart_policy = Some(RestartPolicy::Never);
    let mut obs = present(&want, MainObs::Running);
    obs.sidecars = vec![
        sidecar("a", exited(0, 20, 1)),
        sidecar("b", exited(1, 20, 1)),
    ];
    assert_eq!(
        steps(Some(&want), &obs),
        [Step::RestartSidecar {
            index: 0,
            delay: Duration::from_secs(10)
        }]
    );
    obs.sidecars[0].run = exited(0, 2, 1);
    let p = plan(Some(&want), &obs, &B, NOW());
    assert_eq!(
        (p.steps, p.requeue_after),
        (vec![], Some(Duration::from_secs(8)))
    );
}

#[test]
fn an_edit_of_one_sidecar_touches_only_that_sidecar() {
    let have = with_sidecars(&["a", "b", "c"]);
    let mut want = with_sidecars(&["a", "b", "d"]);
    want.sidecars[1].args = vec!["sleep".into(), "10".into()];
    let mut obs = present(&have, MainObs::Running);
    obs.sidecars = vec![
        sidecar("a", MainObs::Running),
        sidecar("b", MainObs::Running),
        sidecar("c", MainObs::Running),
    ];
    assert_eq!(classify(&have, &want), Change::RecordOnly);
    assert_eq!(
        steps(Some(&want), &obs),
        [
            Step::RemoveSidecar { index: 1 },
            Step::RemoveSidecar { index: 2 },
            Step::UpdateRecord,
            Step::StartSidecar { index: 1 },
            Step::StartSidecar { index: 2 },
        ]
    );
}

#[test]
fn a_stop_stops_running_sidecars() {
    let want = ContainerSpec {
        state: DesiredState::Stopped,
        ..with_sidecars(&["a"])
    };
    let mut obs = present(&want, exited(137, 1, 1));
    obs.history.stopped = true;
    obs.sidecars = vec![sidecar("a", MainObs::Running)];
    assert_eq!(steps(Some(&want), &obs), [Step::StopMain]);
}
