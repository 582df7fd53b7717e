//! The server side of one RTMP connection: a publisher (ffmpeg, OBS) or a player.
//!
//! Shape: feed bytes with [`RtmpServerConn::handle_bytes`], drain
//! [`RtmpServerConn::poll_event`] to `None`, call [`RtmpServerConn::handle_timeout`] at
//! [`RtmpServerConn::poll_timeout`]. Connect, publish and play requests become events;
//! the driver answers each with a decision method (`accept_*`/`reject_*`). While a
//! decision is pending the connection stops decoding (later bytes wait in the buffer),
//! so nothing the client sent after the request is handled before the answer.
//!
//! Once a play is accepted the driver writes media to the socket itself, as bytes from
//! [`crate::rtmp::serialize_media`] shared by all players; they must go between
//! `Transmit` events, never inside one. Everything this connection sends uses type 0
//! headers, so the two streams of messages never depend on each other's header state.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};

use super::amf0::{self, Amf0Value};
use super::chunk::ChunkDecoderConfig;
use super::command::{self, split_query, Command};
use super::handshake::{self, HandshakeKind, HandshakeRng, HANDSHAKE_SIZE};
use super::message::{self, MediaKind, Message, PublishType, UserControl};
use super::session::Session;
use super::{RtmpError, MAX_TC_URL_BYTES, OUTGOING_CHUNK_SIZE, PLAY_STREAM_ID};

/// Most message streams one connection may create.
const MAX_STREAMS: u32 = 8;

#[derive(Clone, Debug)]
pub struct RtmpServerConfig {
    /// The chunk size announced after connect and used for all output. Media from
    /// [`crate::rtmp::serialize_media`] uses [`OUTGOING_CHUNK_SIZE`], so change
    /// this only together with how media is serialized.
    pub chunk_size: u32,
    /// Window Acknowledgement Size sent to the client: it acknowledges every this many
    /// bytes.
    pub window_ack_size: u32,
    /// Set Peer Bandwidth sent to the client (dynamic limit).
    pub peer_bandwidth: u32,
    pub decoder: ChunkDecoderConfig,
    /// The handshake, connect and an accepted publish or play must all happen within
    /// this long of the connection's start; and a connection whose publish or play
    /// ended must have a new one accepted within this long of that end.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed; a publisher, one that
    /// sends no media (audio, video or data) for this long. Players answer pings, so
    /// with `ping_interval` set, a live player is never idle this long.
    pub idle_timeout: Duration,
    /// Send a ping request this often once connected; `None` for never. Pings go out at
    /// least twice per `idle_timeout` whatever this says, so a player (which has nothing
    /// else to send but a rare acknowledgement) always answers one in time.
    pub ping_interval: Option<Duration>,
    /// Most bytes buffered while a connect/publish/play decision is pending.
    pub max_backlog_bytes: usize,
    /// Seeds the handshake filler bytes (see [`HandshakeRng`]); vary it per connection.
    pub handshake_seed: u64,
    /// `fmsVer` in the connect reply; some clients look for "FMS/".
    pub fms_version: String,
}

impl Default for RtmpServerConfig {
    fn default() -> Self {
        RtmpServerConfig {
            chunk_size: OUTGOING_CHUNK_SIZE,
            window_ack_size: 2_500_000,
            peer_bandwidth: 2_500_000,
            decoder: ChunkDecoderConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ping_interval: Some(Duration::from_secs(20)),
            max_backlog_bytes: 4 << 20,
            handshake_seed: 0,
            fms_version: "FMS/3,0,1,123".into(),
        }
    }
}

/// What `play`'s start argument asked for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PlayStart {
    /// -2 (the default): live if there is a live stream, else recorded.
    LiveOrRecorded,
    /// -1: live only.
    Live,
    /// An offset into a recording, as sent: seconds per the spec, but ffmpeg sends
    /// milliseconds, so treat it as a hint.
    Offset(f64),
}

impl PlayStart {
    fn from_arg(v: Option<f64>) -> Self {
        match v {
            // ffmpeg sends -1000/-2000 (its "-rtmp_live" option in milliseconds)
            Some(s) if s == -1.0 || s == -1000.0 => PlayStart::Live,
            Some(s) if s >= 0.0 => PlayStart::Offset(s),
            _ => PlayStart::LiveOrRecorded,
        }
    }
}

/// Why the connection closed itself (errors are returned from `handle_bytes` instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The driver rejected the connect.
    Rejected,
    /// The handshake did not finish within `handshake_timeout`.
    HandshakeTimeout,
    /// The handshake finished, but no publish or play was accepted within
    /// `handshake_timeout`.
    NegotiationTimeout,
    /// Nothing arrived for `idle_timeout`.
    IdleTimeout,
    /// The publisher sent no media for `idle_timeout` (pings and acks do not count).
    PublisherIdle,
}

/// Outputs of [`RtmpServerConn`], in the order they happen.
#[derive(Clone, Debug, PartialEq)]
pub enum RtmpEvent {
    /// Bytes to write to the client, in order (complete messages).
    Transmit(Bytes),
    /// The client sent `connect`. Answer with `accept_connect` or `reject_connect`.
    /// `query` is the part after `?` in the app, else in the tcUrl (verbatim, may be
    /// empty).
    ConnectRequested {
        app: String,
        tc_url: Option<String>,
        query: String,
    },
    /// The client wants to publish `name` in `app`. `query` is the part after `?` in the
    /// publish name (the connect's query came with `ConnectRequested`). Answer with
    /// `accept_publish` or `reject_publish`.
    PublishRequested {
        app: String,
        name: String,
        query: String,
        publish_type: PublishType,
    },
    /// The client wants to play `name`. Answer with `accept_play` or `reject_play`.
    PlayRequested {
        app: String,
        name: String,
        query: String,
        start: PlayStart,
        /// As sent; negative (the default -1) means "until the end".
        duration: f64,
        /// Whether to flush a previous playlist; always true from most clients.
        reset: bool,
    },
    /// An audio, video or data message from the publisher, once the publish is
    /// accepted. `body` is the FLV tag body; for data, the AMF0 body with any
    /// `@setDataFrame` removed (so it starts with the `onMetaData` name).
    Media {
        kind: MediaKind,
        timestamp_ms: u32,
        body: Bytes,
    },
    /// The publisher stopped (FCUnpublish, deleteStream or closeStream).
    Unpublished,
    /// The player stopped (deleteStream or closeStream on the played stream).
    PlayStopped,
    /// The player asked for audio (true) or no audio (false).
    ReceiveAudio(bool),
    ReceiveVideo(bool),
    /// The connection is finished: write out the `Transmit` events before this one,
    /// then close the socket. Nothing else follows.
    Closed(CloseReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitC0C1,
    AwaitC2,
    Chunks,
    Closed,
}

#[derive(Clone, Debug, PartialEq)]
enum Pending {
    None,
    Connect {
        transaction_id: f64,
        object_encoding: f64,
        app: String,
    },
    Publish {
        stream_id: u32,
        name: String,
    },
    Play {
        stream_id: u32,
        name: String,
        reset: bool,
    },
}

/// One accepted RTMP connection, server side.
#[derive(Debug)]
pub struct RtmpServerConn {
    config: RtmpServerConfig,
    phase: Phase,
    session: Session,
    rng: HandshakeRng,
    handshake: Option<HandshakeKind>,
    events: VecDeque<RtmpEvent>,
    pending: Pending,
    /// The app from connect, once accepted.
    app: Option<String>,
    /// Bit `i` set: message stream `i` was created.
    streams: u32,
    publishing: Option<u32>,
    playing: Option<u32>,
    started: Option<Instant>,
    last_received: Option<Instant>,
    /// While publishing: when the last media message arrived.
    last_media: Option<Instant>,
    /// Since when the connection has neither an accepted publish nor an accepted play.
    negotiating_since: Option<Instant>,
    next_ping: Option<Instant>,
}

impl RtmpServerConn {
    /// A fresh connection. The handshake and idle clocks start at the first
    /// `handle_bytes` or `handle_timeout`: call `handle_timeout(now)` right after accept.
    pub fn new(config: RtmpServerConfig) -> Self {
        let rng = HandshakeRng::new(config.handshake_seed);
        let session = Session::new(config.decoder);
        RtmpServerConn {
            config,
            phase: Phase::AwaitC0C1,
            session,
            rng,
            handshake: None,
            events: VecDeque::new(),
            pending: Pending::None,
            app: None,
            streams: 0,
            publishing: None,
            playing: None,
            started: None,
            last_received: None,
            last_media: None,
            negotiating_since: None,
            next_ping: None,
        }
    }

    /// Which handshake the client used, once it is done.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.handshake
    }

    /// The chunk size this side sends with.
    pub fn chunk_size(&self) -> u32 {
        self.config.chunk_size
    }

    pub fn is_publishing(&self) -> bool {
        self.publishing.is_some()
    }

