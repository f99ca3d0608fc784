//! `rundmc cp NAME:SRC DEST` and `rundmc cp SRC NAME:DEST`: tar streams
//! through the agent's archive endpoints. Modes and owners are kept (owners
//! when run as root); unpacking here refuses any entry that would land
//! outside the destination, through `..` or a symlink; in the container,
//! the agent's stream resolves paths inside the container's root.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Request;
use hyper::body::Frame;

use super::client::{Client, ClientError};
use super::{container_path, escape};

/// `rundmc cp SRC DEST`.
#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// `NAME:/path` in a container, or a local path (`-`: a tar on stdin).
    pub source: String,
    /// `NAME:/path` in a container, or a local path (`-`: a tar to stdout).
    pub dest: String,
}

/// `NAME:PATH` split, unless `s` is a local path (`/..`, `./..`, no `:`).
pub fn remote(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    s.split_once(':')
        .filter(|(n, p)| !n.is_empty() && !p.is_empty())
}

/// Where in the container an upload goes: the directory to unpack in and
/// the name the source gets there (pure). `DEST/` keeps the source's name.
pub fn upload_target(src: &Path, dest: &str) -> (String, PathBuf) {
    let keep = || {
        src.file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| ".".into())
    };
    if dest.ends_with('/') {
        return (dest.to_string(), keep());
    }
    let d = Path::new(dest);
    match (d.parent(), d.file_name()) {
        (Some(parent), Some(name)) => (parent.to_string_lossy().into_owned(), PathBuf::from(name)),
        _ => (dest.to_string(), keep()),
    }
}

fn failed(client: &Client, e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol {
        path: client.socket().to_owned(),
        message: e.to_string(),
    }
}

/// `rundmc cp`.
pub async fn cp(client: &Client, args: &CpArgs) -> Result<(), ClientError> {
    match (remote(&args.source), remote(&args.dest)) {
        (Some((name, path)), None) => download(client, name, path, &args.dest).await,
        (None, Some((name, path))) => upload(client, &args.source, name, path).await,
        _ => Err(failed(
            client,
            "cp: exactly one of SRC and DEST must be NAME:/path",
        )),
    }
}

async fn download(client: &Client, name: &str, path: &str, dest: &str) -> Result<(), ClientError> {
    let url = format!("{}/archive?path={}", container_path(name), escape(path));
    let mut body = client.get(&url).await?.into_body();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(8);
    let dest = dest.to_string();
    let contents = path.ends_with('/');
    let unpacker =
        tokio::task::spawn_blocking(move || unpack(ChannelReader::new(rx), &dest, contents));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed(client, e))?;
        if let Ok(data) = frame.into_data()
            && tx.send(data).is_err()
        {
            break; // the unpacker failed: its error says why
        }
    }
    drop(tx);
    unpacker
        .await
        .map_err(|e| failed(client, e))?
        .map_err(|e| failed(client, e))
}

/// Unpack the archive at `dest`: into it when it is a directory (or with
/// `contents`), else as it.
fn unpack(input: impl Read, dest: &str, contents: bool) -> std::io::Result<()> {
    if dest == "-" {
        let mut input = input;
        std::io::copy(&mut input, &mut std::io::stdout().lock())?;
        return Ok(());
    }
    let dest = Path::new(dest);
    if contents || dest.is_dir() {
        std::fs::create_dir_all(dest)?;
        return archive(input).unpack(dest);
    }
    // Unpacked beside it first, then renamed into place: one entry named
    // as the source is.
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".rundmc-cp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = archive(input).unpack(&tmp).and_then(|()| {
        let mut entries = std::fs::read_dir(&tmp)?;
        let Some(only) = entries.next().transpose()? else {
            return Err(std::io::Error::other("the archive was empty"));
        };
        std::fs::rename(only.path(), dest)
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn archive<R: Read>(input: R) -> tar::Archive<R> {
    let mut a = tar::Archive::new(input);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(nix::unistd::geteuid().is_root());
    a.set_overwrite(true);
    a
}

async fn upload(client: &Client, src: &str, name: &str, dest: &str) -> Result<(), ClientError> {
    let (dir, entry) = match src {
        "-" => (dest.to_string(), PathBuf::new()),
        _ => upload_target(Path::new(src), dest),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let src_path = PathBuf::from(src);
    std::thread::spawn(move || {
        let mut w = ChannelWriter(tx.clone());
        let packed = match src_path.as_os_str() == "-" {
            true => std::io::copy(&mut std::io::stdin().lock(), &mut w).map(drop),
            false => pack(&mut w, &src_path, &entry),
        };
        if let Err(e) = packed {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((chunk.map(Frame::data), rx))
    });
    let url = format!("{}/archive?path={}", container_path(name), escape(&dir));
    let req = Request::put(url)
        .header(hyper::header::HOST, "rundmc")
        .header(hyper::header::CONTENT_TYPE, "application/x-tar")
        .body(StreamBody::new(stream))
        .map_err(|e| failed(client, e))?;
    client.send(req).await.map(drop)
}

/// `src` as one entry named `name` (a directory with everything in it;
/// symlinks as symlinks).
fn pack(out: &mut impl std::io::Write, src: &Path, name: &Path) -> std::io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    match std::fs::symlink_metadata(src)?.is_dir() {
        true => b.append_dir_all(name, src)?,
        false => b.append_path_with_name(src, name)?,
    }
    b.finish()
}

/// Chunks into the upload body.
struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The download's chunks as a `Read`.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl ChannelReader {
    fn new(rx: std::sync::mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx,
            chunk: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.recv() {
                Ok(c) => self.chunk = c,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_side_is_the_container() {
        assert_eq!(remote("web:/etc"), Some(("web", "/etc")));
        assert_eq!(remote("team/web:/etc"), Some(("team/web", "/etc")));
        assert_eq!(remote("./a:b"), None);
        assert_eq!(remote("/tmp/x"), None);
        assert_eq!(remote("file"), None);
    }

    #[test]
    fn an_upload_is_named_as_its_destination_unless_that_ends_in_a_slash() {
        let src = Path::new("./dir/a.txt");
        assert_eq!(
            upload_target(src, "/tmp/b.txt"),
            ("/tmp".into(), "b.txt".into())
        );
        assert_eq!(
            upload_target(src, "/tmp/"),
            ("/tmp/".into(), "a.txt".into())
        );
    }
}
