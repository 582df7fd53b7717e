//! The RTMP driver: one task per connection feeds socket bytes and time into the
//! sans-IO [`RtmpServerConn`] and acts on its events.
//!
//! - Publish: frames go through [`Ingest`] to the stream's ring. A publisher whose
//!   stream waits out its reconnect grace on another shard is handed to that shard
//!   (socket fd and connection state move), so a stream never changes owner.
//! - Play: the viewer reads the ring and writes each frame's RTMP chunks, built once
//!   per frame per shard (fmt-0 headers, absolute timestamps), in one vectored write
//!   with any control replies; the socket keeps being read for acks, pings and close.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shards::hub::{PublishError, SubscribeError};
use shards::rt::aio::AsyncReadExt;
use shards::rt::{self, Queue, TcpStream};

use crate::media::{Frame, StreamKey};
use crate::proto::flv::{self, TagKind};
use crate::proto::rtmp::{self, MediaKind, RtmpEvent, RtmpServerConfig, RtmpServerConn};
use crate::server::cmd::{Handover, ShardCmd};
use crate::server::config::PlayMissing;
use crate::server::egress::{Egress, EgressEnd, TrackFilter, INPUT_POLL};
use crate::server::ingest::Ingest;
use crate::server::media::{format, StreamSubscription};
use crate::server::metrics::ShardMetrics;
use crate::server::shard::{Held, Shard};

/// A connection that completes no handshake/connect in this time is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_STALL: Duration = Duration::from_secs(10);
const READ_BUF: usize = 64 * 1024;

/// The RTMP chunks of a frame for every RTMP viewer: a fmt-0 header with the absolute
/// timestamp, then continuations, at the server's fixed outgoing chunk size.
pub(crate) fn rtmp_chunks(frame: &Frame) -> Bytes {
    let kind = match flv::tag_kind(frame.codec) {
        TagKind::Audio => MediaKind::Audio,
        TagKind::Video => MediaKind::Video,
        TagKind::Script => MediaKind::Data,
    };
    rtmp::serialize_media(kind, frame.dts_ms as u32, &flv::write_body(frame)).unwrap_or_default()
}

enum Role {
    Idle,
    Publishing(Box<Ingest>),
    Playing {
        sub: Box<StreamSubscription>,
        filter: TrackFilter,
        _viewer: Held,
    },
    /// `rtmp.play_missing = "wait"`: play was accepted before the stream exists.
    Waiting {
        key: StreamKey,
        until: Instant,
    },
}

struct Session {
    shard: Rc<Shard>,
    peer: Option<SocketAddr>,
    conn: RtmpServerConn,
    role: Role,
    out: Egress,
    app: Option<String>,
}

pub async fn serve(stream: TcpStream, peer: Option<SocketAddr>, shard: Rc<Shard>) {
    let defaults = RtmpServerConfig::default();
    let cfg = RtmpServerConfig {
        window_ack_size: shard.config.rtmp.ack_window_bytes,
        decoder: rtmp::chunk::ChunkDecoderConfig {
            max_message_size: shard.config.rtmp.max_message_bytes as usize,
            ..defaults.decoder.clone()
        },
        idle_timeout: Duration::from_millis(shard.config.streams.idle_timeout_ms.max(1000)),
        handshake_timeout: HANDSHAKE_TIMEOUT,
        ..defaults
    };
    let mut conn = RtmpServerConn::new(cfg);
    // Starts the core's handshake timer.
    conn.handle_timeout(Instant::now());
    let session = Session {
        shard,
        peer,
        conn,
        role: Role::Idle,
        out: Egress::default(),
        app: None,
    };
    run(stream, session, Vec::new()).await;
}

