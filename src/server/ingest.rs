//! The publishing side shared by every ingest protocol: claim the stream, turn
//! publisher messages into frames on the stream's monotonic timeline, and hand them to
//! the ring (viewers, feeds), the HLS packagers and the stream's codec summary.
//!
//! The owner-side state ([`OwnerState`]) lives in the shard's stream table as long as
//! the stream, not the publisher.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use proto::flv::{self, TagKind};
use proto::media::{Frame, StreamKey, Track};
use shards::event::LocalEvent;
use shards::hub::PublishError;

use crate::server::media::StreamPublisher;
use crate::server::shard::{Held, Shard};
use crate::server::streams::OwnerState;

/// One publisher's session on a stream.
pub struct Ingest {
    shard: Rc<Shard>,
    publisher: StreamPublisher,
    owner: Rc<RefCell<OwnerState>>,
    kick: Rc<LocalEvent>,
    _counted: Held,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Flv(#[from] flv::FlvError),
}

impl Ingest {
    /// Start (or, within the reconnect grace, resume) publishing `key` on this shard;
    /// `record` is a hook's override of `[record]` for a new stream.
    pub fn start(
        shard: &Rc<Shard>,
        key: &StreamKey,
        record: Option<bool>,
    ) -> Result<Ingest, PublishError> {
        let publisher = shard.hub.publish(key, Default::default)?;
        let claim = publisher.entry().claim;
        let (owner, new) = shard
            .streams
            .borrow_mut()
            .owner(key, claim, || OwnerState::new(&shard.config, key));
        if new {
            crate::server::record::maybe_start(shard, key, publisher.ring(), record);
        } else if publisher.resumed() {
            owner
                .borrow_mut()
                .republish(&shard.owner_ctx(), publisher.entry());
        }
        let kick = Rc::new(LocalEvent::default());
        shard
            .streams
            .borrow_mut()
            .set_publisher(key, Rc::clone(&kick));
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
        owner.on_frame(&frame, &self.shard.owner_ctx(), self.publisher.entry());
        self.publisher.push(frame);
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let key = self.publisher.key();
        self.shard
            .streams
            .borrow_mut()
            .clear_publisher(key, &self.kick);
        tracing::info!(stream = %key, "publisher left; viewers stay for the reconnect grace");
    }
}
