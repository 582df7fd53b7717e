//! The client side of an RTMP connection: handshake, connect, createStream, then publish
//! (and send media) or play (and receive media). Used by tests, relays and the benchmark
//! swarm, which runs thousands at once, so the per-connection state is small: an input
//! buffer, a chunk decoder with a few chunk streams, and a handful of fields.
//!
//! It speaks what ffmpeg speaks: `releaseStream`/`FCPublish` before `createStream` when
//! publishing, `SetBufferLength` after `play`, and it works against nginx-rtmp as well as
//! our own server.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Buf, Bytes};

use super::amf0::{self, Amf0Value};
use super::chunk::{serialize_message, ChunkDecoderConfig};
use super::command::Command;
use super::handshake::{ClientHandshake, HandshakeRng, HANDSHAKE_SIZE};
use super::message::{self, MediaKind, Message, PublishType, UserControl};
use super::session::Session;
use super::{RtmpError, DEFAULT_CHUNK_SIZE, OUTGOING_CHUNK_SIZE};

/// What the client does once connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMode {
    /// Publish `name` (which may carry `?query`).
    Publish {
        name: String,
        publish_type: PublishType,
    },
    /// Play `name` (which may carry `?query`).
    Play { name: String },
}

#[derive(Clone, Debug)]
pub struct RtmpClientConfig {
    /// The application (`live` in `rtmp://host/live/stream`), with any `?query`.
    pub app: String,
    /// The full URL up to the app, e.g. `rtmp://127.0.0.1:1935/live`.
    pub tc_url: String,
    pub mode: ClientMode,
    /// `flashVer` in connect.
    pub flash_ver: String,
    /// Chunk size this side sends with (announced right after the handshake).
    pub chunk_size: u32,
    /// Buffer length announced to the server after `play`.
    pub buffer_length_ms: u32,
    /// Use the digest handshake (as Flash Player and ffmpeg do) instead of the simple one.
    pub digest_handshake: bool,
    pub handshake_seed: u64,
    pub decoder: ChunkDecoderConfig,
}

impl RtmpClientConfig {
    pub fn new(tc_url: &str, app: &str, mode: ClientMode) -> Self {
        RtmpClientConfig {
            app: app.into(),
            tc_url: tc_url.into(),
            mode,
            flash_ver: "FMLE/3.0 (compatible; shardcast)".into(),
            chunk_size: OUTGOING_CHUNK_SIZE,
            buffer_length_ms: 1000,
            digest_handshake: false,
            handshake_seed: 0,
            decoder: ChunkDecoderConfig::default(),
        }
    }
}

/// Outputs of [`RtmpClientConn`].
#[derive(Clone, Debug, PartialEq)]
pub enum RtmpClientEvent {
    /// Bytes to write to the server, in order.
    Transmit(Bytes),
    /// The server accepted connect.
    Connected,
    /// An `onStatus` (as a command or as data) from the server. `NetStream.Publish.Start`
    /// means `send_media` may be used; `NetStream.Play.Start` that media follows.
    Status {
        level: String,
        code: String,
        description: String,
    },
    /// The server answered one of our calls (`connect`, `createStream`, ...) with
    /// `_error`.
    CallFailed {
        command: &'static str,
        code: String,
        description: String,
    },
    /// Media from the server while playing. For data, the body is as sent (normally
    /// starting with `onMetaData`).
    Media {
        kind: MediaKind,
        timestamp_ms: u32,
        body: Bytes,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitServerHandshake,
    /// Waiting for connect's `_result`.
    Connecting,
    /// Waiting for createStream's `_result`.
    CreatingStream,
    /// publish/play sent, waiting for its status.
    Starting,
    Publishing,
    Playing,
    /// The server refused something or ended the stream; only pings and acks now.
    Stopped,
}

const TXN_CONNECT: f64 = 1.0;
const TXN_RELEASE_STREAM: f64 = 2.0;
const TXN_FC_PUBLISH: f64 = 3.0;
const TXN_CREATE_STREAM: f64 = 4.0;

/// One RTMP client connection.
#[derive(Debug)]
pub struct RtmpClientConn {
    config: RtmpClientConfig,
    phase: Phase,
    handshake: ClientHandshake,
    session: Session,
    events: VecDeque<RtmpClientEvent>,
    stream_id: u32,
}

impl RtmpClientConn {
    /// A new connection; its first event is the C0+C1 `Transmit`.
    pub fn new(config: RtmpClientConfig) -> Self {
        let (handshake, c0c1) = ClientHandshake::start(
            config.digest_handshake,
            HandshakeRng::new(config.handshake_seed),
        );
        let mut session = Session::new(config.decoder);
        session.send(c0c1);
        let mut conn = RtmpClientConn {
            config,
            phase: Phase::AwaitServerHandshake,
            handshake,
            session,
            events: VecDeque::new(),
            stream_id: 0,
        };
        conn.flush_session();
        conn
    }

