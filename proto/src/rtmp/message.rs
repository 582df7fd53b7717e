//! RTMP message types (spec sections 5.4, 6 and 7): protocol control messages, user
//! control events, and the classification of the rest into commands, data and media.
//!
//! Audio, video and data payloads stay opaque `Bytes` here; only commands are decoded.

use bytes::{BufMut, Bytes, BytesMut};

use super::amf0::{self, Amf0Value};
use super::chunk::{serialize_message, RawMessage};
use super::{
    RtmpError, AUDIO_CSID, COMMAND_CSID, CONTROL_CSID, DATA_CSID, OUTGOING_CHUNK_SIZE, VIDEO_CSID,
};

pub const SET_CHUNK_SIZE: u8 = 1;
pub const ABORT: u8 = 2;
pub const ACKNOWLEDGEMENT: u8 = 3;
pub const USER_CONTROL: u8 = 4;
pub const WINDOW_ACK_SIZE: u8 = 5;
pub const SET_PEER_BANDWIDTH: u8 = 6;
pub const AUDIO: u8 = 8;
pub const VIDEO: u8 = 9;
pub const DATA_AMF3: u8 = 15;
pub const SHARED_OBJECT_AMF3: u8 = 16;
pub const COMMAND_AMF3: u8 = 17;
pub const DATA_AMF0: u8 = 18;
pub const SHARED_OBJECT_AMF0: u8 = 19;
pub const COMMAND_AMF0: u8 = 20;
pub const AGGREGATE: u8 = 22;

/// Which kind of media message: the RTMP message type, and the chunk stream the server
/// sends it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
    /// Script data (AMF0 `onMetaData` and friends).
    Data,
}

impl MediaKind {
    pub fn type_id(self) -> u8 {
        match self {
            MediaKind::Audio => AUDIO,
            MediaKind::Video => VIDEO,
            MediaKind::Data => DATA_AMF0,
        }
    }

    pub fn csid(self) -> u32 {
        match self {
            MediaKind::Audio => AUDIO_CSID,
            MediaKind::Video => VIDEO_CSID,
            MediaKind::Data => DATA_CSID,
        }
    }
}

/// The `publish` command's type argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishType {
    Live,
    Record,
    Append,
}

impl PublishType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(PublishType::Live),
            "record" => Some(PublishType::Record),
            "append" => Some(PublishType::Append),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PublishType::Live => "live",
            PublishType::Record => "record",
            PublishType::Append => "append",
        }
    }
}

/// User control events (spec 7.1.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserControl {
    StreamBegin {
        stream_id: u32,
    },
    StreamEof {
        stream_id: u32,
    },
    StreamDry {
        stream_id: u32,
    },
    SetBufferLength {
        stream_id: u32,
        buffer_ms: u32,
    },
    StreamIsRecorded {
        stream_id: u32,
    },
    PingRequest {
        timestamp: u32,
    },
    PingResponse {
        timestamp: u32,
    },
    /// An event type we do not act on (SWF verification and others).
    Other {
        event_type: u16,
    },
}

impl UserControl {
    fn parse(p: &[u8]) -> Result<Self, RtmpError> {
        let short = || RtmpError::Malformed {
            what: "user control",
            detail: format!("{} bytes is too short", p.len()),
        };
        let event_type =
            u16::from_be_bytes([*p.first().ok_or_else(short)?, *p.get(1).ok_or_else(short)?]);
        let arg = |at: usize| p.get(at..at + 4).map(be32).ok_or_else(short);
        Ok(match event_type {
            0 => UserControl::StreamBegin { stream_id: arg(2)? },
            1 => UserControl::StreamEof { stream_id: arg(2)? },
            2 => UserControl::StreamDry { stream_id: arg(2)? },
            3 => UserControl::SetBufferLength {
                stream_id: arg(2)?,
                buffer_ms: arg(6)?,
            },
            4 => UserControl::StreamIsRecorded { stream_id: arg(2)? },
            6 => UserControl::PingRequest { timestamp: arg(2)? },
            7 => UserControl::PingResponse { timestamp: arg(2)? },
            event_type => UserControl::Other { event_type },
        })
    }