    /// True once a play was accepted: the driver may write media bytes.
    pub fn is_playing(&self) -> bool {
        self.playing.is_some()
    }

    /// Tells the connection the driver wrote `n` bytes of media directly, so flow
    /// control (`unacknowledged_bytes`) accounts for them.
    pub fn record_media_sent(&mut self, n: usize) {
        self.session.sent += n as u64;
    }

    /// Bytes sent that the client has not acknowledged yet: a player far behind its
    /// acknowledgement window is not keeping up.
    pub fn unacknowledged_bytes(&self) -> u64 {
        self.session.unacknowledged()
    }

    /// Peer input this connection holds (undecoded bytes and partial messages), for a
    /// server-wide budget: the per-connection cap is `decoder.max_buffered_bytes`.
    pub fn buffered_bytes(&self) -> usize {
        self.session.buffered_bytes()
    }

    /// How often a connected peer is pinged (see `RtmpServerConfig::ping_interval`).
    fn ping_every(&self) -> Option<Duration> {
        let every = self.config.ping_interval?;
        Some(every.min(self.config.idle_timeout / 2))
    }

    fn start_clocks(&mut self, now: Instant) {
        if self.started.is_none() {
            self.started = Some(now);
            self.last_received = Some(now);
            self.negotiating_since = Some(now);
        }
    }

