//! The wire format of rundmc-init's exec service, shared by the agent (which
//! encodes requests and reads outcomes) and the init (which decodes requests
//! and writes outcomes). Pure and `no_std`: nothing here makes a system call.
//!
//! The agent binds a unix socket in the container's bundle directory, on the
//! host, and hands the listening socket to the container's init as its stdin
//! when it creates the container. For each request the agent connects and
//! writes one request; the command's stdout and stderr then come back over
//! the same connection, followed by an 8-byte trailer that says how it ended.
//!
//! A request is [`MAGIC`], the body's length (u32, little-endian), then the
//! body: uid, gid, the count of supplementary groups, the timeout in
//! milliseconds, argc and envc (each a little-endian u32), the groups (u32
//! each), then `argc + envc + 1` NUL-terminated strings: the working
//! directory, the arguments, the environment (`NAME=value`).

#![no_std]

/// First four bytes of every request.
pub const MAGIC: [u8; 4] = *b"RDP1";
/// The largest body init accepts.
pub const MAX_BODY: usize = 32 * 1024;
/// Most supplementary groups in a request.
pub const MAX_GROUPS: usize = 32;
/// Most arguments in a request.
pub const MAX_ARGS: usize = 128;
/// Most environment entries in a request.
pub const MAX_ENV: usize = 256;
/// Bytes in the header: magic and body length.
pub const HEADER_LEN: usize = 8;
/// Bytes in the fixed part of the body, before the groups.
pub const FIXED_LEN: usize = 24;
/// Bytes in the trailer that ends every reply.
pub const TRAILER_LEN: usize = 8;
/// First three bytes of the trailer.
pub const TRAILER_MAGIC: [u8; 3] = *b"RDX";

/// How a request ended: the trailer's fourth byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The command exited; the value is its exit code.
    Exited = 0,
    /// The command was killed by a signal; the value is the signal.
    Signaled = 1,
    /// The command ran past its timeout and was killed.
    TimedOut = 2,
    /// Init could not give the command its user, capabilities, working
    /// directory or stdio; the value is [`Stage`] << 16 | errno.
    SetupFailed = 3,
    /// The command could not be executed; the value is the errno.
    ExecFailed = 4,
    /// The request could not be read or decoded.
    BadRequest = 5,
}

impl Kind {
    /// The kind of a trailer byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Exited,
            1 => Kind::Signaled,
            2 => Kind::TimedOut,
            3 => Kind::SetupFailed,
            4 => Kind::ExecFailed,
            5 => Kind::BadRequest,
            _ => return None,
        })
    }
}

/// Which step of a command's setup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// Setting the supplementary groups.
    Groups = 1,
    /// Setting the group id.
    Gid = 2,
    /// Setting the user id.
    Uid = 3,
    /// Keeping the capabilities across the change of user.
    Caps = 4,
    /// Changing to the working directory.
    Cwd = 5,
    /// Putting the connection on stdin, stdout and stderr.
    Stdio = 6,
}

impl Stage {
    /// The stage of a number.
    pub fn from_u8(b: u8) -> Option<Stage> {
        Some(match b {
            1 => Stage::Groups,
            2 => Stage::Gid,
            3 => Stage::Uid,
            4 => Stage::Caps,
            5 => Stage::Cwd,
            6 => Stage::Stdio,
            _ => return None,
        })
    }
}

/// The trailer for `kind` and `value`.
pub fn trailer(kind: Kind, value: i32) -> [u8; TRAILER_LEN] {
    let v = value.to_le_bytes();
    let m = TRAILER_MAGIC;
    [m[0], m[1], m[2], kind as u8, v[0], v[1], v[2], v[3]]
}

/// The kind and value of a trailer; `None` when it is not one.
pub fn read_trailer(t: &[u8; TRAILER_LEN]) -> Option<(Kind, i32)> {
    if t[..3] != TRAILER_MAGIC {
        return None;
    }
    let kind = Kind::from_u8(t[3])?;
    Some((kind, i32::from_le_bytes([t[4], t[5], t[6], t[7]])))
}

/// The body length a header announces, when the header is one and the
/// length is within [`MAX_BODY`].
pub fn body_len(header: &[u8; HEADER_LEN]) -> Option<usize> {
    if header[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    (FIXED_LEN..=MAX_BODY).contains(&len).then_some(len)
}

/// A decoded request, borrowing the body.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// User id to run as.
    pub uid: u32,
    /// Group id to run as.
    pub gid: u32,
    /// Milliseconds the command may run.
    pub timeout_ms: u32,
    groups: &'a [u8],
    argc: usize,
    envc: usize,
    strings: &'a [u8],
}

impl<'a> Request<'a> {
    /// How many supplementary groups.
    pub fn group_count(&self) -> usize {
        self.groups.len() / 4
    }

