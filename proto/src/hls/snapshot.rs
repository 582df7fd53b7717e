//! An immutable view of one packager's output, shared by every shard: the rendered
//! playlists and the segment, part and init bytes in the window. [`HlsSnapshot::lookup`]
//! answers a request from it without touching the packager, including the blocking
//! reload decisions of RFC 8216bis §6.2.5.2:
//!
//! - `_HLS_part` without `_HLS_msn`, or a malformed value: `BadRequest` (MUST).
//! - `_HLS_msn` more than two beyond the last complete segment, or `_HLS_part` more than
//!   the Advance Part Limit (3 / PART-TARGET parts when the part target is under a
//!   second, else 3) beyond the last part: `BadRequest` (SHOULD).
//! - A part index past the last part of a completed segment means part 0 of the next
//!   segment (MUST).
//! - A segment or part already produced, or already evicted: the whole current playlist
//!   (MUST), cacheable for longer since any later playlist answers the same URL.
//! - Otherwise `Wait`: the driver parks the request until the next update and asks again,
//!   answering 503 after its timeout (three target durations, SHOULD).
//! - With `EXT-X-ENDLIST` the directives are ignored (MUST).
//!
//! Segment and part requests for the part being produced (the preload hint target) or a
//! little ahead of it (within the same limits, in case the client saw a newer snapshot
//! than this shard) also `Wait`; anything else not in the window is `NotFound`
//! (RFC 8216bis §6.2.6).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use super::packager::{Part, Segment};
use super::Variant;

pub(crate) const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
pub(crate) const TS_TYPE: &str = "video/mp2t";
pub(crate) const MP4_TYPE: &str = "video/mp4";

/// The `Cache-Control` a response should carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheControl {
    /// A playlist fetched without delivery directives: changes every part or segment.
    Playlist,
    /// A blocking reload response: the URL names a state that every later playlist
    /// also satisfies, so caches may keep it (and collapse concurrent requests).
    BlockingPlaylist { max_age_s: u64 },
    /// Segments, parts and init segments: a URL's bytes never change.
    Immutable,
}

impl CacheControl {
    pub fn header_value(&self) -> Cow<'static, str> {
        match self {
            CacheControl::Playlist => Cow::Borrowed("max-age=1"),
            CacheControl::BlockingPlaylist { max_age_s } => {
                Cow::Owned(format!("public, max-age={max_age_s}"))
            }
            CacheControl::Immutable => Cow::Borrowed("public, max-age=31536000, immutable"),
        }
    }
}

/// The answer to one HLS request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HlsLookup {
    Ready {
        content_type: &'static str,
        cache_control: CacheControl,
        body: Bytes,
    },
    /// Not produced yet but expected soon: wait for the next update (or the timeout)
    /// and look up again. `msn`/`part` name what the request waits for.
    Wait {
        msn: u64,
        part: Option<u32>,
    },
    /// HTTP 400, with a reason for the log.
    BadRequest(String),
    NotFound,
}

/// Everything a request handler needs, immutable once built (one per packager update).
#[derive(Debug)]
pub struct HlsSnapshot {
    pub(crate) variant: Variant,
    pub(crate) multivariant: Option<Bytes>,
    pub(crate) playlist: Option<Bytes>,
    /// Retained complete segments, ascending media sequence numbers, no gaps.
    pub(crate) segments: Vec<Arc<Segment>>,
    /// The media sequence number of the segment being produced (or the next one).
    pub(crate) open_msn: u64,
    /// Completed parts of the segment being produced.
    pub(crate) open_parts: Vec<Part>,
    /// Retained init segments by generation.
    pub(crate) inits: Vec<(u32, Bytes)>,
    pub(crate) target_duration_s: u64,
    pub(crate) segment_target_ms: u64,
    pub(crate) part_target_ms: u64,
    pub(crate) blocking_timeout_ms: u64,
    pub(crate) ended: bool,
}

