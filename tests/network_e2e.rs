//! Containers on a network of their own, end to end through the agent and
//! Debian's CNI plugins, as an operator checks it: each has an address on
//! a bridge the test makes (its own subnet, no route out, no masquerade),
//! two reach each other, a published port answers on the host, the names
//! files are as declared, a restarted main process keeps its address, a
//! taken host port is refused, a failing plugin fails the create cleanly,
//! and destroy, or a SIGKILL mid-ADD then a restart, leaks no address,
//! veth, port rule or namespace; a container made again keeps its address,
//! and a hundred get a hundred, all freed after.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/cni_net.rs"]
mod cni_net;
/// What `cni_net` takes from the shared support code.
mod common {
    pub use crate::support::image;
}
mod support;

use std::time::Duration;

use cni_net::{TestNet, free_port, http_get};
use support::agent::{AgentEnv, manifest};

const T: Duration = Duration::from_secs(60);

/// An agent on `net`, its plugins searched in the test's wrapper dir first.
fn agent_env(name: &str, net: &TestNet) -> AgentEnv {
    let mut a = AgentEnv::new(name);
    let bins = format!("{},/usr/lib/cni", net.dir.join("bin").display());
    a.extra.extend([
        "--cni-conf-dir".into(),
        net.conf_dir().display().to_string(),
        "--cni-bin-dir".into(),
        bins,
        "--cni-cache-dir".into(),
        net.cache_dir().display().to_string(),
        "--cni-plugin-timeout".into(),
        "5s".into(),
    ]);
    a
}

fn serving(port: u16, extra: &str) -> String {
    format!(
        "  process:\n    args: [\"/bin/sh\", \"-c\", \"mkdir -p /www; echo hello from $(hostname) > /www/index.html; exec httpd -f -p {port} -h /www\"]\n{extra}"
    )
}

const SLEEPING: &str = "  process:\n    args: [\"/bin/sh\", \"-c\", \"exec sleep 100000\"]\n";

fn pod_ip(a: &AgentEnv, name: &str) -> Option<String> {
    a.status_field(name, "podIP")
}

#[test]
fn containers_reach_each_other_and_the_node_reaches_a_published_port() {
    let net = TestNet::new();
    let a = agent_env("net-reach", &net);
    let _agent = a.start();
    let host_port = free_port();
    let ports = format!(
        "  ports: [{{containerPort: 8080, hostPort: {host_port}}}]\n  dns: {{nameservers: [192.0.2.53], searches: [svc.test], options: [{{name: ndots, value: \"2\"}}]}}\n"
    );
    a.write("srv.yaml", &manifest("srv", &serving(8080, &ports)));
    a.write("cli.yaml", &manifest("cli", SLEEPING));
    a.wait("both running with addresses", T, || {
        a.running("srv") && a.running("cli") && pod_ip(&a, "srv").is_some()
    });
    let ip = pod_ip(&a, "srv").unwrap();
    assert!(
        ip.starts_with(&format!("{}.", net.prefix)),
        "{ip} in the test's subnet"
    );
    assert_ne!(pod_ip(&a, "cli"), Some(ip.clone()), "an address each");
    let ips = a.status("srv").unwrap()["status"]["podIPs"].clone();
    assert_eq!(ips[0]["ip"].as_str(), Some(ip.as_str()));

    // Container to container, over the bridge.
    let url = format!("http://{ip}:8080/");
    let mut got = String::new();
    a.wait("cli fetches from srv", T, || {
        got = a.env.exec("cli", &["wget", "-qO-", &url]).1;
        got.contains("hello from srv")
    });
    // The node, through the published port.
    let from_node = cni_net::eventually(T, || http_get(&format!("127.0.0.1:{host_port}")));
    assert!(from_node.contains("hello from srv"), "{from_node}");

    // The names it is told.
    let hosts = a.env.exec("srv", &["cat", "/etc/hosts"]).1;
    assert!(
        hosts.contains("127.0.0.1\tlocalhost") || hosts.contains("127.0.0.1 localhost"),
        "{hosts}"
    );
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with(&ip) && l.ends_with("srv")),
        "{hosts}"
    );
    let resolv = a.env.exec("srv", &["cat", "/etc/resolv.conf"]).1;
    assert!(resolv.contains("nameserver 192.0.2.53"), "{resolv}");
    assert!(
        resolv
            .lines()
            .any(|l| l.starts_with("search") && l.contains("svc.test")),
        "{resolv}"
    );
    assert!(resolv.contains("ndots:2"), "{resolv}");
    assert_eq!(a.env.exec("srv", &["cat", "/etc/hostname"]).1.trim(), "srv");

    // A second container asking for the same host port is refused, and
    // nothing of it is attached.
    let leases = net.leases().len();
    a.write(
        "dup.yaml",
        &manifest(
            "dup",
            &serving(
                8080,
                &format!("  ports: [{{containerPort: 8080, hostPort: {host_port}}}]\n"),
            ),
        ),
    );
    a.wait("dup refused", T, || {
        a.condition("dup", "Ready")
            .is_some_and(|c| c.2.contains("already published by container srv"))
    });
    assert!(!a.env.depot.join("dup").exists(), "nothing half-made");
    assert_eq!(net.leases().len(), leases, "no address taken");
}

