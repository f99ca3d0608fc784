//! `init_exec`: commands run by the container's own init, for exec probes
//! and hooks: the listening socket handed to the init at create
//! ([`listen`]); the request, built from the very OCI process a runtime
//! exec would be given ([`encode`], pure); one call over the socket
//! ([`call`]), whose reply is the command's output and how it ended.
//!
//! No runtime, no supervisor and no process directory per command. The
//! command's confinement is inherited from the init rather than rebuilt
//! (see `rundmc_init`'s exec service): its namespaces, cgroup, seccomp
//! filter, LSM profile, no_new_privs, rlimits and capability bounding set
//! are the container's because the init's are. Only the user is set, to the
//! one the runtime's exec would have used.
//!
//! The socket is on the host, in the bundle directory (mode 0600): nothing
//! in the container can reach its path, and the init also refuses a peer
//! that its pid namespace can see.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use oci_spec::runtime::Process;

use crate::api::{ContainerSpec, SeccompProfileType};
use rundmc_init::{self as protocol, Kind, Stage};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// At most this much of a command's output is kept.
pub const MAX_OUTPUT: usize = 1024;
/// How long past the command's own timeout the agent waits for the init's
/// trailer (the init kills the command at its timeout and sweeps).
const REPLY_GRACE: Duration = Duration::from_secs(2);

/// Why a command could not be run through the init (the caller then uses
/// the runtime's exec).
#[derive(Debug, Error)]
pub enum InitExecError {
    /// The process does not fit the request's limits.
    #[error("the command does not fit init's request: {what}")]
    TooLarge {
        /// Which part.
        what: &'static str,
    },
    /// A string of the process holds a NUL byte.
    #[error("{what} holds a NUL byte")]
    Nul {
        /// Which part.
        what: &'static str,
    },
    /// The socket could not be reached: no init serves it (a container made
    /// before this existed, or an init that stopped serving).
    #[error("connecting to {path}: {source}")]
    Unreachable {
        /// The socket.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The connection failed midway.
    #[error("talking to the container's init: {source}")]
    Io {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The reply ended without a trailer.
    #[error("the container's init ended the reply without saying how the command ended")]
    NoTrailer,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
    /// It ran past its timeout and was killed.
    TimedOut,
    /// Its setup failed at `stage` with `errno`.
    SetupFailed {
        /// Which step.
        stage: Option<Stage>,
        /// The errno.
        errno: i32,
    },
    /// It could not be executed.
    ExecFailed(i32),
    /// The init could not read the request.
    BadRequest,
}

/// A command's output (its first [`MAX_OUTPUT`] bytes) and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// stdout and stderr, interleaved as written.
    pub output: Vec<u8>,
    /// How it ended.
    pub end: End,
}

/// Whether the init of a container made from `spec` is given the socket.
/// Not under a `Localhost` seccomp profile: serving makes system calls
/// (`signalfd4`, `ppoll`, `accept4`, `clone`...) that the built-in profile
/// allows but a profile of the user's own may not, and one that kills on a
/// refused call would kill PID 1. Such a container's probes take the
/// runtime's exec.
pub fn init_may_serve(spec: &ContainerSpec) -> bool {
    let profile = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref());
    !profile.is_some_and(|p| p.type_ == SeccompProfileType::Localhost)
}

/// Bind the socket at `path` (replacing a stale one) for the init to serve;
/// `None`, with a warning, when it cannot be (commands then go through the
/// runtime's exec).
pub fn listen(path: &Path) -> Option<OwnedFd> {
    let _ = std::fs::remove_file(path);
    let bound = std::os::unix::net::UnixListener::bind(path).and_then(|l| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(l)
    });
    match bound {
        Ok(listener) => Some(OwnedFd::from(listener)),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error,
                "cannot bind the init's socket: exec probes will use the runtime's exec");
            None
        }
    }
}

