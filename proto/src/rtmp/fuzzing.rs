//! Entry points for the fuzz targets in `fuzz/fuzz_targets/` (and for the seed-corpus
//! test that runs on stable). Each drives production code with arbitrary bytes; the only
//! thing checked is that nothing panics, plus round-trip properties where an encoder
//! exists.

use std::time::Instant;

use bytes::BytesMut;

use std::time::Duration;

use super::amf0;
use super::amf3;
use super::chunk::{ChunkDecoder, ChunkDecoderConfig};
use super::handshake::HANDSHAKE_SIZE;
use super::message::{Message, PublishType};
use super::{
    ClientMode, RtmpClientConfig, RtmpClientConn, RtmpClientEvent, RtmpError, RtmpEvent,
    RtmpServerConfig, RtmpServerConn, DEFAULT_CHUNK_SIZE, OUTGOING_CHUNK_SIZE,
};

/// Feeds `data` as a chunk stream to a bare decoder, then, after a simple handshake, to
/// a whole server connection that accepts every request.
pub fn fuzz_chunk_stream(data: &[u8]) {
    let mut d = ChunkDecoder::default();
    let mut input = data;
    while let Ok(Some((used, _))) = d.decode_chunk(input) {
        // a chunk always consumes its header, so this terminates
        assert!(used > 0, "decoder made no progress");
        input = &input[used..];
    }

    let now = Instant::now();
    let mut conn = RtmpServerConn::new(RtmpServerConfig::default());
    let mut hs = vec![0u8; 1 + 2 * HANDSHAKE_SIZE];
    hs[0] = 3;
    if conn.handle_bytes(now, &hs).is_err() {
        return;
    }
    // split the input in two to exercise buffering too
    let (a, b) = data.split_at(data.len() / 2);
    for part in [a, b] {
        if conn.handle_bytes(now, part).is_err() {
            return;
        }
        while let Some(ev) = conn.poll_event() {
            let decided = match ev {
                RtmpEvent::ConnectRequested { .. } => conn.accept_connect(),
                RtmpEvent::PublishRequested { .. } => conn.accept_publish(),
                RtmpEvent::PlayRequested { .. } => conn.accept_play(),
                _ => Ok(()),
            };
            if decided.is_err() {
                return;
            }
        }
    }
}

/// Structure-aware: a well-behaved client ([`RtmpClientConn`]) does the handshake
/// (C0/C1/C2), connect, createStream and publish or play against a fresh
/// [`RtmpServerConn`]; then `data[2..]` follows as that client's chunk stream, so the
/// fuzzer starts past the handshake with chunk stream and session state in place.
///
/// `data[0]` picks the prelude: bit 0 digest handshake, bit 1 play (else publish), bit 2
/// the client sends with chunk size 128 (else 4096), bit 3 small decoder and backlog
/// limits (so they are reached), bits 4-5 how the driver answers later requests (accept,
/// reject, alternate, reject connect too). `data[1]` seeds how the bytes are split into
/// reads and how far the clock moves between them (bit 7: far enough for the idle
/// timeout).
///
/// Checked besides "no panic": everything the server transmits is whole chunks of
/// messages that decode and parse; a driver that answers each request as it is polled
/// never gets `InvalidState`; nothing follows `Closed` or an error.
pub fn fuzz_server_session(data: &[u8]) {
    let [flags, timing, chunks @ ..] = data else {
        return;
    };
    let (flags, timing) = (*flags, *timing);
    let mut config = RtmpServerConfig::default();
    if flags & 8 != 0 {
        config.decoder = ChunkDecoderConfig {
            max_message_size: 4096,
            max_chunk_streams: 4,
            max_buffered_bytes: 8192,
        };
        config.max_backlog_bytes = 1024;
    }
    let mode = if flags & 2 != 0 {
        ClientMode::Play {
            name: "cam?key=1".into(),
        }
    } else {
        ClientMode::Publish {
            name: "cam?key=1".into(),
            publish_type: PublishType::Live,
        }
    };
    let mut client_config = RtmpClientConfig::new("rtmp://127.0.0.1/live", "live", mode);
    client_config.digest_handshake = flags & 1 != 0;
    client_config.chunk_size = if flags & 4 != 0 {
        DEFAULT_CHUNK_SIZE
    } else {
        OUTGOING_CHUNK_SIZE
    };

    let mut driver = ServerDriver {
        server: RtmpServerConn::new(config),
        now: Instant::now(),
        policy: (flags >> 4) & 3,
        decisions: 0,
        closed: false,
        out: ChunkDecoder::default(),
        out_started: false,
    };
    driver.server.handle_timeout(driver.now);
    let mut client = RtmpClientConn::new(client_config);
    prelude(&mut driver, &mut client);
    if driver.closed {
        return;
    }
    // From here on the output is checked; all of it uses the server's chunk size.
    driver.out_started = true;
    driver
        .out
        .set_chunk_size(driver.server.chunk_size())
        .expect("the server's chunk size is valid");

    // splitmix64: every output bit depends on `timing` from the first call on
    let mut state = u64::from(timing);
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut input = chunks;
    while !input.is_empty() {
        let r = next();
        let n = match r % 4 {
            0 => input.len(),
            1 => 1 + (r >> 8) as usize % 16,
            _ => 1 + (r >> 8) as usize % 700,
        };
        let (piece, rest) = input.split_at(n.min(input.len()));
        input = rest;
        driver.now += match (r >> 24) % 8 {
            0 => Duration::from_secs(1),
            1 => Duration::from_secs(21), // past the ping interval
            2 if timing & 0x80 != 0 => Duration::from_secs(61), // past the idle timeout
            _ => Duration::ZERO,
        };
        if driver
            .server
            .poll_timeout()
            .is_some_and(|t| t <= driver.now)
        {
            driver.server.handle_timeout(driver.now);
            driver.drain();
        }
        match (r >> 32) % 16 {
            0 => driver.server.publish_ended(),
            1 => driver.server.publish_started(),
            2 if driver.server.is_playing() => driver.server.record_media_sent(n * 1000),
            _ => {}
        }
        driver.drain();
        driver.feed(piece);
    }
    driver.now += Duration::from_secs(61);
    driver.server.handle_timeout(driver.now);
    driver.drain();
    assert!(
        driver.closed,
        "the idle timeout closes a connection that sent nothing for 61 s"
    );
}

