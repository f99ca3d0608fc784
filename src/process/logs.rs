//! Reading a process's `output.log` (and its rotated files, oldest first),
//! and following it: new records are delivered as the supervisor writes
//! them, woken by inotify on the log directory and by the supervisor's
//! pidfd, never by sleep-polling. Each reader is given the process
//! directory; the log is where its supervisor recorded (`shim.json`).
//! A follow ends when the process has ended and every record is delivered.
//!
//! Rotation: a follower finishes the file it holds before moving to the new
//! `output.log`; a follower that falls more than one whole rotation behind
//! skips the files in between (as `kubectl logs -f` does).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{RecursiveMode, Watcher};
use rundmc_shim::cri::{Stream, parse_record};
use rundmc_shim::protocol::{EXIT_JSON, OUTPUT_LOG};
use tokio::sync::Notify;

use super::ProcessError;
use super::shim::{log_dir_in, log_dir_of, open_live, read_record};
use crate::pidfd::PidFd;

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the supervisor read it, RFC 3339 UTC.
    pub timestamp: String,
    /// stdout or stderr.
    pub stream: Stream,
    /// The line goes on in the next record of this stream.
    pub partial: bool,
    /// The content, without newline.
    pub content: Vec<u8>,
}

/// Where a follow starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowFrom {
    /// Every record still kept, oldest first.
    Start,
    /// Only records written from now on.
    End,
}

/// The log files of the process in `dir` (in its log directory), oldest
/// first.
pub fn kept_files(dir: &Path) -> Result<Vec<PathBuf>, ProcessError> {
    log_files(&log_dir_of(dir))
}

/// The log files in the log directory `dir`, oldest first: `output.log.N`
/// .. `.1`, `output.log`.
pub fn log_files(dir: &Path) -> Result<Vec<PathBuf>, ProcessError> {
    let entries = std::fs::read_dir(dir).map_err(ProcessError::io(dir))?;
    let mut rotated: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let n = rotation_number(name.to_str()?)?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(dir.join(OUTPUT_LOG));
    Ok(files)
}

fn rotation_number(name: &str) -> Option<u32> {
    name.strip_prefix(OUTPUT_LOG)?
        .strip_prefix('.')?
        .parse()
        .ok()
}

/// Splits complete lines off the front of `buf` and parses them; an
/// unfinished last line stays in `buf`. Lines that are not records are skipped.
fn take_lines(buf: &mut Vec<u8>, out: &mut VecDeque<LogLine>) {
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return;
    };
    for line in buf[..end].split(|b| *b == b'\n') {
        if let Some(r) = parse_record(line) {
            out.push_back(LogLine {
                timestamp: r.timestamp.to_owned(),
                stream: r.stream,
                partial: r.partial,
                content: r.content.to_vec(),
            });
        }
    }
    buf.drain(..=end);
}