/// Where a requested segment or part is relative to what exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// Produced (possibly already evicted).
    Produced,
    /// Expected within the blocking limits.
    Pending,
    /// Beyond the limits of RFC 8216bis §6.2.5.2.
    TooFar,
}

impl HlsSnapshot {
    pub(crate) fn empty(
        variant: Variant,
        segment_target_ms: u64,
        part_target_ms: u64,
        blocking_timeout_ms: u64,
        open_msn: u64,
    ) -> Self {
        HlsSnapshot {
            variant,
            multivariant: None,
            playlist: None,
            segments: Vec::new(),
            open_msn,
            open_parts: Vec::new(),
            inits: Vec::new(),
            target_duration_s: segment_target_ms.div_ceil(1000),
            segment_target_ms,
            part_target_ms,
            blocking_timeout_ms,
            ended: false,
        }
    }

    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// How long the driver should hold a `Wait` before answering 503.
    pub fn blocking_timeout_ms(&self) -> u64 {
        self.blocking_timeout_ms
    }

    /// True once `EXT-X-ENDLIST` is published: no request will ever `Wait` again.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The rendered media playlist, if any content exists yet.
    pub fn media_playlist(&self) -> Option<&Bytes> {
        self.playlist.as_ref()
    }

    /// The rendered multivariant playlist, if any content exists yet.
    pub fn multivariant_playlist(&self) -> Option<&Bytes> {
        self.multivariant.as_ref()
    }

    /// Answers `GET /APP/STREAM{rest}?{query}`. `rest` is the path after the stream
    /// name (`.m3u8`, `/ll.m3u8`, `/p/12.3.m4s`, ...); `query` is the raw query string
    /// without `?` (empty when none).
    pub fn lookup(&self, rest: &str, query: &str) -> HlsLookup {
        match (self.variant, rest) {
            (Variant::Ts, ".m3u8") | (Variant::Fmp4LowLatency, "/index.m3u8") => {
                self.ready_playlist(self.multivariant.as_ref(), CacheControl::Playlist)
            }
            // Classic HLS advertises no delivery directives, so they are ignored here.
            (Variant::Ts, "/ts.m3u8") => {
                self.ready_playlist(self.playlist.as_ref(), CacheControl::Playlist)
            }
            (Variant::Fmp4LowLatency, "/ll.m3u8") => self.ll_playlist(query),
            (Variant::Fmp4LowLatency, "/init.mp4") => self.init(0),
            (Variant::Ts, _) => match path_number(rest, "/ts/", ".ts") {
                Some(msn) => self.segment(msn, TS_TYPE),
                None => HlsLookup::NotFound,
            },
            (Variant::Fmp4LowLatency, _) => {
                if let Some(generation) = path_number(rest, "/init-", ".mp4") {
                    return match u32::try_from(generation) {
                        Ok(g) if g > 0 => self.init(g),
                        _ => HlsLookup::NotFound,
                    };
                }
                if let Some(msn) = path_number(rest, "/s/", ".m4s") {
                    return self.segment(msn, MP4_TYPE);
                }
                let part = rest
                    .strip_prefix("/p/")
                    .and_then(|r| r.strip_suffix(".m4s"))
                    .and_then(|r| r.split_once('.'))
                    .and_then(|(msn, part)| {
                        Some((decimal(msn)?, u32::try_from(decimal(part)?).ok()?))
                    });
                match part {
                    Some((msn, part)) => self.part(msn, part),
                    None => HlsLookup::NotFound,
                }
            }
        }
    }

    fn ready_playlist(&self, body: Option<&Bytes>, cache_control: CacheControl) -> HlsLookup {
        match body {
            Some(body) => HlsLookup::Ready {
                content_type: PLAYLIST_TYPE,
                cache_control,
                body: body.clone(),
            },
            // Nothing produced yet: a player that asks this early gets the first
            // playlist as soon as it exists instead of an error.
            None if !self.ended => HlsLookup::Wait {
                msn: self.open_msn,
                part: None,
            },
            None => HlsLookup::NotFound,
        }
    }

