//! The kubectl path end to end (issue 18): a real agent serving its remote
//! API on loopback with a self-signed certificate, a real container from
//! a `Container` resource, the fake API server answering the agent's
//! TokenReviews and SubjectAccessReviews as each test decides, and the
//! real binary run as `kubectl-rundmc` with a user's kubeconfig.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/apiserver/mod.rs"]
mod apiserver;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/kubectl.rs"]
mod kc;
mod support;

use rundmc::api::ProcessSpec;
use serde_json::{Value, json};

use kc::{TOKEN, USER};

/// A cluster whose agent serves the remote API, running `web`.
type Setup = kc::Remote;

/// The setup with `web` printing a line and sleeping; with `client_ca`,
/// the agent accepts client certificates the test CA signed.
async fn setup(name: &str, client_ca: bool) -> Setup {
    let process = ProcessSpec {
        args: ["/bin/sh", "-c", "echo hello from web; exec sleep 3600"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    kc::Remote::start(name, process, client_ca).await
}

fn attributes(subresource: &str, verb: &str) -> Value {
    json!({"group": "rundmc.io", "resource": "containers", "subresource": subresource,
        "verb": verb, "namespace": "default", "name": "web"})
}

/// The parts of `a` that `attributes` names.
fn named(a: &Value) -> Value {
    let keys = [
        "group",
        "resource",
        "subresource",
        "verb",
        "namespace",
        "name",
    ];
    keys.iter()
        .map(|k| (k.to_string(), a[*k].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rundmc_reads_logs_and_execs_when_rbac_allows() {
    let s = setup("kubectl-allow", false).await;
    s.server().accept_token(TOKEN, USER, &["devs"]);
    s.server().authorize(|spec| spec["user"] == USER);

    let mut last = (0, String::new(), String::new());
    for _ in 0..100 {
        last = s.plugin(&["logs", "default/web"]).await;
        if last.1.contains("hello from web") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (code, out, err) = last;
    assert_eq!((code, out.as_str()), (0, "hello from web\n"), "{err}");

    let (code, out, err) = s
        .plugin(&["exec", "web", "--", "sh", "-c", "echo hi; exit 3"])
        .await;
    assert_eq!((code, out.as_str()), (3, "hi\n"), "stderr: {err}");

    let reviews = s.asked();
    let log = reviews
        .iter()
        .find(|(_, a)| a["subresource"] == "log")
        .unwrap();
    let exec = reviews
        .iter()
        .find(|(_, a)| a["subresource"] == "exec")
        .unwrap();
    assert_eq!(
        (log.0.as_str(), named(&log.1)),
        (USER, attributes("log", "get"))
    );
    assert_eq!(
        (exec.0.as_str(), named(&exec.1)),
        (USER, attributes("exec", "create"))
    );
    let token_reviews = s.server().token_reviews();
    assert!(
        token_reviews.iter().all(|r| r["spec"]["token"] == TOKEN) && !token_reviews.is_empty(),
        "{token_reviews:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rundmc_is_refused_when_rbac_denies() {
    let s = setup("kubectl-deny", false).await;
    s.server().accept_token(TOKEN, USER, &["devs"]);
    s.server().authorize(|_| false);

    let (code, out, err) = s
        .plugin(&[
            "exec",
            "-n",
            "default",
            "web",
            "--",
            "sh",
            "-c",
            "echo hi; exit 3",
        ])
        .await;
    assert_eq!((code, out.as_str()), (77, ""), "stderr: {err}");
    assert!(
        err.contains("403 Forbidden")
            && err.contains("user \"alice\" cannot create resource \"containers/exec\"")
            && err.contains("namespace \"default\""),
        "{err}"
    );
    let (code, out, err) = s.plugin(&["logs", "web"]).await;
    assert_eq!((code, out.as_str()), (77, ""), "stderr: {err}");
    assert!(
        err.contains("cannot get resource \"containers/log\""),
        "{err}"
    );

    let reviews = s.asked();
    let exec = reviews
        .iter()
        .find(|(_, a)| a["subresource"] == "exec")
        .unwrap();
    assert_eq!(
        (exec.0.as_str(), named(&exec.1)),
        (USER, attributes("exec", "create"))
    );
    // Nothing ran: the container's only processes are its main run.
    let handle = "k8s_default_web";
    let procs = std::fs::read_dir(s.cluster.env.env.depot.join(handle).join("processes"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_else(|_| Vec::<String>::new());
    assert!(procs.iter().all(|p| !p.starts_with("exec-")), "{procs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rundmc_is_refused_when_the_token_authenticates_no_one() {
    let s = setup("kubectl-unauth", false).await;
    // The token is not one the API server knows; RBAC would allow anyone.
    s.server().authorize(|_| true);

    let (code, out, err) = s
        .plugin(&["exec", "web", "--", "sh", "-c", "echo hi; exit 3"])
        .await;
    assert_eq!((code, out.as_str()), (77, ""), "stderr: {err}");
    assert!(
        err.contains("401 Unauthorized") && err.contains("TokenReview did not authenticate"),
        "{err}"
    );
    let token_reviews = s.server().token_reviews();
    assert_eq!(token_reviews.len(), 1, "{token_reviews:?}");
    assert_eq!(token_reviews[0]["spec"]["token"], TOKEN);
    assert!(
        s.asked().is_empty(),
        "no access review for an unknown caller"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_the_client_ca_authenticates_its_cn_and_o() {
    let s = setup("kubectl-x509", true).await;
    s.server()
        .authorize(|spec| spec["user"] == "bob" && spec["groups"] == json!(["ops"]));
    let dir = s.cluster.env.env.dir.clone();
    let (cert, key) = kc::client_certificate(&dir, "/O=ops/CN=bob");
    let port: u16 = s.port().parse().unwrap();
    let path = "/v1/namespaces/default/containers/web/log";

    let mut last = (0, String::new());
    for _ in 0..100 {
        last = kc::get_with_certificate(port, &s.ca, (&cert, &key), path).await;
        if last.1.contains("hello from web") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 200, "{}", last.1);
    assert!(last.1.contains("stdout F hello from web"), "{}", last.1);
    let reviews = s.asked();
    assert!(!reviews.is_empty());
    assert!(
        reviews
            .iter()
            .all(|(user, a)| user == "bob" && named(a) == attributes("log", "get"))
    );
    assert!(
        s.server().token_reviews().is_empty(),
        "no token, no TokenReview"
    );

    // Allowed, but no such Container is declared to this agent.
    let (code, text) = kc::get_with_certificate(
        port,
        &s.ca,
        (&cert, &key),
        "/v1/namespaces/default/containers/elsewhere/log",
    )
    .await;
    assert_eq!(code, 404, "{text}");
    assert!(
        text.contains("no Container default/elsewhere runs on this node"),
        "{text}"
    );
}
