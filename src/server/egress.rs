//! The viewer side of every stream-oriented protocol (RTMP play, HTTP-FLV): read frames
//! from the subscription, take each frame's shared serialized bytes (built once per
//! shard and format), and write everything pending in one vectored write.

use std::time::Duration;

use bytes::Bytes;
use shards::ring::Next;
use shards::rt::{self, TcpStream};

use crate::media::{Frame, Track};
use crate::server::media::StreamSubscription;

/// At most this many bytes are gathered for one write, so one viewer never holds
/// its shard for long.
const MAX_GATHER_BYTES: usize = 512 * 1024;

/// Why a viewer's stream stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum EgressEnd {
    /// The stream ended (publisher gone past its grace).
    StreamEnded,
    /// The viewer fell out of the ring too often.
    TooSlow { skips: u32 },
}

/// How often a viewer drains what its player sent (acks, pings, a close) while frames
/// flow: without waiting on a read per frame.
pub const INPUT_POLL: Duration = Duration::from_millis(100);

/// Which tracks a viewer wants (RTMP receiveAudio/receiveVideo).
#[derive(Clone, Copy, Debug)]
pub struct TrackFilter {
    pub audio: bool,
    pub video: bool,
}

impl Default for TrackFilter {
    fn default() -> Self {
        TrackFilter {
            audio: true,
            video: true,
        }
    }
}

impl TrackFilter {
    fn wants(&self, frame: &Frame) -> bool {
        match frame.track() {
            Track::Audio => self.audio,
            Track::Video => self.video,
            Track::Data => true,
        }
    }
}

/// Pending output of one viewer.
#[derive(Default)]
pub struct Egress {
    bufs: Vec<Bytes>,
    bytes: usize,
}

impl Egress {
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Queue bytes that are not a frame (protocol headers, replies).
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.bytes += b.len();
            self.bufs.push(b);
        }
    }

    /// Move what the subscription has into the pending writes. `wrap` may surround each
    /// frame's shared bytes with per-viewer framing (HTTP chunked encoding).
    pub fn gather(
        &mut self,
        sub: &mut StreamSubscription,
        format: usize,
        filter: TrackFilter,
        build: impl Fn(&Frame) -> Bytes,
        mut wrap: impl FnMut(&mut Self, Bytes),
    ) -> Option<EgressEnd> {
        while self.bytes < MAX_GATHER_BYTES {
            // The frame's shared bytes straight from its slot: no clone of the frame.
            let next = sub.next_map(|e| {
                if filter.wants(e.item) {
                    e.serialized(format, &build)
                } else {
                    None
                }
            });
            match next {
                Next::Item { item: Some(b), .. } => {
                    wrap(self, b);
                }
                Next::Item { item: None, .. } => {}
                Next::Pending => return None,
                Next::Ended => return Some(EgressEnd::StreamEnded),
                Next::TooSlow { skips } => return Some(EgressEnd::TooSlow { skips }),
            }
        }
        None
    }

    /// Write everything pending; returns the bytes written. Fails if the viewer stops
    /// reading for `stall`. The common case (the socket takes it all) is one `writev`
    /// and no timer; only a full socket arms the stall timer and waits.
    pub async fn flush(
        &mut self,
        stream: &mut TcpStream,
        stall: Duration,
    ) -> std::io::Result<usize> {
        if self.bufs.is_empty() {
            return Ok(0);
        }
        let mut written = rt::try_write_vectored(stream, &mut self.bufs)?;
        if !self.bufs.is_empty() {
            match rt::timeout(stall, rt::write_all_vectored(stream, &mut self.bufs)).await {
                Some(Ok(n)) => written += n,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("viewer read nothing for {} s", stall.as_secs()),
                    ))
                }
            }
        }
        self.bytes = 0;
        Ok(written)
    }
}