#[test]
fn a_restarted_main_process_keeps_its_address_and_destroy_leaks_nothing() {
    let net = TestNet::new();
    let a = agent_env("net-keep", &net);
    let _agent = a.start();
    let host_port = free_port();
    let ports = format!("  ports: [{{containerPort: 8080, hostPort: {host_port}}}]\n");
    a.write("k.yaml", &manifest("keep", &serving(8080, &ports)));
    a.wait("running", T, || {
        a.running("keep") && pod_ip(&a, "keep").is_some()
    });
    let ip = pod_ip(&a, "keep").unwrap();
    let first = a.main_pid("keep").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    a.wait("restarted", T, || {
        a.running("keep") && a.main_pid("keep").is_some_and(|p| p != first)
    });
    assert_eq!(
        pod_ip(&a, "keep"),
        Some(ip.clone()),
        "same address after a restart; events: {:?}",
        a.events()
    );
    assert_eq!(net.leases().len(), 1);
    assert_eq!(net.veths().len(), 1);
    assert!(
        !TestNet::nat_rules(&net.name).is_empty(),
        "the port is mapped"
    );

    a.remove("k.yaml");
    a.wait("destroyed", T, || !a.env.depot.join("keep").exists());
    assert!(net.leases().is_empty(), "lease freed: {:?}", net.leases());
    assert!(net.veths().is_empty(), "veth gone: {:?}", net.veths());
    assert!(TestNet::nat_rules(&net.name).is_empty(), "port rules gone");
    assert!(
        std::fs::read_dir(a.state.join("netns")).map_or(true, |mut d| d.next().is_none()),
        "namespace unpinned"
    );
    assert!(http_get(&format!("127.0.0.1:{host_port}")).is_err());
}