/// Pumps bytes between `client` and the server until both are quiet; the driver accepts
/// every request, so the client ends up publishing or playing.
fn prelude(driver: &mut ServerDriver, client: &mut RtmpClientConn) {
    loop {
        let mut moved = false;
        while let Some(ev) = client.poll_event() {
            if let RtmpClientEvent::Transmit(b) = ev {
                moved = true;
                if driver.server.handle_bytes(driver.now, &b).is_err() {
                    panic!("the server refused a well-behaved client");
                }
            }
        }
        while let Some(ev) = driver.server.poll_event() {
            match ev {
                RtmpEvent::Transmit(b) => {
                    moved = true;
                    client
                        .handle_bytes(driver.now, &b)
                        .expect("the client understands the server");
                }
                RtmpEvent::ConnectRequested { .. } => driver.server.accept_connect().unwrap(),
                RtmpEvent::PublishRequested { .. } => driver.server.accept_publish().unwrap(),
                RtmpEvent::PlayRequested { .. } => driver.server.accept_play().unwrap(),
                RtmpEvent::Closed(reason) => panic!("closed during the prelude: {reason:?}"),
                _ => {}
            }
        }
        if !moved {
            break;
        }
    }
    assert!(
        client.is_publishing() || client.is_playing(),
        "the prelude reaches publish or play"
    );
}

/// The driver side of a fuzzed server connection (see [`fuzz_server_session`]).
struct ServerDriver {
    server: RtmpServerConn,
    now: Instant,
    policy: u8,
    decisions: u32,
    /// `Closed` was polled or `handle_bytes` failed: nothing may follow.
    closed: bool,
    /// Decodes what the server transmits.
    out: ChunkDecoder,
    out_started: bool,
}

impl ServerDriver {
    fn feed(&mut self, bytes: &[u8]) {
        let result = self.server.handle_bytes(self.now, bytes);
        let was_closed = self.closed;
        self.drain_after(was_closed);
        if result.is_err() {
            self.closed = true;
            // closed from then on: more input is ignored and produces nothing
            self.server
                .handle_bytes(self.now, bytes)
                .expect("a closed connection ignores input");
            self.server
                .handle_timeout(self.now + Duration::from_secs(3600));
            assert_eq!(self.server.poll_event(), None, "events after an error");
            assert_eq!(self.server.poll_timeout(), None, "a timer after an error");
        }
    }

    fn drain(&mut self) {
        let was_closed = self.closed;
        self.drain_after(was_closed);
    }

