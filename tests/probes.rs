//! Probes end to end through the agent and real runc, as an operator sees
//! them in status and events: an HTTP readiness probe holds Ready at False
//! until the server answers, inside a container that has loopback only; an
//! exec readiness probe follows a file; a TCP liveness probe that never
//! connects gets the main process killed and restarted.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

mod support;

use std::time::Duration;

use support::agent::{AgentEnv, manifest};

const T: Duration = Duration::from_secs(60);

fn ready(a: &AgentEnv, name: &str) -> Option<(String, String, String)> {
    a.condition(name, "Ready")
}

fn reasons(a: &AgentEnv, name: &str) -> Vec<String> {
    a.events()
        .iter()
        .filter(|e| e["handle"] == name)
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn an_http_readiness_probe_holds_ready_until_the_server_answers() {
    let a = AgentEnv::new("probe-http");
    let _agent = a.start();
    // The server starts only once /go exists; the probe reaches it on the
    // container's own loopback (no CNI network here).
    let spec = r#"  process:
    args: ["/bin/sh", "-c", "mkdir -p /www; echo ok > /www/index.html; while [ ! -e /go ]; do sleep 0.1; done; exec httpd -f -p 8080 -h /www"]
    readinessProbe:
      httpGet: {path: /index.html, port: 8080}
      periodSeconds: 1
"#;
    a.write("h.yaml", &manifest("web", spec));
    a.wait("running, not ready", T, || {
        a.running("web")
            && ready(&a, "web").is_some_and(|(s, r, m)| {
                s == "False" && r == "Unhealthy" && m.starts_with("Readiness probe failed: ")
            })
    });
    let (_, _, message) = ready(&a, "web").unwrap();
    assert!(message.contains("127.0.0.1:8080"), "{message}");
    assert!(reasons(&a, "web").iter().any(|r| r == "Unhealthy"));

    let (code, _, err) = a.env.exec("web", &["touch", "/go"]);
    assert_eq!(code, 0, "{err}");
    a.wait("ready", T, || {
        ready(&a, "web").is_some_and(|(s, r, _)| s == "True" && r == "Started")
    });
    assert_eq!(a.status_field("web", "restartCount").as_deref(), Some("0"));
}

#[test]
fn an_exec_readiness_probe_follows_a_file_in_the_container() {
    let a = AgentEnv::new("probe-exec");
    let _agent = a.start();
    let spec = r#"  process:
    args: ["/bin/sh", "-c", "exec sleep 100000"]
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
"#;
    a.write("e.yaml", &manifest("worker", spec));
    a.wait("not ready, with cat's complaint", T, || {
        ready(&a, "worker").is_some_and(|(s, _, m)| s == "False" && m.contains("/tmp/ready"))
    });
    let (code, _, err) = a.env.exec("worker", &["touch", "/tmp/ready"]);
    assert_eq!(code, 0, "{err}");
    a.wait("ready", T, || {
        ready(&a, "worker").is_some_and(|(s, _, _)| s == "True")
    });
    let (code, _, err) = a.env.exec("worker", &["rm", "/tmp/ready"]);
    assert_eq!(code, 0, "{err}");
    a.wait("not ready again", T, || {
        ready(&a, "worker").is_some_and(|(s, _, _)| s == "False")
    });
    let leftovers: Vec<String> = std::fs::read_dir(a.env.depot.join("worker").join("processes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("probe-"))
        .collect();
    assert!(
        leftovers.len() <= 1,
        "probe processes are removed: {leftovers:?}"
    );
    // And their exec inputs in the bundle (spec and supervisor log) with them.
    let inputs: Vec<String> = std::fs::read_dir(a.bundle("worker").join("exec"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("probe-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        inputs.len() <= 2,
        "probe processes' exec inputs are removed: {inputs:?}"
    );
}

#[test]
fn a_failing_tcp_liveness_probe_restarts_the_main_process() {
    let a = AgentEnv::new("probe-live");
    let _agent = a.start();
    let spec = r#"  process:
    args: ["/bin/sh", "-c", "exec sleep 100000"]
    livenessProbe:
      tcpSocket: {port: 9000}
      periodSeconds: 1
      failureThreshold: 2
"#;
    a.write("l.yaml", &manifest("dead", spec));
    a.wait("running", T, || {
        a.running("dead") && a.main_pid("dead").is_some()
    });
    let first = a.main_pid("dead").unwrap();
    a.wait("killed and restarted", T, || {
        a.main_pid("dead").is_some_and(|p| p != first)
            && a.status_field("dead", "restartCount")
                .is_some_and(|c| c != "0")
    });
    let reasons = reasons(&a, "dead");
    assert!(reasons.iter().any(|r| r == "Unhealthy"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "Killing"), "{reasons:?}");
    let notes: Vec<String> = a
        .events()
        .iter()
        .filter(|e| e["reason"] == "Unhealthy")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("Liveness probe failed: dial tcp 127.0.0.1:9000")),
        "{notes:?}"
    );
}

#[test]
fn a_restarted_agent_resumes_probing_where_it_was() {
    let a = AgentEnv::new("probe-resume");
    let mut agent = a.start();
    // A startup probe that passes once only: probed again from scratch,
    // it would fail and get a healthy process killed.
    let spec = r#"  process:
    args: ["/bin/sh", "-c", "exec sleep 100000"]
    startupProbe:
      exec: {command: ["/bin/sh", "-c", "test ! -e /tmp/started && touch /tmp/started"]}
      periodSeconds: 1
      failureThreshold: 1
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
"#;
    a.write("r.yaml", &manifest("steady", spec));
    a.wait("started and ready", T, || {
        ready(&a, "steady").is_some_and(|(s, _, _)| s == "True")
    });
    let pid = a.main_pid("steady").unwrap();
    let events = a.events().len();
    agent.kill9();

    let _agent = a.start();
    // Long enough for several probe periods of the new agent.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        a.main_pid("steady"),
        Some(pid),
        "not killed: {:?}",
        reasons(&a, "steady")
    );
    assert_eq!(
        a.status_field("steady", "restartCount").as_deref(),
        Some("0")
    );
    assert!(ready(&a, "steady").is_some_and(|(s, _, _)| s == "True"));
    let new: Vec<String> = a.events()[events..]
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        !new.iter().any(|r| r == "Unhealthy" || r == "Killing"),
        "{new:?}"
    );
}

#[test]
fn post_start_runs_before_ready_and_a_failed_one_restarts_the_main_process() {
    let a = AgentEnv::new("hook-post");
    let _agent = a.start();
    let good = r#"  process:
    args: ["/bin/sh", "-c", "exec sleep 100000"]
    lifecycle:
      postStart:
        exec: {command: ["/bin/sh", "-c", "echo hooked > /tmp/post"]}
"#;
    a.write("g.yaml", &manifest("good", good));
    a.wait("ready", T, || {
        ready(&a, "good").is_some_and(|(s, _, _)| s == "True")
    });
    let (code, out, _) = a.env.exec("good", &["cat", "/tmp/post"]);
    assert_eq!((code, out.trim()), (0, "hooked"));

    let bad = r#"  process:
    args: ["/bin/sh", "-c", "exec sleep 100000"]
    lifecycle:
      postStart:
        exec: {command: ["/bin/sh", "-c", "echo no way; exit 3"]}
"#;
    a.write("b.yaml", &manifest("bad", bad));
    a.wait("killed and restarted", T, || {
        a.status_field("bad", "restartCount")
            .is_some_and(|c| c != "0")
    });
    let hook: Vec<String> = a
        .events()
        .iter()
        .filter(|e| e["handle"] == "bad" && e["reason"] == "FailedPostStartHook")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        hook.iter().any(|m| m == "PostStart hook failed: no way"),
        "{hook:?}"
    );
}

