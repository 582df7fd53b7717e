//! FLV: tag bodies (the payload of RTMP audio, video and data messages), the FLV file
//! format, and a streaming reader.
//!
//! - [`parse_body`] / [`write_body`] convert one tag body to and from a [`Frame`](crate::media::Frame),
//!   legacy FLV and Enhanced RTMP (veovera E-RTMP v1 and v2) alike. Parsing is zero-copy:
//!   the frame payload is a slice of the body.
//! - [`write_tag`] serializes a frame as a complete FLV tag (header, body, trailing
//!   PreviousTagSize) into one allocation: the "serialize once" unit of HTTP-FLV egress
//!   and FLV recording.
//! - [`FlvReader`] is a sans-IO FLV file/stream reader: push bytes in any split, pull tags.
//!
//! Not here: AMF0 decoding (script data stays opaque bytes, see
//! [`strip_set_data_frame`]), the RTMP chunk layer, and codec configuration records (they
//! are carried as opaque payloads; `crate::media::codec` reads them).
//!
//! Choices where the specs leave room, so every caller sees the same behaviour:
//! - Video info/command frames (FrameType 5) carry no picture: ignored (`Ok(None)`).
//! - Enhanced RTMP `Metadata` video packets (HDR `colorInfo`) are kept as
//!   [`FrameKind::Metadata`](crate::media::FrameKind) frames of the video codec with the
//!   AMF payload, so egress can forward them; muxers treat them as state, not samples.
//! - `MPEG2TSSequenceStart` (an AV1 video descriptor, an alternative to the AV1 config
//!   record meant for TS carriage) is ignored: no encoder we know sends it without also
//!   sending `SequenceStart`, and it cannot stand in for an `av1C` record.
//! - `ModEx` prefixes (nanosecond timestamp offsets) are skipped: our timeline is in ms.
//! - Multitrack messages (E-RTMP v2): track 0 (the spec's default track) is taken; other
//!   tracks are dropped, and a message without track 0 yields `Ok(None)`.
//! - Enhanced audio: `mp4a` is AAC; other FourCCs (Opus, FLAC, AC-3, ...) are a clear
//!   [`FlvError::UnsupportedAudioCodec`]. AAC is always written in the legacy form
//!   (SoundFormat 10), which every player accepts.
//! - The non-standard CodecID 12 (HEVC in the AVC layout, used by some Chinese encoder
//!   forks and accepted by SRS) is read as H.265 and written back as Enhanced RTMP.
//! - Script data other than `onMetaData` (cue points, text) is ignored.

mod body;
mod file;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

pub use body::{parse_body, strip_set_data_frame, tag_kind, write_body, write_tag, TagKind};
pub use file::{file_header, FlvHeader, FlvReader, Tag, DEFAULT_MAX_TAG_BYTES};

/// Errors of the FLV layer. A peer's malformed tag produces one of these, never a panic.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("FLV {what} is truncated: needs {need} bytes, has {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("unknown {what} packet type {packet_type}; the publisher sent a message this server does not understand")]
    UnknownPacketType { what: &'static str, packet_type: u8 },
    #[error(
        "Enhanced RTMP video codec '{fourcc}' is not supported; publish H.264, H.265, AV1 or VP9"
    )]
    UnsupportedVideoCodec { fourcc: String },
    #[error("Enhanced RTMP audio codec '{fourcc}' is not supported; publish AAC (or a legacy FLV sound format such as MP3)")]
    UnsupportedAudioCodec { fourcc: String },
    #[error("Enhanced RTMP multitrack message nests another multitrack header")]
    NestedMultitrack,
    #[error("not an FLV stream: it starts with {found:02x?} instead of 'FLV' version 1")]
    NotFlv { found: [u8; 4] },
    #[error("FLV header declares a data offset of {offset} bytes (expected 9 to {max})")]
    BadHeaderSize { offset: u32, max: u32 },
    #[error("FLV tag of {size} bytes exceeds the {limit}-byte limit")]
    TagTooLarge { size: usize, limit: usize },
    #[error("encrypted FLV tags (filter bit set) are not supported")]
    Encrypted,
    #[error("a frame of {size} bytes does not fit in an FLV tag (at most 16 MiB - 1)")]
    FrameTooLarge { size: usize },
}