/// The request for `process`, killed by the init after `timeout`.
pub fn encode(process: &Process, timeout: Duration) -> Result<Vec<u8>, InitExecError> {
    let user = process.user();
    let groups = user.additional_gids().clone().unwrap_or_default();
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    limit("groups", groups.len(), protocol::MAX_GROUPS)?;
    limit("args", args.len(), protocol::MAX_ARGS)?;
    limit("env", env.len(), protocol::MAX_ENV)?;
    if args.is_empty() {
        return Err(InitExecError::TooLarge { what: "args" });
    }
    let timeout_ms = u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX)
        .max(1);
    let mut body = Vec::with_capacity(256);
    for v in [
        user.uid(),
        user.gid(),
        groups.len() as u32,
        timeout_ms,
        args.len() as u32,
        env.len() as u32,
    ] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    for g in &groups {
        body.extend_from_slice(&g.to_le_bytes());
    }
    push_string(&mut body, "cwd", &process.cwd().to_string_lossy())?;
    for a in &args {
        push_string(&mut body, "args", a)?;
    }
    for e in &env {
        push_string(&mut body, "env", e)?;
    }
    limit("the request", body.len(), protocol::MAX_BODY)?;
    let mut request = Vec::with_capacity(protocol::HEADER_LEN + body.len());
    request.extend_from_slice(&protocol::MAGIC);
    request.extend_from_slice(&(body.len() as u32).to_le_bytes());
    request.extend_from_slice(&body);
    Ok(request)
}

fn limit(what: &'static str, n: usize, max: usize) -> Result<(), InitExecError> {
    match n <= max {
        true => Ok(()),
        false => Err(InitExecError::TooLarge { what }),
    }
}

fn push_string(body: &mut Vec<u8>, what: &'static str, s: &str) -> Result<(), InitExecError> {
    if s.as_bytes().contains(&0) {
        return Err(InitExecError::Nul { what });
    }
    body.extend_from_slice(s.as_bytes());
    body.push(0);
    Ok(())
}

/// What a reply's bytes say: the output before the trailer (cut to
/// [`MAX_OUTPUT`]) and the end the trailer names.
#[derive(Debug, Default)]
pub struct ReplyReader {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl ReplyReader {
    /// Take the next bytes of the reply.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = (MAX_OUTPUT + protocol::TRAILER_LEN).saturating_sub(self.head.len());
        let (head, rest) = bytes.split_at(room.min(bytes.len()));
        self.head.extend_from_slice(head);
        self.tail.extend_from_slice(rest);
        let excess = self.tail.len().saturating_sub(protocol::TRAILER_LEN);
        self.tail.drain(..excess);
    }

    /// The reply, once the connection ended.
    pub fn finish(mut self) -> Result<Reply, InitExecError> {
        let mut all = std::mem::take(&mut self.head);
        all.extend_from_slice(&self.tail);
        let split = all
            .len()
            .checked_sub(protocol::TRAILER_LEN)
            .ok_or(InitExecError::NoTrailer)?;
        let mut trailer = [0u8; protocol::TRAILER_LEN];
        trailer.copy_from_slice(&all[split..]);
        let (kind, value) = protocol::read_trailer(&trailer).ok_or(InitExecError::NoTrailer)?;
        all.truncate(split.min(MAX_OUTPUT));
        Ok(Reply {
            output: all,
            end: end_of(kind, value),
        })
    }
}

fn end_of(kind: Kind, value: i32) -> End {
    match kind {
        Kind::Exited => End::Exited(value),
        Kind::Signaled => End::Signaled(value),
        Kind::TimedOut => End::TimedOut,
        Kind::SetupFailed => End::SetupFailed {
            stage: Stage::from_u8((value >> 16) as u8),
            errno: value & 0xffff,
        },
        Kind::ExecFailed => End::ExecFailed(value),
        Kind::BadRequest => End::BadRequest,
    }
}

