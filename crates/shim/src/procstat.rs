//! Telling a process from another that reused its pid: its start time,
//! field 22 of `/proc/<pid>/stat` (clock ticks since boot), recorded when the
//! process is first seen and compared later.

use std::io;

/// The fields of a `/proc/<pid>/stat` line that tell whether a pid is still
/// the process that was first seen under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: R, S, D, Z, X, ...
    pub state: char,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

/// The fields after the command name (field 2), from field 3 on. The
/// command name may hold spaces and parentheses, so they start after its
/// last `)`.
fn after_comm(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace())
}

/// The state (field 3) and start time (field 22) of a `/proc/<pid>/stat`
/// line.
pub fn parse(stat: &str) -> Option<ProcStat> {
    let mut fields = after_comm(stat)?;
    let state = fields.next()?.chars().next()?;
    // Field 3 was taken; field 22 is 19 further on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// Field 22 of a `/proc/<pid>/stat` line.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    parse(stat).map(|p| p.start_time)
}

/// The state letter (field 3) of a `/proc/<pid>/stat` line, e.g. `Z`.
pub fn parse_state(stat: &str) -> Option<char> {
    after_comm(stat)?.next()?.chars().next()
}

/// The parent pid (field 4) of a `/proc/<pid>/stat` line.
pub fn parse_ppid(stat: &str) -> Option<i32> {
    after_comm(stat)?.nth(1)?.parse().ok()
}

/// The start time of `pid`, read from `/proc/<pid>/stat`.
pub fn start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat: no start time"),
        )
    })
}

/// The start time of the calling process.
pub fn own_start_time() -> io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    parse_start_time(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/self/stat: no start time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_field_22_past_a_tricky_comm() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_state(stat), Some('S'));
        assert_eq!(parse_ppid(stat), Some(1));
        assert_eq!(parse_ppid("no paren"), None);
        assert_eq!(parse_start_time("1 (x) S 1 2"), None);
        assert_eq!(parse_start_time("no paren"), None);
        assert_eq!(
            parse(stat),
            Some(ProcStat {
                state: 'S',
                start_time: 987654
            })
        );
        assert_eq!(parse("42 (short) S 1 2"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn own_start_time_matches_proc_self() {
        let me = std::process::id() as i32;
        assert_eq!(own_start_time().unwrap(), start_time(me).unwrap());
    }
}
