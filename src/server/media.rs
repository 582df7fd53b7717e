//! How frames ride the shard runtime: what a ring learns about a [`Frame`], the
//! serialize-once format slots, and the per-stream shared state in the directory.

use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use proto::media::{Codec, Frame, FrameKind, StreamKey, Track};
use shards::ring::ItemMeta;

use crate::server::cmd::ShardCmd;

/// Serialize-once format slots of a ring slot (see `shards::ring`).
pub mod format {
    /// RTMP message chunks with a fmt-0 header and absolute timestamp.
    pub const RTMP: usize = 0;
    /// A complete FLV tag plus its PreviousTagSize.
    pub const FLV_TAG: usize = 1;
    /// The same FLV tag framed as one HTTP/1.1 chunk (chunked HTTP-FLV viewers).
    pub const FLV_CHUNK: usize = 2;
}

/// Config slots of a ring: what a late joiner needs before media.
pub mod config_slot {
    pub const VIDEO: usize = 0;
    pub const AUDIO: usize = 1;
    pub const METADATA: usize = 2;
}

/// What a ring needs to know about a frame ([`shards::hub::Hub::start`] takes this):
/// computed once when the frame is pushed.
pub fn describe_frame(frame: &Frame) -> ItemMeta {
    let config_slot = match (frame.kind, frame.codec) {
        (FrameKind::Config, Codec::Video(_)) => Some(config_slot::VIDEO),
        (FrameKind::Config, Codec::Audio(_)) => Some(config_slot::AUDIO),
        (FrameKind::Metadata, _) => Some(config_slot::METADATA),
        _ => None,
    };
    ItemMeta {
        keyframe: frame.starts_gop(),
        video: frame.track() == Track::Video,
        config_slot,
        byte_len: frame.payload.len(),
    }
}

/// What every shard can read about a stream without asking its owner.
#[derive(Default)]
pub struct StreamShared {
    /// Codec summary for the API and HLS (set by the owner when configs arrive).
    pub info: ArcSwapOption<StreamInfo>,
    /// The HLS packager's latest snapshots (set by the owner after each part).
    pub hls_ts: ArcSwapOption<proto::hls::HlsSnapshot>,
    pub hls_ll: ArcSwapOption<proto::hls::HlsSnapshot>,
    /// Bumped after each HLS update, so blocked playlist requests on any shard re-check.
    pub hls_version: AtomicU64,
}

impl StreamShared {
    pub fn hls_version(&self) -> u64 {
        self.hls_version.load(Ordering::Acquire)
    }
}

/// Codec summary of a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamInfo {
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u8>,
}

pub type StreamHub = shards::hub::Hub<StreamKey, Frame, StreamShared, ShardCmd>;
pub type StreamPublisher = shards::hub::Publisher<StreamKey, Frame, StreamShared, ShardCmd>;
pub type StreamSubscription = shards::hub::Subscription<StreamKey, Frame, StreamShared, ShardCmd>;
/// What crosses the shard mesh.
pub type MeshBatch = Vec<shards::hub::Envelope<StreamKey, Frame, ShardCmd>>;
pub type StreamEntry = shards::directory::Entry<StreamKey, StreamShared>;
pub type StreamDirectory = shards::directory::Directory<StreamKey, StreamShared>;

/// Frames that could not be serialized for viewers, process-wide: a bug if ever
/// non-zero, so one shared counter (touched only on that error) is enough.
pub static SERIALIZE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// A frame could not be serialized for viewers: logged and counted, never silent.
pub(crate) fn serialize_failed(format: &str, frame: &Frame, e: &dyn std::fmt::Display) {
    SERIALIZE_ERRORS.fetch_add(1, Ordering::Relaxed);
    tracing::error!(format, bytes = frame.payload.len(), dts_ms = frame.dts_ms, error = %e,
        "bug: a frame could not be serialized for viewers; skipped");
}
