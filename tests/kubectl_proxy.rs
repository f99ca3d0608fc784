//! The kubectl path's other routes (issue 18): `kubectl rundmc
//! --via-apiserver` through the fake API server's node proxy (which
//! authorises `nodes/proxy` for the user, then reaches the agent over TLS
//! with its kubelet-client certificate), and `kubectl rundmc attach -i`
//! feeding a Container's main process. A real agent, a real container, the
//! real binary run as `kubectl-rundmc`.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/apiserver/mod.rs"]
mod apiserver;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/kubectl.rs"]
mod kc;
mod support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use rundmc::api::ProcessSpec;
use serde_json::json;

use cluster::NODE;
use kc::{TOKEN, USER};

/// The API server's identity towards kubelets, as kubeadm names it.
const APISERVER: &str = "kube-apiserver-kubelet-client";

/// A cluster whose agent serves the remote API (accepting client
/// certificates from the test CA), running `web`.
type Setup = kc::Remote;

/// The setup, with the fake proxying to nodes as the API server with its
/// kubelet client certificate, and the user's token accepted.
async fn setup(name: &str, process: ProcessSpec) -> Setup {
    let s = kc::Remote::start(name, process, true).await;
    let dir = s.cluster.env.env.dir.clone();
    let (cert, key) = kc::client_certificate(&dir, &format!("/O=system:masters/CN={APISERVER}"));
    s.server().proxy_to_nodes(&s.ca, &cert, &key);
    s.server().accept_token(TOKEN, USER, &["devs"]);
    s
}

/// `kubectl rundmc ARGS...` running, stdin and stdout piped; its
/// stdout's lines.
fn spawn(s: &Setup, args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = Command::new(&s.plugin)
        .args(s.args(args))
        .env("KUBECONFIG", &s.kubeconfig)
        .env_remove("KUBECTL_RUNDMC_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = support::lines_of(&mut child);
    (child, lines)
}

fn web(args: &[&str], stdin: bool) -> ProcessSpec {
    ProcessSpec {
        args: args.iter().map(|a| a.to_string()).collect(),
        stdin,
        ..Default::default()
    }
}

fn sleeper() -> ProcessSpec {
    web(
        &["/bin/sh", "-c", "echo hello from web; exec sleep 3600"],
        false,
    )
}

/// `(subresource, verb)` of containers access reviews, with their users.
fn containers_asked(s: &Setup) -> Vec<(String, String, String)> {
    s.asked()
        .into_iter()
        .map(|(user, a)| {
            assert_eq!(
                (&a["group"], &a["resource"], &a["namespace"], &a["name"]),
                (
                    &json!("rundmc.io"),
                    &json!("containers"),
                    &json!("default"),
                    &json!("web")
                )
            );
            let sub = a["subresource"].as_str().unwrap_or_default().to_string();
            (
                user,
                sub,
                a["verb"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_apiserver_reads_logs_and_execs_as_the_api_server() {
    let s = setup("kubectl-proxy", sleeper()).await;
    s.server().authorize_node_proxy(|spec| {
        spec["user"] == USER && spec["resourceAttributes"]["subresource"] == "proxy"
    });
    // The agent sees the API server, not alice.
    s.server().authorize(|spec| spec["user"] == APISERVER);

    let mut last = (0, String::new(), String::new());
    for _ in 0..100 {
        last = s.plugin(&["--via-apiserver", "logs", "default/web"]).await;
        if last.1.contains("hello from web") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out, err) = last;
    assert_eq!((code, out.as_str()), (0, "hello from web\n"), "{err}");

    let (code, out, err) = s
        .plugin(&[
            "exec",
            "--via-apiserver",
            "web",
            "--",
            "sh",
            "-c",
            "echo hi; exit 3",
        ])
        .await;
    assert_eq!((code, out.as_str()), (3, "hi\n"), "stderr: {err}");

    let asked = containers_asked(&s);
    let want = |sub: &str, verb: &str| (APISERVER.to_string(), sub.to_string(), verb.to_string());
    assert!(asked.contains(&want("log", "get")), "{asked:?}");
    assert!(asked.contains(&want("exec", "create")), "{asked:?}");
    assert!(
        asked.iter().all(|(user, _, _)| user == APISERVER),
        "{asked:?}"
    );
    // The API server authorised alice on nodes/proxy, and kept her token.
    let proxied = s.server().node_proxy_reviews();
    let verbs: Vec<_> = proxied
        .iter()
        .map(|r| {
            assert_eq!(r["user"], USER);
            assert_eq!(r["resourceAttributes"]["resource"], "nodes");
            assert_eq!(r["resourceAttributes"]["name"], NODE);
            r["resourceAttributes"]["verb"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(verbs.contains(&"get".to_string()) && verbs.contains(&"create".to_string()));
    assert!(
        s.server().token_reviews().is_empty(),
        "the agent never saw alice's token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_apiserver_is_refused_when_nodes_proxy_is_denied() {
    let s = setup("kubectl-proxy-deny", sleeper()).await;
    s.server().authorize_node_proxy(|_| false);
    s.server().authorize(|_| true);

    let (code, out, err) = s
        .plugin(&[
            "exec",
            "--via-apiserver",
            "web",
            "--",
            "sh",
            "-c",
            "echo hi; exit 3",
        ])
        .await;
    assert_eq!((code, out.as_str()), (77, ""), "stderr: {err}");
    assert!(
        err.contains("403") && err.contains("cannot create resource \"nodes/proxy\""),
        "{err}"
    );
    let (code, out, err) = s.plugin(&["--via-apiserver", "logs", "web"]).await;
    assert_eq!((code, out.as_str()), (77, ""), "stderr: {err}");
    assert!(err.contains("cannot get resource \"nodes/proxy\""), "{err}");
    assert!(s.asked().is_empty(), "nothing reached the agent");
    assert_eq!(s.server().node_proxy_reviews().len(), 2);
}

const READER: [&str; 3] = ["/bin/sh", "-c", "while read l; do echo got:$l; done"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_i_feeds_the_main_process() {
    let s = setup("kubectl-attach", web(&READER, true)).await;
    s.server().authorize(|spec| spec["user"] == USER);

    let (mut child, lines) = spawn(&s, &["attach", "-i", "web"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    stdin.flush().unwrap();
    let mut seen = Vec::new();
    let got = loop {
        match lines.recv_timeout(cluster::T) {
            Ok(line) if line == "got:hello" => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        got,
        "attach printed {seen:?}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let asked = containers_asked(&s);
    assert!(
        asked.contains(&(USER.into(), "attach".into(), "create".into())),
        "{asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_is_refused_when_rbac_denies_containers_attach() {
    let s = setup("kubectl-attach-deny", web(&READER, true)).await;
    s.server()
        .authorize(|spec| spec["resourceAttributes"]["subresource"] != "attach");

    let (code, out, err) = s.plugin(&["attach", "-i", "web"]).await;
    assert_eq!((code, out.as_str()), (77, ""), "stderr: {err}");
    assert!(
        err.contains("user \"alice\" cannot create resource \"containers/attach\""),
        "{err}"
    );
}
