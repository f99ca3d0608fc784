//! The controller's own rules, over the in-memory doubles of its seams
//! (see [`super::super::fake`]) and tokio's paused time: no root, no runc,
//! no host state.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::api::Origin;
use crate::api::{ExecAction, Phase, Probe, ProcessSpec};
use crate::reconcile::fake::{
    FakeContainers, FakeImages, FakeReports, FakeRun, Journal, tokio_clock,
};
use crate::reconcile::history::MainFile;
use crate::reconcile::plan::MainObs;
use crate::report::REPORT_RETRY;
use crate::report::events::EventLog;
use crate::report::files::StatusFiles;
use crate::source::update::Update;

type FakeController = Controller<FakeContainers, FakeReports>;

/// A controller over the doubles, and handles on everything it touches.
struct Rig {
    store: Arc<Store>,
    queue: Arc<WorkQueue>,
    journal: Arc<Journal>,
    containers: Arc<FakeContainers>,
    reports: Arc<FakeReports>,
    images: Arc<FakeImages>,
    controller: Arc<FakeController>,
    clock: Clock,
}

fn config(crash_loop: CrashLoopBackoff) -> ControllerConfig {
    ControllerConfig {
        workers: 1,
        resync_period: Duration::from_secs(3600),
        crash_loop,
        metrics: AgentMetrics::default(),
        log_max_bytes: 1 << 20,
        log_max_files: 2,
    }
}

fn rig() -> Rig {
    rig_with(CrashLoopBackoff::default())
}

fn rig_with(crash_loop: CrashLoopBackoff) -> Rig {
    let journal = Arc::new(Journal::default());
    let clock = tokio_clock();
    let containers = Arc::new(FakeContainers::new(journal.clone(), clock.clone()));
    let reports = Arc::new(FakeReports::new(journal.clone()));
    let store = Arc::new(Store::new());
    listed(&store, SourceKind::File);
    let queue = WorkQueue::new();
    let images = Arc::new(FakeImages::new(journal.clone()));
    let parts = (
        containers.clone(),
        store.clone(),
        queue.clone(),
        reports.clone(),
        images.clone() as Arc<dyn ImageOps>,
    );
    let controller = Controller::with_clock(parts, config(crash_loop), clock.clone());
    Rig {
        store,
        queue,
        journal,
        containers,
        reports,
        images,
        controller,
        clock,
    }
}

impl Rig {
    /// Declare `handle` from a manifest file.
    fn declare(&self, handle: &Handle, spec: ContainerSpec) {
        declare(&self.store, file_decl(handle, spec));
    }

    /// Run the workers until the test ends.
    fn start(&self) {
        tokio::spawn(Arc::clone(&self.controller).run());
    }

    /// Wait, in paused time, until `cond` holds; fail after a minute of it.
    async fn until(&self, what: &str, cond: impl Fn() -> bool) {
        for _ in 0..6000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{what}: not within a minute; journal: {:?}",
            self.journal.lines()
        );
    }
}

/// `kind`'s source has listed (declaring nothing yet).
fn listed(store: &Store, kind: SourceKind) {
    store.apply(Update::Listed {
        kind,
        declared: Vec::new(),
        file_errors: Default::default(),
        seen: Vec::new(),
    });
}

fn declare(store: &Store, desired: Desired) {
    let desired = Box::new(desired);
    store.apply(Update::Declared {
        desired,
        seen: Vec::new(),
    });
}

fn h(s: &str) -> Handle {
    Handle::new(s).expect("a valid handle")
}

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

fn file_decl(handle: &Handle, spec: ContainerSpec) -> Desired {
    Desired {
        handle: handle.clone(),
        origin: Origin::File {
            path: PathBuf::from("/manifests/c.yaml"),
            document: 1,
        },
        spec: Some(spec),
        generation: 1,
        error: None,
        deleting: false,
        finalizer: false,
    }
}

fn kube_decl(handle: &Handle, spec: ContainerSpec) -> Desired {
    Desired {
        origin: Origin::Kube {
            namespace: "default".into(),
            name: handle.to_string(),
            uid: "uid-1".into(),
        },
        ..file_decl(handle, spec)
    }
}

fn labels(kind: SourceKind) -> BTreeMap<String, String> {
    BTreeMap::from([(SOURCE_LABEL.to_string(), kind.label().to_string())])
}

