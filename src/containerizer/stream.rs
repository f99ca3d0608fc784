//! `stream_in` and `stream_out`: tar streams into and out of a path inside
//! a running container, through a `rundmc nstar` child process that joins
//! the container's mount namespace (see [`super::nstar`]).

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;

use super::lifecycle::can_exec;
use super::rootfs::Mounter;
use super::users;
use super::{Containerizer, ContainerizerError, ErrorKind, Result};
use crate::api::Handle;
use crate::runtime::OciRuntime;

/// Largest error message kept from nstar's stderr.
const MAX_STDERR: u64 = 64 << 10;

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// Unpack the tar stream `tar` into `path` in the container, as `user`
    /// (root, keeping the archive's owners, when `None`).
    pub async fn stream_in(
        &self,
        handle: &Handle,
        path: &str,
        user: Option<&str>,
        mut tar: impl AsyncRead + Unpin,
    ) -> Result<()> {
        let mut child = self.nstar(handle, "in", path, user).await?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| self.stream_err(handle, path, "no stdin"))?;
        let copied = tokio::io::copy(&mut tar, &mut stdin).await;
        drop(stdin);
        let finished = self.finish(handle, path, child).await;
        copied.map_err(|e| self.stream_err(handle, path, &e.to_string()))?;
        finished
    }

    /// Write `path` in the container as a tar stream into `out`.
    pub async fn stream_out(
        &self,
        handle: &Handle,
        path: &str,
        user: Option<&str>,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<()> {
        let mut child = self.nstar(handle, "out", path, user).await?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| self.stream_err(handle, path, "no stdout"))?;
        let copied = tokio::io::copy(&mut stdout, out).await;
        let flushed = out.flush().await;
        let finished = self.finish(handle, path, child).await;
        finished?;
        copied
            .and(flushed)
            .map(|_| ())
            .map_err(|e| self.stream_err(handle, path, &e.to_string()))
    }

    async fn nstar(
        &self,
        handle: &Handle,
        dir: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<tokio::process::Child> {
        let state = self
            .runtime
            .state(handle.as_str())
            .await
            .map_err(Self::runtime_err(handle))?;
        let (Some(pid), true) = (state.pid, can_exec(Some(state.status))) else {
            return Err(ContainerizerError::at(
                handle,
                ErrorKind::WrongState {
                    verb: "stream",
                    status: Some(state.status),
                },
            ));
        };
        let mut cmd = Command::new(&self.config.nstar_binary);
        cmd.args(["nstar", dir, "--pid", &pid.to_string(), "--path", path]);
        if let Some(user) = user {
            let rootfs = self.depot.paths(handle).rootfs();
            let u = users::resolve(&rootfs, Some(user))
                .map_err(|source| ContainerizerError::at(handle, ErrorKind::User { source }))?;
            cmd.args(["--user", &format!("{}:{}", u.uid, u.gid)]);
        }
        let (stdin, stdout) = if dir == "in" {
            (Stdio::piped(), Stdio::null())
        } else {
            (Stdio::null(), Stdio::piped())
        };
        cmd.stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.spawn()
            .map_err(|e| self.stream_err(handle, path, &format!("cannot run nstar: {e}")))
    }

    async fn finish(
        &self,
        handle: &Handle,
        path: &str,
        mut child: tokio::process::Child,
    ) -> Result<()> {
        let mut stderr = String::new();
        if let Some(err) = child.stderr.take() {
            let _ = err.take(MAX_STDERR).read_to_string(&mut stderr).await;
        }
        let status = child
            .wait()
            .await
            .map_err(|e| self.stream_err(handle, path, &e.to_string()))?;
        if status.success() {
            Ok(())
        } else {
            Err(self.stream_err(handle, path, stderr.trim()))
        }
    }

    fn stream_err(&self, handle: &Handle, path: &str, message: &str) -> ContainerizerError {
        ContainerizerError::at(
            handle,
            ErrorKind::Stream {
                path: path.to_string(),
                message: message.to_string(),
            },
        )
    }
}
