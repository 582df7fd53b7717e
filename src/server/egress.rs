//! The viewer side of every stream-oriented protocol (RTMP play, HTTP-FLV): read frames
//! from the subscription, take each frame's shared serialized bytes (built once per
//! shard and format), and write everything pending in one vectored write.
//!
//! A playing viewer's task has one loop shape (see [`Egress::wait`]):
//! gather what the ring has → one non-blocking `writev` → wait for the next event:
//! - the ring's wake (paced by the hub: at most one per write budget, so each write
//!   carries every frame that arrived meanwhile);
//! - input from the player (acks, pings, a close), through a readiness poll that
//!   stays armed, so an idle input side costs no system call and no wake-up;
//! - the protocol core's timer;
//! - and only while the socket is full: POLLOUT, with the stall deadline.
//!
//! A viewer whose socket is full does not gather more: it waits alone on POLLOUT while
//! the ring moves on (when it falls out of the ring it skips to the newest keyframe,
//! counted), and it is disconnected after `streams.send_stall_timeout_ms` without
//! progress. Nothing a viewer does blocks its shard.

use std::future::Future as _;
use std::io;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::media::{Frame, Track};
use shards::ring::Next;
use shards::rt::{Deadline, TcpStream};

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

/// What woke a waiting viewer.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// The ring has new items, or ended.
    Media,
    /// The peer sent `n` bytes (in the caller's buffer); `0` means it closed.
    Input(usize),
    /// The socket took `n` more of the pending bytes after being full.
    Written(usize),
    /// The protocol core's timer is due.
    Timer,
}

/// Why a viewer's connection failed.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("the viewer's socket took no bytes for {} ms", .0.as_millis())]
    Stalled(Duration),
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

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

/// Pending output of one connection, and its waits.
#[derive(Default)]
pub struct Egress {
    bufs: Vec<Bytes>,
    bytes: usize,
    /// Set while the socket is full with bytes pending: the stall deadline.
    stall: Option<Deadline>,
    /// The protocol core's next timer, while it has one.
    timer: Option<Deadline>,
}

impl Egress {
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// The socket did not take everything last time: wait for it before gathering more.
    pub fn is_backlogged(&self) -> bool {
        self.stall.is_some()
    }

    /// Queue bytes that are not a frame (protocol headers, replies).
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.bytes += b.len();
            self.bufs.push(b);
        }
    }

    /// Move what the subscription has into the pending writes, as each frame's shared
    /// bytes in `format` (built by `build` once per frame and shard). Gathers nothing
    /// while the socket is backlogged.
    pub fn gather(
        &mut self,
        sub: &mut StreamSubscription,
        format: usize,
        filter: TrackFilter,
        build: impl Fn(&Frame) -> Bytes,
    ) -> Option<EgressEnd> {
        if self.is_backlogged() {
            return None;
        }
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
                Next::Item { item: Some(b), .. } => self.push(b),
                Next::Item { item: None, .. } => {}
                Next::Pending => return None,
                Next::Ended => return Some(EgressEnd::StreamEnded),
                Next::TooSlow { skips } => return Some(EgressEnd::TooSlow { skips }),
            }
        }
        None
    }

    /// Write what is pending without waiting (one `writev`); returns the bytes
    /// written. What the socket does not take stays pending, and the stall deadline
    /// starts.
    pub fn write(&mut self, stream: &TcpStream, stall: Duration) -> io::Result<usize> {
        if self.bufs.is_empty() {
            return Ok(0);
        }
        let n = stream.try_write_vectored(&mut self.bufs)?;
        self.wrote(n, stall);
        Ok(n)
    }

    fn wrote(&mut self, n: usize, stall: Duration) {
        self.bytes -= n.min(self.bytes);
        if self.bufs.is_empty() {
            self.bytes = 0;
            self.stall = None;
        } else if n > 0 || self.stall.is_none() {
            // Progress (or a first full socket) starts the stall clock anew.
            let at = Instant::now() + stall;
            match &mut self.stall {
                Some(d) => d.reset(at),
                None => self.stall = Some(Deadline::at(at)),
            }
        }
    }

    /// Wait for the next event of a connection (see the module note): the ring's wake
    /// (when `sub` is given and the socket is not full), input into `buf`, POLLOUT
    /// while the socket is full, or the core's timer `timer_at`.
    pub async fn wait(
        &mut self,
        stream: &mut TcpStream,
        sub: Option<&StreamSubscription>,
        timer_at: Option<Instant>,
        buf: &mut [u8],
        stall: Duration,
    ) -> Result<Wake, EgressError> {
        match (timer_at, &mut self.timer) {
            (None, t) => *t = None,
            (Some(at), Some(d)) => d.reset(at),
            (Some(at), t @ None) => *t = Some(Deadline::at(at)),
        }
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = stream.poll_read(cx, buf) {
                return Poll::Ready(Ok(Wake::Input(r?)));
            }
            if !self.bufs.is_empty() {
                match stream.poll_write_some(cx, &mut self.bufs) {
                    Poll::Ready(Ok(n)) => {
                        self.wrote(n, stall);
                        return Poll::Ready(Ok(Wake::Written(n)));
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => {}
                }
                if let Some(d) = &mut self.stall {
                    if d.poll_expired(cx).is_ready() {
                        return Poll::Ready(Err(EgressError::Stalled(stall)));
                    }
                }
            } else if let Some(sub) = sub {
                if std::pin::pin!(sub.wait()).poll(cx).is_ready() {
                    return Poll::Ready(Ok(Wake::Media));
                }
            }
            if let Some(t) = &mut self.timer {
                if t.poll_expired(cx).is_ready() {
                    self.timer = None;
                    return Poll::Ready(Ok(Wake::Timer));
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Write everything pending, waiting while the socket is full; fails after `stall`
    /// without progress. For replies and the last bytes before a close.
    pub async fn flush(&mut self, stream: &mut TcpStream, stall: Duration) -> io::Result<usize> {
        if self.bufs.is_empty() {
            return Ok(0);
        }
        let n = stream.write_all_vectored(&mut self.bufs, stall).await?;
        self.bytes = 0;
        self.stall = None;
        Ok(n)
    }
}
