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
use proto::flv::{self, TagKind};
use proto::media::{Frame, StreamKey};
use proto::rtmp::{self, MediaKind, RtmpEvent, RtmpServerConfig, RtmpServerConn};
use shards::event::LocalEvent;
use shards::hub::{PublishError, SubscribeError};
use shards::rt::{self, Queue, TcpStream};

use crate::server::access::{Action, Attempt, Ended, Protocol};
use crate::server::budget::Holder;
use crate::server::cmd::{Handover, ShardCmd};
use crate::server::config::PlayMissing;
use crate::server::egress::{Egress, EgressEnd, EgressError, TrackFilter, Wake};
use crate::server::ingest::Ingest;
use crate::server::media::{format, StreamSubscription};
use crate::server::metrics::{Disconnect, ShardMetrics, Timeout};
use crate::server::shard::{Held, Shard};

const READ_BUF: usize = 64 * 1024;

/// The RTMP chunks of a frame for every RTMP viewer: a fmt-0 header with the absolute
/// timestamp, then continuations, at the server's fixed outgoing chunk size.
pub(crate) fn rtmp_chunks(frame: &Frame) -> Bytes {
    let kind = match flv::tag_kind(frame.codec) {
        TagKind::Audio => MediaKind::Audio,
        TagKind::Video => MediaKind::Video,
        TagKind::Script => MediaKind::Data,
    };
    match rtmp::serialize_media(kind, frame.dts_ms as u32, &flv::write_body(frame)) {
        Ok(b) => b,
        Err(e) => {
            crate::server::media::serialize_failed("RTMP", frame, &e);
            Bytes::new()
        }
    }
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
    /// A decision the core refused (see `Session::decided`).
    failed: Option<rtmp::RtmpError>,
    /// This connection's share of the shard's input budget.
    input: InputShare,
    /// The query of the connect (the tcUrl's), where a token may also travel.
    connect_query: String,
    /// An accepted publish or play: audited and notified when it ends.
    ended: Option<Ended>,
}

/// A publish or play waiting for its access decision (see `Session::decide`).
struct Ask {
    action: Action,
    key: StreamKey,
    query: String,
}

/// A publisher to move to the shard that owns its stream: the owner, the stream, a
/// hook's recording override.
type Move = (usize, StreamKey, Option<bool>);

/// A connection's place in the shard-wide input budget (`server::budget`), released
/// when the connection ends.
struct InputShare {
    shard: Rc<Shard>,
    holder: Holder,
    evict: Rc<LocalEvent>,
}

impl InputShare {
    fn new(shard: &Rc<Shard>) -> InputShare {
        InputShare {
            shard: Rc::clone(shard),
            holder: Holder::default(),
            evict: Rc::default(),
        }
    }

    /// The connection now holds `bytes` of peer input.
    fn update(&mut self, bytes: usize) {
        self.holder = self
            .shard
            .input_budget
            .borrow_mut()
            .update(self.holder, bytes, &self.evict);
    }
}

impl Drop for InputShare {
    fn drop(&mut self) {
        self.shard.input_budget.borrow_mut().release(self.holder);
    }
}