    fn drain_after(&mut self, was_closed: bool) {
        while let Some(ev) = self.server.poll_event() {
            assert!(!was_closed, "{ev:?} after the connection closed");
            self.decisions += 1;
            let accept = match self.policy {
                0 => true,
                1 => false,
                _ => self.decisions % 2 == 0,
            };
            let decided = match ev {
                RtmpEvent::Transmit(b) => {
                    self.check_output(&b);
                    Ok(())
                }
                RtmpEvent::Closed(_) => {
                    self.closed = true;
                    Ok(())
                }
                RtmpEvent::ConnectRequested { .. } if accept || self.policy != 3 => {
                    self.server.accept_connect()
                }
                RtmpEvent::ConnectRequested { .. } => self.server.reject_connect("fuzz"),
                RtmpEvent::PublishRequested { .. } if accept => self.server.accept_publish(),
                RtmpEvent::PublishRequested { .. } => self
                    .server
                    .reject_publish("NetStream.Publish.BadName", "fuzz"),
                RtmpEvent::PlayRequested { .. } if accept => self.server.accept_play(),
                RtmpEvent::PlayRequested { .. } => self
                    .server
                    .reject_play("NetStream.Play.StreamNotFound", "fuzz"),
                _ => Ok(()),
            };
            match decided {
                Err(e @ RtmpError::InvalidState { .. }) => {
                    panic!("a decision taken as its request was polled failed: {e}")
                }
                // resuming hit a protocol error: the connection is closed
                Err(_) => self.closed = true,
                Ok(()) => {}
            }
        }
    }

    /// Every `Transmit` is whole chunks of whole messages that parse.
    fn check_output(&mut self, bytes: &[u8]) {
        if !self.out_started {
            return;
        }
        let mut input = bytes;
        while !input.is_empty() {
            let (used, msg) = self
                .out
                .decode_chunk(input)
                .expect("the server's output decodes")
                .expect("a Transmit holds whole chunks");
            input = &input[used..];
            if let Some(msg) = msg {
                let parsed = Message::parse(msg).expect("the server's messages parse");
                if let Message::SetChunkSize(size) = parsed {
                    self.out.set_chunk_size(size).expect("a valid chunk size");
                }
            }
        }
        assert_eq!(
            self.out.buffered_bytes(),
            0,
            "a Transmit ends on a message boundary"
        );
    }
}

/// Decodes `data` as AMF0 values; whatever decodes must encode, and decode back to the
/// same number of values that encode to the same bytes. (Not `encode(decode(x)) == x`: an ECMA array's
/// count is a hint that is recomputed, and long strings may have been sent short.)
pub fn fuzz_amf0(data: &[u8]) {
    let Ok(values) = amf0::decode_all(data) else {
        return;
    };
    let Ok(bytes) = amf0::encode_all(&values) else {
        return;
    };
    let again = amf0::decode_all(&bytes).expect("our own AMF0 encoding decodes");
    assert_eq!(
        values.len(),
        again.len(),
        "AMF0 round trip changed the value count"
    );
    let bytes2 = amf0::encode_all(&again).expect("re-encoding succeeds");
    assert_eq!(bytes, bytes2, "AMF0 encoding is not stable");
}