/// Serve a publisher connection handed over from another shard (see the module note).
pub fn adopt(shard: &Rc<Shard>, h: Box<Handover>) {
    let shard = Rc::clone(shard);
    let peer = h.peer;
    let on_panic =
        move |msg: String| tracing::error!(?peer, "bug: adopted publisher task panicked: {msg}");
    rt::spawn_contained(
        Queue::Media,
        async move {
            ShardMetrics::add(&shard.metrics().rtmp_connections, 1);
            let _open = shard.hold(|m| &m.open);
            let stream = match rt::adopt_stream(h.fd) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(?peer, error = %e, "cannot adopt a handed-over publisher; closed");
                    return;
                }
            };
            let mut session = Session {
                shard: Rc::clone(&shard),
                peer: h.peer,
                conn: h.conn,
                role: Role::Idle,
                out: Egress::default(),
                app: h.app,
            };
            match session.start_publish(&h.key) {
                Ok(None) => run(stream, session, Vec::new()).await,
                Ok(Some(_)) | Err(()) => {
                    let mut stream = stream;
                    let _ = session.out.flush(&mut stream, WRITE_STALL).await;
                }
            }
        },
        on_panic,
    );
}

async fn run(mut stream: TcpStream, mut s: Session, pending: Vec<u8>) {
    let mut buf = vec![0u8; READ_BUF];
    let mut bytes_in: &[u8] = &pending;
    let mut next_input_poll = Instant::now();
    loop {
        if !bytes_in.is_empty() {
            if let Err(e) = s.conn.handle_bytes(Instant::now(), bytes_in) {
                ShardMetrics::add(&s.shard.metrics().protocol_errors, 1);
                tracing::warn!(peer = ?s.peer, error = %e, "RTMP connection closed: bad input");
                let _ = s.out.flush(&mut stream, WRITE_STALL).await;
                return;
            }
        }
        if s.conn.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            s.conn.handle_timeout(Instant::now());
        }
        match s.drain_events() {
            Step::Continue => {}
            Step::Close => {
                let _ = s.out.flush(&mut stream, WRITE_STALL).await;
                return;
            }
            Step::Handover(owner, key) => {
                let _ = s.out.flush(&mut stream, WRITE_STALL).await;
                let Session {
                    shard,
                    peer,
                    conn,
                    app,
                    ..
                } = s;
                match rt::release_stream(stream) {
                    Ok(fd) => {
                        tracing::info!(stream = %key, from = shard.id, to = owner, "publisher handed to the stream's owner shard");
                        let h = Handover {
                            fd,
                            conn,
                            peer,
                            app,
                            key,
                        };
                        shard.hub.send(owner, ShardCmd::AdoptPublisher(Box::new(h)));
                    }
                    Err(e) => {
                        tracing::warn!(stream = %key, error = %e, "cannot hand the publisher over; closing")
                    }
                }
                return;
            }
        }
        if let Role::Publishing(ingest) = &s.role {
            ingest.flush_feeds();
        }
        if let Role::Waiting { key, until } = &s.role {
            let (key, until) = (key.clone(), *until);
            s.retry_waiting(&key, until);
        }
        // Media for a viewer goes after any control replies, in one write.
        let mut ended = None;
        if let Role::Playing { sub, filter, .. } = &mut s.role {
            ended = s
                .out
                .gather(sub, format::RTMP, *filter, rtmp_chunks, |o, b| o.push(b));
        }
        let viewer_ended = ended.is_some();
        if let Some(end) = ended {
            s.viewer_ended(end);
        }
        match s.out.flush(&mut stream, WRITE_STALL).await {
            Ok(n) => {
                ShardMetrics::add(&s.shard.metrics().bytes_out, n as u64);
                s.conn.record_media_sent(n);
            }
            Err(e) => {
                tracing::debug!(peer = ?s.peer, error = %e, "RTMP peer gone");
                return;
            }
        }
        if viewer_ended {
            continue;
        }
        // A viewer waits for frames only: no read and no timer per frame (each would be
        // an io_uring poll or timeout set up and cancelled per viewer per frame). What
        // its player sends (acks, pings, a close) is drained without waiting at most
        // every INPUT_POLL, and the core's timers are checked on the way.
        if let Role::Playing { sub, .. } = &s.role {
            sub.wait().await;
            let now = Instant::now();
            bytes_in = &[];
            if now >= next_input_poll {
                next_input_poll = now + INPUT_POLL;
                match rt::try_read(&stream, &mut buf) {
                    Ok(None) => {}
                    Ok(Some(0)) | Err(_) => return,
                    Ok(Some(n)) => {
                        ShardMetrics::add(&s.shard.metrics().bytes_in, n as u64);
                        bytes_in = &buf[..n];
                    }
                }
            }
            continue;
        }
        // Wait for input, a kick (publisher), shutdown, or the core's next timer
        // (handshake/idle timeouts, pings).
        let wait = s.conn.poll_timeout().map_or(Duration::from_secs(60), |t| {
            t.saturating_duration_since(Instant::now())
        });
        let read = async { Some(stream.read(&mut buf).await) };
        let other = async {
            match &s.role {
                Role::Playing { .. } => {}
                Role::Publishing(ingest) => {
                    let kicked = ingest.kicked();
                    shards::rt::aio::or(kicked.wait(), s.shard.stopping.wait()).await
                }
                Role::Idle => s.shard.stopping.wait().await,
                // The directory has no change notification; a waiting player polls it.
                Role::Waiting { .. } => rt::sleep(Duration::from_millis(100)).await,
            }
            None
        };
        let input = rt::timeout(wait, shards::rt::aio::or(read, other)).await;
        bytes_in = match input {
            None | Some(None) => {
                let stop = match &s.role {
                    Role::Publishing(ingest) => {
                        ingest.kicked().is_fired() || s.shard.stopping.is_fired()
                    }
                    Role::Idle => s.shard.stopping.is_fired(),
                    Role::Playing { .. } | Role::Waiting { .. } => false,
                };
                if stop {
                    return;
                }
                &[]
            }
            Some(Some(Ok(0))) | Some(Some(Err(_))) => return,
            Some(Some(Ok(n))) => {
                ShardMetrics::add(&s.shard.metrics().bytes_in, n as u64);
                &buf[..n]
            }
        };
    }
}

