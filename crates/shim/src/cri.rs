//! The CRI log format `output.log` is written in, the one the kubelet writes
//! for containers: `<RFC3339Nano UTC> <stdout|stderr> <F|P> <content>\n`. `F`
//! marks the end of a line; `P` a piece of a line that goes on in the next
//! record (a line longer than [`MAX_LINE`], or an unterminated last line).
//! Formatting, parsing and splitting a byte stream into records; no I/O.

/// The longest content of one record; longer lines are split into `P`
/// records of this size, as the kubelet does.
pub const MAX_LINE: usize = 16 * 1024;

/// Which of the process's outputs a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// File descriptor 1.
    Stdout,
    /// File descriptor 2.
    Stderr,
}

impl Stream {
    /// The stream's name in a record.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed record, borrowing from the line it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The RFC 3339 timestamp as written.
    pub timestamp: &'a str,
    /// Which output.
    pub stream: Stream,
    /// `P`: the line goes on in the next record of this stream.
    pub partial: bool,
    /// The content, without the newline.
    pub content: &'a [u8],
}

/// Appends one record to `out`.
pub fn format_record(
    out: &mut Vec<u8>,
    timestamp: &str,
    stream: Stream,
    partial: bool,
    content: &[u8],
) {
    out.reserve(timestamp.len() + content.len() + 12);
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Parses one record (with or without its trailing newline).
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    // The tag may carry more flags after a ':'; the first says P or F.
    let partial = match parts.next()?.split(|b| *b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let content = parts.next().unwrap_or(b"");
    Some(Record {
        timestamp,
        stream,
        partial,
        content,
    })
}

/// Cuts a byte stream into record contents: complete lines, and pieces of
/// [`LineSplitter::max`] bytes of lines that are longer. Keeps at most `max`
/// bytes of an unfinished line between calls.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    /// A splitter cutting lines longer than `max` (at least 1) bytes.
    pub fn new(max: usize) -> Self {
        LineSplitter {
            pending: Vec::new(),
            max: max.max(1),
        }
    }

    /// The longest content it emits.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Feeds `data`; calls `emit(content, partial)` for each finished record.
    pub fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            let room = self.max - self.pending.len();
            let window = &data[..data.len().min(room + 1)];
            if let Some(i) = window.iter().position(|b| *b == b'\n') {
                self.emit_with_pending(&data[..i], false, emit);
                data = &data[i + 1..];
            } else if data.len() > room {
                self.emit_with_pending(&data[..room], true, emit);
                data = &data[room..];
            } else {
                self.pending.extend_from_slice(data);
                data = &[];
            }
        }
    }

    /// Ends the stream: an unfinished line becomes a `P` record.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        if !self.pending.is_empty() {
            self.emit_with_pending(&[], true, emit);
        }
    }

    fn emit_with_pending(
        &mut self,
        tail: &[u8],
        partial: bool,
        emit: &mut impl FnMut(&[u8], bool),
    ) {
        if self.pending.is_empty() {
            emit(tail, partial);
        } else {
            self.pending.extend_from_slice(tail);
            emit(&self.pending, partial);
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut emit = |c: &[u8], p: bool| out.push((String::from_utf8(c.to_vec()).unwrap(), p));
        for c in chunks {
            s.push(c, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    fn f(s: &str) -> (String, bool) {
        (s.to_owned(), false)
    }
    fn p(s: &str) -> (String, bool) {
        (s.to_owned(), true)
    }

    #[test]
    fn formats_full_and_partial_records() {
        let mut out = Vec::new();
        format_record(
            &mut out,
            "2024-01-02T03:04:05.000000006Z",
            Stream::Stdout,
            false,
            b"hello world",
        );
        format_record(
            &mut out,
            "2024-01-02T03:04:05.000000007Z",
            Stream::Stderr,
            true,
            b"",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2024-01-02T03:04:05.000000006Z stdout F hello world\n2024-01-02T03:04:05.000000007Z stderr P \n"
        );
    }

    #[test]
    fn parses_what_it_formats() {
        let mut out = Vec::new();
        format_record(&mut out, "T", Stream::Stderr, true, b"a b  c");
        let r = parse_record(&out).unwrap();
        assert_eq!(
            r,
            Record {
                timestamp: "T",
                stream: Stream::Stderr,
                partial: true,
                content: b"a b  c"
            }
        );
        let r = parse_record(b"T stdout F").unwrap();
        assert_eq!(r.content, b"");
        assert!(parse_record(b"T stdout F:x y").is_some_and(|r| !r.partial && r.content == b"y"));
        assert!(parse_record(b"T stdin F x").is_none());
        assert!(parse_record(b"T stdout X x").is_none());
        assert!(parse_record(b"garbage").is_none());
    }

    #[test]
    fn splits_lines_across_chunks() {
        assert_eq!(
            split(100, &[b"ab", b"c\nde\n\nf"]),
            [f("abc"), f("de"), f(""), p("f")]
        );
    }

    #[test]
    fn cuts_long_lines_into_partials() {
        assert_eq!(
            split(4, &[b"abcdefghij\n"]),
            [p("abcd"), p("efgh"), f("ij")]
        );
        assert_eq!(split(4, &[b"ab", b"cdef", b"\n"]), [p("abcd"), f("ef")]);
        // A line of exactly max bytes is one full record.
        assert_eq!(split(4, &[b"abcd\n"]), [f("abcd")]);
        assert_eq!(split(4, &[b"abcd", b"\n"]), [f("abcd")]);
        assert_eq!(split(4, &[b"abcd", b"e\n"]), [p("abcd"), f("e")]);
    }

    #[test]
    fn an_unterminated_last_line_is_partial_and_nothing_is_lost() {
        assert_eq!(split(8, &[b"end"]), [p("end")]);
        assert!(split(8, &[b""]).is_empty());
        let data: Vec<u8> = (0..10_000u32)
            .map(|i| if i % 37 == 0 { b'\n' } else { b'x' })
            .collect();
        let mut got = Vec::new();
        for (c, partial) in split(5, &data.chunks(13).collect::<Vec<_>>()) {
            assert!(c.len() <= 5);
            got.extend_from_slice(c.as_bytes());
            if !partial {
                got.push(b'\n');
            }
        }
        assert_eq!(got, data);
    }
}