pub async fn serve(stream: TcpStream, peer: Option<SocketAddr>, shard: Rc<Shard>) {
    let defaults = RtmpServerConfig::default();
    let cfg = RtmpServerConfig {
        window_ack_size: shard.config.rtmp.ack_window_bytes,
        decoder: rtmp::chunk::ChunkDecoderConfig {
            max_message_size: shard.config.rtmp.max_message_bytes as usize,
            ..defaults.decoder
        },
        idle_timeout: Duration::from_millis(shard.config.streams.idle_timeout_ms.max(1000)),
        handshake_timeout: Duration::from_millis(shard.config.limits.rtmp_handshake_timeout_ms),
        ..defaults
    };
    let mut conn = RtmpServerConn::new(cfg);
    // Starts the core's handshake timer.
    conn.handle_timeout(Instant::now());
    let session = Session {
        input: InputShare::new(&shard),
        shard,
        peer,
        conn,
        role: Role::Idle,
        out: Egress::default(),
        app: None,
        failed: None,
        connect_query: String::new(),
        ended: None,
    };
    run(stream, session).await;
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
            let _admitted = shard.admission.adopt();
            let stream = match TcpStream::adopt(h.fd) {
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
                failed: None,
                input: InputShare::new(&shard),
                connect_query: String::new(),
                ended: None,
            };
            // Refused (two publishers raced for the stream and both were handed here):
            // the connection goes on like one refused on its first shard, so the loop
            // writes the BadName status the core queued.
            // Allowed on the first shard already (token and hook): not decided again.
            if let Ok(Some(owner)) = session.start_publish(&h.key, h.record) {
                // The stream ended and was published anew on a third shard while this
                // connection was in flight: refuse rather than chase it.
                tracing::info!(stream = %h.key, owner, "publish refused: the stream moved during the hand-over");
                session.decided(|c| {
                    c.reject_publish(
                        "NetStream.Publish.BadName",
                        "the stream moved to another shard during the hand-over; publish again",
                    )
                });
            }
            if let Some(error) = session.failed.take() {
                let mut stream = stream;
                let end = ConnError::Decision {
                    what: "adopted publish decision",
                    error,
                };
                let stall = Duration::from_millis(shard.config.streams.send_stall_timeout_ms);
                session.finish(&mut stream, end, stall).await;
                return;
            }
            run(stream, session).await;
        },
        on_panic,
    );
}

/// Input buffer of a connection before it publishes: a handshake (1,537 bytes), commands
/// and a player's acks fit, so idle connections and viewers stay small.
const SMALL_READ_BUF: usize = 2 * 1024;

/// The one loop of an RTMP connection, in every role: feed one input (bytes, a timer) to
/// the core, drain its events, write what is pending without waiting, then wait for the
/// next input (see `Egress::wait`).
async fn run(mut stream: TcpStream, mut s: Session) {
    let stall = Duration::from_millis(s.shard.config.streams.send_stall_timeout_ms);
    match turns(&mut stream, &mut s, stall).await {
        Exit::Handover((owner, key, record)) => {
            let _ = s.out.flush(&mut stream, stall).await;
            s.hand_over(stream, owner, key, record);
        }
        Exit::End(end) => s.finish(&mut stream, end, stall).await,
    }
}

/// How [`turns`] left the loop.
enum Exit {
    /// Move the publisher to the shard that owns its stream.
    Handover(Move),
    End(ConnError),
}

/// Why an RTMP connection ended: each is logged once and counted by
/// [`Session::finish`], which also decides whether pending replies are still written.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("bad input: {0}")]
    BadInput(rtmp::RtmpError),
    /// The core refused a decision (accept/reject): it is in a state the driver did
    /// not expect.
    #[error("{what} failed: {error}")]
    Decision {
        what: &'static str,
        error: rtmp::RtmpError,
    },
    #[error("the publisher sent a frame that cannot be parsed: {0}")]
    BadMedia(crate::server::ingest::IngestError),
    /// The core closed the connection (a timeout, a refusal it completed).
    #[error("closed by the protocol core: {0:?}")]
    Core(rtmp::CloseReason),
    #[error("the shard's input budget (limits.max_buffered_input_bytes_per_shard) is exhausted and this connection holds the most")]
    Evicted,
    #[error("kicked through the API")]
    Kicked,
    /// Access control refused a publish or play (already counted and logged there);
    /// the error status is written, then the connection closes.
    #[error("access denied: {0}")]
    Denied(String),
    #[error("the server is stopping")]
    Stopping,
    #[error("the peer closed the connection")]
    PeerClosed,
    #[error("{0}")]
    Stalled(EgressError),
    #[error("socket: {0}")]
    Socket(EgressError),
}

impl ConnError {
    /// How a playing viewer's end is counted.
    fn disconnect(&self) -> Disconnect {
        match self {
            ConnError::Stalled(_) => Disconnect::Stalled,
            ConnError::PeerClosed | ConnError::Core(_) => Disconnect::PeerClosed,
            _ => Disconnect::Error,
        }
    }

    /// Whether what is queued (an error status, a close) can still be written: not
    /// when the socket itself failed.
    fn flush_first(&self) -> bool {
        !matches!(
            self,
            ConnError::PeerClosed | ConnError::Stalled(_) | ConnError::Socket(_)
        )
    }
}

