//! Reading the records of a process directory: JSON files and the pid file,
//! each absent as `None` rather than an error.

use std::io::ErrorKind;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::ProcessError;

/// Reads and parses a JSON record; `None` when the file does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ProcessError> {
    let bytes = match crate::fsutil::read_small(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ProcessError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| ProcessError::BadRecord {
            path: path.to_owned(),
            source,
        })
}

/// Reads the runtime's pid file; `None` when it does not exist.
pub(crate) fn read_pid(path: &Path) -> Result<Option<i32>, ProcessError> {
    let text = match crate::fsutil::read_small_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ProcessError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse_pid(&text)
        .map(Some)
        .ok_or_else(|| ProcessError::BadPid {
            path: path.to_owned(),
            text,
        })
}

/// A pid as the runtime writes it: decimal, maybe with a newline.
pub(crate) fn parse_pid(text: &str) -> Option<i32> {
    text.trim().parse().ok().filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pids() {
        assert_eq!(parse_pid("4242"), Some(4242));
        assert_eq!(parse_pid("4242\n"), Some(4242));
        assert_eq!(parse_pid("0"), None);
        assert_eq!(parse_pid("-1"), None);
        assert_eq!(parse_pid("x"), None);
    }
}
