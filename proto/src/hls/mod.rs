//! HLS and LL-HLS packaging (RFC 8216, RFC 8216bis): cuts a stream's frames into
//! segments and parts through a container [`Muxer`](crate::mux::Muxer), renders
//! the playlists, and answers playlist, segment and part requests from an immutable
//! [`HlsSnapshot`]. Sans-IO: frames and wall-clock readings go in, snapshots come out;
//! the driver owns the HTTP server, the timers and the arc-swap that shares snapshots.
//!
//! # Variants and URLs
//! The driver routes `/APP/STREAM...` here with the rest of the path (`rest`, no query);
//! [`Variant::for_path`] says which packager's snapshot answers it.
//!
//! | rest                  | variant          | body                                      |
//! |-----------------------|------------------|-------------------------------------------|
//! | `.m3u8`               | `Ts`             | multivariant → `STREAM/ts.m3u8`            |
//! | `/ts.m3u8`            | `Ts`             | media playlist, `ts/{msn}.ts`              |
//! | `/ts/{msn}.ts`        | `Ts`             | MPEG-TS segment                           |
//! | `/index.m3u8`         | `Fmp4LowLatency` | multivariant → `ll.m3u8`                   |
//! | `/ll.m3u8`            | `Fmp4LowLatency` | LL-HLS media playlist (blocking reload)    |
//! | `/init.mp4`, `/init-{n}.mp4` | `Fmp4LowLatency` | initialization segment (n-th after a codec change) |
//! | `/s/{msn}.m4s`        | `Fmp4LowLatency` | CMAF segment                              |
//! | `/p/{msn}.{part}.m4s` | `Fmp4LowLatency` | CMAF part                                 |
//!
//! # Decisions
//! - Segments are cut at the first keyframe at or after `segment_target_ms` (audio-only
//!   streams: the first audio frame at or after it). Parts are cut by time so that each
//!   stays at or under `PART-TARGET` (using the largest recent frame interval as the
//!   look-ahead) and, when a keyframe arrives after at least 85% of the part target, at
//!   the keyframe. A part is `INDEPENDENT=YES` when it contains a keyframe, which for
//!   parts cut at a keyframe means it starts with one (RFC 8216bis §4.4.4.9).
//! - `EXT-X-TARGETDURATION` is `ceil` of the longest segment ever cut (never below
//!   `ceil(segment_target_ms)`), so it never decreases; it can only grow when the
//!   encoder's GOP is longer than the target.
//! - The media sequence and discontinuity sequence never restart for a packager, and
//!   [`Packager::resume`] carries them over when the driver re-creates a packager for
//!   the same stream key (publisher reconnect after `end_of_stream`). Segment, part and
//!   init URLs are therefore never reused within a process and are served with
//!   `max-age=31536000, immutable`. A process restart does start again at 0; a driver
//!   that persists nothing can seed [`ResumePoint::starting_at`] from the clock.
//! - `end_of_stream()` adds `EXT-X-ENDLIST`: the driver calls it when the reconnect grace
//!   period has expired, not on every disconnect (that is `discontinuity()`).
//! - Content types: playlists `application/vnd.apple.mpegurl`, TS `video/mp2t`, init and
//!   `.m4s` both `video/mp4` (rather than `video/iso.segment`: every CDN and browser
//!   knows `video/mp4`, and hls.js does not look at it).
//! - Cache-Control: plain playlist requests `max-age=1`; blocking reload responses
//!   (`_HLS_msn`) `max-age` of six target durations, since any later playlist is also a
//!   correct answer to the same URL; media `max-age=31536000, immutable`.
//! - Delta updates (`_HLS_skip`) are not offered: with the default six-segment window
//!   there is nothing older than the skip boundary to leave out. The directive is
//!   ignored, as the spec requires when `CAN-SKIP-UNTIL` is absent.
//! - Segments leave the playlist after `window_segments`, stay downloadable for two
//!   more segments (RFC 8216bis §6.2.2 availability), then are freed and answer
//!   `NotFound`. `EXT-X-PART` tags are listed for the last three target durations only.
//!
//! - A viewer's token (`proto::auth`) rides along in the playlists: the driver passes
//!   the rendered playlist through [`with_query`] with `token=...`, so every URI in it
//!   carries the token; [`HlsSnapshot::lookup`] ignores the parameter.
//!
//! # Golden files
//! `testdata/golden/hls/*.m3u8` hold the playlists of the packager tests byte for byte;
//! `UPDATE_GOLDEN=1 cargo test -p shardcast-proto hls::` rewrites them (review the diff).

mod date;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod packager;
pub mod parse;
pub mod playlist;
mod query;
mod snapshot;

