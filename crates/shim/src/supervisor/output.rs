//! `output.log`: the process's stdout and stderr as CRI records, appended in
//! batches and rotated by size (`output.log` → `output.log.1` → ...), never
//! splitting a record across files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rundmc_shim::cri::{LineSplitter, MAX_LINE, Stream, format_record};
use rundmc_shim::protocol::{OUTPUT_LOG, must_rotate, rotation_renames};

/// Writes records to `output.log`, rotating it.
pub struct LogWriter {
    dir: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    max_files: u32,
    batch: Vec<u8>,
    splitters: [LineSplitter; 2],
}

impl LogWriter {
    /// Opens (creating) `dir/output.log` for appending.
    pub fn open(dir: &Path, max_bytes: u64, max_files: u32) -> io::Result<Self> {
        let file = open_log(dir, false)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            dir: dir.to_owned(),
            file,
            size,
            max_bytes,
            max_files,
            batch: Vec::new(),
            splitters: [LineSplitter::new(MAX_LINE), LineSplitter::new(MAX_LINE)],
        })
    }

    /// Appends what the process wrote on `stream`, timestamped now.
    pub fn append(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let ts = now();
        let mut splitter =
            std::mem::replace(&mut self.splitters[index(stream)], LineSplitter::new(1));
        let mut result = Ok(());
        splitter.push(data, &mut |content, partial| {
            if result.is_ok() {
                result = self.record(&ts, stream, partial, content);
            }
        });
        self.splitters[index(stream)] = splitter;
        result?;
        self.flush()
    }

    /// Ends `stream`: an unterminated last line becomes a `P` record.
    pub fn finish(&mut self, stream: Stream) -> io::Result<()> {
        let ts = now();
        let mut splitter =
            std::mem::replace(&mut self.splitters[index(stream)], LineSplitter::new(1));
        let mut result = Ok(());
        splitter.finish(&mut |content, partial| {
            if result.is_ok() {
                result = self.record(&ts, stream, partial, content);
            }
        });
        self.splitters[index(stream)] = splitter;
        result?;
        self.flush()
    }

    fn record(
        &mut self,
        ts: &str,
        stream: Stream,
        partial: bool,
        content: &[u8],
    ) -> io::Result<()> {
        let len = (ts.len() + content.len() + 11) as u64;
        if must_rotate(self.size + self.batch.len() as u64, len, self.max_bytes) {
            self.flush()?;
            self.rotate()?;
        }
        format_record(&mut self.batch, ts, stream, partial, content);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.batch.is_empty() {
            self.file.write_all(&self.batch)?;
            self.size += self.batch.len() as u64;
            self.batch.clear();
        }
        if self.batch.capacity() > 2 * MAX_LINE {
            self.batch.shrink_to(MAX_LINE);
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        for (from, to) in rotation_renames(self.max_files) {
            match fs::rename(self.dir.join(&from), self.dir.join(&to)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // With one file kept there is nothing to rename to: start it afresh.
        self.file = open_log(&self.dir, self.max_files <= 1)?;
        self.size = 0;
        Ok(())
    }
}

fn open_log(dir: &Path, truncate: bool) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true);
    if truncate {
        opts.write(true).truncate(true);
    } else {
        opts.append(true);
    }
    opts.open(dir.join(OUTPUT_LOG))
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// Now, RFC 3339 with nanoseconds, UTC.
pub fn now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}