enum Step {
    Continue,
    Close,
    Handover(usize, StreamKey),
}

impl Session {
    fn drain_events(&mut self) -> Step {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                RtmpEvent::Transmit(b) => self.out.push(b),
                RtmpEvent::ConnectRequested { app, .. } => {
                    let apps = &self.shard.config.rtmp.apps;
                    if apps.is_empty() || apps.iter().any(|a| *a == app) {
                        let _ = self.conn.accept_connect();
                        self.app = Some(app);
                    } else {
                        ShardMetrics::add(&self.shard.metrics().rejected, 1);
                        tracing::info!(peer = ?self.peer, %app, "RTMP connect rejected: unknown app");
                        let _ = self.conn.reject_connect(&format!(
                            "unknown application '{app}'; configured apps: {}",
                            apps.join(", ")
                        ));
                    }
                }
                RtmpEvent::PublishRequested { name, .. } => {
                    let Some(key) = self.key_for(&name) else {
                        let _ = self.conn.reject_publish(
                            "NetStream.Publish.BadName",
                            &format!("invalid stream name '{name}'"),
                        );
                        continue;
                    };
                    match self.start_publish(&key) {
                        Ok(Some(owner)) => return Step::Handover(owner, key),
                        Ok(None) => {}
                        Err(()) => {}
                    }
                }
                RtmpEvent::PlayRequested { name, .. } => {
                    let Some(key) = self.key_for(&name) else {
                        let _ = self.conn.reject_play(
                            "NetStream.Play.StreamNotFound",
                            &format!("invalid stream name '{name}'"),
                        );
                        continue;
                    };
                    self.start_play(&key);
                }
                RtmpEvent::Media {
                    kind,
                    timestamp_ms,
                    body,
                } => {
                    if let Role::Publishing(ingest) = &mut self.role {
                        let tag = match kind {
                            MediaKind::Audio => TagKind::Audio,
                            MediaKind::Video => TagKind::Video,
                            MediaKind::Data => TagKind::Script,
                        };
                        if let Err(e) = ingest.push_tag(tag, timestamp_ms, body) {
                            tracing::warn!(stream = %ingest.key(), error = %e, "publisher sent a frame that cannot be parsed; closing");
                            ShardMetrics::add(&self.shard.metrics().protocol_errors, 1);
                            return Step::Close;
                        }
                    }
                }
                RtmpEvent::ReceiveAudio(on) => {
                    if let Role::Playing { filter, .. } = &mut self.role {
                        filter.audio = on;
                    }
                }
                RtmpEvent::ReceiveVideo(on) => {
                    if let Role::Playing { filter, .. } = &mut self.role {
                        filter.video = on;
                    }
                }
                RtmpEvent::Unpublished | RtmpEvent::PlayStopped => self.role = Role::Idle,
                RtmpEvent::Closed(reason) => {
                    tracing::debug!(peer = ?self.peer, ?reason, "RTMP connection closed by the core");
                    return Step::Close;
                }
            }
        }
        Step::Continue
    }

    /// `name` may carry `?query` (kept for auth, not part of the key).
    fn key_for(&self, name: &str) -> Option<StreamKey> {
        let stream = name.split_once('?').map_or(name, |(s, _)| s);
        StreamKey::new(self.app.as_deref()?, stream).ok()
    }

    /// `Ok(Some(owner))`: hand the connection to that shard.
    fn start_publish(&mut self, key: &StreamKey) -> Result<Option<usize>, ()> {
        match Ingest::start(&self.shard, key) {
            Ok(ingest) => {
                let _ = self.conn.accept_publish();
                self.role = Role::Publishing(Box::new(ingest));
                Ok(None)
            }
            Err(PublishError::OwnedElsewhere { owner }) => Ok(Some(owner)),
            Err(e) => {
                ShardMetrics::add(&self.shard.metrics().rejected, 1);
                tracing::info!(stream = %key, peer = ?self.peer, error = %e, "publish refused");
                let _ = self
                    .conn
                    .reject_publish("NetStream.Publish.BadName", &e.to_string());
                Err(())
            }
        }
    }

    fn start_play(&mut self, key: &StreamKey) {
        match self.shard.hub.subscribe(key) {
            Ok(sub) => {
                let _ = self.conn.accept_play();
                tracing::debug!(stream = %key, remote = sub.is_remote(), "RTMP viewer joined");
                let viewer = self.shard.hold(|m| &m.rtmp_viewers);
                self.role = Role::Playing {
                    sub: Box::new(sub),
                    filter: TrackFilter::default(),
                    _viewer: viewer,
                };
            }
            Err(SubscribeError::NotFound { .. })
                if self.shard.config.rtmp.play_missing == PlayMissing::Wait =>
            {
                let _ = self.conn.accept_play();
                let wait = Duration::from_millis(self.shard.config.streams.idle_timeout_ms);
                tracing::debug!(stream = %key, "RTMP viewer waits for the stream to be published");
                self.role = Role::Waiting {
                    key: key.clone(),
                    until: Instant::now() + wait,
                };
            }
            Err(SubscribeError::NotFound { .. }) => {
                ShardMetrics::add(&self.shard.metrics().rejected, 1);
                let _ = self.conn.reject_play(
                    "NetStream.Play.StreamNotFound",
                    &format!("stream '{key}' is not being published"),
                );
            }
            Err(e) => {
                ShardMetrics::add(&self.shard.metrics().rejected, 1);
                tracing::info!(stream = %key, error = %e, "RTMP viewer refused");
                let _ = self
                    .conn
                    .reject_play("NetStream.Play.Failed", &e.to_string());
            }
        }
    }

    /// A waiting player: attach once the stream exists, or end the play at the deadline.
    fn retry_waiting(&mut self, key: &StreamKey, until: Instant) {
        match self.shard.hub.subscribe(key) {
            Ok(sub) => {
                tracing::debug!(stream = %key, "the stream a waiting RTMP viewer asked for is live");
                let viewer = self.shard.hold(|m| &m.rtmp_viewers);
                self.role = Role::Playing {
                    sub: Box::new(sub),
                    filter: TrackFilter::default(),
                    _viewer: viewer,
                };
            }
            Err(SubscribeError::NotFound { .. }) if Instant::now() < until => {}
            Err(e) => {
                tracing::info!(stream = %key, error = %e, "RTMP viewer stopped waiting");
                self.conn.publish_ended();
                self.role = Role::Idle;
            }
        }
    }

    fn viewer_ended(&mut self, end: EgressEnd) {
        match end {
            EgressEnd::StreamEnded => self.conn.publish_ended(),
            EgressEnd::TooSlow { skips } => {
                ShardMetrics::add(&self.shard.metrics().slow_viewers, 1);
                tracing::info!(peer = ?self.peer, skips, "RTMP viewer disconnected: too slow for the stream");
            }
        }
        self.role = Role::Idle;
    }
}