    /// True once `NetStream.Publish.Start` arrived.
    pub fn is_publishing(&self) -> bool {
        self.phase == Phase::Publishing
    }

    /// True once `NetStream.Play.Start` arrived.
    pub fn is_playing(&self) -> bool {
        self.phase == Phase::Playing
    }

    /// The message stream id the server gave us.
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    pub fn handle_bytes(&mut self, _now: Instant, bytes: &[u8]) -> Result<(), RtmpError> {
        self.session.inbuf.extend_from_slice(bytes);
        self.run()
    }

    /// The client keeps no timers; the driver applies its own deadlines.
    pub fn handle_timeout(&mut self, _now: Instant) {}

    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    pub fn poll_event(&mut self) -> Option<RtmpClientEvent> {
        self.events.pop_front()
    }

    /// Sends one audio, video or data message on our stream, timestamped `timestamp_ms`
    /// (absolute, type 0 header). Only while publishing.
    pub fn send_media(
        &mut self,
        kind: MediaKind,
        timestamp_ms: u32,
        body: &[u8],
    ) -> Result<(), RtmpError> {
        if self.phase != Phase::Publishing {
            return Err(RtmpError::InvalidState {
                action: "send_media",
                state: "the server has not confirmed the publish",
            });
        }
        let b = serialize_message(
            kind.csid(),
            kind.type_id(),
            self.stream_id,
            timestamp_ms,
            body,
            self.config.chunk_size,
        )?;
        self.session.send(b);
        self.flush_session();
        Ok(())
    }

    /// Ends a publish or play politely (FCUnpublish + deleteStream, or deleteStream);
    /// the driver closes the socket after writing the bytes.
    pub fn stop(&mut self) {
        if self.stream_id == 0 {
            return;
        }
        let cs = self.config.chunk_size;
        if matches!(self.config.mode, ClientMode::Publish { .. }) {
            let name = self.name().to_owned();
            self.send_command(
                0,
                &[
                    "FCUnpublish".into(),
                    0.0.into(),
                    Amf0Value::Null,
                    name.as_str().into(),
                ],
            );
        }
        let id = f64::from(self.stream_id);
        self.session.send(message::command(
            0,
            &[
                "deleteStream".into(),
                0.0.into(),
                Amf0Value::Null,
                id.into(),
            ],
            cs,
        ));
        self.flush_session();
        self.phase = Phase::Stopped;
    }

    fn name(&self) -> &str {
        match &self.config.mode {
            ClientMode::Publish { name, .. } | ClientMode::Play { name } => name,
        }
    }

    fn flush_session(&mut self) {
        while let Some(b) = self.session.tx.pop_front() {
            self.events.push_back(RtmpClientEvent::Transmit(b));
        }
    }

    fn send_command(&mut self, stream_id: u32, values: &[Amf0Value]) {
        self.session
            .send(message::command(stream_id, values, self.config.chunk_size));
        self.flush_session();
    }

    fn run(&mut self) -> Result<(), RtmpError> {
        if self.phase == Phase::AwaitServerHandshake {
            const LEN: usize = 1 + 2 * HANDSHAKE_SIZE;
            if let Some(&s0) = self.session.inbuf.first() {
                super::handshake::check_version(s0)?;
            }
            if self.session.inbuf.len() < LEN {
                return Ok(());
            }
            let c2 = self.handshake.finish(&self.session.inbuf[..LEN])?;
            self.session.inbuf.advance(LEN);
            self.session.count_received(LEN);
            self.session.send(c2);
            if self.config.chunk_size != DEFAULT_CHUNK_SIZE {
                self.session
                    .send(message::set_chunk_size(self.config.chunk_size));
            }
            let connect = Amf0Value::object([
                ("app", self.config.app.as_str().into()),
                ("type", "nonprivate".into()),
                ("flashVer", self.config.flash_ver.as_str().into()),
                ("tcUrl", self.config.tc_url.as_str().into()),
                ("fpad", false.into()),
                ("capabilities", 15.0.into()),
                ("audioCodecs", 4071.0.into()),
                ("videoCodecs", 252.0.into()),
                ("videoFunction", 1.0.into()),
            ]);
            self.send_command(0, &["connect".into(), TXN_CONNECT.into(), connect]);
            self.phase = Phase::Connecting;
        }
        loop {
            let msg = self.session.next_message();
            self.flush_session();
            match msg? {
                None => return Ok(()),
                Some(m) => self.handle_message(m)?,
            }
        }
    }

