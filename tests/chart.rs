//! The Helm chart (`charts/rundmc`) and the plain deploy YAML
//! (`manifests/deploy/`), linted and rendered by Helm's own library through
//! `scripts/helm_chart.py`: what an operator installs is what these check.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/chart.rs"]
mod chart;
#[path = "support/common.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use chart::{Rendered, helm_chart, objects, render, strings, success, workspace};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Values that turn on every optional part of the chart at once.
const EVERYTHING: &[&str] = &[
    "--set",
    "allowPrivileged=true",
    "--set",
    "allowedHostPaths={/srv/data,/opt/shared/}",
    "--set",
    "hostPaths={/opt/images}",
    "--set",
    "extraArgs={--crash-loop-max,2m}",
    "--set",
    "env[0].name=RUST_LOG,env[0].value=debug",
    "--set",
    "imagePullSecrets[0].name=registry",
    "--set",
    "podAnnotations.team=platform",
    "--set",
    "serviceAccount.annotations.owner=platform",
    "--set",
    "images.store=/srv/images/",
    "--set",
    "images.credentials=/etc/rundmc/registry/config.json",
    "--set",
    "images.registryCAs={/etc/rundmc/registry/ca.pem,/usr/local/share/ca/corp.pem}",
    "--set",
    "images.insecureRegistries={registry.local:5000,10.0.0.7:5000}",
    "--set",
    "images.allowedRegistries={docker.io,registry.local:5000}",
    "--set",
    "images.gcHighThresholdPercent=90",
    "--set",
    "images.gcLowThresholdPercent=70",
    "--set",
    "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=rundmc",
    "--set",
    "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
];

