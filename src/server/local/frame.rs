//! The framing of an upgraded exec or attach connection: each frame is a
//! kind byte, a big-endian u32 length and that many bytes of payload (as
//! Docker multiplexes a stream without a TTY). The same codec serves both
//! ends.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Client to agent: bytes for the process's stdin.
pub const STDIN: u8 = 0;
/// Agent to client: the process's stdout (or its terminal's output).
pub const STDOUT: u8 = 1;
/// Agent to client: the process's stderr.
pub const STDERR: u8 = 2;
/// Client to agent: the terminal's new size, rows and columns as two big-endian u16.
pub const RESIZE: u8 = 3;
/// Agent to client, last: how the process ended, as JSON ([`super::wire::ExitStatus`]).
pub const EXIT: u8 = 4;
/// Client to agent: stdin ended (the process sees end of file).
pub const CLOSE_STDIN: u8 = 5;

/// The largest payload taken.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One frame's bytes.
pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A resize frame's payload.
pub fn resize(rows: u16, cols: u16) -> Vec<u8> {
    let mut p = rows.to_be_bytes().to_vec();
    p.extend_from_slice(&cols.to_be_bytes());
    p
}

/// The rows and columns of a resize frame's payload.
pub fn parse_resize(p: &[u8]) -> Option<(u16, u16)> {
    let rows = u16::from_be_bytes(p.get(..2)?.try_into().ok()?);
    let cols = u16::from_be_bytes(p.get(2..4)?.try_into().ok()?);
    Some((rows, cols))
}

/// Write one frame.
pub async fn write(
    w: &mut (impl AsyncWrite + Unpin),
    kind: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    w.write_all(&encode(kind, payload)).await?;
    w.flush().await
}

/// Read one frame; `None` at a clean end of stream between frames.
pub async fn read(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is above the limit of {MAX_PAYLOAD}"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((head[0], payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let mut bytes = encode(STDOUT, b"hello");
        bytes.extend(encode(RESIZE, &resize(40, 100)));
        let mut r = &bytes[..];
        assert_eq!(
            read(&mut r).await.unwrap(),
            Some((STDOUT, b"hello".to_vec()))
        );
        let (kind, p) = read(&mut r).await.unwrap().unwrap();
        assert_eq!((kind, parse_resize(&p)), (RESIZE, Some((40, 100))));
        assert_eq!(read(&mut r).await.unwrap(), None);
        let mut cut = &encode(STDERR, b"abc")[..6];
        assert!(
            read(&mut cut).await.is_err(),
            "a frame cut short is an error"
        );
    }
}
