//! Support for the chart tests: runs `scripts/helm_chart.py` (Helm's own
//! library through helm-python-sdk) on `charts/rundmc`, and reads what it
//! renders as JSON values, one per Kubernetes object.

#![allow(dead_code)]

use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value;

pub use crate::common::workspace;

/// The chart under test.
pub const CHART: &str = "charts/rundmc";

/// `python3 scripts/helm_chart.py COMMAND charts/rundmc ARGS...` from the
/// workspace root (`PYTHON` names another interpreter).
pub fn helm_chart(command: &str, args: &[&str]) -> Output {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python)
        .current_dir(workspace())
        .arg("scripts/helm_chart.py")
        .arg(command)
        .arg(CHART)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {python} scripts/helm_chart.py: {e}"));
    assert_ne!(
        output.status.code(),
        Some(3),
        "helm-python-sdk is not installed: run scripts/deps.sh\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// stdout of a run that must succeed.
pub fn success(command: &str, args: &[&str]) -> String {
    let output = helm_chart(command, args);
    assert!(
        output.status.success(),
        "helm_chart.py {command} {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Every object in a multi-document YAML stream, comment-only documents left out.
pub fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The chart rendered as `helm template` would, with helm's flags
/// (`--set k=v`, `--name`, `--namespace`, ...).
pub fn render(args: &[&str]) -> Rendered {
    Rendered {
        objects: objects(&success("template", args)),
    }
}

/// The objects of one render.
pub struct Rendered {
    pub objects: Vec<Value>,
}

impl Rendered {
    /// Every object of a kind.
    pub fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The one object of a kind.
    pub fn one(&self, kind: &str) -> &Value {
        let all = self.all(kind);
        assert_eq!(all.len(), 1, "expected one {kind}, got {}", all.len());
        all[0]
    }

    /// The DaemonSet's pod spec.
    pub fn pod(&self) -> &Value {
        &self.one("DaemonSet")["spec"]["template"]["spec"]
    }

    /// The agent container.
    pub fn agent(&self) -> &Value {
        let containers = self.pod()["containers"].as_array().unwrap();
        containers
            .iter()
            .find(|c| c["name"] == "agent")
            .expect("no container named agent")
    }

    /// The agent's arguments.
    pub fn args(&self) -> Vec<String> {
        strings(&self.agent()["args"])
    }

    /// The value given to `flag` in the agent's arguments, if the flag is there.
    pub fn flag(&self, flag: &str) -> Option<String> {
        let args = self.args();
        let at = args.iter().position(|a| a == flag)?;
        Some(args.get(at + 1).expect("flag without a value").clone())
    }

    /// The values given to a repeatable `flag`, in order.
    pub fn flag_values(&self, flag: &str) -> Vec<String> {
        let args = self.args();
        args.iter()
            .enumerate()
            .filter(|(_, a)| *a == flag)
            .map(|(at, _)| args.get(at + 1).expect("flag without a value").clone())
            .collect()
    }

    /// The agent's mount at `path`, with the hostPath volume behind it.
    pub fn host_mount(&self, path: &str) -> Option<(Value, Value)> {
        let mount = self.agent()["volumeMounts"]
            .as_array()?
            .iter()
            .find(|m| m["mountPath"] == path)?
            .clone();
        let volume = self.pod()["volumes"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == mount["name"])?
            .clone();
        Some((mount, volume))
    }
}

/// A JSON array of strings as a Vec.
pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}
