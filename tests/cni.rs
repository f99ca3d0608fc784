//! CNI attachment against Debian's plugins (bridge, host-local, portmap),
//! as root: each test has its own bridge, subnet, namespaces and IPAM
//! store (tests/support/cni_net.rs), and traffic stays between those
//! namespaces, the bridge and the host's loopback.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/cni_net.rs"]
mod cni_net;
#[path = "support/common.rs"]
mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cni_net::{TestNet, eventually, free_port, http_get, portmap_plugin};
use futures::StreamExt;
use rundmc::network::attach::{Cni, PortMapping};
use rundmc::network::cni::CniError;

const TIMEOUT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(20);

fn tcp(host_port: u16, container_port: u16) -> Vec<PortMapping> {
    vec![PortMapping {
        host_port,
        container_port,
        protocol: "tcp".into(),
        host_ip: None,
    }]
}

fn in_subnet(net: &TestNet, ip: &IpAddr) -> bool {
    ip.to_string().starts_with(&format!("{}.", net.prefix)) && *ip != IpAddr::V4(net.gateway)
}

/// Everything the network holds for containers: leases, veths, cache entries.
fn assert_nothing_left(net: &TestNet, cni: &Cni, ids: &[&str]) {
    assert_eq!(net.leases(), BTreeSet::new(), "leases left");
    eventually(WAIT, || match net.veths().as_slice() {
        [] => Ok(()),
        left => Err(format!("veths left on the bridge: {left:?}")),
    });
    assert_eq!(
        cni.cached().unwrap(),
        Vec::<String>::new(),
        "cache entries left"
    );
    for id in ids {
        assert_eq!(
            TestNet::nat_rules(id),
            Vec::<String>::new(),
            "portmap rules of {id}"
        );
    }
}

fn ip_addr_in(netns: &Path) -> String {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            netns.file_name().unwrap().to_str().unwrap(),
        ])
        .args(["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn add_puts_an_address_on_a_veth_of_the_bridge_and_del_removes_veth_lease_rules_and_cache() {
    let net = TestNet::new();
    let cni = Cni::new(net.config(TIMEOUT));
    let ns = net.netns();
    let id = format!("{}-web", net.name);
    let port = free_port();

    let got = cni
        .add(&net.network(), &id, &ns, "eth0", &tcp(port, 8080))
        .await
        .unwrap();
    assert_eq!(
        (got.network.as_str(), got.interface.as_str()),
        (net.name.as_str(), "eth0")
    );
    let [ip] = got.ips.as_slice() else {
        panic!("one address expected: {:?}", got.ips)
    };
    assert!(in_subnet(&net, ip), "{ip} outside {}.0/24", net.prefix);
    assert!(
        ip_addr_in(&ns).contains(&format!("inet {ip}/24")),
        "{}",
        ip_addr_in(&ns)
    );
    assert_eq!(net.veths().len(), 1, "one veth on the bridge");
    assert_eq!(net.leases(), BTreeSet::from([*ip]));
    assert!(
        !TestNet::nat_rules(&id).is_empty(),
        "portmap rules for {id}"
    );
    assert_eq!(cni.cached().unwrap(), [id.as_str()]);
    assert_eq!(cni.attachment(&id, "eth0"), Some(got));

    cni.del(&id, Some(&ns), "eth0").await.unwrap();
    assert_nothing_left(&net, &cni, &[&id]);
    assert_eq!(cni.attachment(&id, "eth0"), None);
    cni.del(&id, Some(&ns), "eth0").await.unwrap();
    cni.del("never-added", None, "eth0").await.unwrap();
}

#[tokio::test]
async fn two_namespaces_reach_each_other_over_the_bridge() {
    let net = TestNet::new();
    let cni = Cni::new(net.config(TIMEOUT));
    let (ns1, ns2) = (net.netns(), net.netns());
    let (id1, id2) = (format!("{}-a", net.name), format!("{}-b", net.name));
    let server = cni
        .add(&net.network(), &id1, &ns1, "eth0", &[])
        .await
        .unwrap();
    let client = cni
        .add(&net.network(), &id2, &ns2, "eth0", &[])
        .await
        .unwrap();
    assert_ne!(server.ips, client.ips);
    assert_eq!(net.veths().len(), 2);

    net.serve(&ns1, 8080, "hello from a\n");
    let url = format!("http://{}:8080/", server.ips[0]);
    let body = eventually(WAIT, || {
        let out = TestNet::wget_in(&ns2, &url);
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            false => Err(format!("wget {url}: {out:?}")),
        }
    });
    assert_eq!(body, "hello from a\n");
    let ping = TestNet::ping_in(&ns1, &client.ips[0].to_string());
    assert!(ping.status.success(), "ping: {ping:?}");

    cni.del(&id1, Some(&ns1), "eth0").await.unwrap();
    cni.del(&id2, Some(&ns2), "eth0").await.unwrap();
    assert_nothing_left(&net, &cni, &[&id1, &id2]);
}

