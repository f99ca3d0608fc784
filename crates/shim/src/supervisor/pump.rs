//! The shim's one poll loop: it drains the process's stdout and stderr into
//! the log, copies the `stdin` fifo into the process's stdin, carries out
//! `control` commands through the pidfd, and returns when the watched pidfd
//! (the runtime's, then the process's) says its process has exited.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rundmc_shim::cri::Stream;
use rundmc_shim::protocol::Command;

use super::output::LogWriter;
use super::sys;

const READ_BUF: usize = 32 * 1024;
const MAX_COMMAND: usize = 4096;

/// The descriptors the loop serves.
pub struct Pump {
    pub log: LogWriter,
    pub outputs: [(Stream, Option<OwnedFd>); 2],
    pub control: Option<OwnedFd>,
    pub stdin: Option<StdinRelay>,
    control_buf: Vec<u8>,
    buf: Vec<u8>,
    /// Output lost to a log that could not be written (a full disk), and
    /// whether the last write failed.
    lost_bytes: u64,
    losing: bool,
}

/// Copies the `stdin` fifo into the pipe that is the process's stdin. The
/// first writer's close ends it (the pipe is closed and the process sees
/// EOF), unless the shim holds the fifo read-write (`--keep-stdin-open`):
/// then no close ends it, and stdin lasts as long as the process.
pub struct StdinRelay {
    pub fifo: OwnedFd,
    pub pipe: OwnedFd,
    pending: Vec<u8>,
}

impl StdinRelay {
    pub fn new(fifo: OwnedFd, pipe: OwnedFd) -> Self {
        StdinRelay {
            fifo,
            pipe,
            pending: Vec::new(),
        }
    }
}

// Slots in the pollfd array.
const WATCHED: usize = 0;
const OUT: usize = 1;
const ERR: usize = 2;
const CONTROL: usize = 3;
const STDIN_FIFO: usize = 4;
const STDIN_PIPE: usize = 5;

impl Pump {
    pub fn new(
        log: LogWriter,
        out: OwnedFd,
        err: OwnedFd,
        control: OwnedFd,
        stdin: Option<StdinRelay>,
    ) -> Self {
        Pump {
            log,
            outputs: [(Stream::Stdout, Some(out)), (Stream::Stderr, Some(err))],
            control: Some(control),
            stdin,
            control_buf: Vec::new(),
            buf: vec![0; READ_BUF],
            lost_bytes: 0,
            losing: false,
        }
    }

    /// A log write that failed is output lost, never a reason to stop
    /// reading: the process must not block on a full pipe nor get SIGPIPE.
    /// The first loss, and the first write after, are told in shim.log.
    fn logged(&mut self, written: io::Result<()>, len: usize) {
        match written {
            Err(e) => {
                if !self.losing {
                    eprintln!(
                        "rundmc-shim: cannot write the log ({e}); dropping output until it can be"
                    );
                }
                self.losing = true;
                self.lost_bytes += len as u64;
            }
            Ok(()) if self.losing => {
                eprintln!(
                    "rundmc-shim: the log is written again; {} bytes of output were lost",
                    self.lost_bytes
                );
                self.losing = false;
                self.lost_bytes = 0;
            }
            Ok(()) => {}
        }
    }

    /// Serves until `watched` is readable. With `process`, also serves
    /// control commands (aimed at it) and stdin.
    pub fn run_until(
        &mut self,
        watched: BorrowedFd<'_>,
        process: Option<BorrowedFd<'_>>,
    ) -> io::Result<()> {
        loop {
            let mut fds = self.pollfds(watched, process.is_some());
            sys::poll(&mut fds)?;
            let ready = |slot: usize| fds[slot].fd >= 0 && fds[slot].revents != 0;
            for (slot, i) in [(OUT, 0), (ERR, 1)] {
                if ready(slot) {
                    self.read_output(i)?;
                }
            }
            if let Some(pidfd) = process {
                if ready(CONTROL) {
                    self.read_control(pidfd);
                }
                if ready(STDIN_FIFO) || ready(STDIN_PIPE) {
                    self.relay_stdin();
                }
            }
            if ready(WATCHED) {
                return Ok(());
            }
        }
    }