    fn ll_playlist(&self, query: &str) -> HlsLookup {
        let directives = match Directives::parse(query) {
            Ok(d) => d,
            Err(reason) => return HlsLookup::BadRequest(reason),
        };
        let (msn, part) = match (directives.msn, directives.part) {
            (None, Some(_)) => {
                return HlsLookup::BadRequest("_HLS_part without _HLS_msn".to_owned());
            }
            (Some(msn), part) if !self.ended => (msn, part),
            _ => return self.ready_playlist(self.playlist.as_ref(), CacheControl::Playlist),
        };
        let position = match part {
            None => self.segment_position(msn),
            Some(part) => self.part_position(msn, part),
        };
        match position {
            Position::Produced => self.ready_playlist(
                self.playlist.as_ref(),
                CacheControl::BlockingPlaylist {
                    max_age_s: 6 * self.target_duration_s,
                },
            ),
            Position::Pending => HlsLookup::Wait { msn, part },
            Position::TooFar => HlsLookup::BadRequest(match part {
                None => format!("_HLS_msn={msn} is more than two segments beyond the last one"),
                Some(part) => {
                    format!("_HLS_msn={msn}&_HLS_part={part} is beyond the advance part limit")
                }
            }),
        }
    }

    pub(crate) fn find_segment(&self, msn: u64) -> Option<&Arc<Segment>> {
        let first = self.segments.first()?.msn;
        self.segments
            .get(usize::try_from(msn.checked_sub(first)?).ok()?)
    }

    /// Where segment `msn` is: its `EXTINF` exists once it is complete.
    fn segment_position(&self, msn: u64) -> Position {
        if msn < self.open_msn {
            Position::Produced
        } else if msn - self.open_msn <= 1 {
            // The last complete segment is open_msn - 1; the spec allows up to two beyond.
            Position::Pending
        } else {
            Position::TooFar
        }
    }

    fn part_position(&self, msn: u64, part: u32) -> Position {
        let (mut msn, mut part) = (msn, part);
        if msn < self.open_msn {
            match self.find_segment(msn) {
                // A part index past the segment's last part is part 0 of the next one.
                Some(segment) if part as usize >= segment.parts.len() => {
                    msn += 1;
                    part = 0;
                    if msn < self.open_msn {
                        return Position::Produced;
                    }
                }
                _ => return Position::Produced,
            }
        }
        let produced = self.open_parts.len() as u64;
        let ahead = match msn - self.open_msn {
            0 if u64::from(part) < produced => return Position::Produced,
            0 => u64::from(part) + 1 - produced,
            1 => {
                let expected = self.segment_target_ms.div_ceil(self.part_target_ms);
                expected.saturating_sub(produced) + u64::from(part) + 1
            }
            _ => return Position::TooFar,
        };
        // Advance Part Limit: 3 / PART-TARGET (in seconds) when the target is under a
        // second, else 3; the request is refused when it exceeds the last part by more.
        let too_far = if self.part_target_ms < 1000 {
            ahead.saturating_mul(self.part_target_ms) > 3000
        } else {
            ahead > 3
        };
        if too_far {
            Position::TooFar
        } else {
            Position::Pending
        }
    }

    fn segment(&self, msn: u64, content_type: &'static str) -> HlsLookup {
        if let Some(segment) = self.find_segment(msn) {
            return HlsLookup::Ready {
                content_type,
                cache_control: CacheControl::Immutable,
                body: segment.bytes.clone(),
            };
        }
        if msn == self.open_msn && !self.ended {
            return HlsLookup::Wait { msn, part: None };
        }
        HlsLookup::NotFound
    }