#[tokio::test]
async fn a_host_port_is_reachable_from_the_host_on_loopback_and_the_bridge_address() {
    let net = TestNet::new();
    let cni = Cni::new(net.config(TIMEOUT));
    let ns = net.netns();
    let id = format!("{}-port", net.name);
    let port = free_port();
    cni.add(&net.network(), &id, &ns, "eth0", &tcp(port, 8080))
        .await
        .unwrap();
    net.serve(&ns, 8080, "published\n");

    let loopback = format!("127.0.0.1:{port}");
    assert_eq!(eventually(WAIT, || http_get(&loopback)), "published\n");
    let bridge = format!("{}:{port}", net.gateway);
    assert_eq!(http_get(&bridge).unwrap(), "published\n");

    cni.del(&id, Some(&ns), "eth0").await.unwrap();
    assert!(http_get(&loopback).is_err(), "{loopback} still mapped");
    assert_nothing_left(&net, &cni, &[&id]);
}

#[tokio::test]
async fn del_after_the_namespace_is_gone_frees_the_lease() {
    let net = TestNet::new();
    let cni = Cni::new(net.config(TIMEOUT));
    let (deleted, unmounted) = (net.netns(), net.netns());
    let (id1, id2) = (format!("{}-x", net.name), format!("{}-y", net.name));
    let port = free_port();
    cni.add(&net.network(), &id1, &deleted, "eth0", &tcp(port, 80))
        .await
        .unwrap();
    cni.add(&net.network(), &id2, &unmounted, "eth0", &[])
        .await
        .unwrap();
    assert_eq!(net.leases().len(), 2);

    // Gone entirely, and gone but for its (unmounted) pin file.
    net.delete_netns(&deleted);
    let status = std::process::Command::new("umount")
        .arg(&unmounted)
        .status()
        .unwrap();
    assert!(status.success() && unmounted.exists());

    cni.del(&id1, Some(&deleted), "eth0").await.unwrap();
    cni.del(&id2, Some(&unmounted), "eth0").await.unwrap();
    assert_nothing_left(&net, &cni, &[&id1, &id2]);
}

#[tokio::test]
async fn check_passes_on_a_good_attachment_and_names_what_broke() {
    let net = TestNet::new();
    let cni = Cni::new(net.config(TIMEOUT));
    let ns = net.netns();
    let id = format!("{}-chk", net.name);
    cni.add(&net.network(), &id, &ns, "eth0", &[])
        .await
        .unwrap();
    cni.check(&id, &ns, "eth0").await.unwrap();

    let name = ns.file_name().unwrap().to_str().unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", name, "ip", "link", "del", "eth0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = cni.check(&id, &ns, "eth0").await.unwrap_err();
    assert!(
        matches!(&err, CniError::PluginFailed { plugin, .. } if plugin == "bridge"),
        "{err}"
    );
    assert!(err.to_string().contains("eth0"), "{err}");

    cni.del(&id, Some(&ns), "eth0").await.unwrap();
    assert_nothing_left(&net, &cni, &[&id]);
}