#[tokio::test(start_paused = true)]
async fn the_finalizer_goes_only_after_destroy() {
    let r = rig();
    let a = h("a");
    r.containers.put(&a, &spec(), labels(SourceKind::Kube));
    listed(&r.store, SourceKind::Kube);
    let deleting = Desired {
        deleting: true,
        finalizer: true,
        ..kube_decl(&a, spec())
    };
    declare(&r.store, deleting);
    r.containers.fail("destroy", 1);

    assert!(r.controller.reconcile(&a).await.is_err());
    assert!(r.containers.get(&a).is_some(), "the destroy failed");
    assert_eq!(r.journal.count("remove_finalizer a"), 0);

    assert_eq!(r.controller.reconcile(&a).await.ok(), Some(None));
    assert!(r.containers.get(&a).is_none());
    let lines = r.journal.lines();
    assert_eq!(
        lines[lines.len() - 2..],
        ["destroy a", "remove_finalizer a"],
        "{lines:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_source_that_has_not_listed_yet_is_left_alone() {
    let r = rig();
    let a = h("a");
    r.containers.put(&a, &spec(), labels(SourceKind::Kube));
    listed(&r.store, SourceKind::File);

    assert_eq!(r.controller.reconcile(&a).await.ok(), Some(None));
    assert_eq!(r.journal.lines(), Vec::<String>::new(), "nothing touched");
    assert!(r.containers.get(&a).is_some());

    listed(&r.store, SourceKind::Kube);
    assert_eq!(r.controller.reconcile(&a).await.ok(), Some(None));
    assert_eq!(r.journal.count("destroy a"), 1);
    assert!(
        r.containers.get(&a).is_none(),
        "undeclared once its source listed"
    );
}

#[tokio::test(start_paused = true)]
async fn status_writes_are_retried() {
    let r = rig();
    let a = h("a");
    r.declare(&a, spec());
    r.reports.fail_status_writes(1);
    r.start();
    r.queue.add(a.clone());
    r.until("a failed status write", || {
        r.journal.count("status failed a") == 1
    })
    .await;

    tokio::time::sleep(REPORT_RETRY - Duration::from_millis(100)).await;
    assert!(
        r.reports.statuses(&a).is_empty(),
        "not before the retry is due"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let statuses = r.reports.statuses(&a);
    assert_eq!(statuses.len(), 1, "{:?}", r.journal.lines());
    assert_eq!(statuses[0].phase, Some(Phase::Running));
    assert_eq!(r.journal.count("create a"), 1, "the retry only reported");
}

#[tokio::test(start_paused = true)]
async fn a_steady_container_is_looked_at_again_only_by_the_resync() {
    let r = rig();
    let a = h("a");
    r.declare(&a, spec());
    assert_eq!(r.controller.reconcile(&a).await.ok(), Some(None));
    assert_eq!(r.journal.count("run a"), 1);
    assert_eq!(r.controller.reconcile(&a).await.ok(), Some(None));
    assert_eq!(r.journal.count("run a"), 1, "nothing to do the second time");
}

#[tokio::test(start_paused = true)]
async fn a_crash_looping_main_process_is_looked_at_when_its_backoff_ends() {
    let r = rig();
    let a = h("a");
    r.declare(&a, spec());
    r.controller.reconcile(&a).await.expect("created");
    let run = r.containers.current_run(&a).expect("a first run");
    run.exit(1, (r.clock)());

    let initial = CrashLoopBackoff::default().initial;
    assert_eq!(r.controller.reconcile(&a).await.ok(), Some(Some(initial)));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let left = initial - Duration::from_secs(4);
    assert_eq!(r.controller.reconcile(&a).await.ok(), Some(Some(left)));
    assert_eq!(r.journal.count("run a"), 1, "no restart during the backoff");
    assert_eq!(
        r.reports
            .reasons(&a)
            .iter()
            .filter(|w| **w == Reason::BackOff)
            .count(),
        1
    );

    tokio::time::sleep(left).await;
    assert_eq!(r.controller.reconcile(&a).await.ok(), Some(None));
    assert_eq!(
        r.journal.count("run a"),
        2,
        "restarted when the backoff ended"
    );
    let file = r.containers.main_file(&a);
    assert_eq!((file.runs, file.restarts), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_main_process_that_ends_as_it_starts_is_planned_again_at_once() {
    let r = rig_with(CrashLoopBackoff {
        initial: Duration::ZERO,
        ..CrashLoopBackoff::default()
    });
    let a = h("a");
    r.declare(&a, spec());
    r.containers.exit_at_start(Some(1));
    assert_eq!(
        r.controller.reconcile(&a).await.ok(),
        Some(Some(Duration::ZERO)),
        "no exit watch will wake it: look again now"
    );
}

#[tokio::test(start_paused = true)]
async fn an_exit_requeues_its_own_handle() {
    let r = rig();
    let (a, b) = (h("a"), h("b"));
    for x in [&a, &b] {
        r.declare(x, spec());
        r.controller.reconcile(x).await.expect("created");
    }
    assert!(r.queue.is_empty());

    let run = r.containers.current_run(&b).expect("b runs");
    run.exit(0, (r.clock)());
    r.until("b queued", || !r.queue.is_empty()).await;
    assert_eq!(r.queue.len(), 1);
    assert_eq!(r.queue.next().await, Some(b));
}

#[tokio::test(start_paused = true)]
async fn an_oom_kill_requeues_its_own_handle_and_is_announced() {
    let r = rig();
    let (a, b) = (h("a"), h("b"));
    for x in [&a, &b] {
        r.declare(x, spec());
        r.controller.reconcile(x).await.expect("created");
    }

    assert!(r.containers.oom_kill(&a), "a's cgroup is watched");
    r.until("a queued", || !r.queue.is_empty()).await;
    assert_eq!(r.queue.len(), 1);
    assert_eq!(r.queue.next().await, Some(a.clone()));
    r.queue.done(&a);

    r.controller.reconcile(&a).await.expect("reconciled");
    let oom = |x: &Handle| {
        r.reports
            .reasons(x)
            .iter()
            .filter(|w| **w == Reason::OomKilled)
            .count()
    };
    assert_eq!((oom(&a), oom(&b)), (1, 0));
    r.controller.reconcile(&a).await.expect("reconciled");
    assert_eq!(oom(&a), 1, "announced once");
}

#[tokio::test(start_paused = true)]
async fn a_step_that_fails_midway_is_retried_and_never_repeats_a_completed_destroy() {
    let r = rig();
    let a = h("a");
    // No main process: no exit wakes the handle, only the retry does.
    let idle = ContainerSpec {
        process: None,
        ..spec()
    };
    r.declare(&a, idle.clone());
    r.controller.reconcile(&a).await.expect("created");
    let moved = ContainerSpec {
        rootfs: "/img2".into(),
        ..idle
    };
    r.declare(&a, moved);
    r.containers.fail("create", 1);
    r.start();
    r.queue.add(a.clone());

    r.until("the retried create", || r.journal.count("create a") == 3)
        .await;
    assert_eq!(r.journal.count("destroy a"), 1, "{:?}", r.journal.lines());
    let made = r.containers.get(&a).and_then(|c| c.record);
    assert_eq!(made.map(|rec| rec.spec.rootfs), Some("/img2".into()));
}

#[tokio::test(start_paused = true)]
async fn a_leftover_cgroup_is_queued_and_destroyed() {
    let r = rig();
    let a = h("a");
    listed(&r.store, SourceKind::File);
    r.containers.leave_cgroup(&a);
    r.controller.enqueue_at_start();
    assert_eq!(r.queue.next().await, Some(a.clone()));
    r.queue.done(&a);

    r.controller.reconcile(&a).await.expect("reconciled");
    assert_eq!(r.journal.lines(), ["destroy a", "forget a"]);
    assert!(r.containers.cgroup_handles().is_empty());
}

/// The real reporters, writing status files and the event log in a
/// temporary directory: the seam's other side is wired as the agent has it.
#[tokio::test(start_paused = true)]
async fn the_real_file_reporters_write_and_drop_status_files() {
    let dir = std::env::temp_dir().join(format!("rundmc-controller-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Store::new());
    let files = StatusFiles::open(dir.join("status")).expect("a status directory");
    let events = EventLog::open(dir.join("events.jsonl"), 100).expect("an event log");
    let reporters = Arc::new(Reporters {
        files,
        events,
        kube: None,
        cpu: Default::default(),
    });
    let clock = tokio_clock();
    let containers = Arc::new(FakeContainers::new(Arc::default(), clock.clone()));
    let config = config(CrashLoopBackoff::default());
    let queue = WorkQueue::new();
    let images: Arc<dyn ImageOps> = Arc::new(crate::reconcile::images::NoImages);
    let parts = (containers, store.clone(), queue, reporters.clone(), images);
    let controller = Controller::with_clock(parts, config, clock);
    let a = h("a");
    listed(&store, SourceKind::File);
    declare(&store, file_decl(&a, spec()));
    controller.reconcile(&a).await.expect("created");
    let written = reporters.files.previous("a").and_then(|s| s.phase);
    assert_eq!(written, Some(Phase::Running));
    // The status and event writes were charged to the report CPU counter.
    assert!(reporters.cpu.get() > 0.0, "{}", reporters.cpu.get());

    store.apply(Update::Undeclared {
        kind: SourceKind::File,
        handle: a.clone(),
        seen: Vec::new(),
    });
    controller.reconcile(&a).await.expect("destroyed");
    assert_eq!(reporters.files.names(), Vec::<String>::new());
    let log = std::fs::read_to_string(dir.join("events.jsonl")).unwrap_or_default();
    assert!(log.contains("\"Destroyed\""), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn observation(record: Option<(ContainerSpec, SourceKind)>) -> Observation<FakeRun> {
    let record = record.map(
        |(spec, kind)| crate::containerizer::depot::ContainerRecord {
            image: None,
            network: None,
            userns: None,
            handle: h("a"),
            spec,
            spec_hash: String::new(),
            created_at: String::new(),
            labels: labels(kind),
        },
    );
    Observation {
        record,
        half_made: false,
        runtime: None,
        main_file: MainFile::default(),
        main: MainObs::NotStarted,
        main_process: None,
        last_termination: None,
        health: Default::default(),
        inits: Vec::new(),
        sidecars: Vec::new(),
    }
}

#[test]
fn the_intent_names_what_to_do() {
    let a = h("a");
    let synced = |k: &[SourceKind]| k.iter().copied().collect::<HashSet<_>>();
    let none = observation(None);
    let kube_made = observation(Some((spec(), SourceKind::Kube)));
    let deleting = Desired {
        deleting: true,
        ..kube_decl(&a, spec())
    };
    let never_valid = Desired {
        spec: None,
        ..file_decl(&a, spec())
    };

    let all = synced(&[SourceKind::File, SourceKind::Kube]);
    assert_eq!(intent(Some(&deleting), &all, &kube_made), Intent::Destroy);
    let declared = file_decl(&a, spec());
    assert_eq!(
        intent(Some(&declared), &all, &none),
        Intent::Run(Box::new(spec()))
    );
    assert_eq!(intent(Some(&never_valid), &all, &none), Intent::LeaveAlone);
    assert_eq!(
        intent(Some(&never_valid), &all, &kube_made),
        Intent::Run(Box::new(spec())),
        "what runs is kept"
    );
    let file_only = synced(&[SourceKind::File]);
    assert_eq!(intent(None, &file_only, &kube_made), Intent::LeaveAlone);
    assert_eq!(intent(None, &all, &kube_made), Intent::Destroy);
    assert_eq!(intent(None, &synced(&[]), &none), Intent::Destroy);
}

fn image_spec(image: &str, process: Option<ProcessSpec>) -> ContainerSpec {
    ContainerSpec {
        image: Some(image.into()),
        process,
        ..Default::default()
    }
}

fn app_defaults() -> crate::api::ImageDefaults {
    crate::api::ImageDefaults {
        entrypoint: vec!["/bin/app".into()],
        cmd: vec!["serve".into()],
        env: vec!["MODE=image".into()],
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_container_waits_for_its_image_then_runs_the_images_command() {
    let r = rig();
    let a = h("a");
    r.declare(&a, image_spec("app", None));
    r.start();
    r.queue.add(a.clone());
    r.until("a pull is asked for", || {
        r.journal.count("ensure a app -") == 1
    })
    .await;
    r.until("a status", || !r.reports.statuses(&a).is_empty())
        .await;
    let waiting = r.reports.statuses(&a).pop().unwrap();
    assert_eq!(waiting.phase, Some(Phase::Pending));
    assert_eq!(waiting.conditions[0].reason.as_deref(), Some("Creating"));
    assert_eq!(r.journal.count("create a"), 0, "nothing made while pulling");
    assert_eq!(r.reports.reasons(&a), vec![Reason::Pulling]);

    r.images.pulled("app", app_defaults());
    r.until("the main process runs", || {
        r.journal.count("argv a /bin/app serve") == 1
    })
    .await;
    assert_eq!(r.journal.count("layers a /layers/app/2:/layers/app/1"), 1);
    let reasons = r.reports.reasons(&a);
    assert_eq!(
        &reasons[..3],
        &[Reason::Pulling, Reason::Pulled, Reason::Created]
    );
    r.until("Running with the image's id", || {
        r.reports.statuses(&a).last().is_some_and(|s| {
            s.phase == Some(Phase::Running) && s.image_id.as_deref() == Some("sha256:app")
        })
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_makes_nothing_and_says_why() {
    let r = rig();
    let a = h("a");
    r.declare(&a, image_spec("app", None));
    r.images.failed(
        "app",
        crate::image::state::ImageWait {
            reason: Reason::ImagePullBackOff,
            message: "Back-off pulling image \"app\"".into(),
            retry_in: Some(Duration::from_secs(10)),
        },
    );
    let requeue = r.controller.reconcile(&a).await.ok();
    assert_eq!(
        requeue,
        Some(Some(Duration::from_secs(10))),
        "looks again after the backoff"
    );
    assert_eq!(r.journal.count("create a"), 0);
    let st = r.reports.statuses(&a).pop().unwrap();
    assert_eq!(st.phase, Some(Phase::Pending));
    assert_eq!(st.conditions[0].reason.as_deref(), Some("ImagePullBackOff"));
    assert_eq!(
        st.message.as_deref(),
        Some("Back-off pulling image \"app\"")
    );
}

#[tokio::test(start_paused = true)]
async fn an_image_with_nothing_to_run_is_a_config_error_and_makes_nothing() {
    let r = rig();
    let a = h("a");
    r.declare(&a, image_spec("bare", None));
    r.images.pulled("bare", Default::default());
    assert_eq!(r.controller.reconcile(&a).await.ok(), Some(None));
    assert_eq!(r.journal.count("create a"), 0);
    let st = r.reports.statuses(&a).pop().unwrap();
    assert_eq!(st.phase, Some(Phase::Pending));
    assert_eq!(
        st.conditions[0].reason.as_deref(),
        Some("CreateContainerConfigError")
    );
    assert!(
        st.message
            .unwrap()
            .contains("image bare has no Entrypoint or Cmd")
    );

    // args alone run after the (empty) Entrypoint: that is a command.
    let with_args = ProcessSpec {
        args: vec!["/bin/sh".into(), "-c".into(), "sleep 1".into()],
        ..Default::default()
    };
    r.declare(&a, image_spec("bare", Some(with_args)));
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(r.journal.count("argv a /bin/sh -c sleep 1"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_resources_image_is_ensured_in_its_namespace() {
    let r = rig();
    let a = h("a");
    declare(&r.store, kube_decl(&a, image_spec("app", None)));
    r.images.pulled("app", app_defaults());
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert!(
        r.journal
            .lines()
            .iter()
            .any(|l| l.starts_with("ensure a app ") && !l.ends_with(" -")),
        "{:?}",
        r.journal.lines()
    );
    assert_eq!(r.journal.count("argv a /bin/app serve"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_broken_network_is_repaired_by_making_the_container_again() {
    let r = rig();
    let a = h("a");
    r.declare(&a, spec());
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(r.journal.count("create a"), 1);
    // As after a veth deleted behind the agent's back.
    r.containers.break_network(&a, "CHECK: eth0 has no address");
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(r.journal.count("destroy a"), 1);
    assert_eq!(r.journal.count("create a"), 2, "{:?}", r.journal.lines());
    assert!(r.reports.reasons(&a).contains(&Reason::NetworkNotReady));
    // Whole again: left alone at the next look.
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(r.journal.count("destroy a"), 1);
}

fn exec_probe(failure_threshold: i32) -> Option<Probe> {
    Some(Probe {
        exec: Some(ExecAction {
            command: vec!["check".into()],
        }),
        period_seconds: Some(1),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    })
}

fn ready(r: &Rig, a: &Handle) -> Option<String> {
    let status = r.reports.statuses(a).pop()?;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some(format!(
        "{} {}",
        ready.status,
        ready.reason.clone().unwrap_or_default()
    ))
}

#[tokio::test(start_paused = true)]
async fn readiness_drives_ready_and_a_failed_liveness_probe_restarts_the_main_process() {
    let r = rig();
    let a = h("a");
    let mut s = spec();
    if let Some(p) = s.process.as_mut() {
        p.liveness_probe = exec_probe(2);
        p.readiness_probe = exec_probe(1);
    }
    r.declare(&a, s);
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(
        ready(&r, &a).as_deref(),
        Some("False Unhealthy"),
        "not ready before a probe"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(ready(&r, &a).as_deref(), Some("True Started"));
    assert!(
        r.journal.count("exec_probe a") >= 2,
        "{:?}",
        r.journal.lines()
    );

    r.containers.answer_probes(&a, Err("boom".into()));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(r.journal.count("stop a"), 1, "{:?}", r.journal.lines());
    let reasons = r.reports.reasons(&a);
    assert!(reasons.contains(&Reason::Unhealthy), "{reasons:?}");
    assert!(reasons.contains(&Reason::Killing), "{reasons:?}");
    assert!(
        r.reports
            .notes(&a)
            .iter()
            .any(|e| e.contains("Liveness probe failed: boom"))
    );
}

fn with_pods(inits: &[&str], sidecars: &[&str]) -> ContainerSpec {
    ContainerSpec {
        init_processes: inits
            .iter()
            .map(|n| crate::api::InitProcess {
                name: n.to_string(),
                args: vec![format!("/bin/{n}")],
                ..Default::default()
            })
            .collect(),
        sidecars: sidecars
            .iter()
            .map(|n| crate::api::Sidecar {
                name: n.to_string(),
                args: vec![format!("/bin/{n}")],
                ..Default::default()
            })
            .collect(),
        ..spec()
    }
}

/// Run `id` of `handle` ends with `code` now.
fn end(r: &Rig, handle: &Handle, id: &str, code: i32) {
    let run = r
        .containers
        .get(handle)
        .and_then(|c| c.runs.get(id).cloned());
    run.expect("the run exists").exit(code, (r.clock)());
}

#[tokio::test(start_paused = true)]
async fn init_processes_run_one_after_another_and_a_failure_is_named() {
    let r = rig_with(CrashLoopBackoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(4),
        reset_after: Duration::from_secs(60),
    });
    let a = h("a");
    r.declare(&a, with_pods(&["one", "two"], &[]));
    assert!(r.controller.reconcile(&a).await.is_ok());
    let argv = |r: &Rig| -> Vec<String> {
        let lines = r.journal.lines().into_iter();
        lines.filter(|l| l.starts_with("argv a ")).collect()
    };
    assert_eq!(argv(&r), ["argv a /bin/one"]);
    end(&r, &a, "init-one-1", 0);
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(argv(&r), ["argv a /bin/one", "argv a /bin/two"]);
    end(&r, &a, "init-two-1", 3);
    assert!(r.controller.reconcile(&a).await.is_ok());
    let status = r.reports.statuses(&a).pop().unwrap();
    assert_eq!(status.phase, Some(Phase::Pending));
    let message = status.conditions[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("init process two") && message.contains("exit code 3"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(argv(&r).last().map(String::as_str), Some("argv a /bin/two"));
    end(&r, &a, "init-two-2", 0);
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(
        argv(&r),
        [
            "argv a /bin/one",
            "argv a /bin/two",
            "argv a /bin/two",
            "argv a sleep 1000"
        ],
        "the one that completed is not run again"
    );
    let slots = r.containers.get(&a).unwrap().slots;
    assert!(slots["init-one"].completed && slots["init-two"].completed);
}

#[tokio::test(start_paused = true)]
async fn a_sidecar_is_restarted_alone_and_a_liveness_kill_spares_it() {
    let r = rig_with(CrashLoopBackoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(4),
        reset_after: Duration::from_secs(60),
    });
    let a = h("a");
    let mut s = with_pods(&[], &["side"]);
    if let Some(p) = s.process.as_mut() {
        p.liveness_probe = exec_probe(1);
    }
    r.declare(&a, s);
    assert!(r.controller.reconcile(&a).await.is_ok());
    let lines = r.journal.lines();
    let side = lines.iter().position(|l| l == "argv a /bin/side");
    let main = lines.iter().position(|l| l == "argv a sleep 1000");
    assert!(
        side < main && side.is_some(),
        "the sidecar starts first: {lines:?}"
    );

    end(&r, &a, "sidecar-side-1", 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(r.controller.reconcile(&a).await.is_ok());
    let c = r.containers.get(&a).unwrap();
    assert!(
        c.runs.contains_key("sidecar-side-2"),
        "{:?}",
        r.journal.lines()
    );
    assert_eq!((c.main_file.runs, c.main_file.restarts), (1, 0));

    r.containers.answer_probes(&a, Err("boom".into()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(
        r.journal.count("signal a main-1 15"),
        1,
        "{:?}",
        r.journal.lines()
    );
    assert_eq!(
        r.journal.count("stop a"),
        0,
        "nothing but the main process is stopped"
    );
    let c = r.containers.get(&a).unwrap();
    let sidecar = c.runs["sidecar-side-2"].state().unwrap();
    assert!(matches!(sidecar, crate::process::ProcState::Running));
}

/// `spec()` with sidecar `p`, a pea of image `image`.
fn with_pea_image(image: &str) -> ContainerSpec {
    ContainerSpec {
        sidecars: vec![crate::api::Sidecar {
            name: "p".into(),
            image: Some(image.into()),
            ..Default::default()
        }],
        ..spec()
    }
}

#[tokio::test(start_paused = true)]
async fn a_peas_image_is_ensured_before_anything_is_made_and_fills_its_command() {
    let r = rig();
    let a = h("a");
    r.declare(&a, with_pea_image("peaimg"));
    r.start();
    r.queue.add(a.clone());
    r.until("the pea's image is asked for", || {
        r.journal.count("ensure a+pea-p peaimg -") == 1
    })
    .await;
    r.until("a status", || !r.reports.statuses(&a).is_empty())
        .await;
    let waiting = r.reports.statuses(&a).pop().unwrap();
    assert_eq!(
        waiting.message.as_deref(),
        Some("spec.sidecars[0].image: Pulling image peaimg")
    );
    assert_eq!(r.journal.count("create a"), 0, "nothing made while pulling");

    r.images.pulled("peaimg", app_defaults());
    r.until("the pea's sidecar runs the image's command", || {
        r.journal.count("argv a /bin/app serve") == 1
    })
    .await;
    assert_eq!(r.journal.count("pea a p from peaimg"), 1);
    assert_eq!(r.journal.count("argv a sleep 1000"), 1);
    let notes = r.reports.notes(&a);
    assert!(
        notes
            .iter()
            .any(|n| n == "spec.sidecars[0].image: pulled peaimg"),
        "{notes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_of_a_peas_image_names_its_field() {
    let r = rig();
    let a = h("a");
    r.declare(&a, with_pea_image("peaimg"));
    r.images.failed(
        "peaimg",
        crate::image::state::ImageWait {
            reason: Reason::ImagePullBackOff,
            message: "Back-off pulling image \"peaimg\"".into(),
            retry_in: Some(Duration::from_secs(10)),
        },
    );
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(r.journal.count("create a"), 0);
    let st = r.reports.statuses(&a).pop().unwrap();
    assert_eq!(st.conditions[0].reason.as_deref(), Some("ImagePullBackOff"));
    assert_eq!(
        st.message.as_deref(),
        Some("spec.sidecars[0].image: Back-off pulling image \"peaimg\"")
    );
    // An image with nothing to run, and a sidecar that sets nothing.
    r.images.pulled("peaimg", Default::default());
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(r.journal.count("create a"), 0);
    let st = r.reports.statuses(&a).pop().unwrap();
    assert_eq!(
        st.conditions[0].reason.as_deref(),
        Some("CreateContainerConfigError")
    );
    assert!(
        st.message
            .unwrap_or_default()
            .starts_with("spec.sidecars[0]: image peaimg has no Entrypoint or Cmd")
    );
}

#[tokio::test(start_paused = true)]
async fn a_sidecar_in_crash_loop_backoff_is_announced_once_per_run() {
    let r = rig();
    let a = h("a");
    r.declare(&a, with_pods(&[], &["side"]));
    assert!(r.controller.reconcile(&a).await.is_ok());
    end(&r, &a, "sidecar-side-1", 1);
    let backoffs = |r: &Rig| {
        r.reports
            .notes(&a)
            .iter()
            .filter(|n| *n == "Back-off restarting failed sidecar side")
            .count()
    };
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert!(r.controller.reconcile(&a).await.is_ok());
    assert_eq!(backoffs(&r), 1, "{:?}", r.reports.notes(&a));
    assert!(r.reports.reasons(&a).contains(&Reason::BackOff));
}
