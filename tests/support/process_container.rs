//! A real runc container for the process tests, made with raw runc (the
//! containerizer is another room): a bundle in a temp dir with a busybox
//! rootfs from `scripts/mkrootfs.sh`, `sleep 100000` standing in for init,
//! cgroup `/rundmc-test/<id>`. Also finds (building when needed) the
//! `rundmc-shim` binary and writes process directories.
//!
//! The shim is another package of the workspace, so `cargo test` does not
//! build it for this crate's tests; `shim_binary` runs
//! `cargo build -p rundmc-shim` (same profile and target dir) once per test
//! binary. It is a no-op when `make test` already ran `cargo build --workspace`.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rundmc::process::Launch;
use serde_json::json;

/// The `rundmc-shim` binary next to this crate's binaries, built if needed.
pub fn shim_binary() -> PathBuf {
    crate::common::binary("rundmc-shim")
}

/// Runs runc with `--root root` and the args; panics with its stderr on failure.
pub fn runc(root: &Path, args: &[&str]) -> String {
    let out = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run runc");
    assert!(
        out.status.success(),
        "runc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Options for the test container.
#[derive(Default)]
pub struct Options {
    /// Memory limit in bytes.
    pub memory: Option<i64>,
}

/// A running container, killed and deleted on drop.
pub struct TestContainer {
    pub id: String,
    pub tmp: PathBuf,
    pub root: PathBuf,
    pub processes: PathBuf,
}

impl TestContainer {
    /// Creates and starts container `pt-<name>-<pid>`.
    pub fn start(name: &str, opts: Options) -> TestContainer {
        let id = format!("pt-{name}-{}", std::process::id());
        let tmp = std::env::temp_dir().join(format!("rundmc-{id}"));
        let _ = std::fs::remove_dir_all(&tmp);
        let bundle = tmp.join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mkrootfs.sh");
        let status = Command::new("sh")
            .arg(script)
            .arg(bundle.join("rootfs"))
            .status()
            .unwrap();
        assert!(status.success(), "mkrootfs failed");
        write_config(&bundle, &id, &opts);
        let root = tmp.join("runc");
        let c = TestContainer {
            id,
            processes: tmp.join("processes"),
            tmp,
            root,
        };
        c.create(&bundle);
        runc(&c.root, &["start", &c.id]);
        std::fs::create_dir_all(&c.processes).unwrap();
        c
    }

    /// `runc create` with null stdio: the init inherits runc's stdio, so a
    /// captured pipe would never reach end of file.
    fn create(&self, bundle: &Path) {
        let log = self.tmp.join("create.log");
        let status = Command::new("runc")
            .arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&log)
            .args(["create", "--bundle"])
            .arg(bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run runc create");
        assert!(
            status.success(),
            "runc create: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// The memory cgroup's OOM counter file (v1 `memory.oom_control`, v2 `memory.events`).
    pub fn oom_file(&self) -> PathBuf {
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            PathBuf::from(format!(
                "/sys/fs/cgroup/rundmc-test/{}/memory.events",
                self.id
            ))
        } else {
            PathBuf::from(format!(
                "/sys/fs/cgroup/memory/rundmc-test/{}/memory.oom_control",
                self.id
            ))
        }
    }

    /// Makes `processes/<pid>/` with a process.json running `args` as root.
    pub fn process_dir(&self, pid: &str, args: &[&str]) -> PathBuf {
        let dir = self.processes.join(pid);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = json!({
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
        });
        std::fs::write(dir.join("process.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
        dir
    }

    /// The detached `runc exec` of `dir`'s process.json into this container.
    pub fn runtime_argv(&self, dir: &Path, container: &str) -> Vec<OsString> {
        let mut argv: Vec<OsString> =
            vec!["runc".into(), "--root".into(), self.root.clone().into()];
        argv.extend([
            "--log".into(),
            dir.join("runtime.log").into(),
            "--log-format".into(),
            "json".into(),
        ]);
        argv.extend([
            "exec".into(),
            "--detach".into(),
            "--pid-file".into(),
            dir.join("pid").into(),
        ]);
        argv.extend([
            "--process".into(),
            dir.join("process.json").into(),
            container.into(),
        ]);
        argv
    }

    /// A launch of `args` as process `pid` of this container.
    pub fn launch(&self, pid: &str, args: &[&str]) -> Launch {
        let dir = self.process_dir(pid, args);
        Launch::new(pid, &dir, self.runtime_argv(&dir, &self.id))
    }

    /// Kills the container's init (which ends every process in it) and deletes it.
    pub fn destroy(&self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&self.root)
            .args(["kill", &self.id, "KILL"])
            .output();
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "--force", &self.id])
            .output();
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        self.destroy();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

fn write_config(bundle: &Path, id: &str, opts: &Options) {
    let path = bundle.join("config.json");
    let mut config = crate::common::runc_spec(bundle);
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["sleep", "100000"]);
    config["linux"]["cgroupsPath"] = json!(format!("/rundmc-test/{id}"));
    if let Some(limit) = opts.memory {
        config["linux"]["resources"]["memory"] = json!({"limit": limit});
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}