    fn part(&self, msn: u64, part: u32) -> HlsLookup {
        let found = if msn == self.open_msn {
            self.open_parts.get(part as usize)
        } else {
            self.find_segment(msn)
                .and_then(|s| s.parts.get(part as usize))
        };
        if let Some(found) = found {
            return HlsLookup::Ready {
                content_type: MP4_TYPE,
                cache_control: CacheControl::Immutable,
                body: found.bytes.clone(),
            };
        }
        if self.ended || msn < self.open_msn {
            return HlsLookup::NotFound;
        }
        match self.part_position(msn, part) {
            Position::Pending => HlsLookup::Wait {
                msn,
                part: Some(part),
            },
            Position::Produced | Position::TooFar => HlsLookup::NotFound,
        }
    }

    fn init(&self, generation: u32) -> HlsLookup {
        match self.inits.iter().find(|(g, _)| *g == generation) {
            Some((_, body)) => HlsLookup::Ready {
                content_type: MP4_TYPE,
                cache_control: CacheControl::Immutable,
                body: body.clone(),
            },
            None => HlsLookup::NotFound,
        }
    }
}

/// The delivery directives of a playlist request (RFC 8216bis §6.2.5).
#[derive(Debug, Default, PartialEq, Eq)]
struct Directives {
    msn: Option<u64>,
    part: Option<u32>,
}

impl Directives {
    fn parse(query: &str) -> Result<Directives, String> {
        let mut directives = Directives::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || format!("{key}={value:.32} is not a decimal-integer");
            let slot_taken = match key {
                "_HLS_msn" => directives
                    .msn
                    .replace(decimal(value).ok_or_else(bad)?)
                    .is_some(),
                "_HLS_part" => {
                    let part = decimal(value)
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(bad)?;
                    directives.part.replace(part).is_some()
                }
                // _HLS_skip is ignored: no CAN-SKIP-UNTIL is advertised.
                _ => false,
            };
            if slot_taken {
                return Err(format!("{key} given twice"));
            }
        }
        Ok(directives)
    }
}

/// A decimal-integer as it appears in our URLs: digits only, no leading zero, 64 bits.
fn decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.len() <= 20
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

fn path_number(rest: &str, prefix: &str, suffix: &str) -> Option<u64> {
    decimal(rest.strip_prefix(prefix)?.strip_suffix(suffix)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse_strictly() {
        assert_eq!(Directives::parse(""), Ok(Directives::default()));
        assert_eq!(
            Directives::parse("_HLS_msn=12&_HLS_part=3&_HLS_skip=YES&token=abc"),
            Ok(Directives {
                msn: Some(12),
                part: Some(3)
            })
        );
        for bad in [
            "_HLS_msn=",
            "_HLS_msn=-1",
            "_HLS_msn=1x",
            "_HLS_msn=012",
            "_HLS_msn=99999999999999999999999",
            "_HLS_part=4294967296&_HLS_msn=1",
            "_HLS_msn=1&_HLS_msn=2",
        ] {
            assert!(Directives::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cache_control_values() {
        assert_eq!(CacheControl::Playlist.header_value(), "max-age=1");
        assert_eq!(
            CacheControl::BlockingPlaylist { max_age_s: 12 }.header_value(),
            "public, max-age=12"
        );
        assert_eq!(
            CacheControl::Immutable.header_value(),
            "public, max-age=31536000, immutable"
        );
    }

    #[test]
    fn path_numbers_are_canonical() {
        assert_eq!(path_number("/ts/0.ts", "/ts/", ".ts"), Some(0));
        assert_eq!(path_number("/ts/17.ts", "/ts/", ".ts"), Some(17));
        for bad in [
            "/ts/.ts",
            "/ts/07.ts",
            "/ts/1.ts/",
            "/ts/+1.ts",
            "/ts/1.m4s",
            "/ts/99999999999999999999.ts",
        ] {
            assert_eq!(path_number(bad, "/ts/", ".ts"), None, "{bad}");
        }
    }
}