/// Decodes `data` as AMF3 values, with the same round-trip checks as [`fuzz_amf0`].
pub fn fuzz_amf3(data: &[u8]) {
    let Ok(values) = amf3::decode_all(data) else {
        return;
    };
    let mut bytes = BytesMut::new();
    for v in &values {
        if amf3::encode(&mut bytes, v).is_err() {
            return;
        }
    }
    let again = amf3::decode_all(&bytes).expect("our own AMF3 encoding decodes");
    let mut bytes2 = BytesMut::new();
    for v in &again {
        amf3::encode(&mut bytes2, v).expect("re-encoding succeeds");
    }
    assert_eq!(bytes, bytes2, "AMF3 encoding is not stable");
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::rtmp::amf0::Amf0Value;
    use crate::rtmp::amf3::Amf3Value;
    use crate::rtmp::chunk::serialize_message;
    use crate::rtmp::message::{self, UserControl};

    const CAPTURE: &[u8] = include_bytes!("../../../testdata/rtmp/ffmpeg-publish-h264.bin");

    fn corpus_dir(target: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/rtmp/corpus")
            .join(target)
    }

    /// The hand-made seeds of `target` (checked to be valid inputs), and the grown
    /// inputs `cargo fuzz cmin` kept (only replayed).
    type Named = Vec<(String, Vec<u8>)>;

    fn seeds(target: &str) -> (Named, Vec<Vec<u8>>) {
        let mut seeds = Vec::new();
        let mut grown = Vec::new();
        for f in crate::testkit::corpus(&format!("rtmp/corpus/{target}")) {
            if f.grown {
                grown.push(f.data);
            } else {
                seeds.push((format!("{target}/{}", f.name), f.data));
            }
        }
        (seeds, grown)
    }

    /// The seed files, built with our encoders (and from the ffmpeg capture).
    fn generated_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
        let amf = |v: &[Amf0Value]| amf0::encode_all(v).unwrap().to_vec();
        let amf3 = |v: &[Amf3Value]| {
            let mut b = BytesMut::new();
            for x in v {
                amf3::encode(&mut b, x).unwrap();
            }
            b.to_vec()
        };
        let connect = amf(&[
            "connect".into(),
            1.0.into(),
            Amf0Value::object([
                ("app", "live".into()),
                ("tcUrl", "rtmp://127.0.0.1/live".into()),
                ("objectEncoding", 0.0.into()),
            ]),
        ]);
        let metadata = amf(&[
            "@setDataFrame".into(),
            "onMetaData".into(),
            Amf0Value::EcmaArray(vec![
                ("duration".into(), 0.0.into()),
                ("width".into(), 320.0.into()),
                ("encoder".into(), "Lavf59.27.100".into()),
            ]),
        ]);
        let every_type = amf(&[Amf0Value::StrictArray(vec![
            Amf0Value::Boolean(true),
            Amf0Value::Undefined,
            Amf0Value::Reference(0),
            Amf0Value::Date {
                millis: 1.0e12,
                time_zone: 0,
            },
            Amf0Value::LongString("long".into()),
            Amf0Value::XmlDocument("<a/>".into()),
            Amf0Value::TypedObject {
                class_name: "T".into(),
                properties: vec![("x".into(), Amf0Value::Null)],
            },
            Amf0Value::Amf3(Amf3Value::Integer(-5)),
        ])]);
        let object3 = amf3(&[
            Amf3Value::Object {
                class_name: String::new(),
                sealed: vec![("app".into(), Amf3Value::String("live".into()))],
                dynamic: Some(vec![("fpad".into(), Amf3Value::False)]),
            },
            Amf3Value::Reference(0),
        ]);
        // two objects sharing traits, and a string reference
        let mut traits3 = object3.clone();
        traits3.extend_from_slice(&[0x0A, 0x01, 0x06, 0x00, 0x01]);
        let array3 = amf3(&[
            Amf3Value::Array {
                associative: vec![("k".into(), Amf3Value::Double(1.5))],
                dense: vec![Amf3Value::Integer(1 << 20), Amf3Value::Date(0.0)],
            },
            Amf3Value::ByteArray(vec![1, 2, 3]),
            Amf3Value::Xml("<x/>".into()),
        ]);

        let mut control = Vec::new();
        control.extend_from_slice(&message::set_chunk_size(64));
        control.extend_from_slice(&message::window_ack_size(100));
        control.extend_from_slice(&message::user_control(UserControl::PingRequest {
            timestamp: 1,
        }));
        control.extend_from_slice(&serialize_message(3, 20, 0, 0, &connect, 64).unwrap());
        control.extend_from_slice(&serialize_message(2, 2, 0, 0, &6u32.to_be_bytes(), 64).unwrap());
        let mut extended = serialize_message(3, 20, 0, 0, &connect, 128)
            .unwrap()
            .to_vec();
        extended.extend_from_slice(
            &serialize_message(6, 9, 1, 0x0100_0000, &[0x17; 300], 128).unwrap(),
        );
        extended.extend_from_slice(
            &serialize_message(330, 8, 1, 0xFFFF_FFFF, &[0xaf; 200], 128).unwrap(),
        );

        // Edge inputs of tests/badpeer.rs: names and queries just over the limits of
        // server.rs, and AMF nested past amf0::MAX_DEPTH in connect's object.
        let over = |n: usize| "a".repeat(n);
        let name_over = over(super::super::MAX_NAME_BYTES + 1);
        let query_over = format!("cam?{}", over(super::super::MAX_QUERY_BYTES + 1));
        let mut long_names = serialize_message(3, 20, 0, 0, &connect, 128)
            .unwrap()
            .to_vec();
        for (txn, command, name) in [
            (5.0, "publish", &name_over),
            (6.0, "publish", &query_over),
            (7.0, "play", &name_over),
        ] {
            let values = [
                command.into(),
                txn.into(),
                Amf0Value::Null,
                name.as_str().into(),
            ];
            long_names
                .extend_from_slice(&serialize_message(3, 20, 1, 0, &amf(&values), 128).unwrap());
        }
        let long_app = serialize_message(
            3,
            20,
            0,
            0,
            &amf(&[
                "connect".into(),
                1.0.into(),
                Amf0Value::object([("app", name_over.as_str().into())]),
            ]),
            128,
        )
        .unwrap()
        .to_vec();
        let mut deep = amf(&["connect".into(), 1.0.into()]);
        for _ in 0..amf0::MAX_DEPTH + 36 {
            deep.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
        }
        deep.push(0x05);
        for _ in 0..amf0::MAX_DEPTH + 36 {
            deep.extend_from_slice(&[0x00, 0x00, 0x09]);
        }
        let deep_connect = serialize_message(3, 20, 0, 0, &deep, 128).unwrap().to_vec();

        let server = server_seeds();
        let mut seeds = vec![
            ("rtmp_chunk", "long-names", long_names),
            ("rtmp_chunk", "long-app", long_app),
            ("rtmp_chunk", "deep-amf-connect", deep_connect),
            (
                "rtmp_chunk",
                "ffmpeg-publish",
                CAPTURE[1 + 2 * HANDSHAKE_SIZE..].to_vec(),
            ),
            ("rtmp_chunk", "control-messages", control),
            ("rtmp_chunk", "extended-timestamps", extended),
            ("amf0", "connect", connect),
            ("amf0", "set-data-frame", metadata),
            ("amf0", "every-type", every_type),
            ("amf3", "object-and-reference", object3),
            ("amf3", "traits-reference", traits3),
            ("amf3", "array-bytes-xml", array3),
        ];
        seeds.extend(
            server
                .into_iter()
                .map(|(name, bytes)| ("rtmp_server", name, bytes)),
        );
        seeds
    }

    /// A chunk with a type 1 (`fmt` 1: delta, length, type) or type 2 (`fmt` 2: delta)
    /// header, or a type 3 one (no fields), carrying a whole small message.
    fn short_chunk(fmt: u8, csid: u8, delta: u32, type_id: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![fmt << 6 | csid];
        if fmt <= 2 {
            out.extend_from_slice(&delta.to_be_bytes()[1..]);
        }
        if fmt == 1 {
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            out.push(type_id);
        }
        out.extend_from_slice(payload);
        out
    }

    /// Seeds of `rtmp_server`: `[prelude flags, timing]` and what the client sends after
    /// its publish or play (see `fuzz_server_session`).
    fn server_seeds() -> Vec<(&'static str, Vec<u8>)> {
        let cmd = |sid: u32, v: &[Amf0Value], cs: u32| message::command(sid, v, cs).to_vec();
        let call = |name: &str, txn: f64, args: &[Amf0Value]| {
            let mut v = vec![Amf0Value::from(name), txn.into(), Amf0Value::Null];
            v.extend_from_slice(args);
            v
        };
        let msg = |csid, type_id, sid, ts, body: &[u8], cs| {
            serialize_message(csid, type_id, sid, ts, body, cs)
                .unwrap()
                .to_vec()
        };

        // publisher, 4096-byte chunks: metadata, AAC and AVC with every header type,
        // control messages, then a polite stop
        let cs = OUTGOING_CHUNK_SIZE;
        let mut publish = vec![0x00, 0x00];
        let meta = amf0::encode_all(&[
            "@setDataFrame".into(),
            "onMetaData".into(),
            Amf0Value::EcmaArray(vec![("width".into(), 320.0.into())]),
        ])
        .unwrap();
        publish.extend(msg(4, message::DATA_AMF0, 1, 0, &meta, cs));
        publish.extend(msg(
            6,
            message::VIDEO,
            1,
            0,
            &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff],
            cs,
        ));
        publish.extend(msg(4, message::AUDIO, 1, 0, &[0xaf, 0, 0x12, 0x10], cs));
        publish.extend(msg(
            6,
            message::VIDEO,
            1,
            0,
            &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65],
            cs,
        ));
        for i in 0..3u8 {
            publish.extend(short_chunk(
                1,
                6,
                33,
                message::VIDEO,
                &[0x27, 1, 0, 0, 0, 0, 0, 0, 1, i],
            ));
            publish.extend(short_chunk(2, 4, 23, 0, &[0xaf, 1, i, i]));
        }
        publish.extend(short_chunk(3, 4, 0, 0, &[0xaf, 1, 7, 7]));
        publish.extend(msg(
            6,
            message::VIDEO,
            1,
            0x00ff_ffff,
            &[0x17, 1, 0, 0, 0],
            cs,
        ));
        publish.extend(message::acknowledgement(5000).to_vec());
        publish.extend(message::window_ack_size(1 << 20).to_vec());
        publish.extend(message::user_control(UserControl::PingResponse { timestamp: 7 }).to_vec());
        publish.extend(cmd(0, &call("FCUnpublish", 5.0, &["cam".into()]), cs));
        publish.extend(cmd(0, &call("deleteStream", 6.0, &[1.0.into()]), cs));

        // player: audio/video switches, buffer length, a second play, stream commands
        let mut play = vec![0x02, 0x01];
        play.extend(
            message::user_control(UserControl::SetBufferLength {
                stream_id: 1,
                buffer_ms: 3000,
            })
            .to_vec(),
        );
        play.extend(cmd(1, &call("receiveAudio", 0.0, &[false.into()]), cs));
        play.extend(cmd(1, &call("receiveVideo", 0.0, &[true.into()]), cs));
        play.extend(message::acknowledgement(3073).to_vec());
        play.extend(cmd(0, &call("getStreamLength", 7.0, &["cam".into()]), cs));
        play.extend(cmd(
            1,
            &call("play", 8.0, &["other".into(), (-1000.0).into()]),
            cs,
        ));
        play.extend(cmd(1, &call("closeStream", 0.0, &[]), cs));
        play.extend(cmd(
            1,
            &call(
                "play",
                9.0,
                &["again?x=1".into(), 0.0.into(), 5.0.into(), false.into()],
            ),
            cs,
        ));
        play.extend(cmd(0, &call("pause", 10.0, &[true.into()]), cs));
        play.extend(cmd(0, &call("deleteStream", 11.0, &[1.0.into()]), cs));

        // 128-byte chunks, digest handshake, small limits, alternating answers: chunk
        // size changes, stream churn, bad requests, an aggregate, an abort, and at the
        // end a message over the 4096-byte limit
        let mut edges = vec![0x2d, 0x80];
        edges.extend(message::set_chunk_size(1).to_vec());
        edges.extend(msg(
            3,
            message::COMMAND_AMF0,
            0,
            0,
            &amf0::encode_all(&call("createStream", 2.0, &[])).unwrap(),
            1,
        ));
        edges.extend(msg(
            2,
            message::SET_CHUNK_SIZE,
            0,
            0,
            &300u32.to_be_bytes(),
            1,
        ));
        for txn in 3..12 {
            edges.extend(cmd(0, &call("createStream", f64::from(txn), &[]), 300));
        }
        edges.extend(cmd(2, &call("publish", 13.0, &["".into()]), 300));
        edges.extend(cmd(0, &call("FCUnpublish", 14.0, &["cam".into()]), 300));
        edges.extend(cmd(
            2,
            &call("publish", 14.0, &["two".into(), "record".into()]),
            300,
        ));
        edges.extend(cmd(
            0,
            &[
                "connect".into(),
                15.0.into(),
                Amf0Value::object([("app", "x".into())]),
            ],
            300,
        ));
        edges.extend(cmd(0, &call("noSuchMethod", 16.0, &[]), 300));
        let mut aggregate = Vec::new();
        for (i, body) in [&[0xaf, 1, 1][..], &[0x27, 1, 0, 0, 0, 2]]
            .iter()
            .enumerate()
        {
            let type_id = [message::AUDIO, message::VIDEO][i];
            aggregate.push(type_id);
            aggregate.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            aggregate.extend_from_slice(&[0, 0, 40 + i as u8, 0, 0, 0, 1]);
            aggregate.extend_from_slice(body);
            aggregate.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        }
        edges.extend(msg(4, message::AGGREGATE, 1, 40, &aggregate, 300));
        edges.extend(message::user_control(UserControl::PingRequest { timestamp: 9 }).to_vec());
        // the first chunk of a message, then Abort for its chunk stream
        let half = msg(4, message::VIDEO, 1, 0, &[0x17; 600], 300);
        edges.extend_from_slice(&half[..12 + 300]);
        edges.extend(msg(2, message::ABORT, 0, 0, &4u32.to_be_bytes(), 300));
        edges.extend(msg(4, message::VIDEO, 1, 0, &[0x27; 5000], 300));

        vec![
            ("publish-media", publish),
            ("play-commands", play),
            ("edges-small-limits", edges),
            // the capture again after the prelude: "already connected" and more streams
            ("ffmpeg-capture-replayed", {
                let mut v = vec![0x04, 0x41];
                v.extend_from_slice(&CAPTURE[1 + 2 * HANDSHAKE_SIZE..]);
                v
            }),
        ]
    }

    /// Rewrites the seed corpus. `UPDATE_SEEDS=1 cargo test -p shardcast-proto rtmp::fuzzing`.
    #[test]
    fn seed_files_match_their_generator() {
        for (target, name, bytes) in generated_seeds() {
            let path = corpus_dir(target).join(name);
            if std::env::var_os("UPDATE_SEEDS").is_some() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let stored = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_SEEDS=1", path.display()));
            assert_eq!(
                stored,
                bytes,
                "{} is stale; run with UPDATE_SEEDS=1",
                path.display()
            );
        }
    }

    #[test]
    fn every_seed_runs_through_the_fuzz_entry_points() {
        let (chunk, grown) = seeds("rtmp_chunk");
        assert!(chunk.len() >= 3);
        for data in &grown {
            fuzz_chunk_stream(data);
        }
        for (name, data) in &chunk {
            // each chunk seed is a valid stream: the decoder consumes all of it
            let mut d = ChunkDecoder::default();
            let mut input = &data[..];
            let mut messages = 0;
            while let Some((used, msg)) = d.decode_chunk(input).unwrap() {
                input = &input[used..];
                if let Some(m) = msg {
                    messages += 1;
                    if m.type_id == message::SET_CHUNK_SIZE {
                        d.set_chunk_size(u32::from_be_bytes(m.payload[..4].try_into().unwrap()))
                            .unwrap();
                    }
                }
            }
            assert!(input.is_empty() && messages > 0, "{name}");
            fuzz_chunk_stream(data);
        }
        for (target, run, decode_ok) in [
            (
                "amf0",
                fuzz_amf0 as fn(&[u8]),
                (|d: &[u8]| amf0::decode_all(d).is_ok()) as fn(&[u8]) -> bool,
            ),
            ("amf3", fuzz_amf3, |d: &[u8]| amf3::decode_all(d).is_ok()),
        ] {
            let (files, grown) = seeds(target);
            assert!(files.len() >= 3, "{target}");
            for (name, data) in &files {
                assert!(decode_ok(data), "{name} does not decode");
                run(data);
            }
            for data in &grown {
                run(data);
            }
        }
        let (server, grown) = seeds("rtmp_server");
        assert!(server.len() >= 4, "rtmp_server seeds");
        for data in server.iter().map(|(_, d)| d).chain(&grown) {
            fuzz_server_session(data);
        }
    }

    /// Each `rtmp_server` seed gets past the prelude and has the server do what it
    /// was written for, so the fuzzer starts from meaningful sessions.
    #[test]
    fn server_seeds_reach_what_they_were_written_for() {
        let (seeds, _) = seeds("rtmp_server");
        for (name, data) in &seeds {
            let events = server_events(data);
            let has = |what: &str| events.iter().any(|e| e.contains(what));
            let expect: &[&str] = match name.rsplit('/').next().unwrap() {
                "publish-media" => &[
                    "Media { kind: Video",
                    "Media { kind: Audio",
                    "Media { kind: Data",
                    "Unpublished",
                ],
                "play-commands" => &[
                    "ReceiveAudio(false)",
                    "ReceiveVideo(true)",
                    "PlayStopped",
                    "PlayRequested",
                ],
                "edges-small-limits" => &[
                    "Unpublished",
                    "PublishRequested",
                    "error: message of 5000 bytes",
                ],
                "ffmpeg-capture-replayed" => &["Media { kind: Video"],
                other => panic!("no expectation for seed {other}"),
            };
            for what in expect {
                assert!(has(what), "{name}: no {what} in {events:#?}");
            }
        }
    }

    /// The events a session seed produces after the prelude (accepting everything),
    /// as Debug strings, and the error that ended it, if any.
    fn server_events(data: &[u8]) -> Vec<String> {
        let [flags, _, chunks @ ..] = data else {
            panic!("a seed has two header bytes")
        };
        let mut seed = vec![*flags & 0x0f, 0];
        seed.extend_from_slice(chunks);
        fuzz_server_session(&seed);
        let mut config = RtmpServerConfig::default();
        if flags & 8 != 0 {
            config.decoder = ChunkDecoderConfig {
                max_message_size: 4096,
                max_chunk_streams: 4,
                max_buffered_bytes: 8192,
            };
            config.max_backlog_bytes = 1024;
        }
        let mode = if flags & 2 != 0 {
            ClientMode::Play {
                name: "cam?key=1".into(),
            }
        } else {
            ClientMode::Publish {
                name: "cam?key=1".into(),
                publish_type: PublishType::Live,
            }
        };
        let mut client_config = RtmpClientConfig::new("rtmp://127.0.0.1/live", "live", mode);
        client_config.digest_handshake = flags & 1 != 0;
        client_config.chunk_size = if flags & 4 != 0 {
            DEFAULT_CHUNK_SIZE
        } else {
            OUTGOING_CHUNK_SIZE
        };
        let mut driver = ServerDriver {
            server: RtmpServerConn::new(config),
            now: Instant::now(),
            policy: 0,
            decisions: 0,
            closed: false,
            out: ChunkDecoder::default(),
            out_started: false,
        };
        prelude(&mut driver, &mut RtmpClientConn::new(client_config));
        let mut events = Vec::new();
        let mut result = Ok(());
        // reads of 200 bytes, answered at once: below the small backlog limit
        let mut reads = chunks.chunks(200);
        loop {
            let Some(ev) = driver.server.poll_event() else {
                match reads.next() {
                    Some(read) if result.is_ok() => {
                        result = driver.server.handle_bytes(driver.now, read);
                        continue;
                    }
                    _ => break,
                }
            };
            let decided = match &ev {
                RtmpEvent::Transmit(_) => Ok(()),
                RtmpEvent::ConnectRequested { .. } => driver.server.accept_connect(),
                RtmpEvent::PublishRequested { .. } => driver.server.accept_publish(),
                RtmpEvent::PlayRequested { .. } => driver.server.accept_play(),
                _ => Ok(()),
            };
            if !matches!(ev, RtmpEvent::Transmit(_)) {
                events.push(format!("{ev:?}"));
            }
            if decided.is_err() {
                result = decided;
            }
        }
        if let Err(e) = result {
            events.push(format!("error: {e}"));
        }
        events
    }

    #[test]
    fn truncations_of_the_seeds_do_not_panic() {
        // a cheap stand-in for fuzzing on stable: every prefix of every seed
        for (target, _, data) in generated_seeds() {
            let step = (data.len() / 200).max(1);
            for end in (0..data.len()).step_by(step) {
                match target {
                    "rtmp_chunk" => fuzz_chunk_stream(&data[..end]),
                    "rtmp_server" => fuzz_server_session(&data[..end]),
                    "amf0" => fuzz_amf0(&data[..end]),
                    _ => fuzz_amf3(&data[..end]),
                }
            }
        }
    }
}

