//! The owner-side state of a stream: what outlives any one publisher, so a publisher
//! that reconnects within the grace continues the same timeline and the same HLS media
//! sequence.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use proto::media::timeline::{Timeline, TimelineConfig};
use proto::media::{Codec, Frame, FrameKind, StreamKey};

use crate::server::config::Config;
use crate::server::media::{StreamEntry, StreamInfo};
use crate::server::streams::packagers::Packagers;
use crate::server::streams::OwnerCtx;

pub struct OwnerState {
    key: StreamKey,
    pub timeline: Timeline,
    pub hls: Option<Packagers>,
    timestamp_fixes_reported: u64,
    info: StreamInfo,
}

impl OwnerState {
    pub fn new(config: &Config, key: &StreamKey) -> OwnerState {
        OwnerState {
            key: key.clone(),
            timeline: Timeline::new(TimelineConfig::default()),
            hls: Packagers::new(config, key),
            timestamp_fixes_reported: 0,
            info: StreamInfo::default(),
        }
    }

    /// A publisher came back within the grace: the timeline continues, and the next HLS
    /// segments carry a discontinuity.
    pub fn republish(&mut self, ctx: &OwnerCtx<'_>, entry: &Arc<StreamEntry>) {
        self.timeline.republish();
        if let Some(hls) = &mut self.hls {
            hls.discontinuity(ctx, entry);
        }
    }

    /// Account for one frame on its way to the ring: codec summary, timestamp repairs,
    /// HLS packaging.
    pub fn on_frame(&mut self, frame: &Frame, ctx: &OwnerCtx<'_>, entry: &Arc<StreamEntry>) {
        if frame.kind == FrameKind::Config {
            self.note_config(frame, entry);
        }
        let c = self.timeline.counters();
        let fixes = c.clamped + c.forward_rebases + c.backward_rebases;
        if fixes > self.timestamp_fixes_reported {
            if self.timestamp_fixes_reported == 0 {
                tracing::warn!(
                    stream = %self.key,
                    "publisher sent timestamps that go backwards or jump; repairing them (counted in timestamp_fixes)"
                );
            }
            entry
                .stats
                .timestamp_fixes
                .fetch_add(fixes - self.timestamp_fixes_reported, Ordering::Relaxed);
            self.timestamp_fixes_reported = fixes;
        }
        if let Some(hls) = &mut self.hls {
            hls.push(frame, ctx, entry);
        }
    }

    fn note_config(&mut self, frame: &Frame, entry: &StreamEntry) {
        let summary = proto::media::codec::CodecInfo::from_config(frame).ok();
        match frame.codec {
            Codec::Video(_) => {
                self.info.video_codec = summary
                    .as_ref()
                    .map(|s| s.codec_string.clone())
                    .or(Some(format!("{:?}", frame.codec)));
                self.info.width = summary.as_ref().and_then(|s| s.width);
                self.info.height = summary.as_ref().and_then(|s| s.height);
            }
            Codec::Audio(_) => {
                self.info.audio_codec = summary
                    .as_ref()
                    .map(|s| s.codec_string.clone())
                    .or(Some(format!("{:?}", frame.codec)));
                self.info.sample_rate = summary.as_ref().and_then(|s| s.sample_rate);
                self.info.channels = summary.as_ref().and_then(|s| s.channels);
            }
            Codec::Script => {}
        }
        entry.shared.info.store(Some(Arc::new(self.info.clone())));
    }
}