#[test]
fn a_failing_plugin_fails_the_create_and_leaves_nothing() {
    let net = TestNet::new();
    net.wrapper(
        "refuse",
        "cat >/dev/null; [ \"$CNI_COMMAND\" = ADD ] || exit 0\necho '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"no addresses today\"}'; exit 1",
    );
    net.write_list(
        "20-broken.conflist",
        vec![net.bridge_plugin(), serde_json::json!({"type": "refuse"})],
    );
    // Both files name the test's network: give the broken one its own name.
    let broken = net.conf_dir().join("20-broken.conflist");
    let text = std::fs::read_to_string(&broken).unwrap().replace(
        &format!("\"name\": \"{}\"", net.name),
        "\"name\": \"broken\"",
    );
    std::fs::write(&broken, text).unwrap();
    let a = agent_env("net-fail", &net);
    let _agent = a.start();
    a.write(
        "b.yaml",
        &manifest("broken", &format!("  network: broken\n{SLEEPING}")),
    );
    a.wait("the create failed, saying why", T, || {
        a.condition("broken", "Ready")
            .is_some_and(|c| c.2.contains("no addresses today"))
    });
    assert_eq!(
        a.status_field("broken", "phase").as_deref(),
        Some("Pending")
    );
    assert!(!a.env.depot.join("broken").exists(), "no half-made bundle");
    assert!(net.leases().is_empty(), "{:?}", net.leases());
    assert!(net.veths().is_empty(), "{:?}", net.veths());

    // A network the node does not have is named as such.
    a.write(
        "m.yaml",
        &manifest("missing", &format!("  network: nowhere\n{SLEEPING}")),
    );
    a.wait("no such network", T, || {
        a.condition("missing", "Ready")
            .is_some_and(|c| c.2.contains("no CNI network \"nowhere\""))
    });
}

#[test]
fn an_agent_killed_mid_add_leaks_nothing_once_restarted() {
    let net = TestNet::new();
    // The chain's second plugin takes its time: the agent is killed while
    // the bridge has given an address and the chain has not finished.
    net.wrapper(
        "slow",
        "cat >/dev/null; [ \"$CNI_COMMAND\" = ADD ] || exit 0\nsleep 30; exit 1",
    );
    let list = net.write_list(
        "10-test.conflist",
        vec![net.bridge_plugin(), serde_json::json!({"type": "slow"})],
    );
    assert_eq!(list.name, net.name);
    let a = agent_env("net-kill", &net);
    let mut agent = a.start();
    a.write("s.yaml", &manifest("slow", SLEEPING));
    a.wait("an address taken mid-ADD", T, || !net.leases().is_empty());
    agent.kill9();

    // The plugin is fixed; the restarted agent finishes the job cleanly.
    net.write_list("10-test.conflist", vec![net.bridge_plugin()]);
    let _agent = a.start();
    a.wait("running after the restart", T, || {
        a.running("slow") && pod_ip(&a, "slow").is_some()
    });
    assert_eq!(
        net.leases().len(),
        1,
        "the first address freed: {:?}",
        net.leases()
    );
    assert_eq!(net.veths().len(), 1, "{:?}", net.veths());
    a.remove("s.yaml");
    a.wait("destroyed", T, || !a.env.depot.join("slow").exists());
    assert!(net.leases().is_empty() && net.veths().is_empty());
}

