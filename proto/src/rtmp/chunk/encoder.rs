//! Splits messages into chunks.
//!
//! Every message is written with a type 0 header (absolute timestamp, length, type and
//! stream id) followed by type 3 continuations. That costs a few bytes per message over
//! header compression, and buys output that depends on nothing but the message, the
//! chunk stream id and the chunk size: the bytes of one media message can be built once
//! and written to every player, interleaved at message boundaries with whatever else
//! the connection sends.

use bytes::{BufMut, Bytes, BytesMut};

use super::EXTENDED_TIMESTAMP;
use crate::rtmp::message::MediaKind;
use crate::rtmp::{RtmpError, MAX_CHUNK_SIZE, OUTGOING_CHUNK_SIZE, PLAY_STREAM_ID};

const MAX_MESSAGE_LEN: usize = 0x00FF_FFFF;

fn basic_header_len(csid: u32) -> Result<usize, RtmpError> {
    match csid {
        2..=63 => Ok(1),
        64..=319 => Ok(2),
        320..=65599 => Ok(3),
        _ => Err(RtmpError::BadChunkStreamId { csid }),
    }
}

fn put_basic_header(out: &mut BytesMut, fmt: u8, csid: u32) {
    match csid {
        2..=63 => out.put_u8(fmt << 6 | csid as u8),
        64..=319 => {
            out.put_u8(fmt << 6);
            out.put_u8((csid - 64) as u8);
        }
        _ => {
            out.put_u8(fmt << 6 | 1);
            out.put_u16_le((csid - 64) as u16);
        }
    }
}

/// Exact size of a message once chunked.
pub fn chunked_len(csid: u32, timestamp: u32, payload_len: usize, chunk_size: u32) -> usize {
    let basic = basic_header_len(csid).unwrap_or(3);
    let ext = if timestamp >= EXTENDED_TIMESTAMP {
        4
    } else {
        0
    };
    let chunks = payload_len.div_ceil(chunk_size.max(1) as usize).max(1);
    basic + 11 + ext + (chunks - 1) * (basic + ext) + payload_len
}

/// Appends one message as chunks: a type 0 header with the absolute `timestamp`, then
/// type 3 continuations every `chunk_size` bytes, each repeating the extended timestamp
/// when the timestamp needs one (spec 5.3.1.3; ffmpeg, nginx-rtmp and OBS expect it).
pub fn write_message(
    out: &mut BytesMut,
    csid: u32,
    type_id: u8,
    stream_id: u32,
    timestamp: u32,
    payload: &[u8],
    chunk_size: u32,
) -> Result<(), RtmpError> {
    basic_header_len(csid)?;
    if payload.len() > MAX_MESSAGE_LEN {
        return Err(RtmpError::MessageTooLarge {
            csid,
            size: payload.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
        return Err(RtmpError::ChunkSizeOutOfRange {
            size: chunk_size,
            max: MAX_CHUNK_SIZE,
        });
    }
    out.reserve(chunked_len(csid, timestamp, payload.len(), chunk_size));
    let extended = timestamp >= EXTENDED_TIMESTAMP;
    put_basic_header(out, 0, csid);
    let field = if extended {
        EXTENDED_TIMESTAMP
    } else {
        timestamp
    };
    out.put_uint(u64::from(field), 3);
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    if extended {
        out.put_u32(timestamp);
    }
    let mut chunks = payload.chunks(chunk_size as usize);
    if let Some(first) = chunks.next() {
        out.put_slice(first);
    }
    for chunk in chunks {
        put_basic_header(out, 3, csid);
        if extended {
            out.put_u32(timestamp);
        }
        out.put_slice(chunk);
    }
    Ok(())
}

/// One message as complete chunks in its own buffer.
pub fn serialize_message(
    csid: u32,
    type_id: u8,
    stream_id: u32,
    timestamp: u32,
    payload: &[u8],
    chunk_size: u32,
) -> Result<Bytes, RtmpError> {
    let mut out = BytesMut::new();
    write_message(
        &mut out, csid, type_id, stream_id, timestamp, payload, chunk_size,
    )?;
    Ok(out.freeze())
}

/// The bytes every player receives for one audio, video or data message: the server's
/// chunk stream for `kind`, message stream [`PLAY_STREAM_ID`], the
/// [`OUTGOING_CHUNK_SIZE`] that [`crate::rtmp::RtmpServerConn`] announces, and
/// an absolute timestamp. `body` is the FLV tag body (for data, the AMF0 `onMetaData`
/// body without `@setDataFrame`).
///
/// Fails only if `body` is longer than an RTMP message can be (16 MiB - 1).
pub fn serialize_media(
    kind: MediaKind,
    timestamp_ms: u32,
    body: &[u8],
) -> Result<Bytes, RtmpError> {
    serialize_message(
        kind.csid(),
        kind.type_id(),
        PLAY_STREAM_ID,
        timestamp_ms,
        body,
        OUTGOING_CHUNK_SIZE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::ChunkDecoder;

    #[test]
    fn layout_of_a_small_message() {
        let b = serialize_message(3, 20, 0x0403_0201, 0x0A0B0C, b"hi", 128).unwrap();
        assert_eq!(
            &b[..],
            &[0x03, 0x0A, 0x0B, 0x0C, 0, 0, 2, 20, 1, 2, 3, 4, b'h', b'i']
        );
    }

    #[test]
    fn media_round_trips_through_the_decoder_at_every_boundary_size() {
        for len in [0, 1, 4095, 4096, 4097, 8192, 10_000] {
            for ts in [
                0,
                1000,
                EXTENDED_TIMESTAMP - 1,
                EXTENDED_TIMESTAMP,
                u32::MAX,
            ] {
                let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let wire = serialize_media(MediaKind::Video, ts, &body).unwrap();
                assert_eq!(wire.len(), chunked_len(6, ts, len, OUTGOING_CHUNK_SIZE));
                let mut d = ChunkDecoder::default();
                d.set_chunk_size(OUTGOING_CHUNK_SIZE).unwrap();
                let mut input = &wire[..];
                let mut got = None;
                while let Some((used, msg)) = d.decode_chunk(input).unwrap() {
                    input = &input[used..];
                    if msg.is_some() {
                        got = msg;
                    }
                }
                assert!(input.is_empty());
                let msg = got.expect("a message");
                assert_eq!(
                    (msg.csid, msg.type_id, msg.stream_id),
                    (6, 9, PLAY_STREAM_ID)
                );
                assert_eq!(msg.timestamp, ts, "len {len}");
                assert_eq!(&msg.payload[..], &body[..]);
            }
        }
    }

    #[test]
    fn wide_chunk_stream_ids() {
        for csid in [64, 319, 320, 65599] {
            let wire = serialize_message(csid, 8, 1, 5, b"x", 128).unwrap();
            let (_, msg) = ChunkDecoder::default()
                .decode_chunk(&wire)
                .unwrap()
                .unwrap();
            assert_eq!(msg.unwrap().csid, csid);
        }
        for bad in [0, 1, 65600] {
            assert!(matches!(
                serialize_message(bad, 8, 1, 5, b"x", 128),
                Err(RtmpError::BadChunkStreamId { .. })
            ));
        }
    }

    #[test]
    fn too_long_for_the_length_field() {
        let body = vec![0u8; MAX_MESSAGE_LEN + 1];
        assert!(matches!(
            serialize_media(MediaKind::Video, 0, &body),
            Err(RtmpError::MessageTooLarge { .. })
        ));
    }
}
