//! A registry on loopback for the images phase: Debian's `docker-registry`
//! (the CNCF distribution registry) on 127.0.0.1 and a free port, plain
//! HTTP, its storage in the run's directory; images pushed into it with
//! `skopeo copy`. Registered for the sweep as soon as it is spawned, and
//! killed on [`Registry::stop`] or drop.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::images::run_quiet;
use crate::wait::wait_for;
use crate::{cleanup, reaper};

/// A running `docker-registry`.
pub struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    pub addr: String,
}

impl Registry {
    /// Starts a registry keeping its storage under `dir`; returns once it
    /// accepts connections.
    pub fn start(dir: &Path) -> Result<Registry> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port on 127.0.0.1")?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        fs::write(&config, config_text(&dir.join("storage"), &addr))
            .with_context(|| format!("writing {}", config.display()))?;
        let log_path = dir.join("registry.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = reaper::spawn(&mut cmd)
            .context("starting docker-registry (scripts/deps.sh installs it)")?;
        cleanup::register(|r| r.children.push(child.id() as i32));
        let registry = Registry {
            child: Some(child),
            addr,
        };
        wait_for(
            "docker-registry listening",
            Duration::from_secs(20),
            Duration::from_millis(20),
            || TcpStream::connect(&registry.addr).is_ok(),
        )
        .with_context(|| fs::read_to_string(&log_path).unwrap_or_default())?;
        Ok(registry)
    }

    /// `<addr>/<repo_tag>`: what `rundmc` and `podman` pull.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// Pushes the image tagged `tag` of the OCI layout `layout` as `repo_tag`.
    pub fn push(&self, layout: &Path, tag: &str, repo_tag: &str) -> Result<()> {
        let src = format!("oci:{}:{tag}", layout.display());
        let dest = format!("docker://{}", self.reference(repo_tag));
        run_quiet(
            Command::new("skopeo")
                .args(["copy", "--quiet", "--dest-tls-verify=false"])
                .args([&src, &dest]),
        )
        .with_context(|| format!("pushing {src} to {dest}"))
    }

    /// Kills it and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            reaper::forget(child.id());
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Plain HTTP on `addr`, filesystem storage under `storage`, no access log.
fn config_text(storage: &Path, addr: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  \
         filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n  secret: rundmc-bench\n",
        storage.display()
    )
}