/// Reads every record kept now of the process in `dir`, oldest first. All
/// files are opened before reading, so a rotation meanwhile neither loses
/// nor repeats a file.
pub fn read_all(dir: &Path) -> Result<Vec<LogLine>, ProcessError> {
    let mut files = Vec::new();
    for path in kept_files(dir)? {
        match File::open(&path) {
            Ok(f) => files.push((path, f)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => return Err(ProcessError::Io { path, source }),
        }
    }
    let mut lines = VecDeque::new();
    for (path, mut file) in files {
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(ProcessError::io(&path))?;
        take_lines(&mut buf, &mut lines);
    }
    Ok(lines.into())
}

/// Delivers records as they are written; see the module doc.
pub struct Follower {
    /// The process directory (its exit record).
    dir: PathBuf,
    /// Its log directory.
    logs: PathBuf,
    older: VecDeque<(PathBuf, File)>,
    current: File,
    buf: Vec<u8>,
    lines: VecDeque<LogLine>,
    wake: Arc<Notify>,
    shim: Option<PidFd>,
    finished: bool,
    _watcher: notify::RecommendedWatcher,
}

impl Follower {
    /// Starts following the log of the process in `dir`.
    pub fn new(dir: &Path, from: FollowFrom) -> Result<Follower, ProcessError> {
        let record = read_record(dir)?;
        let logs = log_dir_in(dir, record.as_ref());
        let wake = Arc::new(Notify::new());
        let waker = wake.clone();
        let mut watcher =
            notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
                waker.notify_one()
            })
            .map_err(|source| ProcessError::Watch {
                path: dir.to_owned(),
                source,
            })?;
        watcher
            .watch(&logs, RecursiveMode::NonRecursive)
            .map_err(|source| ProcessError::Watch {
                path: logs.clone(),
                source,
            })?;
        let shim = record.and_then(|r| open_live(&r));
        let current_path = logs.join(OUTPUT_LOG);
        let mut current = open_log(&current_path)?;
        let mut older = VecDeque::new();
        match from {
            FollowFrom::Start => {
                for path in log_files(&logs)?.into_iter().filter(|p| *p != current_path) {
                    if let Ok(f) = File::open(&path) {
                        older.push_back((path, f));
                    }
                }
            }
            FollowFrom::End => {
                current
                    .seek(SeekFrom::End(0))
                    .map_err(ProcessError::io(&current_path))?;
            }
        }
        Ok(Follower {
            dir: dir.to_owned(),
            logs,
            older,
            current,
            buf: Vec::new(),
            lines: VecDeque::new(),
            wake,
            shim,
            finished: false,
            _watcher: watcher,
        })
    }

    /// The next record; `None` once the process has ended and all its
    /// records were delivered.
    pub async fn next(&mut self) -> Option<Result<LogLine, ProcessError>> {
        loop {
            if let Some(line) = self.lines.pop_front() {
                return Some(Ok(line));
            }
            if self.finished {
                return None;
            }
            match self.advance() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return Some(Err(e)),
            }
            self.wait_for_change().await;
        }
    }

    /// Reads what is there; `Ok(false)` when nothing new was found.
    fn advance(&mut self) -> Result<bool, ProcessError> {
        if let Some((path, mut file)) = self.older.pop_front() {
            file.read_to_end(&mut self.buf)
                .map_err(ProcessError::io(&path))?;
            take_lines(&mut self.buf, &mut self.lines);
            self.buf.clear();
            return Ok(true);
        }
        // Seen before reading, so nothing written before the exit is missed.
        let ended =
            self.dir.join(EXIT_JSON).exists() || self.shim.as_ref().is_none_or(|s| s.has_exited());
        let path = self.logs.join(OUTPUT_LOG);
        let n = self
            .current
            .read_to_end(&mut self.buf)
            .map_err(ProcessError::io(&path))?;
        take_lines(&mut self.buf, &mut self.lines);
        if n > 0 {
            return Ok(true);
        }
        if self.rotated(&path)? {
            // The supervisor finished the old file before renaming it.
            self.current
                .read_to_end(&mut self.buf)
                .map_err(ProcessError::io(&path))?;
            take_lines(&mut self.buf, &mut self.lines);
            self.buf.clear();
            self.current = open_log(&path)?;
            return Ok(true);
        }
        self.finished = ended;
        Ok(ended)
    }

    fn rotated(&self, path: &Path) -> Result<bool, ProcessError> {
        let ours = self
            .current
            .metadata()
            .map_err(ProcessError::io(path))?
            .ino();
        match std::fs::metadata(path) {
            Ok(m) => Ok(m.ino() != ours),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ProcessError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Waits for a change in the directory or the supervisor's end.
    async fn wait_for_change(&mut self) {
        let wake = self.wake.clone();
        match &self.shim {
            Some(shim) if !shim.has_exited() => {
                tokio::select! {
                    _ = wake.notified() => {}
                    r = shim.exited() => if r.is_err() { self.shim = None },
                }
            }
            _ => wake.notified().await,
        }
    }
}

fn open_log(path: &Path) -> Result<File, ProcessError> {
    File::open(path).map_err(ProcessError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_complete_lines_and_keeps_the_rest() {
        let mut buf = b"T stdout F one\nT stderr P two\nbad line\nT stdout F thr".to_vec();
        let mut out = VecDeque::new();
        take_lines(&mut buf, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].content, b"one");
        assert!(out[1].partial && out[1].stream == Stream::Stderr);
        assert_eq!(buf, b"T stdout F thr");
    }

    #[test]
    fn numbers_rotated_files() {
        assert_eq!(rotation_number("output.log.3"), Some(3));
        assert_eq!(rotation_number("output.log"), None);
        assert_eq!(rotation_number("output.log.x"), None);
        assert_eq!(rotation_number(".output.log.1"), None);
    }
}