    /// Supplementary group `i` (0 past the end).
    pub fn group(&self, i: usize) -> u32 {
        match self.groups.get(i * 4..i * 4 + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0,
        }
    }

    /// The supplementary groups, as the kernel's `gid_t` array reads them
    /// on a little-endian machine.
    pub fn groups_bytes(&self) -> &'a [u8] {
        self.groups
    }

    /// How many arguments.
    pub fn argc(&self) -> usize {
        self.argc
    }

    /// How many environment entries.
    pub fn envc(&self) -> usize {
        self.envc
    }

    /// Every string, each with its NUL: the working directory, then the
    /// arguments, then the environment.
    pub fn strings(&self) -> Strings<'a> {
        Strings { rest: self.strings }
    }
}

/// NUL-terminated strings, each yielded with its NUL.
#[derive(Debug, Clone)]
pub struct Strings<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Strings<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let end = self.rest.iter().position(|&b| b == 0)?;
        let (s, rest) = self.rest.split_at(end + 1);
        self.rest = rest;
        Some(s)
    }
}

fn u32_at(body: &[u8], i: usize) -> u32 {
    match body.get(i * 4..i * 4 + 4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

/// Decode a body: `None` unless every count is within its limit, there is
/// at least one argument, and the strings are exactly the ones announced.
pub fn parse(body: &[u8]) -> Option<Request<'_>> {
    if body.len() < FIXED_LEN || body.len() > MAX_BODY {
        return None;
    }
    let ngroups = u32_at(body, 2) as usize;
    let (argc, envc) = (u32_at(body, 4) as usize, u32_at(body, 5) as usize);
    if ngroups > MAX_GROUPS || argc == 0 || argc > MAX_ARGS || envc > MAX_ENV {
        return None;
    }
    let groups_end = FIXED_LEN + ngroups * 4;
    let groups = body.get(FIXED_LEN..groups_end)?;
    let strings = body.get(groups_end..)?;
    let whole = strings.last() == Some(&0) || strings.is_empty();
    let count = strings.iter().filter(|&&b| b == 0).count();
    if !whole || count != argc + envc + 1 {
        return None;
    }
    Some(Request {
        uid: u32_at(body, 0),
        gid: u32_at(body, 1),
        timeout_ms: u32_at(body, 3),
        groups,
        argc,
        envc,
        strings,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn body(groups: &[u32], strings: &[&str], argc: u32, envc: u32) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [1000, 2000, groups.len() as u32, 5000, argc, envc] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for g in groups {
            b.extend_from_slice(&g.to_le_bytes());
        }
        for s in strings {
            b.extend_from_slice(s.as_bytes());
            b.push(0);
        }
        b
    }

    #[test]
    fn a_request_decodes_to_its_parts() {
        let b = body(&[10, 20], &["/srv", "cat", "/x", "A=1"], 2, 1);
        let r = parse(&b).unwrap();
        assert_eq!((r.uid, r.gid, r.timeout_ms), (1000, 2000, 5000));
        assert_eq!((r.group_count(), r.group(0), r.group(1)), (2, 10, 20));
        let s: Vec<&[u8]> = r.strings().collect();
        assert_eq!(s, [&b"/srv\0"[..], b"cat\0", b"/x\0", b"A=1\0"]);
    }

    #[test]
    fn counts_that_do_not_match_the_strings_are_refused() {
        assert!(parse(&body(&[], &["/", "cat"], 2, 0)).is_none());
        assert!(parse(&body(&[], &["/", "cat", "x"], 1, 0)).is_none());
        assert!(parse(&body(&[], &["/"], 0, 0)).is_none(), "no argument");
        let mut b = body(&[], &["/", "cat"], 1, 0);
        b.push(b'x');
        assert!(parse(&b).is_none(), "unterminated tail");
        assert!(parse(&b[..10]).is_none(), "short");
        let mut many = body(&[], &["/", "cat"], 1, 0);
        many[8..12].copy_from_slice(&(MAX_GROUPS as u32 + 1).to_le_bytes());
        assert!(parse(&many).is_none(), "too many groups");
    }

    #[test]
    fn trailers_round_trip_and_headers_are_checked() {
        let t = trailer(Kind::SetupFailed, (Stage::Uid as i32) << 16 | 1);
        assert_eq!(read_trailer(&t), Some((Kind::SetupFailed, 3 << 16 | 1)));
        assert_eq!(read_trailer(b"RDY\0\0\0\0\0"), None);
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4..].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(body_len(&h), Some(100));
        h[4..].copy_from_slice(&(MAX_BODY as u32 + 1).to_le_bytes());
        assert_eq!(body_len(&h), None);
    }
}