/// Send `request` to the init serving `socket` and read the reply; a reply
/// that has not ended [`REPLY_GRACE`] after `timeout` is a timeout.
pub async fn call(
    socket: &Path,
    request: &[u8],
    timeout: Duration,
) -> Result<Reply, InitExecError> {
    let mut stream =
        UnixStream::connect(socket)
            .await
            .map_err(|source| InitExecError::Unreachable {
                path: socket.to_path_buf(),
                source,
            })?;
    let io = |source| InitExecError::Io { source };
    stream.write_all(request).await.map_err(io)?;
    stream.shutdown().await.map_err(io)?;
    let read = async {
        let mut reader = ReplyReader::default();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                return reader.finish();
            }
            reader.push(&buf[..n]);
        }
    };
    match tokio::time::timeout(timeout + REPLY_GRACE, read).await {
        Ok(reply) => reply,
        Err(_) => Ok(Reply {
            output: Vec::new(),
            end: End::TimedOut,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::User;

    fn process(args: &[&str]) -> Process {
        let mut p = Process::default();
        p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        p.set_env(Some(vec!["PATH=/bin".into(), "A=1".into()]));
        p.set_cwd("/srv".into());
        let mut user = User::default();
        user.set_uid(1000);
        user.set_gid(2000);
        user.set_additional_gids(Some(vec![10, 20]));
        p.set_user(user);
        p
    }

    #[test]
    fn the_init_serves_unless_the_seccomp_profile_is_the_users_own() {
        use crate::api::{SeccompProfile, SecurityContext};
        let with = |type_| ContainerSpec {
            security_context: Some(SecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_,
                    localhost_profile: None,
                }),
                ..SecurityContext::default()
            }),
            ..ContainerSpec::default()
        };
        assert!(init_may_serve(&ContainerSpec::default()));
        assert!(init_may_serve(&with(SeccompProfileType::RuntimeDefault)));
        assert!(init_may_serve(&with(SeccompProfileType::Unconfined)));
        assert!(!init_may_serve(&with(SeccompProfileType::Localhost)));
    }

    #[test]
    fn a_request_carries_the_process_as_the_init_decodes_it() {
        let bytes = encode(&process(&["cat", "/x"]), Duration::from_millis(1500)).unwrap();
        let mut header = [0u8; protocol::HEADER_LEN];
        header.copy_from_slice(&bytes[..protocol::HEADER_LEN]);
        let len = protocol::body_len(&header).unwrap();
        assert_eq!(len, bytes.len() - protocol::HEADER_LEN);
        let r = protocol::parse(&bytes[protocol::HEADER_LEN..]).unwrap();
        assert_eq!((r.uid, r.gid, r.timeout_ms), (1000, 2000, 1500));
        assert_eq!((r.group(0), r.group(1), r.argc(), r.envc()), (10, 20, 2, 2));
        let strings: Vec<&[u8]> = r.strings().collect();
        assert_eq!(
            strings,
            [&b"/srv\0"[..], b"cat\0", b"/x\0", b"PATH=/bin\0", b"A=1\0"]
        );
    }

    #[test]
    fn what_does_not_fit_is_refused_so_the_runtime_exec_takes_it() {
        let many: Vec<String> = (0..=protocol::MAX_ARGS).map(|i| i.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let t = Duration::from_secs(1);
        assert!(matches!(
            encode(&process(&many), t),
            Err(InitExecError::TooLarge { what: "args" })
        ));
        assert!(matches!(
            encode(&process(&["a\0b"]), t),
            Err(InitExecError::Nul { what: "args" })
        ));
        assert!(matches!(
            encode(&process(&[]), t),
            Err(InitExecError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_reply_is_its_output_then_its_trailer_in_any_chunks() {
        let mut bytes = b"hello\n".to_vec();
        bytes.extend_from_slice(&protocol::trailer(Kind::Exited, 3));
        for cut in 0..bytes.len() {
            let mut r = ReplyReader::default();
            r.push(&bytes[..cut]);
            r.push(&bytes[cut..]);
            let reply = r.finish().unwrap();
            assert_eq!(reply.output, b"hello\n");
            assert_eq!(reply.end, End::Exited(3));
        }
    }

    #[test]
    fn long_output_is_cut_and_the_trailer_still_read() {
        let mut r = ReplyReader::default();
        for _ in 0..100 {
            r.push(&[b'x'; 1000]);
        }
        r.push(&protocol::trailer(Kind::Signaled, 9));
        let reply = r.finish().unwrap();
        assert_eq!(reply.output.len(), MAX_OUTPUT);
        assert_eq!(reply.end, End::Signaled(9));
        let mut setup = ReplyReader::default();
        setup.push(&protocol::trailer(
            Kind::SetupFailed,
            (Stage::Uid as i32) << 16 | 1,
        ));
        assert_eq!(
            setup.finish().unwrap().end,
            End::SetupFailed {
                stage: Some(Stage::Uid),
                errno: 1
            }
        );
        let mut cut = ReplyReader::default();
        cut.push(b"RDX");
        assert!(matches!(cut.finish(), Err(InitExecError::NoTrailer)));
    }
}