/// The turns of a connection until it ends or moves.
async fn turns(stream: &mut TcpStream, s: &mut Session, stall: Duration) -> Exit {
    let mut buf = vec![0u8; SMALL_READ_BUF];
    let mut input = 0;
    loop {
        let now = Instant::now();
        if input > 0 {
            let bytes_in = &buf[..input];
            input = 0;
            if let Err(e) = s.conn.handle_bytes(now, bytes_in) {
                return Exit::End(ConnError::BadInput(e));
            }
        }
        if s.conn.poll_timeout().is_some_and(|t| t <= now) {
            s.conn.handle_timeout(now);
        }
        s.input.update(s.conn.buffered_bytes());
        match s.drain_events() {
            Ok(None) => {}
            // Nothing is read meanwhile: the core decodes nothing past a pending
            // request, and the socket's buffer (not ours) holds what the client sends.
            Ok(Some(ask)) => match s.decide(ask).await {
                Ok(None) => continue,
                Ok(Some(to)) => return Exit::Handover(to),
                Err(end) => return Exit::End(end),
            },
            Err(end) => return Exit::End(end),
        }
        match &s.role {
            Role::Publishing(ingest) => {
                ingest.flush_feeds();
                if buf.len() < READ_BUF {
                    buf.resize(READ_BUF, 0);
                }
            }
            Role::Waiting { key, until } => {
                let (key, until) = (key.clone(), *until);
                s.retry_waiting(&key, until);
            }
            Role::Idle | Role::Playing { .. } => {}
        }
        // Media for a viewer goes after any control replies, in one write.
        let mut ended = None;
        if let Role::Playing { sub, filter, .. } = &mut s.role {
            ended = s.out.gather(sub, format::RTMP, *filter, rtmp_chunks);
        }
        match s.out.write(stream, stall) {
            Ok(n) => s.sent(n),
            Err(e) => return Exit::End(ConnError::Socket(e.into())),
        }
        if let Some(end) = ended {
            s.viewer_ended(end);
            continue;
        }
        let wake = {
            let timer = s.conn.poll_timeout();
            let sub = match &s.role {
                Role::Playing { sub, .. } => Some(&**sub),
                _ => None,
            };
            let io = s.out.wait(stream, sub, timer, &mut buf, stall);
            // What else ends the wait, besides the socket and the core's timer.
            let (role, shard, evict) = (&s.role, &s.shard, &s.input.evict);
            let other = async {
                let by_role = async {
                    match role {
                        // A viewer ends with its stream (the hub ends every ring at shutdown).
                        Role::Playing { .. } => std::future::pending::<()>().await,
                        Role::Publishing(ingest) => {
                            let kicked = ingest.kicked();
                            rt::or(kicked.wait(), shard.stopping.wait()).await
                        }
                        Role::Idle => shard.stopping.wait().await,
                        // The directory has no change notification; a waiting player polls it.
                        Role::Waiting { .. } => rt::sleep(Duration::from_millis(100)).await,
                    }
                };
                rt::or(by_role, evict.wait()).await;
                None
            };
            rt::or(async { Some(io.await) }, other).await
        };
        match wake {
            None if s.input.evict.is_fired() => return Exit::End(ConnError::Evicted),
            None => match &s.role {
                Role::Publishing(ingest) if ingest.kicked().is_fired() => {
                    return Exit::End(ConnError::Kicked)
                }
                Role::Publishing(_) | Role::Idle if s.shard.stopping.is_fired() => {
                    return Exit::End(ConnError::Stopping)
                }
                _ => {}
            },
            Some(Ok(Wake::Media | Wake::Timer)) => {}
            Some(Ok(Wake::Written(n))) => s.sent(n),
            Some(Ok(Wake::Input(0))) => return Exit::End(ConnError::PeerClosed),
            Some(Ok(Wake::Input(n))) => {
                ShardMetrics::add(&s.shard.metrics().bytes_in, n as u64);
                input = n;
            }
            Some(Err(e @ EgressError::Stalled(_))) => return Exit::End(ConnError::Stalled(e)),
            Some(Err(e)) => return Exit::End(ConnError::Socket(e)),
        }
    }
}

impl Session {
    /// `n` bytes reached the socket.
    fn sent(&mut self, n: usize) {
        if n > 0 {
            ShardMetrics::add(&self.shard.metrics().bytes_out, n as u64);
            self.conn.record_media_sent(n);
        }
    }