    fn encode(self, out: &mut BytesMut) {
        let (event_type, a, b) = match self {
            UserControl::StreamBegin { stream_id } => (0, stream_id, None),
            UserControl::StreamEof { stream_id } => (1, stream_id, None),
            UserControl::StreamDry { stream_id } => (2, stream_id, None),
            UserControl::SetBufferLength {
                stream_id,
                buffer_ms,
            } => (3, stream_id, Some(buffer_ms)),
            UserControl::StreamIsRecorded { stream_id } => (4, stream_id, None),
            UserControl::PingRequest { timestamp } => (6, timestamp, None),
            UserControl::PingResponse { timestamp } => (7, timestamp, None),
            UserControl::Other { event_type } => (event_type, 0, None),
        };
        out.put_u16(event_type);
        out.put_u32(a);
        if let Some(b) = b {
            out.put_u32(b);
        }
    }
}

/// A message, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    SetChunkSize(u32),
    Abort {
        csid: u32,
    },
    Acknowledgement {
        sequence: u32,
    },
    UserControl(UserControl),
    WindowAckSize(u32),
    SetPeerBandwidth {
        size: u32,
        limit_type: u8,
    },
    /// Audio, video or AMF0 data (AMF3 data has its format byte removed).
    Media {
        kind: MediaKind,
        stream_id: u32,
        timestamp: u32,
        body: Bytes,
    },
    /// A command, AMF0 or AMF3 (type 17, with its format byte removed and AMF3 values
    /// wrapped in [`Amf0Value::Amf3`]).
    Command {
        stream_id: u32,
        values: Vec<Amf0Value>,
    },
    /// An aggregate message: FLV-tag-framed sub-messages; see [`split_aggregate`].
    Aggregate(RawMessage),
    /// A legal message type we do not use (shared objects, type 7).
    Ignored {
        type_id: u8,
    },
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn u32_body(msg: &RawMessage, what: &'static str) -> Result<u32, RtmpError> {
    msg.payload
        .get(..4)
        .map(be32)
        .ok_or_else(|| RtmpError::Malformed {
            what,
            detail: format!("{} bytes where 4 are needed", msg.payload.len()),
        })
}

impl Message {
    pub fn parse(msg: RawMessage) -> Result<Message, RtmpError> {
        Ok(match msg.type_id {
            SET_CHUNK_SIZE => Message::SetChunkSize(u32_body(&msg, "set chunk size")?),
            ABORT => Message::Abort {
                csid: u32_body(&msg, "abort")?,
            },
            ACKNOWLEDGEMENT => Message::Acknowledgement {
                sequence: u32_body(&msg, "acknowledgement")?,
            },
            USER_CONTROL => Message::UserControl(UserControl::parse(&msg.payload)?),
            WINDOW_ACK_SIZE => Message::WindowAckSize(u32_body(&msg, "window ack size")?),
            SET_PEER_BANDWIDTH => Message::SetPeerBandwidth {
                size: u32_body(&msg, "set peer bandwidth")?,
                // the limit type byte is sometimes left out; 2 (dynamic) is the mildest
                limit_type: msg.payload.get(4).copied().unwrap_or(2),
            },
            AUDIO | VIDEO | DATA_AMF0 => Message::Media {
                kind: match msg.type_id {
                    AUDIO => MediaKind::Audio,
                    VIDEO => MediaKind::Video,
                    _ => MediaKind::Data,
                },
                stream_id: msg.stream_id,
                timestamp: msg.timestamp,
                body: msg.payload,
            },
            DATA_AMF3 => Message::Media {
                kind: MediaKind::Data,
                stream_id: msg.stream_id,
                timestamp: msg.timestamp,
                body: strip_format_byte(msg.payload),
            },
            COMMAND_AMF0 | COMMAND_AMF3 => {
                let body = if msg.type_id == COMMAND_AMF3 {
                    strip_format_byte(msg.payload)
                } else {
                    msg.payload
                };
                let values = amf0::decode_all(&body).map_err(RtmpError::amf("command"))?;
                Message::Command {
                    stream_id: msg.stream_id,
                    values,
                }
            }
            AGGREGATE => Message::Aggregate(msg),
            SHARED_OBJECT_AMF0 | SHARED_OBJECT_AMF3 | 7 => Message::Ignored {
                type_id: msg.type_id,
            },
            type_id => {
                return Err(RtmpError::UnknownMessageType {
                    type_id,
                    csid: msg.csid,
                })
            }
        })
    }
}