#[tokio::test]
async fn a_failing_plugin_fails_add_with_its_message_and_leaves_nothing() {
    let net = TestNet::new();
    net.wrapper(
        "refuse",
        r#"[ "$CNI_COMMAND" = ADD ] || exit 0
cat >/dev/null
echo '{"cniVersion":"1.0.0","code":101,"msg":"refused by policy","details":"test wrapper"}'
exit 1"#,
    );
    let list = net.write_list(
        "05-refuse.conflist",
        vec![net.bridge_plugin(), serde_json::json!({"type": "refuse"})],
    );
    let cni = Cni::new(net.config(TIMEOUT));
    let ns = net.netns();
    let id = format!("{}-fail", net.name);

    let err = cni.add(&list, &id, &ns, "eth0", &[]).await.unwrap_err();
    match &err {
        CniError::PluginFailed {
            plugin,
            code,
            msg,
            details,
            ..
        } => {
            assert_eq!((plugin.as_str(), *code), ("refuse", 101));
            assert_eq!(
                (msg.as_str(), details.as_str()),
                ("refused by policy", "test wrapper")
            );
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("refused by policy"), "{err}");
    assert_nothing_left(&net, &cni, &[&id]);
    assert!(
        !ip_addr_in(&ns).contains("inet"),
        "eth0 left in the namespace"
    );
}

#[tokio::test]
async fn a_hanging_plugin_is_killed_with_what_it_forked_at_the_timeout() {
    let net = TestNet::new();
    let pid_file = net.dir.join("sleeper.pid");
    net.wrapper(
        "hang",
        &format!(
            "[ \"$CNI_COMMAND\" = ADD ] || exit 0\nsleep 600 &\necho $! > {}\nwait",
            pid_file.display()
        ),
    );
    let list = net.write_list(
        "05-hang.conflist",
        vec![net.bridge_plugin(), serde_json::json!({"type": "hang"})],
    );
    let cni = Cni::new(net.config(Duration::from_secs(2)));
    let ns = net.netns();
    let id = format!("{}-hang", net.name);

    let err = cni.add(&list, &id, &ns, "eth0", &[]).await.unwrap_err();
    assert!(
        matches!(&err, CniError::Timeout { plugin, after, .. } if plugin == "hang" && *after == Duration::from_secs(2)),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "CNI plugin hang ADD did not finish within 2s and was killed"
    );
    let sleeper = std::fs::read_to_string(&pid_file).unwrap();
    let proc = PathBuf::from("/proc").join(sleeper.trim());
    eventually(WAIT, || match std::fs::read_to_string(proc.join("stat")) {
        // Gone, or a zombie waiting for init to reap it.
        Ok(stat) if !stat.contains(") Z ") => Err(format!("sleep {} still runs", sleeper.trim())),
        _ => Ok(()),
    });
    assert_nothing_left(&net, &cni, &[&id]);
}

/// The agent dies after the cache entry was written and bridge and portmap
/// ran, while the last plugin runs: a later agent's DEL, from the cache
/// alone and without a prevResult, frees the lease, the veth and the rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_add_leaves_what_del_needs() {
    let net = TestNet::new();
    let marker = net.dir.join("stalled");
    net.wrapper(
        "stall",
        &format!(
            "[ \"$CNI_COMMAND\" = ADD ] || exit 0\n: > {}\nexec sleep 600",
            marker.display()
        ),
    );
    let list = net.write_list(
        "05-stall.conflist",
        vec![
            net.bridge_plugin(),
            portmap_plugin(),
            serde_json::json!({"type": "stall"}),
        ],
    );
    let ns = net.netns();
    let id = format!("{}-crash", net.name);
    let dying = Arc::new(Cni::new(net.config(TIMEOUT)));
    let add = {
        let (cni, list, id, ns) = (dying.clone(), list.clone(), id.clone(), ns.clone());
        let ports = tcp(free_port(), 80);
        tokio::spawn(async move { cni.add(&list, &id, &ns, "eth0", &ports).await })
    };
    while !marker.exists() {
        assert!(!add.is_finished(), "ADD ended: {:?}", add.await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(net.leases().len(), 1);
    assert_eq!(net.veths().len(), 1);
    assert!(!TestNet::nat_rules(&id).is_empty());
    add.abort();
    assert!(add.await.unwrap_err().is_cancelled());
    drop(dying);

    let restarted = Cni::new(net.config(TIMEOUT));
    assert_eq!(restarted.cached().unwrap(), [id.as_str()]);
    assert_eq!(restarted.attachment(&id, "eth0"), None);
    restarted.del(&id, Some(&ns), "eth0").await.unwrap();
    assert_nothing_left(&net, &restarted, &[&id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_adds_get_a_hundred_addresses_all_freed_by_their_dels() {
    let net = TestNet::new();
    let cni = Cni::new(net.config(TIMEOUT));
    let list = net.network();
    let targets: Vec<(String, PathBuf)> = (0..100)
        .map(|i| (format!("{}-{i}", net.name), net.netns()))
        .collect();

    let adds = futures::stream::iter(&targets)
        .map(|(id, ns)| cni.add(&list, id, ns, "eth0", &[]))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let ips: BTreeSet<IpAddr> = adds.into_iter().map(|a| a.unwrap().ips[0]).collect();
    assert_eq!(ips.len(), 100, "distinct addresses");
    assert!(ips.iter().all(|ip| in_subnet(&net, ip)));
    assert_eq!(net.leases(), ips);
    assert_eq!(net.veths().len(), 100);

    let dels = futures::stream::iter(&targets)
        .map(|(id, ns)| cni.del(id, Some(ns), "eth0"))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    assert!(dels.iter().all(Result::is_ok), "{dels:?}");
    assert_nothing_left(&net, &cni, &[]);
}