#[cfg(test)]
mod mutation_smoke {
    use super::*;
    use crate::rtmp::handshake::HandshakeRng;

    /// Random byte flips, insertions and truncations of the seeds, deterministic.
    #[test]
    fn mutated_seeds_do_not_panic() {
        let iterations: usize = std::env::var("RTMP_MUTATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let mut rng = HandshakeRng::new(42);
        let mut r = |n: usize| {
            let mut b = [0u8; 8];
            rng.fill(&mut b);
            (u64::from_le_bytes(b) % n.max(1) as u64) as usize
        };
        let dirs = ["rtmp_chunk", "amf0", "amf3"];
        let root =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/rtmp/corpus");
        for target in dirs {
            let mut files: Vec<Vec<u8>> = std::fs::read_dir(root.join(target))
                .unwrap()
                .map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect();
            files.sort();
            for _ in 0..iterations {
                let mut data = files[r(files.len())].clone();
                if target == "rtmp_chunk" && data.len() > 2000 {
                    let start = r(data.len() - 2000);
                    data = data[start..start + 2000].to_vec();
                }
                for _ in 0..1 + r(8) {
                    let at = r(data.len());
                    match r(4) {
                        0 if !data.is_empty() => data[at] ^= 1 << r(8),
                        1 if !data.is_empty() => data[at] = [0, 0xff, 0x7f, 0x80, 3][r(5)],
                        2 => data.insert(at, r(256) as u8),
                        _ => data.truncate(at),
                    }
                }
                match target {
                    "rtmp_chunk" => fuzz_chunk_stream(&data),
                    "amf0" => fuzz_amf0(&data),
                    _ => fuzz_amf3(&data),
                }
            }
        }
    }
}