/// AMF3 commands and data start with a format byte, 0 for "AMF0 follows, with
/// avmplus-object switches".
fn strip_format_byte(payload: Bytes) -> Bytes {
    if payload.first() == Some(&0) {
        payload.slice(1..)
    } else {
        payload
    }
}

/// Splits an aggregate message into its sub-messages. Each sub-message is an FLV tag
/// (type, 24-bit size, timestamp with its high byte last, stream id, body, back pointer);
/// timestamps are rebased so the first sub-message has the aggregate's timestamp.
/// Bodies are slices of the aggregate's payload, not copies.
pub fn split_aggregate(msg: &RawMessage) -> Result<Vec<RawMessage>, RtmpError> {
    const TAG_HEADER: usize = 11;
    let p = &msg.payload;
    let mut out = Vec::new();
    let mut at = 0;
    let mut first_ts = None;
    while at < p.len() {
        let malformed = |detail: String| RtmpError::Malformed {
            what: "aggregate",
            detail,
        };
        let h = p
            .get(at..at + TAG_HEADER)
            .ok_or_else(|| malformed(format!("sub-message header at byte {at} truncated")))?;
        let type_id = h[0];
        let size = (u32::from(h[1]) << 16 | u32::from(h[2]) << 8 | u32::from(h[3])) as usize;
        let ts =
            u32::from(h[7]) << 24 | u32::from(h[4]) << 16 | u32::from(h[5]) << 8 | u32::from(h[6]);
        let body_start = at + TAG_HEADER;
        let body_end = body_start + size;
        if body_end + 4 > p.len() {
            return Err(malformed(format!(
                "sub-message at byte {at} declares {size} bytes, past the end ({})",
                p.len()
            )));
        }
        if !matches!(type_id, AUDIO | VIDEO | DATA_AMF0) {
            return Err(malformed(format!(
                "sub-message type {type_id} at byte {at}"
            )));
        }
        let base = *first_ts.get_or_insert(ts);
        out.push(RawMessage {
            csid: msg.csid,
            type_id,
            stream_id: msg.stream_id,
            timestamp: msg.timestamp.wrapping_add(ts.wrapping_sub(base)),
            payload: p.slice(body_start..body_end),
        });
        at = body_end + 4;
    }
    Ok(out)
}

/// A protocol control message (chunk stream 2, message stream 0).
fn control(type_id: u8, body: &[u8]) -> Bytes {
    serialize_message(CONTROL_CSID, type_id, 0, 0, body, OUTGOING_CHUNK_SIZE)
        .expect("control messages are a few bytes on chunk stream 2")
}

pub fn set_chunk_size(size: u32) -> Bytes {
    control(SET_CHUNK_SIZE, &size.to_be_bytes())
}

pub fn acknowledgement(sequence: u32) -> Bytes {
    control(ACKNOWLEDGEMENT, &sequence.to_be_bytes())
}

pub fn window_ack_size(size: u32) -> Bytes {
    control(WINDOW_ACK_SIZE, &size.to_be_bytes())
}

/// `limit_type`: 0 hard, 1 soft, 2 dynamic.
pub fn set_peer_bandwidth(size: u32, limit_type: u8) -> Bytes {
    let mut b = [0u8; 5];
    b[..4].copy_from_slice(&size.to_be_bytes());
    b[4] = limit_type;
    control(SET_PEER_BANDWIDTH, &b)
}

pub fn user_control(event: UserControl) -> Bytes {
    let mut b = BytesMut::with_capacity(10);
    event.encode(&mut b);
    control(USER_CONTROL, &b)
}

/// An AMF0 command message on the command chunk stream, chunked at `chunk_size` (the
/// size this side announced).
pub fn command(stream_id: u32, values: &[Amf0Value], chunk_size: u32) -> Bytes {
    let body = amf0::encode_all(values).expect("commands we build hold only short strings");
    serialize_message(COMMAND_CSID, COMMAND_AMF0, stream_id, 0, &body, chunk_size)
        .expect("commands we build are far below the message size limit")
}