pub use date::{civil_from_days, format_program_date_time, parse_program_date_time};
pub use packager::{Packager, PartId, ResumePoint, Update};
pub use query::with_query;
pub use snapshot::{CacheControl, HlsLookup, HlsSnapshot};

use crate::media::StreamKey;
use crate::mux::MuxError;

/// Which playlist flavour a packager produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Classic HLS: MPEG-TS segments, no parts, no blocking reload.
    Ts,
    /// LL-HLS: fMP4/CMAF segments and parts, blocking playlist reload, preload hints.
    Fmp4LowLatency,
}

impl Variant {
    /// Which variant's snapshot serves `rest` (the path after `/APP/STREAM`), or `None`
    /// when neither does.
    pub fn for_path(rest: &str) -> Option<Variant> {
        if rest == ".m3u8" || rest == "/ts.m3u8" || rest.starts_with("/ts/") {
            Some(Variant::Ts)
        } else if rest == "/index.m3u8"
            || rest == "/ll.m3u8"
            || rest.starts_with("/init")
            || rest.starts_with("/s/")
            || rest.starts_with("/p/")
        {
            Some(Variant::Fmp4LowLatency)
        } else {
            None
        }
    }
}

/// What the multivariant playlist says about the one variant. The driver fills it from
/// the codec configuration records (`media::codec`) and `onMetaData`, and passes it with
/// [`Packager::set_variant_info`] whenever it changes.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct VariantInfo {
    /// RFC 6381 codec strings of every track, comma-separated (`avc1.64001f,mp4a.40.2`);
    /// empty when unknown, which leaves `CODECS` out.
    pub codecs: String,
    /// Video width and height in pixels; `None` for audio-only streams.
    pub resolution: Option<(u32, u32)>,
    /// Video frames per second, when the encoder declared it.
    pub frame_rate: Option<f64>,
    /// Declared peak bit rate (bits/s). The playlist advertises the larger of this and
    /// the peak segment bit rate measured over the window.
    pub bandwidth_bps: Option<u64>,
}

/// Packaging parameters (server-wide; validated by [`Packager::new`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HlsConfig {
    /// Segments are cut at the first keyframe at or after this duration.
    pub segment_target_ms: u64,
    /// LL-HLS `PART-TARGET`; 200–333 ms is typical. Ignored by the `Ts` variant.
    pub part_target_ms: u64,
    /// Completed segments listed in the live playlist (at least 3, RFC 8216bis §6.2.2).
    pub window_segments: usize,
    /// How long the driver holds a `Wait` before answering 503 (RFC 8216bis §6.2.5.2
    /// suggests three target durations). Carried for the driver; see
    /// [`HlsSnapshot::blocking_timeout_ms`].
    pub blocking_timeout_ms: u64,
    /// A segment still without a keyframe after this long is closed and the stream
    /// waits for the next keyframe (a discontinuity), so a broken encoder cannot grow
    /// one segment without bound.
    pub max_segment_ms: u64,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            segment_target_ms: 2000,
            part_target_ms: 333,
            window_segments: 6,
            blocking_timeout_ms: 6000,
            max_segment_ms: 30_000,
        }
    }
}

impl HlsConfig {
    fn validate(&self) -> Result<(), HlsError> {
        let bad =
            |field: &'static str, reason: String| Err(HlsError::InvalidConfig { field, reason });
        if !(500..=60_000).contains(&self.segment_target_ms) {
            return bad(
                "segment_target_ms",
                format!("{} is outside 500..=60000", self.segment_target_ms),
            );
        }
        if self.part_target_ms < 100 || self.part_target_ms * 2 > self.segment_target_ms {
            return bad(
                "part_target_ms",
                format!(
                    "{} must be at least 100 and at most half the segment target",
                    self.part_target_ms
                ),
            );
        }
        if !(3..=1000).contains(&self.window_segments) {
            return bad(
                "window_segments",
                format!("{} is outside 3..=1000", self.window_segments),
            );
        }
        if self.max_segment_ms < self.segment_target_ms * 2 {
            return bad(
                "max_segment_ms",
                format!(
                    "{} is less than twice the segment target",
                    self.max_segment_ms
                ),
            );
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HlsError {
    #[error("HLS config: {field} {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("stream '{stream_key}': frame dropped by the HLS muxer: {source}")]
    Mux {
        stream_key: StreamKey,
        #[source]
        source: MuxError,
    },
    #[error(
        "stream '{stream_key}': no fMP4 initialization segment at a segment start; \
         the publisher sent media before its codec configuration"
    )]
    NoInitSegment { stream_key: StreamKey },
    #[error("stream '{stream_key}': frame after end_of_stream(); start a new packager with Packager::resume")]
    Ended { stream_key: StreamKey },
    /// From [`parse`]; line 0 means the playlist as a whole.
    #[error("playlist line {line}: {reason}")]
    Playlist { line: usize, reason: String },
}
