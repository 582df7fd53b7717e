//! Stream keys: `app/stream`, the identity of a live stream in every protocol
//! (`rtmp://host/app/stream`, `http://host/app/stream.flv`, ...).

use std::fmt;
use std::sync::Arc;

/// `app/stream`, validated: both parts non-empty, at most 128 bytes each, made of
/// ASCII letters, digits and `-_.~` (so they are safe in URLs and file paths).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey(Arc<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamKeyError {
    #[error("stream key part '{part}' is empty or longer than 128 bytes")]
    BadLength { part: String },
    #[error("stream key part '{part}' has a character outside A-Z a-z 0-9 - _ . ~")]
    BadCharacter { part: String },
    #[error("stream key part '{part}' may not be '.' or '..'")]
    DotPart { part: String },
}

fn check_part(part: &str) -> Result<(), StreamKeyError> {
    if part.is_empty() || part.len() > 128 {
        return Err(StreamKeyError::BadLength {
            part: part.to_owned(),
        });
    }
    if part == "." || part == ".." {
        return Err(StreamKeyError::DotPart {
            part: part.to_owned(),
        });
    }
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    {
        return Err(StreamKeyError::BadCharacter {
            part: part.to_owned(),
        });
    }
    Ok(())
}

impl StreamKey {
    /// `/app/stream` (a URL path) → the stream key, if both parts are valid.
    pub fn from_path(path: &str) -> Option<Self> {
        let (app, stream) = path.strip_prefix('/')?.split_once('/')?;
        StreamKey::new(app, stream).ok()
    }

    pub fn new(app: &str, stream: &str) -> Result<Self, StreamKeyError> {
        check_part(app)?;
        check_part(stream)?;
        Ok(StreamKey(format!("{app}/{stream}").into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn app(&self) -> &str {
        self.0.split_once('/').map(|(a, _)| a).unwrap_or(&self.0)
    }

    pub fn stream(&self) -> &str {
        self.0.split_once('/').map(|(_, s)| s).unwrap_or("")
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let key = StreamKey::new("live", "cam-1").unwrap();
        assert_eq!(key.as_str(), "live/cam-1");
        assert_eq!(key.app(), "live");
        assert_eq!(key.stream(), "cam-1");
    }

    #[test]
    fn rejects_unsafe_parts() {
        assert!(matches!(
            StreamKey::new("", "a"),
            Err(StreamKeyError::BadLength { .. })
        ));
        assert!(matches!(
            StreamKey::new("live", ".."),
            Err(StreamKeyError::DotPart { .. })
        ));
        assert!(matches!(
            StreamKey::new("live", "a/b"),
            Err(StreamKeyError::BadCharacter { .. })
        ));
        assert!(matches!(
            StreamKey::new("live", "a b"),
            Err(StreamKeyError::BadCharacter { .. })
        ));
        assert!(StreamKey::new("live", &"x".repeat(129)).is_err());
    }
}