/// An AMF0 data message (such as `|RtmpSampleAccess`) on the data chunk stream.
pub fn data(stream_id: u32, values: &[Amf0Value], chunk_size: u32) -> Bytes {
    let body = amf0::encode_all(values).expect("data messages we build hold only short strings");
    serialize_message(DATA_CSID, DATA_AMF0, stream_id, 0, &body, chunk_size)
        .expect("data messages we build are far below the message size limit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::ChunkDecoder;

    fn decode_one(wire: &[u8]) -> Message {
        let (used, msg) = ChunkDecoder::default().decode_chunk(wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        Message::parse(msg.unwrap()).unwrap()
    }

    fn raw(type_id: u8, payload: &[u8]) -> RawMessage {
        RawMessage {
            csid: 3,
            type_id,
            stream_id: 1,
            timestamp: 100,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn control_messages_round_trip() {
        assert_eq!(
            decode_one(&set_chunk_size(4096)),
            Message::SetChunkSize(4096)
        );
        assert_eq!(
            decode_one(&acknowledgement(77)),
            Message::Acknowledgement { sequence: 77 }
        );
        assert_eq!(
            decode_one(&window_ack_size(2_500_000)),
            Message::WindowAckSize(2_500_000)
        );
        assert_eq!(
            decode_one(&set_peer_bandwidth(5000, 2)),
            Message::SetPeerBandwidth {
                size: 5000,
                limit_type: 2
            }
        );
        for ev in [
            UserControl::StreamBegin { stream_id: 1 },
            UserControl::StreamEof { stream_id: 1 },
            UserControl::SetBufferLength {
                stream_id: 1,
                buffer_ms: 3000,
            },
            UserControl::PingRequest { timestamp: 12345 },
            UserControl::PingResponse { timestamp: 12345 },
        ] {
            assert_eq!(decode_one(&user_control(ev)), Message::UserControl(ev));
        }
    }

    #[test]
    fn short_control_messages_are_errors() {
        assert!(matches!(
            Message::parse(raw(SET_CHUNK_SIZE, &[0, 0])),
            Err(RtmpError::Malformed {
                what: "set chunk size",
                ..
            })
        ));
        assert!(matches!(
            Message::parse(raw(USER_CONTROL, &[0, 6, 1])),
            Err(RtmpError::Malformed {
                what: "user control",
                ..
            })
        ));
        assert!(matches!(
            Message::parse(raw(0, &[])),
            Err(RtmpError::UnknownMessageType {
                type_id: 0,
                csid: 3
            })
        ));
        assert!(matches!(
            Message::parse(raw(0x42, &[])),
            Err(RtmpError::UnknownMessageType { type_id: 0x42, .. })
        ));
        assert_eq!(
            Message::parse(raw(SHARED_OBJECT_AMF0, b"x")).unwrap(),
            Message::Ignored {
                type_id: SHARED_OBJECT_AMF0
            }
        );
    }

    #[test]
    fn amf3_command_drops_its_format_byte() {
        let mut body = vec![0u8];
        body.extend_from_slice(&amf0::encode_all(&["play".into(), 0.0.into()]).unwrap());
        match Message::parse(raw(COMMAND_AMF3, &body)).unwrap() {
            Message::Command { values, .. } => {
                assert_eq!(
                    values,
                    vec![Amf0Value::from("play"), Amf0Value::Number(0.0)]
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn aggregate_splits_and_rebases_timestamps() {
        let mut p = Vec::new();
        for (ty, ts, body) in [(9u8, 5000u32, &b"vid"[..]), (8, 5021, b"au")] {
            p.push(ty);
            p.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            p.extend_from_slice(&ts.to_be_bytes()[1..]);
            p.push((ts >> 24) as u8);
            p.extend_from_slice(&[0, 0, 0]);
            p.extend_from_slice(body);
            p.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        }
        let subs = split_aggregate(&raw(AGGREGATE, &p)).unwrap();
        assert_eq!(subs.len(), 2);
        assert_eq!(
            (subs[0].type_id, subs[0].timestamp, &subs[0].payload[..]),
            (9, 100, &b"vid"[..])
        );
        assert_eq!(
            (subs[1].type_id, subs[1].timestamp, &subs[1].payload[..]),
            (8, 121, &b"au"[..])
        );

        p.truncate(p.len() - 5);
        assert!(matches!(
            split_aggregate(&raw(AGGREGATE, &p)),
            Err(RtmpError::Malformed {
                what: "aggregate",
                ..
            })
        ));
    }
}