#[test]
fn chart_lints_clean() {
    for args in [&[][..], &["--kube-version", "v1.24.0"][..], EVERYTHING] {
        let out = helm_chart("lint", args);
        assert!(
            out.status.success(),
            "helm lint {args:?} found problems:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn values_outside_the_schema_are_refused() {
    for command in ["lint", "template"] {
        let out = helm_chart(command, &["--set", "logFormat=xml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command} accepted logFormat=xml");
        assert!(stderr.contains("/logFormat"), "{command}: {stderr}");
    }
    let out = helm_chart("template", &["--set", "paths.lib=var/lib/rundmc"]);
    assert!(!out.status.success(), "a relative depot path was accepted");
    // A misspelt value is an error, not silently ignored.
    let out = helm_chart("template", &["--set", "allowPriviledged=true"]);
    assert!(!out.status.success(), "an unknown value was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("allowPriviledged"), "{stderr}");
}

#[test]
fn image_values_outside_the_schema_are_refused() {
    for (set, field) in [
        (
            "images.gcHighThresholdPercent=101",
            "/images/gcHighThresholdPercent",
        ),
        (
            "images.gcLowThresholdPercent=-1",
            "/images/gcLowThresholdPercent",
        ),
        (
            "images.credentials=etc/docker/config.json",
            "/images/credentials",
        ),
        ("images.registryCAs={certs/ca.pem}", "/images/registryCAs/0"),
        ("images.store=images", "/images/store"),
        (
            "images.insecureRegistries={http://registry.local:5000}",
            "/images/insecureRegistries/0",
        ),
        (
            "images.allowedRegistries={docker.io/library}",
            "/images/allowedRegistries/0",
        ),
        ("images.pullSecrets=yes", "/images/pullSecrets"),
        ("images.gcHighThreshold=90", "gcHighThreshold"),
    ] {
        for command in ["lint", "template"] {
            let out = helm_chart(command, &["--set", set]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command} accepted {set}");
            assert!(stderr.contains(field), "{command} {set}: {stderr}");
        }
    }
    // JSON schema cannot compare two values: the template refuses low >= high.
    for (high, low) in [("80", "80"), ("70", "80")] {
        let out = helm_chart(
            "template",
            &[
                "--set",
                &format!("images.gcHighThresholdPercent={high}"),
                "--set",
                &format!("images.gcLowThresholdPercent={low}"),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "high {high}, low {low} was accepted");
        assert!(
            stderr.contains(&format!(
                "images.gcLowThresholdPercent ({low}) must be below \
                 images.gcHighThresholdPercent ({high})"
            )),
            "{stderr}"
        );
    }
}

#[test]
fn daemonset_runs_the_agent_for_its_own_node() {
    let r = render(&[]);
    let args = r.args();
    assert_eq!(args[0], "agent");
    assert!(args.contains(&"--kube".to_string()), "{args:?}");
    assert_eq!(r.flag("--node-name").as_deref(), Some("$(NODE_NAME)"));
    let node_name = r.agent()["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("no NODE_NAME env");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(r.flag("--runtime").as_deref(), Some("runc"));
    assert_eq!(r.flag("--log-format").as_deref(), Some("json"));
    // Admission stays closed unless the operator opens it.
    assert_eq!(r.flag("--allow-privileged"), None);
    assert!(!args.contains(&"--allow-privileged".to_string()));
    assert_eq!(r.flag("--allowed-host-paths"), None);

    let pod = r.pod();
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(r.agent()["securityContext"]["privileged"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 0);
    let requests = &r.agent()["resources"]["requests"];
    assert_eq!(
        (requests["cpu"].as_str(), requests["memory"].as_str()),
        (Some("50m"), Some("64Mi"))
    );
    assert!(r.agent()["resources"]["limits"]["memory"].is_null());
}

#[test]
fn agent_paths_are_host_paths_at_the_same_place() {
    let custom = [
        "--set",
        "paths.lib=/data/rundmc",
        "--set",
        "paths.run=/var/run/rdmc/",
        "--set",
        "paths.manifests=/srv/manifests",
    ];
    for (args, lib, run, manifests) in [
        (
            &[][..],
            "/var/lib/rundmc",
            "/run/rundmc",
            "/etc/rundmc/manifests",
        ),
        (
            &custom[..],
            "/data/rundmc",
            "/var/run/rdmc",
            "/srv/manifests",
        ),
    ] {
        let r = render(args);
        assert_eq!(r.flag("--depot"), Some(format!("{lib}/depot")));
        assert_eq!(r.flag("--state-dir").as_deref(), Some(run));
        assert_eq!(r.flag("--runtime-root"), Some(format!("{run}/runc")));
        assert_eq!(r.flag("--manifests").as_deref(), Some(manifests));
        for (path, propagation) in [(lib, "Bidirectional"), (run, "Bidirectional")] {
            let (mount, volume) = r
                .host_mount(path)
                .unwrap_or_else(|| panic!("{path} not mounted"));
            assert_eq!(mount["mountPropagation"], propagation, "{path}");
            assert_ne!(mount["readOnly"], true, "{path}");
            assert_eq!(volume["hostPath"]["path"], path);
        }
        let (mount, volume) = r.host_mount(manifests).expect("manifests not mounted");
        assert_eq!(mount["readOnly"], true);
        assert_eq!(volume["hostPath"]["path"], manifests);
        let (_, volume) = r.host_mount("/sys/fs/cgroup").expect("cgroups not mounted");
        assert_eq!(volume["hostPath"]["path"], "/sys/fs/cgroup");
    }
}

#[test]
fn probes_and_metrics_use_the_agents_metrics_port() {
    for (args, port) in [(&[][..], 9710), (&["--set", "metrics.port=9100"][..], 9100)] {
        let r = render(args);
        assert_eq!(r.flag("--metrics-addr"), Some(format!("0.0.0.0:{port}")));
        let ports = r.agent()["ports"].as_array().unwrap();
        let metrics = ports
            .iter()
            .find(|p| p["name"] == "metrics")
            .expect("no metrics port");
        assert_eq!(metrics["containerPort"], port);
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &r.agent()[probe]["httpGet"];
            assert_eq!(
                (get["path"].as_str(), get["port"].as_str()),
                (Some(path), Some("metrics"))
            );
        }
        let service = r.one("Service");
        assert_eq!(service["spec"]["clusterIP"], "None");
        let service_port = &service["spec"]["ports"][0];
        assert_eq!(service_port["name"], "metrics");
        assert_eq!(service_port["port"], port);
        assert_eq!(service_port["targetPort"], "metrics");
        assert_selects(&service["spec"]["selector"], &r);
    }
    let r = render(&["--set", "metrics.bindAddress=::"]);
    assert_eq!(r.flag("--metrics-addr").as_deref(), Some("[::]:9710"));
}

/// `selector` picks the DaemonSet's pods, and the DaemonSet's own selector too.
fn assert_selects(selector: &Value, r: &Rendered) {
    let labels = &r.one("DaemonSet")["spec"]["template"]["metadata"]["labels"];
    let selector = selector.as_object().expect("empty selector");
    assert!(!selector.is_empty());
    for (key, value) in selector {
        assert_eq!(&labels[key], value, "pod label {key}");
    }
    assert_eq!(
        &r.one("DaemonSet")["spec"]["selector"]["matchLabels"],
        &Value::Object(selector.clone())
    );
}

#[test]
fn service_monitor_only_when_asked() {
    assert!(render(&[]).all("ServiceMonitor").is_empty());
    let r = render(&[
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=prometheus",
    ]);
    let monitor = r.one("ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let service_labels = &r.one("Service")["metadata"]["labels"];
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service_labels[key], value, "service label {key}");
    }
}

#[test]
fn update_strategy_takes_one_node_at_a_time() {
    let strategy = render(&[]).one("DaemonSet")["spec"]["updateStrategy"].clone();
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 1);
    assert_eq!(strategy["rollingUpdate"]["maxSurge"], 0);

    let out = helm_chart(
        "template",
        &["--set", "updateStrategy.rollingUpdate.maxSurge=1"],
    );
    assert!(!out.status.success(), "maxSurge=1 was accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("maxSurge must be 0"));

    let r = render(&["--set", "updateStrategy.type=OnDelete"]);
    let strategy = &r.one("DaemonSet")["spec"]["updateStrategy"];
    assert_eq!(strategy, &serde_json::json!({"type": "OnDelete"}));
}

/// (API group, resource, verb) for every grant of a ClusterRole.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none(), "{rule}");
        assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_what_the_agent_needs() {
    let want: &[(&str, &str, &[&str])] = &[
        (
            "rundmc.io",
            "containers",
            &[
                "get", "list", "watch", "patch", "update", "create", "delete",
            ],
        ),
        (
            "rundmc.io",
            "containers/status",
            &["get", "patch", "update"],
        ),
        ("rundmc.io", "containers/finalizers", &["update"]),
        ("events.k8s.io", "events", &["create", "patch"]),
        ("", "events", &["create", "patch"]),
        ("", "nodes", &["get", "list", "watch"]),
        // imagePullSecrets, by name in any namespace: no list, no watch.
        ("", "secrets", &["get"]),
    ];
    let want: BTreeSet<_> = want
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(|v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect();

    for (args, name, namespace) in [
        (&[][..], "rundmc", "rundmc-system"),
        (
            &["--name", "edge", "--namespace", "agents"][..],
            "edge-rundmc",
            "agents",
        ),
    ] {
        let r = render(args);
        let role = r.one("ClusterRole");
        assert_eq!(grants(role), want);
        let binding = r.one("ClusterRoleBinding");
        assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        let account = r.one("ServiceAccount");
        assert_eq!(account["metadata"]["name"], name);
        assert_eq!(account["metadata"]["namespace"], namespace);
        assert_eq!(
            binding["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": name, "namespace": namespace}])
        );
        assert_eq!(r.pod()["serviceAccountName"], name);
        assert_eq!(r.one("DaemonSet")["metadata"]["namespace"], namespace);
    }

    // Without pullSecrets, not even that: the rest stays.
    let r = render(&["--set", "images.pullSecrets=false"]);
    let mut without = want.clone();
    without.remove(&("".into(), "secrets".into(), "get".into()));
    assert_eq!(grants(r.one("ClusterRole")), without);

    let r = render(&[
        "--set",
        "rbac.create=false",
        "--set",
        "serviceAccount.create=false",
    ]);
    assert!(r.all("ClusterRole").is_empty() && r.all("ClusterRoleBinding").is_empty());
    assert!(r.all("ServiceAccount").is_empty());
    assert_eq!(r.pod()["serviceAccountName"], "default");
}

#[test]
fn values_change_the_agent_flags() {
    let r = render(&["--set", "runtime=crun"]);
    assert_eq!(r.flag("--runtime").as_deref(), Some("crun"));

    let r = render(&["--set", "allowPrivileged=true"]);
    assert!(r.args().contains(&"--allow-privileged".to_string()));

    let r = render(&["--set", "allowUnconfinedSeccomp=true"]);
    assert!(r.args().contains(&"--allow-unconfined-seccomp".to_string()));
    let r = render(&[]);
    assert!(!r.args().contains(&"--allow-unconfined-seccomp".to_string()));

    let r = render(&[
        "--set",
        "logFormat=text",
        "--set",
        "workers=8",
        "--set",
        "resyncPeriod=1m",
    ]);
    assert_eq!(r.flag("--log-format").as_deref(), Some("text"));
    assert_eq!(r.flag("--workers").as_deref(), Some("8"));
    assert_eq!(r.flag("--resync-period").as_deref(), Some("1m"));

    // Images: the store under paths.lib, kubelet's GC thresholds, and no
    // credentials, CAs or registry lists unless set.
    for (args, store) in [
        (&[][..], "/var/lib/rundmc/images"),
        (
            &["--set", "paths.lib=/data/rundmc/"][..],
            "/data/rundmc/images",
        ),
    ] {
        let r = render(args);
        assert_eq!(r.flag("--image-store").as_deref(), Some(store));
        assert_eq!(r.flag("--image-gc-high-threshold").as_deref(), Some("85"));
        assert_eq!(r.flag("--image-gc-low-threshold").as_deref(), Some("80"));
        for absent in [
            "--image-credentials",
            "--registry-ca",
            "--insecure-registry",
            "--allowed-registries",
        ] {
            assert_eq!(r.flag(absent), None, "{absent}");
        }
    }

    let r = render(EVERYTHING);
    assert_eq!(r.flag("--image-store").as_deref(), Some("/srv/images"));
    assert_eq!(
        r.flag("--image-credentials").as_deref(),
        Some("/etc/rundmc/registry/config.json")
    );
    assert_eq!(
        r.flag_values("--registry-ca"),
        [
            "/etc/rundmc/registry/ca.pem",
            "/usr/local/share/ca/corp.pem"
        ]
    );
    assert_eq!(
        r.flag_values("--insecure-registry"),
        ["registry.local:5000", "10.0.0.7:5000"]
    );
    assert_eq!(
        r.flag("--allowed-registries").as_deref(),
        Some("docker.io,registry.local:5000")
    );
    assert_eq!(r.flag("--image-gc-high-threshold").as_deref(), Some("90"));
    assert_eq!(r.flag("--image-gc-low-threshold").as_deref(), Some("70"));
    assert_eq!(
        r.flag("--allowed-host-paths").as_deref(),
        Some("/srv/data,/opt/shared")
    );
    assert!(
        r.args()
            .ends_with(&["--crash-loop-max".to_string(), "2m".to_string()])
    );
    // runc resolves bind-mount sources in the agent's mount namespace: every
    // allowed path is in the pod at the same place, writable; image dirs read-only.
    for (path, read_only) in [
        ("/srv/data", false),
        ("/opt/shared", false),
        ("/opt/images", true),
    ] {
        let (mount, volume) = r
            .host_mount(path)
            .unwrap_or_else(|| panic!("{path} not mounted"));
        assert_eq!(mount["readOnly"], read_only, "{path}");
        assert_eq!(mount["mountPropagation"], "HostToContainer", "{path}");
        assert_eq!(volume["hostPath"]["path"], path);
    }
    let env = r.agent()["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "RUST_LOG" && e["value"] == "debug")
    );
}

#[test]
fn a_path_both_allowed_and_an_image_dir_is_mounted_once_writable() {
    let r = render(&[
        "--set",
        "hostPaths={/srv/data}",
        "--set",
        "allowedHostPaths={/srv/data}",
    ]);
    let mounts = r.agent()["volumeMounts"].as_array().unwrap();
    let at: Vec<_> = mounts
        .iter()
        .filter(|m| m["mountPath"] == "/srv/data")
        .collect();
    assert_eq!(at.len(), 1);
    assert_eq!(at[0]["readOnly"], false);
}

/// The agent pod's volumes and mounts, each path once: Kubernetes refuses a
/// pod with two mounts at one path or two volumes of one name.
fn assert_each_mount_once(r: &Rendered) {
    let mounts = r.agent()["volumeMounts"].as_array().unwrap();
    let paths: BTreeSet<_> = mounts.iter().map(|m| m["mountPath"].to_string()).collect();
    assert_eq!(paths.len(), mounts.len(), "{mounts:?}");
    let volumes = r.pod()["volumes"].as_array().unwrap();
    let names: BTreeSet<_> = volumes.iter().map(|v| v["name"].to_string()).collect();
    assert_eq!(names.len(), volumes.len(), "{volumes:?}");
}

#[test]
fn an_image_store_outside_paths_lib_is_mounted_read_write_at_the_same_path() {
    let r = render(&["--set", "images.store=/srv/images/"]);
    assert_eq!(r.flag("--image-store").as_deref(), Some("/srv/images"));
    let (mount, volume) = r.host_mount("/srv/images").expect("store not mounted");
    assert_eq!(mount["readOnly"], false);
    assert_eq!(mount["mountPropagation"], "HostToContainer");
    assert_eq!(volume["hostPath"]["path"], "/srv/images");
    assert_eq!(volume["hostPath"]["type"], "DirectoryOrCreate");
    assert_each_mount_once(&r);

    // Under paths.lib (or paths.run) the pod sees it through that
    // Bidirectional mount: a second mount there would propagate to the host.
    for (args, store) in [
        (&[][..], "/var/lib/rundmc/images"),
        (
            &["--set", "images.store=/var/lib/rundmc/store"][..],
            "/var/lib/rundmc/store",
        ),
        (
            &[
                "--set",
                "paths.lib=/data/rundmc",
                "--set",
                "images.store=/data/rundmc/img",
            ][..],
            "/data/rundmc/img",
        ),
        (
            &["--set", "images.store=/run/rundmc/images"][..],
            "/run/rundmc/images",
        ),
    ] {
        let r = render(args);
        assert_eq!(r.flag("--image-store").as_deref(), Some(store));
        let mounts: Vec<_> = r.agent()["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(mounts, ["lib", "run", "manifests", "cgroup"], "{args:?}");
    }

    // A store that is also an allowed host path is mounted once, writable;
    // one below a read-only image directory gets its own writable mount.
    let r = render(&[
        "--set",
        "images.store=/srv/data",
        "--set",
        "allowedHostPaths={/srv/data}",
    ]);
    assert_each_mount_once(&r);
    assert_eq!(r.host_mount("/srv/data").unwrap().0["readOnly"], false);
    let r = render(&[
        "--set",
        "images.store=/opt/images/store",
        "--set",
        "hostPaths={/opt/images}",
    ]);
    assert_eq!(r.host_mount("/opt/images").unwrap().0["readOnly"], true);
    assert_eq!(
        r.host_mount("/opt/images/store").unwrap().0["readOnly"],
        false
    );
}

#[test]
fn registry_credentials_and_cas_are_mounted_read_only_at_the_same_path() {
    let r = render(EVERYTHING);
    for file in [
        "/etc/rundmc/registry/config.json",
        "/etc/rundmc/registry/ca.pem",
        "/usr/local/share/ca/corp.pem",
    ] {
        let (mount, volume) = r
            .host_mount(file)
            .unwrap_or_else(|| panic!("{file} not mounted"));
        assert_eq!(mount["readOnly"], true, "{file}");
        assert_eq!(volume["hostPath"]["path"], file);
        // A missing file keeps the pod from starting, with the path in the error.
        assert_eq!(volume["hostPath"]["type"], "File", "{file}");
    }
    assert_each_mount_once(&r);

    // A file the pod sees already (under paths.lib or paths.run) is not mounted again.
    let r = render(&[
        "--set",
        "images.credentials=/var/lib/rundmc/config.json",
        "--set",
        "images.registryCAs={/run/rundmc/ca.pem,/etc/ca.pem}",
    ]);
    assert_eq!(
        r.flag("--image-credentials").as_deref(),
        Some("/var/lib/rundmc/config.json")
    );
    assert!(r.host_mount("/var/lib/rundmc/config.json").is_none());
    assert!(r.host_mount("/run/rundmc/ca.pem").is_none());
    assert_eq!(r.host_mount("/etc/ca.pem").unwrap().0["readOnly"], true);
}

/// `object` read as the Kubernetes type `T` and written back: a field that
/// type does not know, or a value of the wrong shape, does not survive.
fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> Value {
    let typed: T = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", object["kind"], object["metadata"]["name"]));
    serde_json::to_value(typed).unwrap()
}

fn assert_valid_object(object: &Value) {
    let back = match object["kind"].as_str().unwrap() {
        "Namespace" => round_trip::<Namespace>(object),
        "CustomResourceDefinition" => round_trip::<CustomResourceDefinition>(object),
        "ServiceAccount" => round_trip::<ServiceAccount>(object),
        "ClusterRole" => round_trip::<ClusterRole>(object),
        "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(object),
        "Service" => round_trip::<Service>(object),
        "DaemonSet" => round_trip::<DaemonSet>(object),
        other => panic!("no Kubernetes type to check kind {other}"),
    };
    assert_eq!(
        &back, object,
        "{} has fields Kubernetes does not know",
        object["kind"]
    );
}

#[test]
fn rendered_objects_are_well_formed_kubernetes_objects() {
    let deploy = std::fs::read_to_string(workspace().join("manifests/deploy/rundmc.yaml")).unwrap();
    let mut all = objects(&deploy);
    all.extend(render(EVERYTHING).objects);
    all.extend(render(&["--set", "hostNetwork=false", "--set", "priorityClassName="]).objects);
    let kinds: BTreeSet<_> = all.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 7, "{kinds:?}");
    for object in &all {
        assert_valid_object(object);
    }
}

/// The fields of a CRD's `spec` and of each of its `spec.versions[]` that a
/// Kubernetes 1.24 API server knows (apiextensions.k8s.io/v1 as of 1.24):
/// kubectl's client-side validation, and strict field validation on 1.25
/// to 1.29, refuse any other.
const CRD_SPEC_FIELDS_1_24: &[&str] = &[
    "conversion",
    "group",
    "names",
    "preserveUnknownFields",
    "scope",
    "versions",
];
const CRD_VERSION_FIELDS_1_24: &[&str] = &[
    "additionalPrinterColumns",
    "deprecated",
    "deprecationWarning",
    "name",
    "schema",
    "served",
    "storage",
    "subresources",
];

/// Every field of `crd`'s spec and versions is one a 1.24 server knows.
fn assert_known_to_1_24(crd: &Value) {
    for key in crd["spec"].as_object().unwrap().keys() {
        assert!(CRD_SPEC_FIELDS_1_24.contains(&key.as_str()), "spec.{key}");
    }
    for version in crd["spec"]["versions"].as_array().unwrap() {
        for key in version.as_object().unwrap().keys() {
            assert!(
                CRD_VERSION_FIELDS_1_24.contains(&key.as_str()),
                "spec.versions[].{key} is unknown to Kubernetes 1.24"
            );
        }
    }
}

/// The `selectableFields` of each version of a CRD.
fn selectable_fields(crd: &Value) -> Vec<Value> {
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["selectableFields"].clone())
        .collect()
}

fn committed(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap()
}

#[test]
fn chart_ships_the_generated_crds() {
    let dir = workspace().join("charts/rundmc/files");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["container-1.31.yaml", "container.yaml"]);
    for file in &files {
        let shipped = committed(&format!("charts/rundmc/files/{file}"));
        assert!(
            shipped == committed(&format!("crds/{file}")),
            "charts/rundmc/files/{file} differs from crds/{file}: run \
             `cp crds/container*.yaml charts/rundmc/files/`, then \
             `scripts/helm_chart.py deploy charts/rundmc > manifests/deploy/rundmc.yaml`"
        );
    }
    assert!(
        !workspace().join("charts/rundmc/crds").exists(),
        "a crds/ directory would make Helm install a second, untemplated CRD"
    );
}

/// What `helm install` puts on a cluster of each version: the CRD its API
/// server accepts, with `selectableFields` from 1.31 on.
#[test]
fn the_chart_installs_the_crd_the_clusters_version_accepts() {
    let portable = objects(&committed("crds/container.yaml")).remove(0);
    let selectable = objects(&committed("crds/container-1.31.yaml")).remove(0);
    assert_known_to_1_24(&portable);
    assert_eq!(
        selectable_fields(&selectable),
        [serde_json::json!([{"jsonPath": ".spec.nodeName"}])]
    );
    for (version, want) in [
        ("v1.24.0", &portable),
        ("v1.29.4", &portable),
        ("v1.30.0", &portable),
        ("v1.31.0", &selectable),
        ("v1.37.0", &selectable),
    ] {
        let r = render(&["--kube-version", version]);
        let crd = r.one("CustomResourceDefinition");
        assert_eq!(
            crd["metadata"]["name"], want["metadata"]["name"],
            "{version}"
        );
        assert_eq!(crd["spec"], want["spec"], "{version}");
        if want == &portable {
            assert_known_to_1_24(crd);
            assert_eq!(selectable_fields(crd), [Value::Null], "{version}");
        }
        // `helm uninstall` must not delete every Container with their CRD.
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{version}"
        );
    }
    let without = render(&["--set", "crd.create=false"]);
    assert!(without.all("CustomResourceDefinition").is_empty());
    for version in ["v1.24.0", "v1.31.0"] {
        let out = helm_chart("lint", &["--kube-version", version]);
        assert!(out.status.success(), "lint at {version}: {out:?}");
    }
}

#[test]
fn deploy_yaml_is_the_default_render_for_every_supported_server() {
    let committed = committed("manifests/deploy/rundmc.yaml");
    let rendered = success("deploy", &[]);
    assert!(
        committed == rendered,
        "manifests/deploy/rundmc.yaml is stale: run \
         `scripts/helm_chart.py deploy charts/rundmc > manifests/deploy/rundmc.yaml`"
    );
    let files: Vec<_> = std::fs::read_dir(workspace().join("manifests/deploy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, ["rundmc.yaml"]);

    let deployed = objects(&committed);
    let namespace = &deployed[0];
    assert_eq!(namespace["kind"], "Namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let name = namespace["metadata"]["name"].clone();
    for object in &deployed[1..] {
        let cluster_scoped = [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
        ]
        .contains(&object["kind"].as_str().unwrap());
        if !cluster_scoped {
            assert_eq!(object["metadata"]["namespace"], name, "{}", object["kind"]);
        }
    }
    // The chart as a 1.24 server gets it: a CRD without selectableFields.
    assert_eq!(
        &deployed[1..],
        &render(&["--kube-version", "v1.24.0"]).objects[..]
    );
    let crds: Vec<_> = deployed
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(crds.len(), 1);
    assert_known_to_1_24(crds[0]);
}

#[test]
fn notes_say_how_to_run_the_examples() {
    let notes = success("notes", &[]);
    assert!(notes.contains("kubectl get containers -o wide"), "{notes}");
    // The command the notes give puts spec.nodeName into each example.
    let line = notes
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sed "))
        .expect("no sed line in NOTES.txt");
    let (edit, apply) = line.split_once(" | ").unwrap();
    assert_eq!(apply, "kubectl apply -f -");
    let edit = edit.replace("manifests/examples/web.yaml", "\"$1\"");
    let examples = workspace().join("manifests/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new("sh")
            .args(["-c", &edit, "sh"])
            .arg(&path)
            .env("NODE", "node-7")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_node_set(&path, &String::from_utf8(out.stdout).unwrap());
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} examples");
}

/// The notes say what the chart's mount propagation needs of each node,
/// what a rollout on a node without it looks like, and how to undo it.
#[test]
fn notes_say_what_mount_propagation_needs_and_how_to_roll_back() {
    let args = [
        "--name",
        "edge",
        "--namespace",
        "agents",
        "--set",
        "paths.lib=/data/rundmc",
        "--set",
        "allowedHostPaths={/srv/data}",
    ];
    let notes = success("notes", &args);
    for want in [
        "mount --make-rshared /",
        "findmnt -o TARGET,PROPAGATION --target /data/rundmc",
        "CreateContainerError",
        "is mounted\non \"/\" but it is not a shared mount (or: not a shared or slave mount)",
        "helm rollback edge -n agents",
        "kubectl -n agents rollout undo daemonset/edge-rundmc",
    ] {
        assert!(notes.contains(want), "notes lack {want:?}:\n{notes}");
    }
    // Every mount that propagates is one the notes name.
    let r = render(&args);
    for mount in r.agent()["volumeMounts"].as_array().unwrap() {
        let (Some(path), Some(propagation)) = (
            mount["mountPath"].as_str(),
            mount["mountPropagation"].as_str(),
        ) else {
            continue;
        };
        let named = notes.contains(path)
            || (propagation == "HostToContainer" && notes.contains("the host paths"));
        assert!(
            named,
            "{path} ({propagation}) is not in the notes:\n{notes}"
        );
    }
}

/// The notes say where images go, from where, and name the store's mount
/// among those that propagate.
#[test]
fn notes_say_where_images_go() {
    let notes = success("notes", &[]);
    assert!(
        notes.contains("pulled into /var/lib/rundmc/images on each node;"),
        "{notes}"
    );
    assert!(notes.contains("85% full"), "{notes}");
    assert!(!notes.contains("the host paths"), "{notes}");
    // A credentials file is mounted without propagation.
    let notes = success("notes", &["--set", "images.credentials=/etc/docker.json"]);
    assert!(!notes.contains("the host paths"), "{notes}");
    let notes = success(
        "notes",
        &[
            "--set",
            "images.store=/srv/images",
            "--set",
            "images.allowedRegistries={docker.io,ghcr.io}",
            "--set",
            "images.pullSecrets=false",
        ],
    );
    for want in [
        "pulled into /srv/images on each node, from docker.io, ghcr.io only;",
        "/sys/fs/cgroup and the host paths with HostToContainer",
        "imagePullSecrets are not read (images.pullSecrets=false)",
    ] {
        assert!(notes.contains(want), "notes lack {want:?}:\n{notes}");
    }
}

/// The edited example is the original with `spec.nodeName: node-7`.
fn assert_node_set(path: &Path, edited: &str) {
    let original = std::fs::read_to_string(path).unwrap();
    let mut want: rundmc::api::Container = serde_yaml::from_str(&original).unwrap();
    let got: rundmc::api::Container = serde_yaml::from_str(edited).unwrap_or_else(|e| {
        panic!(
            "{}: edited example does not parse: {e}\n{edited}",
            path.display()
        )
    });
    want.spec.node_name = Some("node-7".into());
    assert_eq!(got, want, "{}", path.display());
}

/// The DaemonSet's command line is one the agent accepts, with every option on.
#[test]
fn the_rendered_args_parse_with_the_agents_own_parser() {
    use clap::Parser;
    for sets in [
        vec![],
        vec![
            "--set",
            "allowPrivileged=true",
            "--set",
            "runtime=crun",
            "--set",
            "mirrorNamespace=rundmc-system",
            "--set",
            "allowHostNetwork=true",
            "--set",
            "allowUnconfinedSeccomp=true",
            "--set-json",
            "allowedRootfsPaths=[\"/opt/images/\"]",
            "--set-json",
            "allowedHostPaths=[\"/srv/a\",\"/opt/b\"]",
            "--set",
            "images.store=/srv/images",
            "--set",
            "images.credentials=/etc/rundmc/config.json",
            "--set-json",
            "images.registryCAs=[\"/etc/ca/a.pem\",\"/etc/ca/b.pem\"]",
            "--set-json",
            "images.insecureRegistries=[\"registry.local:5000\",\"[::1]:5000\"]",
            "--set-json",
            "images.allowedRegistries=[\"docker.io\",\"registry.local:5000\"]",
            "--set",
            "images.gcHighThresholdPercent=100",
            "--set",
            "images.gcLowThresholdPercent=0",
            "--set-json",
            "allowedCapabilities=[\"NET_ADMIN\",\"SYS_TIME\"]",
            "--set-json",
            "allowedUnsafeSysctls=[\"kernel.msg*\"]",
        ],
    ] {
        let rendered = render(&sets);
        let mut argv = vec!["rundmc".to_string()];
        argv.extend(
            rendered
                .args()
                .into_iter()
                .map(|a| a.replace("$(NODE_NAME)", "node-1")),
        );
        let cli =
            rundmc::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let rundmc::cli::Command::Agent(args) = cli.command else {
            panic!("not the agent: {argv:?}")
        };
        assert!(args.kube && args.metrics_addr.is_some(), "{argv:?}");
        assert_eq!(args.node_name.as_deref(), Some("node-1"));
        if !sets.is_empty() {
            assert!(args.allow_privileged);
            assert!(args.allow_unconfined_seccomp);
            assert_eq!(
                args.allowed_host_paths,
                vec![std::path::PathBuf::from("/srv/a"), "/opt/b".into()]
            );
            assert_eq!(args.runtime, std::path::PathBuf::from("crun"));
            assert_eq!(args.mirror_namespace, "rundmc-system");
            assert!(args.allow_host_network);
            assert_eq!(args.allowed_capabilities, vec!["NET_ADMIN", "SYS_TIME"]);
            assert_eq!(args.allowed_unsafe_sysctls, vec!["kernel.msg*"]);
            assert_eq!(
                args.allowed_rootfs_paths,
                vec![std::path::PathBuf::from("/opt/images")]
            );
            assert_eq!(args.image_store, std::path::PathBuf::from("/srv/images"));
            assert_eq!(
                args.registry.image_credentials,
                Some("/etc/rundmc/config.json".into())
            );
            assert_eq!(
                args.registry.registry_ca,
                vec![
                    std::path::PathBuf::from("/etc/ca/a.pem"),
                    "/etc/ca/b.pem".into()
                ]
            );
            assert_eq!(
                args.registry.insecure_registry,
                ["registry.local:5000", "[::1]:5000"]
            );
            assert_eq!(
                args.allowed_registries,
                ["docker.io", "registry.local:5000"]
            );
            assert_eq!(
                (args.image_gc_high_threshold, args.image_gc_low_threshold),
                (100, 0)
            );
        } else {
            assert_eq!(args.mirror_namespace, "default");
            assert!(!args.allow_host_network);
            assert_eq!(
                args.allowed_rootfs_paths,
                vec![std::path::PathBuf::from("/var/lib/rundmc/rootfs")]
            );
            assert_eq!(
                args.image_store,
                std::path::PathBuf::from("/var/lib/rundmc/images")
            );
            assert_eq!(args.registry.image_credentials, None);
            assert!(args.registry.registry_ca.is_empty());
            assert!(args.registry.insecure_registry.is_empty());
            assert!(args.allowed_registries.is_empty());
            assert_eq!(
                (args.image_gc_high_threshold, args.image_gc_low_threshold),
                (85, 80)
            );
        }
    }
}

/// The kubectl path (issue 18): off by default; `remoteApi.enabled` serves
/// the remote API on the node's port with the TLS Secret, grants the agent
/// TokenReview and SubjectAccessReview, and ships the users' ClusterRole.
#[test]
fn remote_api_is_a_values_switch() {
    use clap::Parser;
    let off = render(&[]);
    assert!(off.flag("--remote-api-listen").is_none());
    let reviews = [
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
    ]
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()));
    let agent_role = |r: &Rendered| {
        let roles = r.all("ClusterRole");
        let mine = roles.iter().find(|c| c["metadata"]["name"] == "rundmc");
        grants(mine.unwrap())
    };
    assert!(reviews.iter().all(|g| !agent_role(&off).contains(g)));
    assert_eq!(off.all("ClusterRole").len(), 1);

    let on = render(&[
        "--set",
        "remoteApi.enabled=true",
        "--set",
        "remoteApi.tlsSecret=rundmc-remote-tls",
        "--set",
        "remoteApi.clientCASecret=kubelet-client-ca",
        "--set",
        "hostNetwork=false",
    ]);
    let mut argv = vec!["rundmc".to_string()];
    argv.extend(
        on.args()
            .into_iter()
            .map(|a| a.replace("$(NODE_NAME)", "n")),
    );
    let cli = rundmc::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let rundmc::cli::Command::Agent(args) = cli.command else {
        panic!("not the agent")
    };
    assert_eq!(
        args.remote_api_listen,
        Some("0.0.0.0:10260".parse().unwrap())
    );
    let cert = args.remote_api_tls_cert.unwrap();
    let ca = args.remote_api_client_ca.unwrap();
    for (path, secret) in [(&cert, "rundmc-remote-tls"), (&ca, "kubelet-client-ca")] {
        let dir = path.parent().unwrap().display().to_string();
        let mount = on.agent()["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == dir.as_str())
            .unwrap_or_else(|| panic!("{dir} not mounted"))
            .clone();
        let volume = on.pod()["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap()
            .clone();
        assert_eq!(volume["secret"]["secretName"], secret);
    }
    let port = on.agent()["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "remote-api")
        .unwrap()
        .clone();
    assert_eq!(
        (port["containerPort"].as_i64(), port["hostPort"].as_i64()),
        (Some(10260), Some(10260))
    );
    assert!(reviews.iter().all(|g| agent_role(&on).contains(g)));
    let users = on.all("ClusterRole");
    let users = users
        .iter()
        .find(|c| c["metadata"]["name"] == "rundmc-container-access")
        .unwrap();
    let want: BTreeSet<_> = [
        ("rundmc.io", "containers", "get"),
        ("rundmc.io", "containers/log", "get"),
        ("rundmc.io", "containers/exec", "create"),
        ("rundmc.io", "containers/attach", "create"),
        ("", "nodes", "get"),
    ]
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .into_iter()
    .collect();
    assert_eq!(grants(users), want);

    let out = helm_chart("template", &["--set", "remoteApi.enabled=true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("remoteApi.tlsSecret"),
        "{stderr}"
    );
}
