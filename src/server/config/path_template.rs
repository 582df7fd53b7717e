//! `record.path`: recording path templates with `{app}`, `{stream}`, `{start}` and
//! `{ext}` placeholders, checked when parsed so that every rendered path stays below
//! `record.dir` and no two recordings share a file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use proto::hls::civil_from_days;
use proto::media::StreamKey;

use super::error::invalid;
use super::ConfigError;

/// `record.path`: a relative path with `{app}`, `{stream}`, `{start}` (UTC
/// `yyyymmdd-hhmmss`) and `{ext}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    App,
    Stream,
    Start,
    Ext,
}

impl PathTemplate {
    /// The path for one recording. Stream key parts are already safe as path
    /// components (no `/`, never `.` or `..`), so the result stays below the directory.
    pub fn render(&self, key: &StreamKey, start: SystemTime, ext: &str) -> PathBuf {
        let mut out = String::with_capacity(self.text.len() + 32);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::App => out.push_str(key.app()),
                Piece::Stream => out.push_str(key.stream()),
                Piece::Start => out.push_str(&utc_stamp(start)),
                Piece::Ext => out.push_str(ext),
            }
        }
        PathBuf::from(out)
    }
}

impl FromStr for PathTemplate {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let bad = |expected: String| invalid("record.path", format!("\"{text}\""), expected);
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(bad(
                    "a template with balanced braces; found a '}' without '{'".into(),
                ));
            }
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err(bad(
                    "a template with balanced braces; a '{' is never closed".into(),
                ));
            };
            pieces.push(match &after[..close] {
                "app" => Piece::App,
                "stream" => Piece::Stream,
                "start" => Piece::Start,
                "ext" => Piece::Ext,
                other => {
                    return Err(bad(format!(
                        "only the placeholders {{app}}, {{stream}}, {{start}} and {{ext}}; \
                         {{{other}}} is unknown"
                    )))
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        let path = Path::new(text);
        if text.is_empty() || path.is_absolute() || text.starts_with('/') {
            return Err(bad(
                "a relative path below record.dir (set the directory with record.dir)".into(),
            ));
        }
        if path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(bad("a path without '.' or '..' components".into()));
        }
        // Two live streams, or a stream that reconnects, must never share a file.
        if !pieces.contains(&Piece::Stream) || !pieces.contains(&Piece::Start) {
            return Err(bad(
                "a template containing {stream} and {start}, so that no two recordings \
                 share a file"
                    .into(),
            ));
        }
        Ok(PathTemplate {
            text: text.to_owned(),
            pieces,
        })
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `yyyymmdd-hhmmss` in UTC; times before 1970 clamp to the epoch.
fn utc_stamp(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::server::config::load::tests::{invalid_key, parse_ok};

    #[test]
    fn record_path_placeholders_are_checked() {
        let (key, message) = invalid_key("[record]\npath = \"{app}/{stream}-{date}.{ext}\"\n");
        assert_eq!(key, "record.path");
        assert!(message.contains("{date} is unknown"), "{message}");
        for bad in [
            "{stream}/{start",
            "{stream}}{start}",
            "/abs/{stream}{start}",
            "../{stream}{start}",
            "{app}.{ext}",
        ] {
            let err = bad.parse::<PathTemplate>().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("record.path = \"{bad}\"")),
                "{err}"
            );
        }
    }

    #[test]
    fn record_path_renders_utc_start() {
        let key = StreamKey::new("live", "cam-1").unwrap();
        // 2024-02-29T23:59:58Z, a leap day.
        let start = UNIX_EPOCH + Duration::from_secs(1_709_251_198);
        let record = parse_ok("[record]\nenabled = true\nformat = \"fmp4\"\n").record;
        assert_eq!(
            record.file_path(&key, start),
            PathBuf::from("recordings/live/cam-1/20240229-235958.mp4")
        );
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101-000000");
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229-000000"
        );
    }

    #[test]
    fn start_stamp_uses_the_playlist_calendar() {
        // The same instant names the same second in a recording's file name and in an
        // EXT-X-PROGRAM-DATE-TIME tag (both go through proto::hls's calendar).
        for secs in [
            0,
            951_782_400,
            1_704_067_199,
            1_704_067_200,
            1_709_251_198,
            4_102_444_800,
        ] {
            let pdt = proto::hls::format_program_date_time(secs * 1000);
            let expected: String = pdt[..19]
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == 'T')
                .collect::<String>()
                .replace('T', "-");
            assert_eq!(utc_stamp(UNIX_EPOCH + Duration::from_secs(secs)), expected);
        }
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(1_704_067_199)),
            "20231231-235959"
        );
    }
}