    fn handle_message(&mut self, msg: Message) -> Result<(), RtmpError> {
        match msg {
            Message::Command { values, .. } => self.handle_command(Command::parse(values)?),
            Message::Media {
                kind: MediaKind::Data,
                body,
                timestamp,
                ..
            } => {
                self.handle_data(timestamp, body);
                Ok(())
            }
            Message::Media {
                kind,
                timestamp,
                body,
                ..
            } => {
                if self.phase == Phase::Playing {
                    self.events.push_back(RtmpClientEvent::Media {
                        kind,
                        timestamp_ms: timestamp,
                        body,
                    });
                }
                Ok(())
            }
            Message::UserControl(UserControl::StreamEof { .. }) => Ok(()),
            _ => Ok(()),
        }
    }

    /// Data messages: `onStatus` sent as data becomes a status, `|RtmpSampleAccess` is
    /// dropped, anything else (metadata) is media.
    fn handle_data(&mut self, timestamp: u32, body: Bytes) {
        let mut r = amf0::Reader::new(&body);
        let name = amf0::decode(&mut r).ok();
        match name.as_ref().and_then(Amf0Value::as_str) {
            Some("onStatus") => {
                if let Ok(info) = amf0::decode(&mut r) {
                    self.status(&info);
                }
            }
            Some(n) if n.starts_with('|') => {}
            _ if self.phase == Phase::Playing => {
                self.events.push_back(RtmpClientEvent::Media {
                    kind: MediaKind::Data,
                    timestamp_ms: timestamp,
                    body,
                });
            }
            _ => {}
        }
    }