    /// The connection ends; a playing viewer is counted by `why`.
    fn viewer_gone(&mut self, why: Disconnect) {
        if matches!(self.role, Role::Playing { .. }) {
            self.shard.metrics().viewer_disconnected(why);
        }
    }

    /// The connection ends: log and count why, write what is pending (replies, an
    /// error status) if the socket still works, and close.
    async fn finish(&mut self, stream: &mut TcpStream, end: ConnError, stall: Duration) {
        let m = self.shard.metrics();
        match &end {
            ConnError::BadInput(_) | ConnError::Decision { .. } | ConnError::BadMedia(_) => {
                ShardMetrics::add(&m.protocol_errors, 1);
                tracing::warn!(peer = ?self.peer, error = %end, "RTMP connection closed");
            }
            ConnError::Core(reason) => {
                if let Some(phase) = Timeout::of_rtmp(*reason) {
                    m.timed_out(phase);
                }
                tracing::debug!(peer = ?self.peer, error = %end, "RTMP connection closed");
            }
            ConnError::Evicted => {
                ShardMetrics::add(&m.input_evictions, 1);
                tracing::warn!(peer = ?self.peer, held = self.conn.buffered_bytes(), error = %end, "RTMP connection closed");
            }
            ConnError::Stalled(_) => {
                tracing::info!(peer = ?self.peer, error = %end, "RTMP viewer disconnected")
            }
            ConnError::Kicked
            | ConnError::Denied(_)
            | ConnError::Stopping
            | ConnError::PeerClosed
            | ConnError::Socket(_) => {
                tracing::debug!(peer = ?self.peer, error = %end, "RTMP connection closed")
            }
        }
        self.viewer_gone(end.disconnect());
        if end.flush_first() {
            let _ = self.out.flush(stream, stall).await;
        }
    }

    /// Move this publisher's connection to the shard that owns its stream.
    fn hand_over(self, stream: TcpStream, owner: usize, key: StreamKey, record: Option<bool>) {
        let Session {
            shard,
            peer,
            conn,
            app,
            ..
        } = self;
        match stream.release() {
            Ok(fd) => {
                tracing::info!(stream = %key, from = shard.id, to = owner, "publisher handed to the stream's owner shard");
                let h = Handover {
                    fd,
                    conn,
                    peer,
                    app,
                    key,
                    record,
                };
                shard.hub.send(owner, ShardCmd::AdoptPublisher(Box::new(h)));
            }
            Err(e) => {
                tracing::warn!(stream = %key, error = %e, "cannot hand the publisher over; closing")
            }
        }
    }