    /// Feeds bytes read from the socket. An error means the connection must be closed
    /// (the peer broke the protocol); it is closed from then on.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) -> Result<(), RtmpError> {
        if self.phase == Phase::Closed {
            return Ok(());
        }
        self.start_clocks(now);
        self.last_received = Some(now);
        self.session.inbuf.extend_from_slice(bytes);
        self.run().inspect_err(|_| self.phase = Phase::Closed)
    }

    /// Fires the handshake, idle and ping timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        self.start_clocks(now);
        let started = self.started.unwrap_or(now);
        let negotiating = self
            .negotiating_since
            .is_some_and(|t| now >= t + self.config.handshake_timeout);
        if negotiating && self.phase != Phase::Chunks {
            self.close(CloseReason::HandshakeTimeout);
        } else if negotiating {
            self.close(CloseReason::NegotiationTimeout);
        } else if self.idle_deadline().is_some_and(|t| now >= t) {
            let publisher = self.publishing.is_some();
            self.close(if publisher {
                CloseReason::PublisherIdle
            } else {
                CloseReason::IdleTimeout
            });
        } else if let (Some(at), Some(every)) = (self.next_ping, self.ping_every()) {
            if now >= at {
                let timestamp = now.duration_since(started).as_millis() as u32;
                self.transmit(message::user_control(UserControl::PingRequest {
                    timestamp,
                }));
                self.next_ping = Some(now + every);
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<RtmpEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` should next be called; `None` once closed or before the
    /// clocks started.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        self.started?;
        let mut t = self.idle_deadline()?;
        if let Some(since) = self.negotiating_since {
            t = t.min(since + self.config.handshake_timeout);
        }
        if let Some(ping) = self.next_ping {
            t = t.min(ping);
        }
        Some(t)
    }

    /// When the connection counts as idle: no bytes for `idle_timeout`, or for a
    /// publisher no media.
    fn idle_deadline(&self) -> Option<Instant> {
        let last = match self.publishing {
            Some(_) => self.last_media.or(self.last_received)?,
            None => self.last_received?,
        };
        Some(last + self.config.idle_timeout)
    }

    fn close(&mut self, reason: CloseReason) {
        self.phase = Phase::Closed;
        self.events.push_back(RtmpEvent::Closed(reason));
    }

    fn transmit(&mut self, bytes: Bytes) {
        self.session.send(bytes);
        self.flush_session();
    }

    fn flush_session(&mut self) {
        while let Some(b) = self.session.tx.pop_front() {
            self.events.push_back(RtmpEvent::Transmit(b));
        }
    }

    fn run(&mut self) -> Result<(), RtmpError> {
        loop {
            match self.phase {
                Phase::Closed => return Ok(()),
                Phase::AwaitC0C1 => {
                    let Some(&c0) = self.session.inbuf.first() else {
                        return Ok(());
                    };
                    handshake::check_version(c0)?;
                    if self.session.inbuf.len() < 1 + HANDSHAKE_SIZE {
                        return Ok(());
                    }
                    let (reply, kind) = handshake::server_response(
                        &self.session.inbuf[..1 + HANDSHAKE_SIZE],
                        &mut self.rng,
                    )?;
                    self.session.inbuf.advance(1 + HANDSHAKE_SIZE);
                    self.session.count_received(1 + HANDSHAKE_SIZE);
                    self.handshake = Some(kind);
                    self.transmit(reply);
                    self.phase = Phase::AwaitC2;
                }
                Phase::AwaitC2 => {
                    if self.session.inbuf.len() < HANDSHAKE_SIZE {
                        return Ok(());
                    }
                    self.session.inbuf.advance(HANDSHAKE_SIZE);
                    self.session.count_received(HANDSHAKE_SIZE);
                    self.phase = Phase::Chunks;
                    // Every reply (a rejection too) is chunked at our size, so the
                    // client must learn it before the first one.
                    self.transmit(message::set_chunk_size(self.config.chunk_size));
                }
                Phase::Chunks => {
                    if self.pending != Pending::None {
                        let bytes = self.session.inbuf.len();
                        if bytes > self.config.max_backlog_bytes {
                            return Err(RtmpError::Backlog {
                                bytes,
                                max: self.config.max_backlog_bytes,
                            });
                        }
                        return Ok(());
                    }
                    let msg = self.session.next_message();
                    self.flush_session();
                    match msg? {
                        None => return Ok(()),
                        Some(m) => self.handle_message(m)?,
                    }
                }
            }
        }
    }

    fn handle_message(&mut self, msg: Message) -> Result<(), RtmpError> {
        match msg {
            Message::Command { stream_id, values } => {
                self.handle_command(stream_id, Command::parse(values)?)
            }
            Message::Media {
                kind,
                stream_id,
                timestamp,
                body,
            } => {
                if self.publishing != Some(stream_id) {
                    tracing::trace!(stream_id, ?kind, "media outside a publish, dropped");
                    return Ok(());
                }
                let body = if kind == MediaKind::Data {
                    match strip_set_data_frame(body) {
                        Some(b) => b,
                        None => {
                            tracing::debug!("undecodable data message from publisher, dropped");
                            return Ok(());
                        }
                    }
                } else {
                    body
                };
                // `last_received` is the time of the bytes being decoded now.
                self.last_media = self.last_received;
                self.events.push_back(RtmpEvent::Media {
                    kind,
                    timestamp_ms: timestamp,
                    body,
                });
                Ok(())
            }
            Message::UserControl(ev) => {
                tracing::trace!(?ev, "user control from client");
                Ok(())
            }
            other => {
                tracing::trace!(?other, "message not for the server, ignored");
                Ok(())
            }
        }
    }

    fn reply_result(&mut self, stream_id: u32, c: &Command, values: &[Amf0Value]) {
        if c.wants_reply() {
            let b = command::result(stream_id, c.transaction_id, values, self.config.chunk_size);
            self.transmit(b);
        }
    }

    fn reply_error(&mut self, stream_id: u32, c: &Command, code: &str, description: &str) {
        if c.wants_reply() {
            let status = command::status_object("error", code, description);
            let b = command::error(
                stream_id,
                c.transaction_id,
                &[Amf0Value::Null, status],
                self.config.chunk_size,
            );
            self.transmit(b);
        }
    }

    fn status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let b = command::on_status(stream_id, level, code, description, self.config.chunk_size);
        self.transmit(b);
    }

    fn handle_command(&mut self, sid: u32, c: Command) -> Result<(), RtmpError> {
        let connected = self.app.is_some();
        match c.name.as_str() {
            "connect" if !connected => {
                let app_field = c.object_str("app").unwrap_or_default();
                let tc_url = c.object_str("tcUrl").map(str::to_owned);
                let (app, mut query) = split_query(app_field);
                if query.is_empty() {
                    query = tc_url
                        .as_deref()
                        .map(|u| split_query(u).1)
                        .unwrap_or_default();
                }
                // OBS sends "live/" for a server URL ending in a slash
                let app = app.trim_end_matches('/');
                let too_long = match command::check_lengths("application name", app, query) {
                    Err(why) => Some(why),
                    Ok(()) => tc_url
                        .as_ref()
                        .filter(|u| u.len() > MAX_TC_URL_BYTES)
                        .map(|u| {
                            format!(
                                "tcUrl is {} bytes long; at most {MAX_TC_URL_BYTES} are allowed",
                                u.len()
                            )
                        }),
                };
                if let Some(why) = too_long {
                    self.refuse_connect(c.transaction_id, &why);
                    return Ok(());
                }
                let (app, query) = (app.to_owned(), query.to_owned());
                let object_encoding = c
                    .object
                    .property("objectEncoding")
                    .and_then(Amf0Value::as_number)
                    .unwrap_or(0.0);
                self.pending = Pending::Connect {
                    transaction_id: c.transaction_id,
                    object_encoding,
                    app: app.clone(),
                };
                self.events
                    .push_back(RtmpEvent::ConnectRequested { app, tc_url, query });
            }
            "connect" => {
                self.reply_error(sid, &c, "NetConnection.Call.Failed", "Already connected.")
            }
            _ if !connected => {
                self.reply_error(sid, &c, "NetConnection.Call.Failed", "Connect first.");
            }
            "releaseStream" | "FCPublish" => {
                self.reply_result(sid, &c, &[Amf0Value::Null, Amf0Value::Undefined]);
                if c.name == "FCPublish" {
                    let b = message::command(
                        sid,
                        &[
                            "onFCPublish".into(),
                            0.0.into(),
                            Amf0Value::Null,
                            command::status_object(
                                "status",
                                "NetStream.Publish.Start",
                                command::quoted(c.arg_str(0).unwrap_or_default()),
                            ),
                        ],
                        self.config.chunk_size,
                    );
                    self.transmit(b);
                }
            }
            "createStream" => match (1..=MAX_STREAMS).find(|i| self.streams & (1 << i) == 0) {
                Some(id) => {
                    self.streams |= 1 << id;
                    self.reply_result(sid, &c, &[Amf0Value::Null, f64::from(id).into()]);
                }
                None => self.reply_error(
                    sid,
                    &c,
                    "NetConnection.Call.Failed",
                    "Too many streams on this connection.",
                ),
            },
            "publish" => {
                let full = c.arg_str(0).unwrap_or_default();
                let (name, query) = split_query(full);
                let publish_type = c
                    .arg_str(1)
                    .and_then(PublishType::parse)
                    .unwrap_or(PublishType::Live);
                if let Err(why) = command::check_lengths("stream name", name, query) {
                    self.status(sid, "error", "NetStream.Publish.BadName", &why);
                    return Ok(());
                }
                if self.publishing.is_some() || self.playing.is_some() || name.is_empty() {
                    let why = if name.is_empty() {
                        "No stream name."
                    } else {
                        "This connection already publishes or plays a stream."
                    };
                    self.status(sid, "error", "NetStream.Publish.BadName", why);
                    return Ok(());
                }
                let (name, query) = (name.to_owned(), query.to_owned());
                let app = self.app.clone().unwrap_or_default();
                self.pending = Pending::Publish {
                    stream_id: sid,
                    name: name.clone(),
                };
                self.events.push_back(RtmpEvent::PublishRequested {
                    app,
                    name,
                    query,
                    publish_type,
                });
            }
            "play" => {
                let full = c.arg_str(0).unwrap_or_default();
                let (name, query) = split_query(full);
                let start = PlayStart::from_arg(c.arg_number(1));
                let duration = c.arg_number(2).unwrap_or(-1.0);
                let reset = c.arg_bool(3).unwrap_or(true);
                if let Err(why) = command::check_lengths("stream name", name, query) {
                    // What the driver answers for any name that cannot be a stream key.
                    self.status(sid, "error", "NetStream.Play.StreamNotFound", &why);
                    return Ok(());
                }
                if self.publishing.is_some() || self.playing.is_some() || name.is_empty() {
                    self.status(
                        sid,
                        "error",
                        "NetStream.Play.Failed",
                        "This connection already publishes or plays a stream.",
                    );
                    return Ok(());
                }
                if sid != PLAY_STREAM_ID {
                    // Media for players is serialized once, for message stream 1.
                    self.status(
                        sid,
                        "error",
                        "NetStream.Play.Failed",
                        "Play on the first stream of the connection.",
                    );
                    return Ok(());
                }
                let (name, query) = (name.to_owned(), query.to_owned());
                let app = self.app.clone().unwrap_or_default();
                self.pending = Pending::Play {
                    stream_id: sid,
                    name: name.clone(),
                    reset,
                };
                self.events.push_back(RtmpEvent::PlayRequested {
                    app,
                    name,
                    query,
                    start,
                    duration,
                    reset,
                });
            }
            "FCUnpublish" => {
                self.reply_result(sid, &c, &[Amf0Value::Null, Amf0Value::Undefined]);
                if let Some(id) = self.publishing {
                    self.stop_stream(id);
                }
            }
            "deleteStream" => {
                // no reply (spec 7.2.2.3)
                if let Some(id) = c.arg_number(0).filter(|n| (1.0..=31.0).contains(n)) {
                    let id = id as u32;
                    self.stop_stream(id);
                    self.streams &= !(1 << id);
                }
            }
            "closeStream" => self.stop_stream(sid),
            "getStreamLength" => self.reply_result(sid, &c, &[Amf0Value::Null, 0.0.into()]),
            "receiveAudio" | "receiveVideo" => {
                let on = c.arg_bool(0).unwrap_or(true);
                self.events.push_back(if c.name == "receiveAudio" {
                    RtmpEvent::ReceiveAudio(on)
                } else {
                    RtmpEvent::ReceiveVideo(on)
                });
            }
            "_checkbw" | "checkBandwidth" => {
                self.reply_result(sid, &c, &[Amf0Value::Null, Amf0Value::Undefined])
            }
            // replies to calls we never make, and client notifications
            "_result" | "_error" | "onStatus" | "onBWDone" | "_onbwcheck" | "_onbwdone" => {}
            _ => {
                let name = command::quoted(&c.name);
                tracing::debug!(command = ?name, "unknown command");
                let description = format!("Method not found ({name}).");
                self.reply_error(sid, &c, "NetConnection.Call.Failed", &description);
            }
        }
        Ok(())
    }

    /// Ends a publish or play on message stream `id`, if there is one.
    fn stop_stream(&mut self, id: u32) {
        if self.publishing == Some(id) || self.playing == Some(id) {
            // Negotiating again: the bytes that ended it arrived at `last_received`.
            self.negotiating_since = self.last_received;
        }
        if self.publishing == Some(id) {
            self.publishing = None;
            self.last_media = None;
            self.status(
                id,
                "status",
                "NetStream.Unpublish.Success",
                "Stopped publishing.",
            );
            self.events.push_back(RtmpEvent::Unpublished);
        }
        if self.playing == Some(id) {
            self.playing = None;
            self.events.push_back(RtmpEvent::PlayStopped);
        }
    }

    /// Takes the pending request if it is the one `wanted` recognises; otherwise leaves
    /// it in place (a decision for the wrong request must not lose the right one).
    fn take_pending(
        &mut self,
        action: &'static str,
        wanted: fn(&Pending) -> bool,
    ) -> Result<Pending, RtmpError> {
        if !wanted(&self.pending) {
            let state = match self.pending {
                Pending::None => "nothing is pending",
                Pending::Connect { .. } => "a connect is pending",
                Pending::Publish { .. } => "a publish is pending",
                Pending::Play { .. } => "a play is pending",
            };
            return Err(RtmpError::InvalidState { action, state });
        }
        Ok(std::mem::replace(&mut self.pending, Pending::None))
    }

    /// Resumes decoding what arrived while the decision was pending.
    fn resume(&mut self) -> Result<(), RtmpError> {
        self.run().inspect_err(|_| self.phase = Phase::Closed)
    }

    /// Accepts the pending connect: window size, peer bandwidth, chunk size, then the
    /// `_result` with `NetConnection.Connect.Success`.
    pub fn accept_connect(&mut self) -> Result<(), RtmpError> {
        let Pending::Connect {
            transaction_id,
            object_encoding,
            app,
        } = self.take_pending("accept_connect", |p| matches!(p, Pending::Connect { .. }))?
        else {
            return Err(RtmpError::InvalidState {
                action: "accept_connect",
                state: "no connect is pending",
            });
        };
        let cs = self.config.chunk_size;
        self.transmit(message::window_ack_size(self.config.window_ack_size));
        self.transmit(message::set_peer_bandwidth(self.config.peer_bandwidth, 2));
        let props = Amf0Value::object([
            ("fmsVer", self.config.fms_version.as_str().into()),
            ("capabilities", 31.0.into()),
            ("mode", 1.0.into()),
        ]);
        let mut info = command::status_object(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded.",
        );
        if let Amf0Value::Object(p) = &mut info {
            p.push(("objectEncoding".into(), object_encoding.into()));
        }
        self.transmit(command::result(0, transaction_id, &[props, info], cs));
        self.app = Some(app);
        if let (Some(every), Some(last)) = (self.ping_every(), self.last_received) {
            self.next_ping = Some(last + every);
        }
        self.resume()
    }

    /// Refuses the pending connect with `NetConnection.Connect.Rejected`; the connection
    /// then closes (a `Closed(Rejected)` event follows the reply).
    pub fn reject_connect(&mut self, reason: &str) -> Result<(), RtmpError> {
        let Pending::Connect { transaction_id, .. } =
            self.take_pending("reject_connect", |p| matches!(p, Pending::Connect { .. }))?
        else {
            return Err(RtmpError::InvalidState {
                action: "reject_connect",
                state: "no connect is pending",
            });
        };
        self.refuse_connect(transaction_id, reason);
        Ok(())
    }

    /// `_error` with `NetConnection.Connect.Rejected`, then the connection closes.
    fn refuse_connect(&mut self, transaction_id: f64, reason: &str) {
        let status = command::status_object("error", "NetConnection.Connect.Rejected", reason);
        let b = command::error(
            0,
            transaction_id,
            &[Amf0Value::Null, status],
            self.config.chunk_size,
        );
        self.transmit(b);
        self.close(CloseReason::Rejected);
    }

    /// Accepts the pending publish: StreamBegin and `NetStream.Publish.Start`; media
    /// events follow.
    pub fn accept_publish(&mut self) -> Result<(), RtmpError> {
        let Pending::Publish { stream_id, name } =
            self.take_pending("accept_publish", |p| matches!(p, Pending::Publish { .. }))?
        else {
            return Err(RtmpError::InvalidState {
                action: "accept_publish",
                state: "no publish is pending",
            });
        };
        self.transmit(message::user_control(UserControl::StreamBegin {
            stream_id,
        }));
        self.status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            &format!("{name} is now published."),
        );
        self.publishing = Some(stream_id);
        self.last_media = self.last_received;
        self.negotiating_since = None;
        self.resume()
    }

    /// Refuses the pending publish with an error `onStatus` (`code` such as
    /// `NetStream.Publish.BadName`). The connection stays open; most clients close it.
    pub fn reject_publish(&mut self, code: &str, description: &str) -> Result<(), RtmpError> {
        let Pending::Publish { stream_id, .. } =
            self.take_pending("reject_publish", |p| matches!(p, Pending::Publish { .. }))?
        else {
            return Err(RtmpError::InvalidState {
                action: "reject_publish",
                state: "no publish is pending",
            });
        };
        self.status(stream_id, "error", code, description);
        self.resume()
    }

    /// Accepts the pending play: StreamBegin, `NetStream.Play.Reset` (if asked),
    /// `NetStream.Play.Start` and `|RtmpSampleAccess`. From then
    /// on the driver writes media bytes (metadata and codec configs first).
    pub fn accept_play(&mut self) -> Result<(), RtmpError> {
        let Pending::Play {
            stream_id,
            name,
            reset,
        } = self.take_pending("accept_play", |p| matches!(p, Pending::Play { .. }))?
        else {
            return Err(RtmpError::InvalidState {
                action: "accept_play",
                state: "no play is pending",
            });
        };
        let cs = self.config.chunk_size;
        self.transmit(message::user_control(UserControl::StreamBegin {
            stream_id,
        }));
        if reset {
            self.status(
                stream_id,
                "status",
                "NetStream.Play.Reset",
                &format!("Playing and resetting {name}."),
            );
        }
        self.status(
            stream_id,
            "status",
            "NetStream.Play.Start",
            &format!("Started playing {name}."),
        );
        // Flash players need this to allow access to the raw samples
        self.transmit(message::data(
            stream_id,
            &["|RtmpSampleAccess".into(), true.into(), true.into()],
            cs,
        ));
        // No `onStatus NetStream.Data.Start` data message (FMS sends one): ffmpeg's FLV
        // demuxer ignores `|RtmpSampleAccess` but turns any other unknown data message
        // into a phantom `data` stream, which every ffmpeg-based player then sees.
        // nginx-rtmp and SRS send neither.
        self.playing = Some(stream_id);
        self.negotiating_since = None;
        self.resume()
    }

    /// Refuses the pending play (`code` such as `NetStream.Play.StreamNotFound`).
    pub fn reject_play(&mut self, code: &str, description: &str) -> Result<(), RtmpError> {
        let Pending::Play { stream_id, .. } =
            self.take_pending("reject_play", |p| matches!(p, Pending::Play { .. }))?
        else {
            return Err(RtmpError::InvalidState {
                action: "reject_play",
                state: "no play is pending",
            });
        };
        self.status(stream_id, "error", code, description);
        self.resume()
    }

    /// Tells a player that the publisher went away: `NetStream.Play.UnpublishNotify`
    /// and StreamEOF. The play stays active, so a returning publisher can resume it
    /// with [`Self::publish_started`].
    pub fn publish_ended(&mut self) {
        if self.phase == Phase::Closed {
            return; // nothing follows `Closed` or an error
        }
        if let Some(id) = self.playing {
            self.status(
                id,
                "status",
                "NetStream.Play.UnpublishNotify",
                "The stream was unpublished.",
            );
            self.transmit(message::user_control(UserControl::StreamEof {
                stream_id: id,
            }));
        }
    }

    /// Tells a waiting player that a publisher (re)started: StreamBegin and
    /// `NetStream.Play.PublishNotify`.
    pub fn publish_started(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        if let Some(id) = self.playing {
            self.transmit(message::user_control(UserControl::StreamBegin {
                stream_id: id,
            }));
            self.status(
                id,
                "status",
                "NetStream.Play.PublishNotify",
                "The stream is published.",
            );
        }
    }
}

/// Removes a leading `@setDataFrame` from an AMF0 data body, so the body starts with
/// the `onMetaData` name as in an FLV file. `None` if the first value does not decode.
fn strip_set_data_frame(body: Bytes) -> Option<Bytes> {
    let mut r = amf0::Reader::new(&body);
    let first = amf0::decode(&mut r).ok()?;
    if first.as_str() == Some("@setDataFrame") {
        let at = r.position();
        Some(body.slice(at..))
    } else {
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::{serialize_media, serialize_message, ChunkDecoder};
    use crate::rtmp::client::{ClientMode, RtmpClientConfig, RtmpClientConn, RtmpClientEvent};
    use crate::rtmp::handshake::DigestScheme;
    use crate::rtmp::message::{COMMAND_AMF3, SET_CHUNK_SIZE};

    const CAPTURE: &[u8] = include_bytes!("../../../testdata/rtmp/ffmpeg-publish-h264.bin");

    /// What the driver decides for each request.
    #[derive(Clone, Copy)]
    enum Answer {
        Accept,
        Reject,
    }

    /// Server, client and the events each produced (Transmit excluded), connected by an
    /// in-memory pipe.
    struct Pair {
        now: Instant,
        server: RtmpServerConn,
        client: RtmpClientConn,
        server_events: Vec<RtmpEvent>,
        client_events: Vec<RtmpClientEvent>,
        answer: Answer,
    }

    impl Pair {
        fn new(mode: ClientMode, digest: bool, answer: Answer) -> Pair {
            let mut cfg = RtmpClientConfig::new("rtmp://localhost/live?tok=1", "live", mode);
            cfg.digest_handshake = digest;
            Pair::with_config(cfg, answer)
        }

        fn with_config(cfg: RtmpClientConfig, answer: Answer) -> Pair {
            let mut p = Pair {
                now: Instant::now(),
                server: RtmpServerConn::new(RtmpServerConfig::default()),
                client: RtmpClientConn::new(cfg),
                server_events: Vec::new(),
                client_events: Vec::new(),
                answer,
            };
            p.pump();
            p
        }

        /// Moves bytes both ways until neither side has anything to say.
        fn pump(&mut self) {
            loop {
                let mut moved = false;
                while let Some(ev) = self.client.poll_event() {
                    match ev {
                        RtmpClientEvent::Transmit(b) => {
                            moved = true;
                            self.server.handle_bytes(self.now, &b).unwrap();
                        }
                        other => self.client_events.push(other),
                    }
                }
                while let Some(ev) = self.server.poll_event() {
                    match ev {
                        RtmpEvent::Transmit(b) => {
                            moved = true;
                            self.client.handle_bytes(self.now, &b).unwrap();
                        }
                        other => {
                            self.decide(&other);
                            self.server_events.push(other);
                        }
                    }
                }
                if !moved {
                    return;
                }
            }
        }

        fn decide(&mut self, ev: &RtmpEvent) {
            let s = &mut self.server;
            match (ev, self.answer) {
                (RtmpEvent::ConnectRequested { .. }, _) => s.accept_connect().unwrap(),
                (RtmpEvent::PublishRequested { .. }, Answer::Accept) => s.accept_publish().unwrap(),
                (RtmpEvent::PublishRequested { .. }, Answer::Reject) => s
                    .reject_publish("NetStream.Publish.BadName", "taken")
                    .unwrap(),
                (RtmpEvent::PlayRequested { .. }, Answer::Accept) => s.accept_play().unwrap(),
                (RtmpEvent::PlayRequested { .. }, Answer::Reject) => s
                    .reject_play("NetStream.Play.StreamNotFound", "no such stream")
                    .unwrap(),
                _ => {}
            }
        }

        fn status_codes(&self) -> Vec<&str> {
            self.client_events
                .iter()
                .filter_map(|e| match e {
                    RtmpClientEvent::Status { code, .. } => Some(code.as_str()),
                    _ => None,
                })
                .collect()
        }
    }

    fn publish_mode() -> ClientMode {
        ClientMode::Publish {
            name: "cam?token=abc".into(),
            publish_type: PublishType::Live,
        }
    }

    #[test]
    fn publish_round_trip_with_media() {
        let mut p = Pair::new(publish_mode(), false, Answer::Accept);
        assert_eq!(p.server.handshake_kind(), Some(HandshakeKind::Simple));
        assert_eq!(
            p.server_events[..2],
            [
                RtmpEvent::ConnectRequested {
                    app: "live".into(),
                    tc_url: Some("rtmp://localhost/live?tok=1".into()),
                    query: "tok=1".into(),
                },
                RtmpEvent::PublishRequested {
                    app: "live".into(),
                    name: "cam".into(),
                    query: "token=abc".into(),
                    publish_type: PublishType::Live,
                },
            ]
        );
        assert!(p.client.is_publishing());
        assert!(p.client_events.contains(&RtmpClientEvent::Connected));
        assert_eq!(p.status_codes(), ["NetStream.Publish.Start"]);

        // metadata as ffmpeg sends it, wrapped in @setDataFrame
        let meta = amf0::encode_all(&[
            "@setDataFrame".into(),
            "onMetaData".into(),
            Amf0Value::EcmaArray(vec![("width".into(), 320.0.into())]),
        ])
        .unwrap();
        let video: Vec<u8> = (0..20_000).map(|i| (i % 253) as u8).collect();
        p.client.send_media(MediaKind::Data, 0, &meta).unwrap();
        p.client.send_media(MediaKind::Video, 40, &video).unwrap();
        p.client
            .send_media(MediaKind::Audio, 0x0100_0000, b"\xaf\x01aac")
            .unwrap();
        p.pump();
        let media: Vec<_> = p.server_events[2..].to_vec();
        assert_eq!(
            media,
            vec![
                RtmpEvent::Media {
                    kind: MediaKind::Data,
                    timestamp_ms: 0,
                    body: Bytes::copy_from_slice(&meta[16..]),
                },
                RtmpEvent::Media {
                    kind: MediaKind::Video,
                    timestamp_ms: 40,
                    body: video.into()
                },
                RtmpEvent::Media {
                    kind: MediaKind::Audio,
                    timestamp_ms: 0x0100_0000,
                    body: Bytes::from_static(b"\xaf\x01aac"),
                },
            ]
        );
        // "@setDataFrame" is 16 bytes of AMF0: the body starts with onMetaData
        assert_eq!(&meta[16..29], b"\x02\x00\x0aonMetaData");

        p.client.stop();
        p.pump();
        assert_eq!(p.server_events.last(), Some(&RtmpEvent::Unpublished));
        assert!(!p.server.is_publishing());
    }

    #[test]
    fn play_round_trip_with_serialized_media() {
        let mut p = Pair::new(
            ClientMode::Play { name: "cam".into() },
            true,
            Answer::Accept,
        );
        assert_eq!(
            p.server.handshake_kind(),
            Some(HandshakeKind::Digest(DigestScheme::DigestFirst))
        );
        assert!(matches!(
            &p.server_events[1],
            RtmpEvent::PlayRequested { name, start: PlayStart::LiveOrRecorded, reset: true, .. }
                if name == "cam"
        ));
        assert!(p.server.is_playing());
        assert!(p.client.is_playing());
        assert_eq!(
            p.status_codes(),
            ["NetStream.Play.Reset", "NetStream.Play.Start",]
        );

        // the driver writes shared bytes straight to the socket
        let frames = [
            (MediaKind::Data, 0, &b"\x02\x00\x0aonMetaData\x05"[..]),
            (MediaKind::Video, 0, &[0x17u8, 0, 0, 0, 0, 1, 2, 3][..]),
            (MediaKind::Audio, 23, &[0xaf, 1, 9][..]),
            (MediaKind::Video, 0x0123_4567, &[0x27u8; 9000][..]),
        ];
        for (kind, ts, body) in frames {
            let wire = serialize_media(kind, ts, body).unwrap();
            p.server.record_media_sent(wire.len());
            p.client.handle_bytes(p.now, &wire).unwrap();
        }
        p.pump();
        let got: Vec<_> = p
            .client_events
            .iter()
            .filter_map(|e| match e {
                RtmpClientEvent::Media {
                    kind,
                    timestamp_ms,
                    body,
                } => Some((*kind, *timestamp_ms, body.to_vec())),
                _ => None,
            })
            .collect();
        let sent: Vec<_> = frames
            .iter()
            .map(|(k, t, b)| (*k, *t, b.to_vec()))
            .collect();
        assert_eq!(got, sent);

        p.server.publish_ended();
        p.pump();
        assert_eq!(
            p.status_codes().last(),
            Some(&"NetStream.Play.UnpublishNotify")
        );
        p.client.stop();
        p.pump();
        assert_eq!(p.server_events.last(), Some(&RtmpEvent::PlayStopped));
    }

    /// Found by the `rtmp_server` fuzz target: a player whose connection had failed
    /// (or timed out) still got `UnpublishNotify`/`PublishNotify` when the driver
    /// reported the publisher going or coming, so events followed `Closed`.
    #[test]
    fn nothing_follows_close_when_the_publisher_comes_or_goes() {
        let mode = ClientMode::Play { name: "cam".into() };
        // a protocol error (unknown message type 0x55), then an idle timeout
        for error in [true, false] {
            let mut p = Pair::new(mode.clone(), false, Answer::Accept);
            assert!(p.server.is_playing());
            if error {
                let garbage = [0x03, 0, 0, 0, 0, 0, 4, 0x55, 0, 0, 0, 0, 1, 2, 3, 4];
                assert!(p.server.handle_bytes(p.now, &garbage).is_err());
            } else {
                p.server.handle_timeout(p.now + Duration::from_secs(3600));
            }
            while p.server.poll_event().is_some() {}
            p.server.publish_ended();
            p.server.publish_started();
            assert_eq!(p.server.poll_event(), None);
        }
    }

    #[test]
    fn rejections_reach_the_client() {
        let mut p = Pair::new(publish_mode(), false, Answer::Reject);
        assert!(!p.client.is_publishing());
        assert!(!p.server.is_publishing());
        assert!(p.client_events.contains(&RtmpClientEvent::Status {
            level: "error".into(),
            code: "NetStream.Publish.BadName".into(),
            description: "taken".into(),
        }));
        assert!(p.client.send_media(MediaKind::Video, 0, b"x").is_err());

        let mut p = Pair::new(
            ClientMode::Play {
                name: "nope".into(),
            },
            false,
            Answer::Reject,
        );
        assert!(!p.server.is_playing());
        assert_eq!(p.status_codes(), ["NetStream.Play.StreamNotFound"]);
        p.pump();
    }

    #[test]
    fn names_and_queries_over_the_limits_are_refused_by_the_core() {
        use super::super::{MAX_NAME_BYTES, MAX_QUERY_BYTES};
        let long = |n: usize| "a".repeat(n);
        // At a limit the driver decides; over it the core refuses, and the driver never
        // sees the request.
        for (name, refused) in [
            (long(MAX_NAME_BYTES), false),
            (long(MAX_NAME_BYTES + 1), true),
            (long(10_000), true),
            (format!("cam?{}", long(MAX_QUERY_BYTES)), false),
            (format!("cam?{}", long(MAX_QUERY_BYTES + 1)), true),
        ] {
            let shown = (name.len(), refused);
            let mode = ClientMode::Publish {
                name: name.clone(),
                publish_type: PublishType::Live,
            };
            let p = Pair::new(mode, false, Answer::Accept);
            let requested = |p: &Pair| {
                p.server_events.iter().any(|e| {
                    matches!(
                        e,
                        RtmpEvent::PublishRequested { .. } | RtmpEvent::PlayRequested { .. }
                    )
                })
            };
            assert_eq!(requested(&p), !refused, "{shown:?}");
            let want = if refused {
                "NetStream.Publish.BadName"
            } else {
                "NetStream.Publish.Start"
            };
            assert_eq!(p.status_codes(), [want], "{shown:?}");
            if refused {
                assert!(p.client_events.iter().any(|e| matches!(e,
                    RtmpClientEvent::Status { description, .. } if description.contains("bytes long"))));
            }
            let p = Pair::new(ClientMode::Play { name }, false, Answer::Accept);
            assert_eq!(requested(&p), !refused, "{shown:?}");
            let want: &[&str] = if refused {
                &["NetStream.Play.StreamNotFound"]
            } else {
                &["NetStream.Play.Reset", "NetStream.Play.Start"]
            };
            assert_eq!(p.status_codes(), want, "{shown:?}");
        }
        for (app, tc_url, refused) in [
            (long(MAX_NAME_BYTES), "rtmp://h/x".to_owned(), false),
            (long(MAX_NAME_BYTES + 1), "rtmp://h/x".to_owned(), true),
            (
                format!("live?{}", long(MAX_QUERY_BYTES + 1)),
                "rtmp://h/x".to_owned(),
                true,
            ),
            (
                "live".to_owned(),
                format!("rtmp://h/live?{}", long(MAX_QUERY_BYTES + 1)),
                true,
            ),
            (
                "live?t=1".to_owned(),
                format!("rtmp://h/{}", long(MAX_TC_URL_BYTES)),
                true,
            ),
        ] {
            let shown = (app.len(), tc_url.len(), refused);
            let cfg = RtmpClientConfig::new(&tc_url, &app, ClientMode::Play { name: "cam".into() });
            let p = Pair::with_config(cfg, Answer::Accept);
            let asked = p
                .server_events
                .iter()
                .any(|e| matches!(e, RtmpEvent::ConnectRequested { .. }));
            assert_eq!(asked, !refused, "{shown:?}");
            let rejected = p.client_events.iter().any(|e| {
                matches!(e, RtmpClientEvent::CallFailed { command: "connect", code, .. }
                    if code == "NetConnection.Connect.Rejected")
            });
            assert_eq!(rejected, refused, "{shown:?}");
            if refused {
                assert_eq!(
                    p.server_events.last(),
                    Some(&RtmpEvent::Closed(CloseReason::Rejected))
                );
            }
        }
    }

    #[test]
    fn rejected_connect_closes() {
        let mut server = RtmpServerConn::new(RtmpServerConfig::default());
        let mut client = RtmpClientConn::new(RtmpClientConfig::new(
            "rtmp://h/live",
            "live",
            ClientMode::Play { name: "a".into() },
        ));
        let now = Instant::now();
        let mut client_events = Vec::new();
        let mut closed = false;
        for _ in 0..10 {
            while let Some(ev) = client.poll_event() {
                match ev {
                    RtmpClientEvent::Transmit(b) => server.handle_bytes(now, &b).unwrap(),
                    other => client_events.push(other),
                }
            }
            while let Some(ev) = server.poll_event() {
                match ev {
                    RtmpEvent::Transmit(b) => client.handle_bytes(now, &b).unwrap(),
                    RtmpEvent::ConnectRequested { .. } => {
                        server.reject_connect("bad token").unwrap()
                    }
                    RtmpEvent::Closed(CloseReason::Rejected) => closed = true,
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(closed);
        assert_eq!(
            client_events,
            vec![RtmpClientEvent::CallFailed {
                command: "connect",
                code: "NetConnection.Connect.Rejected".into(),
                description: "bad token".into(),
            }]
        );
        // a closed connection ignores further input and has no timers
        server.handle_bytes(now, b"more").unwrap();
        assert_eq!(server.poll_event(), None);
        assert_eq!(server.poll_timeout(), None);
    }

    /// A server past the handshake, with `accept_connect` done, and a decoder for what it
    /// sends.
    fn connected_server(config: RtmpServerConfig) -> (RtmpServerConn, Instant) {
        let now = Instant::now();
        let mut s = RtmpServerConn::new(config);
        let mut hs = vec![0u8; 1 + 2 * HANDSHAKE_SIZE];
        hs[0] = 3;
        s.handle_bytes(now, &hs).unwrap();
        let connect = message::command(
            0,
            &[
                "connect".into(),
                1.0.into(),
                Amf0Value::object([("app", "live".into())]),
            ],
            128,
        );
        s.handle_bytes(now, &connect).unwrap();
        while let Some(ev) = s.poll_event() {
            if let RtmpEvent::ConnectRequested { .. } = ev {
                s.accept_connect().unwrap();
            }
        }
        (s, now)
    }

    /// Decodes the commands in the server's Transmit events.
    fn sent_commands(s: &mut RtmpServerConn) -> Vec<Command> {
        let mut d = ChunkDecoder::default();
        d.set_chunk_size(OUTGOING_CHUNK_SIZE).unwrap();
        let mut out = Vec::new();
        while let Some(ev) = s.poll_event() {
            let RtmpEvent::Transmit(b) = ev else { continue };
            let mut input = &b[..];
            while let Some((used, m)) = d.decode_chunk(input).unwrap() {
                input = &input[used..];
                if let Some(Message::Command { values, .. }) = m.map(|m| Message::parse(m).unwrap())
                {
                    out.push(Command::parse(values).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn connect_reply_carries_fms_version_and_object_encoding() {
        let now = Instant::now();
        let mut s = RtmpServerConn::new(RtmpServerConfig::default());
        let mut hs = vec![0u8; 1 + 2 * HANDSHAKE_SIZE];
        hs[0] = 3;
        s.handle_bytes(now, &hs).unwrap();
        let obj = Amf0Value::object([("app", "live/".into()), ("objectEncoding", 3.0.into())]);
        s.handle_bytes(
            now,
            &message::command(0, &["connect".into(), 1.0.into(), obj], 128),
        )
        .unwrap();
        let mut saw_request = false;
        while let Some(ev) = s.poll_event() {
            if let RtmpEvent::ConnectRequested { app, tc_url, query } = ev {
                assert_eq!((app.as_str(), tc_url, query.as_str()), ("live", None, ""));
                saw_request = true;
            }
        }
        assert!(saw_request);
        s.accept_connect().unwrap();
        let replies = sent_commands(&mut s);
        assert_eq!(replies.len(), 1);
        let r = &replies[0];
        assert_eq!((r.name.as_str(), r.transaction_id), ("_result", 1.0));
        assert_eq!(
            r.object.property("fmsVer").and_then(Amf0Value::as_str),
            Some("FMS/3,0,1,123")
        );
        assert_eq!(
            r.args[0].property("code").and_then(Amf0Value::as_str),
            Some("NetConnection.Connect.Success")
        );
        assert_eq!(
            r.args[0].property("objectEncoding"),
            Some(&Amf0Value::Number(3.0))
        );
    }

    #[test]
    fn unknown_commands_get_an_error_and_the_connection_lives_on() {
        let (mut s, now) = connected_server(RtmpServerConfig::default());
        sent_commands(&mut s);
        let call = |name: &str, txn: f64| {
            message::command(0, &[name.into(), txn.into(), Amf0Value::Null], 128)
        };
        s.handle_bytes(now, &call("frobnicate", 7.0)).unwrap();
        s.handle_bytes(now, &call("noReplyWanted", 0.0)).unwrap();
        s.handle_bytes(now, &call("createStream", 8.0)).unwrap();
        s.handle_bytes(now, &call("_checkbw", 9.0)).unwrap();
        let replies = sent_commands(&mut s);
        let summary: Vec<_> = replies
            .iter()
            .map(|c| (c.name.as_str(), c.transaction_id))
            .collect();
        assert_eq!(
            summary,
            [("_error", 7.0), ("_result", 8.0), ("_result", 9.0)]
        );
        assert_eq!(replies[1].arg_number(0), Some(1.0), "first stream id is 1");
        assert_eq!(
            replies[0].args[0]
                .property("code")
                .and_then(Amf0Value::as_str),
            Some("NetConnection.Call.Failed")
        );
    }

    #[test]
    fn replies_quote_at_most_256_bytes_of_a_peer_string() {
        use super::super::MAX_NAME_BYTES;
        let (mut s, now) = connected_server(RtmpServerConfig::default());
        sent_commands(&mut s);
        let long = "x".repeat(100_000);
        let calls = [
            message::command(
                0,
                &[long.as_str().into(), 7.0.into(), Amf0Value::Null],
                4096,
            ),
            message::command(
                0,
                &[
                    "FCPublish".into(),
                    8.0.into(),
                    Amf0Value::Null,
                    long.as_str().into(),
                ],
                4096,
            ),
        ];
        s.handle_bytes(now, &message::set_chunk_size(4096)).unwrap();
        for call in calls {
            s.handle_bytes(now, &call).unwrap();
        }
        let replies = sent_commands(&mut s);
        let descriptions: Vec<usize> = replies
            .iter()
            .flat_map(|c| c.args.iter())
            .filter_map(|a| a.property("description").and_then(Amf0Value::as_str))
            .map(str::len)
            .collect();
        // the unknown command's _error and onFCPublish's status
        assert_eq!(descriptions.len(), 2, "{replies:?}");
        assert!(
            descriptions.iter().all(|&n| n <= MAX_NAME_BYTES + 32),
            "{descriptions:?}"
        );
    }

    #[test]
    fn amf3_connect_is_understood() {
        let now = Instant::now();
        let mut s = RtmpServerConn::new(RtmpServerConfig::default());
        let mut hs = vec![0u8; 1 + 2 * HANDSHAKE_SIZE];
        hs[0] = 3;
        s.handle_bytes(now, &hs).unwrap();
        // type 17: format byte, then AMF0 with the command object switched to AMF3
        let mut body = vec![0u8];
        body.extend_from_slice(
            &amf0::encode_all(&[
                "connect".into(),
                1.0.into(),
                Amf0Value::Amf3(crate::rtmp::amf3::Amf3Value::Object {
                    class_name: String::new(),
                    sealed: vec![],
                    dynamic: Some(vec![(
                        "app".into(),
                        crate::rtmp::amf3::Amf3Value::String("flex".into()),
                    )]),
                }),
            ])
            .unwrap(),
        );
        s.handle_bytes(
            now,
            &serialize_message(3, COMMAND_AMF3, 0, 0, &body, 128).unwrap(),
        )
        .unwrap();
        let ev: Vec<_> = std::iter::from_fn(|| s.poll_event())
            .filter(|e| !matches!(e, RtmpEvent::Transmit(_)))
            .collect();
        assert_eq!(
            ev,
            [RtmpEvent::ConnectRequested {
                app: "flex".into(),
                tc_url: None,
                query: String::new()
            }]
        );
    }

    #[test]
    fn huge_chunk_size_is_a_clean_error() {
        let (mut s, now) = connected_server(RtmpServerConfig::default());
        let wire =
            serialize_message(2, SET_CHUNK_SIZE, 0, 0, &(1u32 << 31).to_be_bytes(), 128).unwrap();
        let err = s.handle_bytes(now, &wire).unwrap_err();
        assert!(matches!(
            err,
            RtmpError::ChunkSizeOutOfRange {
                size: 0x8000_0000,
                ..
            }
        ));
        assert!(err.to_string().contains("2147483648"), "{err}");
        // closed after an error: nothing else happens
        s.handle_bytes(now, &[0u8; 100]).unwrap();
    }

    #[test]
    fn oversized_message_is_refused_without_allocating() {
        let config = RtmpServerConfig {
            decoder: ChunkDecoderConfig {
                max_message_size: 1 << 20,
                ..Default::default()
            },
            ..Default::default()
        };
        let (mut s, now) = connected_server(config);
        // a 16 MiB - 1 video message header: over the limit, refused at the header
        let header = [0x06, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0];
        let err = s.handle_bytes(now, &header).unwrap_err();
        assert!(matches!(
            err,
            RtmpError::MessageTooLarge {
                size: 0xFF_FFFF,
                max: 0x10_0000,
                ..
            }
        ));
    }

    #[test]
    fn garbage_and_truncated_handshakes() {
        let now = Instant::now();
        let mut s = RtmpServerConn::new(RtmpServerConfig::default());
        let err = s.handle_bytes(now, b"GET / HTTP/1.1\r\n").unwrap_err();
        assert!(matches!(
            err,
            RtmpError::BadHandshakeVersion { version: b'G' }
        ));

        // a truncated C1: nothing is sent, the handshake timer closes the connection
        let config = RtmpServerConfig::default();
        let hs_timeout = config.handshake_timeout;
        let mut s = RtmpServerConn::new(config);
        s.handle_bytes(now, &[3u8; 700]).unwrap();
        assert_eq!(s.poll_event(), None);
        assert_eq!(s.poll_timeout(), Some(now + hs_timeout));
        s.handle_timeout(now + hs_timeout - Duration::from_millis(1));
        assert_eq!(s.poll_event(), None);
        s.handle_timeout(now + hs_timeout);
        assert_eq!(
            s.poll_event(),
            Some(RtmpEvent::Closed(CloseReason::HandshakeTimeout))
        );
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn pings_while_connected_and_idle_timeout() {
        // Connected but neither publishing nor playing: give negotiation all the time.
        let config = RtmpServerConfig {
            handshake_timeout: Duration::from_secs(3600),
            ..RtmpServerConfig::default()
        };
        let (every, idle) = (config.ping_interval.unwrap(), config.idle_timeout);
        let (mut s, now) = connected_server(config);
        sent_commands(&mut s);
        assert_eq!(s.poll_timeout(), Some(now + every));
        s.handle_timeout(now + every);
        let Some(RtmpEvent::Transmit(ping)) = s.poll_event() else {
            panic!("no ping")
        };
        let (_, m) = ChunkDecoder::default()
            .decode_chunk(&ping)
            .unwrap()
            .unwrap();
        let timestamp = every.as_millis() as u32;
        assert_eq!(
            Message::parse(m.unwrap()).unwrap(),
            Message::UserControl(UserControl::PingRequest { timestamp })
        );
        // the client answers; that counts as traffic and pushes the idle deadline
        let pong = message::user_control(UserControl::PingResponse { timestamp });
        s.handle_bytes(now + every, &pong).unwrap();
        let t = now + every + idle;
        let mut at = now + every;
        while at < t {
            at = s.poll_timeout().unwrap();
            s.handle_timeout(at);
        }
        let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert_eq!(
            events.last(),
            Some(&RtmpEvent::Closed(CloseReason::IdleTimeout))
        );
        // two more pings went out before the idle timeout (at +40 s and +60 s)
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, RtmpEvent::Transmit(_)))
                .count(),
            2
        );
    }

    /// Run the pair's timers up to `until`, pumping after each (the client answers pings).
    fn run_timers(p: &mut Pair, until: Instant) {
        while let Some(at) = p.server.poll_timeout().filter(|t| *t <= until) {
            p.now = at;
            p.server.handle_timeout(at);
            p.pump();
        }
        p.now = until;
    }

    fn closed_with(p: &Pair) -> Option<CloseReason> {
        p.server_events.iter().find_map(|e| match e {
            RtmpEvent::Closed(r) => Some(*r),
            _ => None,
        })
    }

    #[test]
    fn a_connection_that_never_publishes_or_plays_is_closed() {
        let config = RtmpServerConfig::default();
        let timeout = config.handshake_timeout;
        let (mut s, start) = connected_server(config);
        sent_commands(&mut s);
        // Connected, and it answers pings, but asks for nothing.
        assert_eq!(s.poll_timeout(), Some(start + timeout));
        s.handle_timeout(start + timeout - Duration::from_millis(1));
        assert_eq!(s.poll_event(), None);
        s.handle_timeout(start + timeout);
        assert_eq!(
            s.poll_event(),
            Some(RtmpEvent::Closed(CloseReason::NegotiationTimeout))
        );
    }

    #[test]
    fn negotiation_clock_stops_at_publish_and_restarts_at_unpublish() {
        let mut p = Pair::new(publish_mode(), false, Answer::Accept);
        let timeout = p.server.config.handshake_timeout;
        let start = p.now;
        // Publishing with media every second for three timeouts: never closed.
        let mut t = start;
        while t < start + 3 * timeout {
            t += Duration::from_secs(1);
            run_timers(&mut p, t);
            p.client
                .send_media(MediaKind::Audio, 0, b"\xaf\x01a")
                .unwrap();
            p.pump();
        }
        assert_eq!(closed_with(&p), None);
        // Unpublished: the connection must publish or play again within the timeout.
        p.client.stop();
        p.pump();
        assert!(p.server_events.contains(&RtmpEvent::Unpublished));
        let stopped = p.now;
        run_timers(&mut p, stopped + timeout - Duration::from_millis(1));
        assert_eq!(closed_with(&p), None);
        run_timers(&mut p, stopped + timeout);
        assert_eq!(closed_with(&p), Some(CloseReason::NegotiationTimeout));
    }

    #[test]
    fn a_publisher_that_sends_no_media_is_idle_even_if_it_answers_pings() {
        let mut p = Pair::new(publish_mode(), false, Answer::Accept);
        let idle = p.server.config.idle_timeout;
        let start = p.now;
        p.client
            .send_media(MediaKind::Audio, 0, b"\xaf\x01a")
            .unwrap();
        p.pump();
        // Pings go out every 20 s and are answered, so bytes keep arriving.
        run_timers(&mut p, start + idle - Duration::from_millis(1));
        assert_eq!(closed_with(&p), None);
        run_timers(&mut p, start + idle);
        assert_eq!(closed_with(&p), Some(CloseReason::PublisherIdle));
        // A player that answers pings stays.
        let mut v = Pair::new(
            ClientMode::Play { name: "cam".into() },
            false,
            Answer::Accept,
        );
        let start = v.now;
        run_timers(&mut v, start + 3 * idle);
        assert_eq!(closed_with(&v), None);
    }

    #[test]
    fn a_player_that_answers_pings_outlives_an_idle_timeout_shorter_than_the_ping_interval() {
        // streams.idle_timeout_ms may be set below the 20 s ping interval; a player that
        // sends nothing but ping answers must still never be idle that long.
        // Connected but never playing here: give negotiation all the time.
        let config = RtmpServerConfig {
            idle_timeout: Duration::from_secs(4),
            ping_interval: Some(Duration::from_secs(20)),
            handshake_timeout: Duration::from_secs(3600),
            ..RtmpServerConfig::default()
        };
        let (mut s, start) = connected_server(config);
        sent_commands(&mut s);
        let (mut now, mut answered) = (start, start);
        let mut pings = 0;
        while now < start + Duration::from_secs(60) {
            now = s.poll_timeout().expect("a connected player has a timer");
            s.handle_timeout(now);
            while let Some(ev) = s.poll_event() {
                match ev {
                    RtmpEvent::Transmit(b) => {
                        let (_, m) = ChunkDecoder::default().decode_chunk(&b).unwrap().unwrap();
                        let Message::UserControl(UserControl::PingRequest { timestamp }) =
                            Message::parse(m.unwrap()).unwrap()
                        else {
                            panic!("only pings are sent")
                        };
                        pings += 1;
                        // answered after a 100 ms round trip
                        let pong = message::user_control(UserControl::PingResponse { timestamp });
                        answered = now + Duration::from_millis(100);
                        s.handle_bytes(answered, &pong).unwrap();
                    }
                    other => panic!("at {:?}: {other:?}", now - start),
                }
            }
        }
        assert!(pings >= 30, "{pings} pings in 60 s");
        // One that stops answering is closed the idle timeout after its last answer.
        loop {
            now = s.poll_timeout().unwrap();
            s.handle_timeout(now);
            let closed = std::iter::from_fn(|| s.poll_event())
                .any(|e| e == RtmpEvent::Closed(CloseReason::IdleTimeout));
            if closed {
                break;
            }
        }
        assert_eq!(now, answered + Duration::from_secs(4));
    }

    #[test]
    fn acknowledgements_track_what_the_player_received() {
        let mut p = Pair::new(
            ClientMode::Play { name: "cam".into() },
            false,
            Answer::Accept,
        );
        let body = vec![0u8; 100_000];
        for i in 0..30 {
            let wire = serialize_media(MediaKind::Video, i * 40, &body).unwrap();
            p.server.record_media_sent(wire.len());
            p.client.handle_bytes(p.now, &wire).unwrap();
        }
        let before = p.server.unacknowledged_bytes();
        assert!(before > 2_500_000, "{before}");
        p.pump();
        // the client acknowledged once it passed the 2.5 MB window
        let after = p.server.unacknowledged_bytes();
        assert!(after < 2_500_000 && after < before, "{before} -> {after}");
    }

    #[test]
    fn input_waits_for_a_decision_within_a_bound() {
        let config = RtmpServerConfig {
            max_backlog_bytes: 10_000,
            ..Default::default()
        };
        let (mut s, now) = connected_server(config);
        sent_commands(&mut s);
        let publish = message::command(
            1,
            &["publish".into(), 0.0.into(), Amf0Value::Null, "cam".into()],
            128,
        );
        let media = serialize_message(6, 9, 1, 0, &[0u8; 100], 128).unwrap();
        s.handle_bytes(now, &publish).unwrap();
        s.handle_bytes(now, &media).unwrap();
        // the publish request is out; the media behind it waits for the decision
        let ev: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert!(
            matches!(&ev[..], [RtmpEvent::PublishRequested { .. }]),
            "{ev:?}"
        );
        assert!(matches!(
            s.accept_play(),
            Err(RtmpError::InvalidState { .. })
        ));
        s.accept_publish().unwrap();
        let media_events = std::iter::from_fn(|| s.poll_event())
            .filter(|e| matches!(e, RtmpEvent::Media { .. }))
            .count();
        assert_eq!(
            media_events, 1,
            "the waiting media was decoded after the accept"
        );
        assert!(matches!(
            s.accept_publish(),
            Err(RtmpError::InvalidState { .. })
        ));

        // a second request (play on a publishing connection) is refused at once, and
        // a stalled decision cannot buffer without bound
        let (mut s, now) = connected_server(RtmpServerConfig {
            max_backlog_bytes: 10_000,
            ..Default::default()
        });
        s.handle_bytes(now, &publish).unwrap();
        let err = s.handle_bytes(now, &[0u8; 10_001]).unwrap_err();
        assert!(
            matches!(
                err,
                RtmpError::Backlog {
                    bytes: 10_001,
                    max: 10_000
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn play_arguments_and_stream_commands() {
        let (mut s, now) = connected_server(RtmpServerConfig::default());
        let call = |sid: u32, v: &[Amf0Value]| message::command(sid, v, 128);
        s.handle_bytes(
            now,
            &call(0, &["createStream".into(), 2.0.into(), Amf0Value::Null]),
        )
        .unwrap();
        s.handle_bytes(
            now,
            &call(
                1,
                &[
                    "play".into(),
                    0.0.into(),
                    Amf0Value::Null,
                    "cam?sig=x".into(),
                    (-1000.0).into(),
                    5.0.into(),
                    false.into(),
                ],
            ),
        )
        .unwrap();
        let requests: Vec<_> = std::iter::from_fn(|| s.poll_event())
            .filter(|e| !matches!(e, RtmpEvent::Transmit(_)))
            .collect();
        assert_eq!(
            requests,
            [RtmpEvent::PlayRequested {
                app: "live".into(),
                name: "cam".into(),
                query: "sig=x".into(),
                start: PlayStart::Live,
                duration: 5.0,
                reset: false,
            }]
        );
        s.accept_play().unwrap();
        // no Play.Reset when reset is false
        let codes: Vec<_> = sent_commands(&mut s)
            .iter()
            .filter_map(|c| {
                c.args
                    .first()?
                    .property("code")?
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(codes, ["NetStream.Play.Start"]);

        for (name, arg) in [("receiveAudio", false), ("receiveVideo", true)] {
            s.handle_bytes(
                now,
                &call(1, &[name.into(), 0.0.into(), Amf0Value::Null, arg.into()]),
            )
            .unwrap();
        }
        s.handle_bytes(
            now,
            &call(1, &["closeStream".into(), 0.0.into(), Amf0Value::Null]),
        )
        .unwrap();
        let events: Vec<_> = std::iter::from_fn(|| s.poll_event())
            .filter(|e| !matches!(e, RtmpEvent::Transmit(_)))
            .collect();
        assert_eq!(
            events,
            [
                RtmpEvent::ReceiveAudio(false),
                RtmpEvent::ReceiveVideo(true),
                RtmpEvent::PlayStopped,
            ]
        );
        assert!(!s.is_playing());
    }

    /// The server's non-Transmit events for `pieces` fed in order, with every request
    /// accepted, plus a digest of all bytes sent, as comparable strings.
    fn capture_events(pieces: &[&[u8]]) -> Vec<String> {
        let now = Instant::now();
        let mut s = RtmpServerConn::new(RtmpServerConfig::default());
        let mut out = Vec::new();
        let mut sent = 0u64;
        for piece in pieces {
            s.handle_bytes(now, piece).unwrap();
            while let Some(ev) = s.poll_event() {
                match ev {
                    RtmpEvent::Transmit(b) => {
                        // order-sensitive digest of the bytes sent so far
                        for &x in b.iter() {
                            sent = sent.wrapping_mul(31).wrapping_add(u64::from(x));
                        }
                        continue;
                    }
                    RtmpEvent::ConnectRequested { .. } => s.accept_connect().unwrap(),
                    RtmpEvent::PublishRequested { .. } => s.accept_publish().unwrap(),
                    _ => {}
                }
                out.push(match ev {
                    RtmpEvent::Media {
                        kind,
                        timestamp_ms,
                        body,
                    } => {
                        let sum = body
                            .iter()
                            .fold(0u32, |a, &x| a.wrapping_mul(31).wrapping_add(u32::from(x)));
                        format!("{kind:?} {timestamp_ms} {} {sum:08x}", body.len())
                    }
                    other => format!("{other:?}"),
                });
            }
        }
        out.push(format!("sent {sent:016x}"));
        out
    }

    #[test]
    fn ffmpeg_capture_decodes_to_its_media() {
        let events = capture_events(&[CAPTURE]);
        assert!(
            events[0].starts_with("ConnectRequested { app: \"live\""),
            "{}",
            events[0]
        );
        assert!(events[1].starts_with("PublishRequested { app: \"live\", name: \"test\""));
        let video = events.iter().filter(|e| e.starts_with("Video")).count();
        let audio = events.iter().filter(|e| e.starts_with("Audio")).count();
        let data = events.iter().filter(|e| e.starts_with("Data")).count();
        assert_eq!(data, 1, "one onMetaData");
        // 1 s at 25 fps plus the sequence header; AAC at 44.1 kHz is ~43 frames/s
        assert!((25..=27).contains(&video), "{video} video messages");
        assert!((40..=48).contains(&audio), "{audio} audio messages");
        assert!(events.iter().any(|e| e == "Unpublished"));
    }

    #[test]
    fn publish_parses_the_same_at_every_split() {
        let whole = capture_events(&[CAPTURE]);
        for at in 0..CAPTURE.len() {
            let (a, b) = CAPTURE.split_at(at);
            assert_eq!(capture_events(&[a, b]), whole, "split at byte {at}");
        }
    }
}