#[test]
fn pre_stop_runs_before_sigterm_within_the_grace_period() {
    let a = AgentEnv::new("hook-pre");
    let _agent = a.start();
    let log = stop_with_pre_stop(&a, "echo prestop >> /shared/log", 10);
    assert_eq!(log, "prestop\nterm\n");
}

#[test]
fn a_hanging_pre_stop_hook_is_cut_at_the_grace_period_and_the_stop_goes_on() {
    let a = AgentEnv::new("hook-pre-hang");
    let _agent = a.start();
    let log = stop_with_pre_stop(&a, "echo prestop >> /shared/log; exec sleep 4245", 4);
    assert_eq!(log, "prestop\nterm\n");
    let hook: Vec<String> = a
        .events()
        .iter()
        .filter(|e| e["handle"] == "stopping" && e["reason"] == "FailedPreStopHook")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(hook.iter().any(|m| m.contains("timed out")), "{hook:?}");
}

/// Run a container whose main process logs SIGTERM to a shared file and
/// whose preStop hook runs `hook`, remove it, and return the shared log.
fn stop_with_pre_stop(a: &AgentEnv, hook: &str, grace: u32) -> String {
    let shared = a.env.dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let spec = format!(
        r#"  process:
    args: ["/bin/sh", "-c", "trap 'echo term >> /shared/log; exit 0' TERM; while true; do sleep 0.1; done"]
    lifecycle:
      preStop:
        exec: {{command: ["/bin/sh", "-c", "{hook}"]}}
  mounts:
  - {{source: {}, destination: /shared}}
  terminationGracePeriodSeconds: {grace}
"#,
        shared.display()
    );
    a.write("p.yaml", &manifest("stopping", &spec));
    a.wait("running", T, || {
        a.running("stopping") && a.main_pid("stopping").is_some()
    });
    a.remove("p.yaml");
    a.wait("destroyed", T, || !a.env.depot.join("stopping").exists());
    std::fs::read_to_string(shared.join("log")).unwrap()
}