    /// Act on the core's events, until a publish or play needs an access decision.
    fn drain_events(&mut self) -> Result<Option<Ask>, ConnError> {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                RtmpEvent::Transmit(b) => self.out.push(b),
                RtmpEvent::ConnectRequested { app, query, .. } => {
                    let apps = &self.shard.config.rtmp.apps;
                    let known = apps.is_empty() || apps.contains(&app);
                    let token = known.then(|| {
                        self.shard
                            .access
                            .check_connect_token(&app, &query, self.peer)
                    });
                    if let Some(Err(denied)) = token {
                        let reason = format!("unauthorized: {}", denied.message);
                        if let Err(e) = self.conn.reject_connect(&reason) {
                            return Err(ConnError::Decision {
                                what: "connect reject",
                                error: e,
                            });
                        }
                    } else if known {
                        if let Err(e) = self.conn.accept_connect() {
                            return Err(ConnError::Decision {
                                what: "connect accept",
                                error: e,
                            });
                        }
                        self.app = Some(app);
                        self.connect_query = query;
                    } else {
                        ShardMetrics::add(&self.shard.metrics().rejected, 1);
                        // Debug-quoted: a peer's newline must not forge a log line.
                        tracing::info!(peer = ?self.peer, ?app, "RTMP connect rejected: unknown app");
                        let reason = format!(
                            "unknown application '{app}'; configured apps: {}",
                            apps.join(", ")
                        );
                        if let Err(e) = self.conn.reject_connect(&reason) {
                            return Err(ConnError::Decision {
                                what: "connect reject",
                                error: e,
                            });
                        }
                    }
                }
                RtmpEvent::PublishRequested { name, query, .. } => {
                    let Some(key) = self.key_for(&name) else {
                        let r = self.conn.reject_publish(
                            "NetStream.Publish.BadName",
                            &format!("invalid stream name '{name}'"),
                        );
                        if let Err(e) = r {
                            return Err(ConnError::Decision {
                                what: "publish reject",
                                error: e,
                            });
                        }
                        continue;
                    };
                    return Ok(Some(Ask {
                        action: Action::Publish,
                        key,
                        query,
                    }));
                }
                RtmpEvent::PlayRequested { name, query, .. } => {
                    let Some(key) = self.key_for(&name) else {
                        let r = self.conn.reject_play(
                            "NetStream.Play.StreamNotFound",
                            &format!("invalid stream name '{name}'"),
                        );
                        if let Err(e) = r {
                            return Err(ConnError::Decision {
                                what: "play reject",
                                error: e,
                            });
                        }
                        continue;
                    };
                    return Ok(Some(Ask {
                        action: Action::Play,
                        key,
                        query,
                    }));
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
                            return Err(ConnError::BadMedia(e));
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
                RtmpEvent::Unpublished => {
                    self.role = Role::Idle;
                    self.ended = None;
                }
                RtmpEvent::PlayStopped => {
                    self.viewer_gone(Disconnect::PeerClosed);
                    self.role = Role::Idle;
                    self.ended = None;
                }
                RtmpEvent::Closed(reason) => return Err(ConnError::Core(reason)),
            }
        }
        Ok(None)
    }

    /// Decide a publish or play (token, hook) and answer the core. `Ok(Some(..))`:
    /// hand the publisher over to the stream's owner shard.
    async fn decide(&mut self, ask: Ask) -> Result<Option<Move>, ConnError> {
        // The token may come after the stream name (OBS: "cam?token=T") or in the
        // tcUrl; the stream name's wins.
        let query = match (ask.query.is_empty(), self.connect_query.is_empty()) {
            (_, true) => ask.query.clone(),
            (true, false) => self.connect_query.clone(),
            (false, false) => format!("{}&{}", ask.query, self.connect_query),
        };
        let attempt = Attempt {
            protocol: Protocol::Rtmp,
            action: ask.action,
            key: &ask.key,
            query: &query,
            peer: self.peer,
        };
        let access = std::rc::Rc::clone(&self.shard.access);
        let allowed = match access.decide(&attempt).await {
            Ok(allowed) => allowed,
            Err(denied) => {
                let (code, r) = match ask.action {
                    Action::Publish => (
                        "NetStream.Publish.Unauthorized",
                        self.conn
                            .reject_publish("NetStream.Publish.Unauthorized", &denied.message),
                    ),
                    Action::Play => (
                        "NetStream.Play.Unauthorized",
                        self.conn
                            .reject_play("NetStream.Play.Unauthorized", &denied.message),
                    ),
                };
                if let Err(e) = r {
                    return Err(ConnError::Decision {
                        what: "access refusal",
                        error: e,
                    });
                }
                // The error status goes out before the close.
                while let Some(ev) = self.conn.poll_event() {
                    if let RtmpEvent::Transmit(b) = ev {
                        self.out.push(b);
                    }
                }
                return Err(ConnError::Denied(format!("{code}: {}", denied.message)));
            }
        };
        let key = allowed.key;
        match ask.action {
            Action::Publish => {
                if let Ok(Some(owner)) = self.start_publish(&key, allowed.record) {
                    return Ok(Some((owner, key, allowed.record)));
                }
            }
            Action::Play => self.start_play(&key),
        }
        if let Some(e) = self.failed.take() {
            return Err(ConnError::Decision {
                what: "publish or play decision",
                error: e,
            });
        }
        Ok(None)
    }

    /// Apply a decision to the core; a refusal is kept in `failed` for the event loop.
    fn decided(&mut self, f: impl FnOnce(&mut RtmpServerConn) -> Result<(), rtmp::RtmpError>) {
        if let Err(e) = f(&mut self.conn) {
            self.failed.get_or_insert(e);
        }
    }

    /// `name` may carry `?query` (kept for auth, not part of the key).
    fn key_for(&self, name: &str) -> Option<StreamKey> {
        let stream = name.split_once('?').map_or(name, |(s, _)| s);
        StreamKey::new(self.app.as_deref()?, stream).ok()
    }

    /// `Ok(Some(owner))`: hand the connection to that shard.
    fn start_publish(
        &mut self,
        key: &StreamKey,
        record: Option<bool>,
    ) -> Result<Option<usize>, ()> {
        match Ingest::start(&self.shard, key, record) {
            Ok(ingest) => {
                self.decided(|c| c.accept_publish());
                self.role = Role::Publishing(Box::new(ingest));
                self.ended = Some(Ended::new(
                    &self.shard.access,
                    Protocol::Rtmp,
                    Action::Publish,
                    key,
                    self.peer,
                ));
                Ok(None)
            }
            Err(PublishError::OwnedElsewhere { owner }) => Ok(Some(owner)),
            Err(e) => {
                ShardMetrics::add(&self.shard.metrics().rejected, 1);
                tracing::info!(stream = %key, peer = ?self.peer, error = %e, "publish refused");
                self.decided(|c| c.reject_publish("NetStream.Publish.BadName", &e.to_string()));
                Err(())
            }
        }
    }

    fn start_play(&mut self, key: &StreamKey) {
        match self.shard.hub.subscribe(key) {
            Ok(sub) => {
                self.decided(|c| c.accept_play());
                self.ended = Some(self.play_ended(key));
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
                self.decided(|c| c.accept_play());
                self.ended = Some(self.play_ended(key));
                let wait = Duration::from_millis(self.shard.config.streams.idle_timeout_ms);
                tracing::debug!(stream = %key, "RTMP viewer waits for the stream to be published");
                self.role = Role::Waiting {
                    key: key.clone(),
                    until: Instant::now() + wait,
                };
            }
            Err(SubscribeError::NotFound { .. }) => {
                ShardMetrics::add(&self.shard.metrics().rejected, 1);
                let reason = format!("stream '{key}' is not being published");
                self.decided(|c| c.reject_play("NetStream.Play.StreamNotFound", &reason));
            }
            Err(e) => {
                ShardMetrics::add(&self.shard.metrics().rejected, 1);
                tracing::info!(stream = %key, error = %e, "RTMP viewer refused");
                self.decided(|c| c.reject_play("NetStream.Play.Failed", &e.to_string()));
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
                self.ended = None;
            }
        }
    }

    fn play_ended(&self, key: &StreamKey) -> Ended {
        Ended::new(
            &self.shard.access,
            Protocol::Rtmp,
            Action::Play,
            key,
            self.peer,
        )
    }

    fn viewer_ended(&mut self, end: EgressEnd) {
        match end {
            EgressEnd::StreamEnded => {
                self.shard
                    .metrics()
                    .viewer_disconnected(Disconnect::StreamEnded);
                self.conn.publish_ended();
            }
            EgressEnd::TooSlow { skips } => {
                self.shard
                    .metrics()
                    .viewer_disconnected(Disconnect::TooSlow);
                ShardMetrics::add(&self.shard.metrics().slow_viewers, 1);
                tracing::info!(peer = ?self.peer, skips, "RTMP viewer disconnected: too slow for the stream");
            }
        }
        self.role = Role::Idle;
        self.ended = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_end_is_counted_and_flushed_as_its_cause_requires() {
        let io = || EgressError::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        let cases = [
            (ConnError::PeerClosed, Disconnect::PeerClosed, false),
            (
                ConnError::Core(rtmp::CloseReason::IdleTimeout),
                Disconnect::PeerClosed,
                true,
            ),
            (
                ConnError::Stalled(EgressError::Stalled(Duration::from_secs(10))),
                Disconnect::Stalled,
                false,
            ),
            (ConnError::Socket(io()), Disconnect::Error, false),
            (ConnError::Evicted, Disconnect::Error, true),
            (ConnError::Kicked, Disconnect::Error, true),
            (ConnError::Denied("x".into()), Disconnect::Error, true),
            (ConnError::Stopping, Disconnect::Error, true),
        ];
        for (end, disconnect, flush) in cases {
            assert_eq!(end.disconnect(), disconnect, "{end}");
            assert_eq!(end.flush_first(), flush, "{end}");
        }
    }
}
