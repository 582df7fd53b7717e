//! The publishing side shared by every ingest protocol: claim the stream, turn
//! publisher messages into frames on the stream's monotonic timeline, and hand them to
//! the ring (viewers, feeds), the HLS packagers and the stream's codec summary.
//!
//! The owner-side state of a stream ([`OwnerState`]: timeline, HLS packagers) lives as
//! long as the stream, not the publisher, so a publisher that reconnects within the
//! grace continues the same timeline and the same HLS media sequence.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use shards::event::LocalEvent;
use shards::hub::PublishError;
use shards::ring::Ring;

use crate::media::timeline::{Timeline, TimelineConfig};
use crate::media::{Codec, Frame, FrameKind, StreamKey, Track};
use crate::proto::flv::{self, TagKind};
use crate::server::hls::Packagers;
use crate::server::media::{StreamInfo, StreamPublisher};
use crate::server::shard::Shard;

/// State of a stream on its owner shard that outlives any one publisher.
pub struct OwnerState {
    pub timeline: Timeline,
    pub hls: Option<Packagers>,
    ring: Rc<Ring<Frame>>,
    timestamp_fixes_reported: u64,
    info: StreamInfo,
}

impl OwnerState {
    pub fn is_ended(&self) -> bool {
        self.ring.is_ended()
    }
}

/// One publisher's session on a stream.
pub struct Ingest {
    shard: Rc<Shard>,
    publisher: StreamPublisher,
    owner: Rc<RefCell<OwnerState>>,
    kick: Rc<LocalEvent>,
    _counted: crate::server::shard::Held,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Flv(#[from] flv::FlvError),
}

impl Ingest {
    /// Start (or, within the reconnect grace, resume) publishing `key` on this shard.
    pub fn start(shard: &Rc<Shard>, key: &StreamKey) -> Result<Ingest, PublishError> {
        let publisher = shard.hub.publish(key, Default::default)?;
        let mut owners = shard.owner_streams.borrow_mut();
        owners.retain(|_, o| !o.borrow().is_ended());
        let owner = match owners.get(key) {
            Some(o) if publisher.resumed() => {
                let mut st = o.borrow_mut();
                st.timeline.republish();
                if let Some(hls) = &mut st.hls {
                    hls.discontinuity(shard, publisher.entry());
                }
                Rc::clone(o)
            }
            _ => {
                let o = Rc::new(RefCell::new(OwnerState {
                    timeline: Timeline::new(TimelineConfig::default()),
                    hls: Packagers::new(&shard.config, key),
                    ring: Rc::clone(publisher.ring()),
                    timestamp_fixes_reported: 0,
                    info: StreamInfo::default(),
                }));
                owners.insert(key.clone(), Rc::clone(&o));
                crate::server::record::maybe_start(shard, key, publisher.ring());
                o
            }
        };
        drop(owners);
        let kick = Rc::new(LocalEvent::default());
        shard
            .publishers
            .borrow_mut()
            .insert(key.clone(), Rc::clone(&kick));
        tracing::info!(stream = %key, shard = shard.id, resumed = publisher.resumed(), "publishing");
        let counted = shard.hold(|m| &m.publishers);
        Ok(Ingest {
            shard: Rc::clone(shard),
            publisher,
            owner,
            kick,
            _counted: counted,
        })
    }

    pub fn key(&self) -> &StreamKey {
        self.publisher.key()
    }

    pub fn resumed(&self) -> bool {
        self.publisher.resumed()
    }

    /// Send what this read of publisher input produced to other shards now.
    pub fn flush_feeds(&self) {
        self.publisher.flush_feeds();
    }

    /// Fires when the API kicks this publisher.
    pub fn kicked(&self) -> Rc<LocalEvent> {
        Rc::clone(&self.kick)
    }

    /// One publisher message (an FLV tag body) with its 32-bit wire timestamp.
    pub fn push_tag(
        &mut self,
        kind: TagKind,
        timestamp_ms: u32,
        body: Bytes,
    ) -> Result<(), IngestError> {
        let track = match kind {
            TagKind::Audio => Track::Audio,
            TagKind::Video => Track::Video,
            TagKind::Script => Track::Data,
        };
        let mut owner = self.owner.borrow_mut();
        let dts_ms = owner.timeline.dts_ms(track, timestamp_ms);
        let Some(frame) = flv::parse_body(kind, dts_ms, body)? else {
            return Ok(());
        };
        self.push_frame_locked(&mut owner, frame);
        Ok(())
    }

    fn push_frame_locked(&self, owner: &mut OwnerState, frame: Frame) {
        if frame.kind == FrameKind::Config {
            owner.note_config(&frame, self.publisher.entry());
        }
        let c = owner.timeline.counters();
        let fixes = c.clamped + c.forward_rebases + c.backward_rebases;
        if fixes > owner.timestamp_fixes_reported {
            if owner.timestamp_fixes_reported == 0 {
                tracing::warn!(
                    stream = %self.key(),
                    "publisher sent timestamps that go backwards or jump; repairing them (counted in timestamp_fixes)"
                );
            }
            self.publisher
                .entry()
                .stats
                .timestamp_fixes
                .fetch_add(fixes - owner.timestamp_fixes_reported, Ordering::Relaxed);
            owner.timestamp_fixes_reported = fixes;
        }
        if let Some(hls) = &mut owner.hls {
            hls.push(&frame, &self.shard, self.publisher.entry());
        }
        self.publisher.push(frame);
    }
}

impl OwnerState {
    fn note_config(&mut self, frame: &Frame, entry: &crate::server::media::StreamEntry) {
        let summary = crate::media::codec::CodecInfo::from_config(frame).ok();
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
        entry
            .shared
            .info
            .store(Some(std::sync::Arc::new(self.info.clone())));
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let key = self.publisher.key();
        let mut publishers = self.shard.publishers.borrow_mut();
        if publishers
            .get(key)
            .is_some_and(|k| Rc::ptr_eq(k, &self.kick))
        {
            publishers.remove(key);
        }
        tracing::info!(stream = %key, "publisher left; viewers stay for the reconnect grace");
    }
}