/// A grpc.health.v1 server on the host's loopback answering `status`, with
/// hyper's HTTP/2 server on a runtime of its own.
fn health_server(status: u8) -> u16 {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |_req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = Full::new(Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]))
                            .with_trailers(async {
                                let mut t = hyper::HeaderMap::new();
                                t.insert(
                                    "grpc-status",
                                    hyper::header::HeaderValue::from_static("0"),
                                );
                                Some(Ok(t))
                            });
                        hyper::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(body)
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let exec = hyper_util::rt::TokioExecutor::new();
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(exec).serve_connection(io, svc),
                );
            }
        });
    });
    port
}

#[test]
fn grpc_readiness_probes_ask_the_health_service() {
    let a = AgentEnv::new("probe-grpc");
    let _agent = a.start();
    // On the node's network, the probe reaches servers the test runs on
    // the node's loopback.
    let spec = |port: u16| {
        format!(
            "  hostNetwork: true\n  process:\n    args: [\"/bin/sh\", \"-c\", \"exec sleep 100000\"]\n    readinessProbe:\n      grpc: {{port: {port}}}\n      periodSeconds: 1\n"
        )
    };
    a.write("s.yaml", &manifest("serving", &spec(health_server(1))));
    a.write("n.yaml", &manifest("notserving", &spec(health_server(2))));
    a.wait("one ready, one not", T, || {
        ready(&a, "serving").is_some_and(|(s, _, _)| s == "True")
            && ready(&a, "notserving").is_some_and(|(s, _, m)| {
                s == "False"
                    && m == "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")"
            })
    });
}

#[test]
fn a_hanging_probe_is_bounded_by_its_timeout_and_killed() {
    let a = AgentEnv::new("probe-hang");
    let _agent = a.start();
    let spec = r#"  process:
    args: ["/bin/sh", "-c", "exec sleep 100000"]
    readinessProbe:
      exec: {command: ["sleep", "4242"]}
      timeoutSeconds: 1
      periodSeconds: 2
"#;
    a.write("h.yaml", &manifest("hung", spec));
    a.wait("not ready: timed out", T, || {
        ready(&a, "hung").is_some_and(|(s, _, m)| s == "False" && m.contains("timed out"))
    });
    // Every probe run was killed at its timeout: at most the one in flight
    // is left in the container.
    a.wait("two more periods", T, || {
        a.events()
            .iter()
            .filter(|e| e["reason"] == "Unhealthy")
            .count()
            >= 3
    });
    let (code, ps, err) = a.env.exec("hung", &["ps", "-o", "args"]);
    assert_eq!(code, 0, "{err}");
    let hung = ps.lines().filter(|l| l.contains("sleep 4242")).count();
    assert!(hung <= 1, "{ps}");
}