    fn pollfds(&self, watched: BorrowedFd<'_>, serve_process: bool) -> [libc::pollfd; 6] {
        let entry = |fd: Option<BorrowedFd<'_>>, events| libc::pollfd {
            fd: fd.map_or(-1, |f| f.as_raw_fd()),
            events,
            revents: 0,
        };
        let out = |i: usize| self.outputs[i].1.as_ref().map(|f| f.as_fd());
        let relay = self.stdin.as_ref().filter(|_| serve_process);
        let (fifo, pipe) = match relay {
            Some(r) if r.pending.is_empty() => (Some(r.fifo.as_fd()), None),
            Some(r) => (None, Some(r.pipe.as_fd())),
            None => (None, None),
        };
        [
            entry(Some(watched), libc::POLLIN),
            entry(out(0), libc::POLLIN),
            entry(out(1), libc::POLLIN),
            entry(
                self.control
                    .as_ref()
                    .filter(|_| serve_process)
                    .map(|f| f.as_fd()),
                libc::POLLIN,
            ),
            entry(fifo, libc::POLLIN),
            entry(pipe, libc::POLLOUT),
        ]
    }

    /// Reads once from output `i`; at end of file ends its stream.
    fn read_output(&mut self, i: usize) -> io::Result<()> {
        let (stream, fd) = &self.outputs[i];
        let stream = *stream;
        let Some(fd) = fd else { return Ok(()) };
        match sys::read(fd.as_fd(), &mut self.buf) {
            Ok(0) => {
                self.outputs[i].1 = None;
                let finished = self.log.finish(stream);
                self.logged(finished, 0);
                Ok(())
            }
            Ok(n) => {
                let written = self.log.append(stream, &self.buf[..n]);
                self.logged(written, n);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(())
            }
            Err(e) => {
                self.outputs[i].1 = None;
                let finished = self.log.finish(stream);
                self.logged(finished, 0);
                Err(e)
            }
        }
    }

    /// Reads what is left in both outputs without waiting for end of file
    /// (children of the process may hold the pipes), then ends both streams.
    pub fn drain(&mut self) -> io::Result<()> {
        for i in 0..2 {
            let stream = self.outputs[i].0;
            while let Some(fd) = &self.outputs[i].1 {
                match sys::read(fd.as_fd(), &mut self.buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let written = self.log.append(stream, &self.buf[..n]);
                        self.logged(written, n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            self.outputs[i].1 = None;
            let finished = self.log.finish(stream);
            self.logged(finished, 0);
        }
        Ok(())
    }

    fn read_control(&mut self, pidfd: BorrowedFd<'_>) {
        let Some(fd) = &self.control else { return };
        let n = match sys::read(fd.as_fd(), &mut self.buf) {
            Ok(n) => n,
            Err(_) => return,
        };
        self.control_buf.extend_from_slice(&self.buf[..n]);
        while let Some(end) = self.control_buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.control_buf.drain(..=end).collect();
            carry_out(&line, pidfd);
        }
        if self.control_buf.len() > MAX_COMMAND {
            eprintln!("rundmc-shim: dropping an over-long control line");
            self.control_buf.clear();
        }
    }

    fn relay_stdin(&mut self) {
        let Some(relay) = &mut self.stdin else { return };
        if relay.pending.is_empty() {
            match sys::read(relay.fifo.as_fd(), &mut self.buf) {
                Ok(0) => {
                    // The writer closed: the process sees end of file.
                    self.stdin = None;
                    return;
                }
                Ok(n) => relay.pending.extend_from_slice(&self.buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    return;
                }
                Err(_) => {
                    self.stdin = None;
                    return;
                }
            }
        }
        match sys::write(relay.pipe.as_fd(), &relay.pending) {
            Ok(n) => {
                relay.pending.drain(..n);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            // The process closed its stdin: close the fifo too, so writers
            // learn it (EPIPE) instead of writing into the void.
            Err(_) => self.stdin = None,
        }
    }
}

fn carry_out(line: &[u8], pidfd: BorrowedFd<'_>) {
    match serde_json::from_slice::<Command>(line) {
        Ok(Command::Signal { signal }) => {
            if let Err(e) = sys::pidfd_send_signal(pidfd, signal) {
                eprintln!("rundmc-shim: signal {signal}: {e}");
            }
        }
        Err(e) => eprintln!("rundmc-shim: bad control line: {e}"),
    }
}