#[test]
fn a_restarted_agent_repairs_an_attachment_broken_while_it_was_down() {
    let net = TestNet::new();
    let a = agent_env("net-repair", &net);
    let mut agent = a.start();
    a.write("r.yaml", &manifest("repair", SLEEPING));
    a.wait("running", T, || {
        a.running("repair") && pod_ip(&a, "repair").is_some()
    });
    let before = pod_ip(&a, "repair").unwrap();
    agent.kill9();
    // The container's interface is taken away behind the agent's back.
    let veths = net.veths();
    assert_eq!(veths.len(), 1);
    let out = std::process::Command::new("ip")
        .args(["link", "del", &veths[0]])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(net.veths().is_empty());

    let _agent = a.start();
    a.wait("made again, attached", T, || {
        net.veths().len() == 1 && a.running("repair") && pod_ip(&a, "repair").is_some()
    });
    let reasons: Vec<String> = a
        .events()
        .iter()
        .filter(|e| e["handle"] == "repair")
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        reasons.iter().any(|r| r == "NetworkNotReady"),
        "{reasons:?}"
    );
    let ip = pod_ip(&a, "repair").unwrap();
    let (code, out, _) = a
        .env
        .exec("repair", &["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert_eq!(code, 0);
    assert!(out.contains(&ip), "{out}");
    assert_eq!(
        net.leases().len(),
        1,
        "the old lease freed: {:?}",
        net.leases()
    );
    assert_eq!(ip, before, "the container made again keeps its address");
}

/// The init pid runc reports, if runc knows the container.
fn init_of(a: &AgentEnv, name: &str) -> Option<i32> {
    let out = a.env.runc(&["state", name]);
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    state["pid"].as_i64().and_then(|p| i32::try_from(p).ok())
}

/// Another container's ADD moves host-local's round-robin past the first
/// one's address, so a container made again without asking would get a
/// new one.
fn with_a_neighbour(a: &AgentEnv, name: &str) -> String {
    a.write(&format!("{name}.yaml"), &manifest(name, SLEEPING));
    a.write("neighbour.yaml", &manifest("neighbour", SLEEPING));
    a.wait("both running", T, || {
        a.running(name) && pod_ip(a, name).is_some() && pod_ip(a, "neighbour").is_some()
    });
    pod_ip(a, name).unwrap()
}

#[test]
fn a_container_made_again_keeps_its_address() {
    let net = TestNet::new();
    let a = agent_env("net-again", &net);
    let _agent = a.start();
    let ip = with_a_neighbour(&a, "again");
    let init = init_of(&a, "again");

    // Its runtime state lost: the agent makes it again.
    let out = a.env.runc(&["delete", "--force", "again"]);
    assert!(out.status.success(), "{out:?}");
    a.wait("made again", T, || {
        a.running("again") && init_of(&a, "again").is_some_and(|p| Some(p) != init)
    });
    a.wait("attached", T, || pod_ip(&a, "again").is_some());
    assert_eq!(pod_ip(&a, "again"), Some(ip.clone()), "after lost state");

    // A spec change that needs a new container (a port published).
    let init = init_of(&a, "again");
    let port = free_port();
    let ports = format!("{SLEEPING}  ports: [{{containerPort: 80, hostPort: {port}}}]\n");
    a.write("again.yaml", &manifest("again", &ports));
    a.wait("made again for its ports", T, || {
        a.running("again")
            && init_of(&a, "again").is_some_and(|p| Some(p) != init)
            && !TestNet::nat_rules(&net.name).is_empty()
    });
    a.wait("attached", T, || pod_ip(&a, "again").is_some());
    assert_eq!(pod_ip(&a, "again"), Some(ip), "after a spec change");
    assert_eq!(net.leases().len(), 2, "{:?}", net.leases());
}

#[test]
fn a_hundred_containers_get_a_hundred_addresses_all_freed_after() {
    const N: usize = 100;
    let net = TestNet::new();
    let a = agent_env("net-hundred", &net);
    let _agent = a.start();
    let names: Vec<String> = (0..N).map(|i| format!("c{i:03}")).collect();
    let docs: Vec<String> = names.iter().map(|n| manifest(n, "")).collect();
    a.write("many.yaml", &docs.join("---\n"));
    a.wait("a hundred attached", Duration::from_secs(300), || {
        names.iter().all(|n| pod_ip(&a, n).is_some())
    });
    let ips: std::collections::BTreeSet<String> =
        names.iter().filter_map(|n| pod_ip(&a, n)).collect();
    assert_eq!(ips.len(), N, "distinct addresses: {ips:?}");
    assert_eq!(net.leases().len(), N);
    assert_eq!(net.veths().len(), N);
    for n in names.iter().step_by(33) {
        assert_eq!(a.env.runc_status(n).as_deref(), Some("running"), "{n}");
    }

    a.remove("many.yaml");
    a.wait("all destroyed", Duration::from_secs(300), || {
        names.iter().all(|n| !a.env.depot.join(n).exists())
    });
    assert!(net.leases().is_empty(), "leases left: {:?}", net.leases());
    assert!(net.veths().is_empty(), "veths left: {:?}", net.veths());
    assert!(
        std::fs::read_dir(a.state.join("netns")).map_or(true, |mut d| d.next().is_none()),
        "namespaces left"
    );
}