    fn status(&mut self, info: &Amf0Value) {
        let get = |k: &str| {
            info.property(k)
                .and_then(Amf0Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (level, code, description) = (get("level"), get("code"), get("description"));
        match code.as_str() {
            "NetStream.Publish.Start" if self.phase == Phase::Starting => {
                self.phase = Phase::Publishing
            }
            "NetStream.Play.Start" if self.phase == Phase::Starting => self.phase = Phase::Playing,
            _ if level == "error" => self.phase = Phase::Stopped,
            _ => {}
        }
        self.events.push_back(RtmpClientEvent::Status {
            level,
            code,
            description,
        });
    }

    fn handle_command(&mut self, c: Command) -> Result<(), RtmpError> {
        match c.name.as_str() {
            "_result" if c.transaction_id == TXN_CONNECT && self.phase == Phase::Connecting => {
                self.events.push_back(RtmpClientEvent::Connected);
                let name = self.name().to_owned();
                if matches!(self.config.mode, ClientMode::Publish { .. }) {
                    self.send_command(
                        0,
                        &[
                            "releaseStream".into(),
                            TXN_RELEASE_STREAM.into(),
                            Amf0Value::Null,
                            name.as_str().into(),
                        ],
                    );
                    self.send_command(
                        0,
                        &[
                            "FCPublish".into(),
                            TXN_FC_PUBLISH.into(),
                            Amf0Value::Null,
                            name.as_str().into(),
                        ],
                    );
                }
                self.send_command(
                    0,
                    &[
                        "createStream".into(),
                        TXN_CREATE_STREAM.into(),
                        Amf0Value::Null,
                    ],
                );
                self.phase = Phase::CreatingStream;
            }
            "_result"
                if c.transaction_id == TXN_CREATE_STREAM && self.phase == Phase::CreatingStream =>
            {
                let id = c
                    .arg_number(0)
                    .filter(|n| *n >= 1.0 && *n <= f64::from(u32::MAX) && n.fract() == 0.0)
                    .ok_or_else(|| RtmpError::Malformed {
                        what: "createStream result",
                        detail: format!("stream id {:?} is not a positive integer", c.args.first()),
                    })?;
                self.stream_id = id as u32;
                let sid = self.stream_id;
                let name = self.name().to_owned();
                match self.config.mode.clone() {
                    ClientMode::Publish { publish_type, .. } => self.send_command(
                        sid,
                        &[
                            "publish".into(),
                            0.0.into(),
                            Amf0Value::Null,
                            name.as_str().into(),
                            publish_type.as_str().into(),
                        ],
                    ),
                    ClientMode::Play { .. } => {
                        self.send_command(
                            sid,
                            &[
                                "play".into(),
                                0.0.into(),
                                Amf0Value::Null,
                                name.as_str().into(),
                                (-2.0).into(),
                            ],
                        );
                        self.session
                            .send(message::user_control(UserControl::SetBufferLength {
                                stream_id: sid,
                                buffer_ms: self.config.buffer_length_ms,
                            }));
                        self.flush_session();
                    }
                }
                self.phase = Phase::Starting;
            }
            "_error" => {
                let command = match c.transaction_id {
                    TXN_CONNECT => "connect",
                    TXN_RELEASE_STREAM => "releaseStream",
                    TXN_FC_PUBLISH => "FCPublish",
                    TXN_CREATE_STREAM => "createStream",
                    _ => "unknown",
                };
                let info = c.args.first().cloned().unwrap_or(Amf0Value::Null);
                let get = |k: &str| {
                    info.property(k)
                        .and_then(Amf0Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                // releaseStream/FCPublish are courtesy calls some servers do not know
                if matches!(command, "connect" | "createStream") {
                    self.phase = Phase::Stopped;
                }
                self.events.push_back(RtmpClientEvent::CallFailed {
                    command,
                    code: get("code"),
                    description: get("description"),
                });
            }
            "onStatus" => {
                if let Some(info) = c.args.first() {
                    let info = info.clone();
                    self.status(&info);
                }
            }
            _ => tracing::trace!(command = %c.name, "server command ignored"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::ChunkDecoder;
    use crate::rtmp::command;

    fn client(mode: ClientMode) -> (RtmpClientConn, Instant) {
        let mut c = RtmpClientConn::new(RtmpClientConfig::new("rtmp://h/live", "live", mode));
        let Some(RtmpClientEvent::Transmit(c0c1)) = c.poll_event() else {
            panic!("no C0C1")
        };
        assert_eq!(c0c1.len(), 1 + HANDSHAKE_SIZE);
        assert_eq!(
            &c0c1[..9],
            &[3, 0, 0, 0, 0, 0, 0, 0, 0],
            "simple handshake C1"
        );
        (c, Instant::now())
    }

    /// What the client sent, decoded (the C2 and anything before the chunk stream are
    /// skipped by the caller).
    fn sent(c: &mut RtmpClientConn, d: &mut ChunkDecoder) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(ev) = c.poll_event() {
            let RtmpClientEvent::Transmit(b) = ev else {
                continue;
            };
            let mut input = &b[..];
            while let Some((used, m)) = d.decode_chunk(input).unwrap() {
                input = &input[used..];
                if let Some(m) = m {
                    let m = Message::parse(m).unwrap();
                    if let Message::SetChunkSize(n) = m {
                        d.set_chunk_size(n).unwrap();
                    }
                    out.push(m);
                }
            }
        }
        out
    }

    fn command_names(msgs: &[Message]) -> Vec<String> {
        msgs.iter()
            .filter_map(|m| match m {
                Message::Command { values, .. } => values[0].as_str().map(str::to_owned),
                _ => None,
            })
            .collect()
    }

    fn server_handshake(c: &mut RtmpClientConn, now: Instant) {
        let mut s = vec![0u8; 1 + 2 * HANDSHAKE_SIZE];
        s[0] = 3;
        c.handle_bytes(now, &s).unwrap();
        let Some(RtmpClientEvent::Transmit(c2)) = c.poll_event() else {
            panic!("no C2")
        };
        assert_eq!(c2.len(), HANDSHAKE_SIZE);
    }

    #[test]
    fn bad_server_version_is_an_error() {
        let (mut c, now) = client(ClientMode::Play { name: "a".into() });
        let err = c.handle_bytes(now, b"HTTP/1.1 400").unwrap_err();
        assert!(matches!(
            err,
            RtmpError::BadHandshakeVersion { version: b'H' }
        ));
    }

    #[test]
    fn publish_sequence_and_media_only_after_start() {
        let (mut c, now) = client(ClientMode::Publish {
            name: "cam".into(),
            publish_type: PublishType::Record,
        });
        server_handshake(&mut c, now);
        let mut d = ChunkDecoder::default();
        let first = sent(&mut c, &mut d);
        assert_eq!(first[0], Message::SetChunkSize(OUTGOING_CHUNK_SIZE));
        assert_eq!(command_names(&first), ["connect"]);
        assert!(c.send_media(MediaKind::Video, 0, b"x").is_err());

        let cs = OUTGOING_CHUNK_SIZE;
        c.handle_bytes(
            now,
            &command::result(0, TXN_CONNECT, &[Amf0Value::Null], cs),
        )
        .unwrap();
        assert_eq!(
            command_names(&sent(&mut c, &mut d)),
            ["releaseStream", "FCPublish", "createStream"]
        );
        c.handle_bytes(
            now,
            &command::result(0, TXN_CREATE_STREAM, &[Amf0Value::Null, 3.0.into()], cs),
        )
        .unwrap();
        let publish = sent(&mut c, &mut d);
        let Message::Command { stream_id, values } = &publish[0] else {
            panic!()
        };
        assert_eq!(*stream_id, 3);
        assert_eq!(values[3].as_str(), Some("cam"));
        assert_eq!(values[4].as_str(), Some("record"));

        c.handle_bytes(
            now,
            &command::on_status(3, "status", "NetStream.Publish.Start", "", cs),
        )
        .unwrap();
        assert!(c.is_publishing());
        c.send_media(MediaKind::Audio, 7, b"\xaf\x00\x12\x10")
            .unwrap();
        let media = sent(&mut c, &mut d);
        assert_eq!(
            media,
            [Message::Media {
                kind: MediaKind::Audio,
                stream_id: 3,
                timestamp: 7,
                body: Bytes::from_static(b"\xaf\x00\x12\x10"),
            }]
        );
    }

    #[test]
    fn answers_pings_and_acknowledges_the_servers_window() {
        let (mut c, now) = client(ClientMode::Play { name: "a".into() });
        server_handshake(&mut c, now);
        let mut d = ChunkDecoder::default();
        sent(&mut c, &mut d);
        let mut input = Vec::new();
        input.extend_from_slice(&message::window_ack_size(5000));
        input.extend_from_slice(&message::set_peer_bandwidth(5000, 2));
        input.extend_from_slice(&message::user_control(UserControl::PingRequest {
            timestamp: 9,
        }));
        c.handle_bytes(now, &input).unwrap();
        let replies = sent(&mut c, &mut d);
        // the handshake counts toward the window: 3073 + 16 + 17 + 18 bytes < 5000
        assert_eq!(
            replies,
            [
                Message::WindowAckSize(5000),
                Message::UserControl(UserControl::PingResponse { timestamp: 9 }),
            ]
        );
        c.handle_bytes(
            now,
            &message::user_control(UserControl::StreamBegin { stream_id: 1 }),
        )
        .unwrap();
        let big = crate::rtmp::chunk::serialize_message(6, 9, 1, 0, &[0u8; 2000], 128).unwrap();
        c.handle_bytes(now, &big).unwrap();
        let acks = sent(&mut c, &mut d);
        assert!(
            matches!(acks[..], [Message::Acknowledgement { sequence }] if sequence >= 5000),
            "{acks:?}"
        );
    }

    #[test]
    fn failed_create_stream_is_reported() {
        let (mut c, now) = client(ClientMode::Play { name: "a".into() });
        server_handshake(&mut c, now);
        let cs = OUTGOING_CHUNK_SIZE;
        c.handle_bytes(
            now,
            &command::result(0, TXN_CONNECT, &[Amf0Value::Null], cs),
        )
        .unwrap();
        let status = command::status_object("error", "NetConnection.Call.Failed", "nope");
        c.handle_bytes(
            now,
            &command::error(0, TXN_CREATE_STREAM, &[Amf0Value::Null, status], cs),
        )
        .unwrap();
        let events: Vec<_> = std::iter::from_fn(|| c.poll_event())
            .filter(|e| !matches!(e, RtmpClientEvent::Transmit(_)))
            .collect();
        assert_eq!(
            events,
            [
                RtmpClientEvent::Connected,
                RtmpClientEvent::CallFailed {
                    command: "createStream",
                    code: "NetConnection.Call.Failed".into(),
                    description: "nope".into(),
                }
            ]
        );
        assert_eq!(c.phase, Phase::Stopped);
        assert_eq!(c.stream_id(), 0);
    }
}
