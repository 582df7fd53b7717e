//! Reassembles RTMP messages from chunks.
//!
//! The decoder works on the caller's input buffer and consumes one whole chunk at a
//! time: until a chunk's header and payload are all present it consumes nothing and
//! changes no state, so the result never depends on how the input was split into reads.
//! Memory is bounded: a message's declared length is checked against the limit before
//! anything is stored, payloads grow only as bytes arrive, the number of chunk streams
//! with state is capped, and so is the total of partially received payloads.

use bytes::{Bytes, BytesMut};

use super::EXTENDED_TIMESTAMP;
use crate::rtmp::{
    RtmpError, DEFAULT_CHUNK_SIZE, DEFAULT_MAX_CHUNK_STREAMS, DEFAULT_MAX_MESSAGE_SIZE,
    MAX_CHUNK_SIZE,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkDecoderConfig {
    /// Longest message accepted; a header announcing more is an error.
    pub max_message_size: usize,
    /// Most chunk streams with state at once.
    pub max_chunk_streams: usize,
    /// Most bytes of partially received messages, summed over all chunk streams.
    pub max_buffered_bytes: usize,
}

impl Default for ChunkDecoderConfig {
    fn default() -> Self {
        ChunkDecoderConfig {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_chunk_streams: DEFAULT_MAX_CHUNK_STREAMS,
            max_buffered_bytes: 2 * DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// One complete message as it came off the chunk stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMessage {
    pub csid: u32,
    pub type_id: u8,
    pub stream_id: u32,
    /// The message timestamp as sent: 32 bits that wrap; the caller extends it.
    pub timestamp: u32,
    pub payload: Bytes,
}

/// What is remembered per chunk stream, for the headers that omit fields.
#[derive(Debug)]
struct ChunkStream {
    csid: u32,
    timestamp: u32,
    /// The timestamp value of the last type 0/1/2 header (absolute for type 0, a delta
    /// for 1 and 2): a type 3 header that starts a new message adds it again.
    timestamp_field: u32,
    /// The last type 0/1/2 header used the extended timestamp, so type 3 chunks of this
    /// stream carry one too.
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Payload received so far of the message in progress.
    partial: BytesMut,
    /// A message is in progress (some but not all of its chunks arrived).
    in_progress: bool,
}

#[derive(Debug)]
pub struct ChunkDecoder {
    config: ChunkDecoderConfig,
    chunk_size: u32,
    streams: Vec<ChunkStream>,
    buffered: usize,
}

/// A parsed chunk header before it is applied to the chunk stream's state.
struct Header {
    fmt: u8,
    csid: u32,
    /// Bytes of basic header, message header and extended timestamp.
    len: usize,
    timestamp_field: u32,
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self::new(ChunkDecoderConfig::default())
    }
}

fn be24(b: &[u8]) -> u32 {
    u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl ChunkDecoder {
    pub fn new(config: ChunkDecoderConfig) -> Self {
        ChunkDecoder {
            config,
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
            buffered: 0,
        }
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Applies the peer's Set Chunk Size.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), RtmpError> {
        // The top bit must be zero (spec 5.4.1); zero is meaningless; above 2^24 no
        // chunk could be that big, and accepting 2^31 would overflow size arithmetic.
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(RtmpError::ChunkSizeOutOfRange {
                size,
                max: MAX_CHUNK_SIZE,
            });
        }
        self.chunk_size = size;
        Ok(())
    }

    /// Applies an Abort message: drops the partial message on `csid`.
    pub fn abort(&mut self, csid: u32) {
        if let Some(s) = self.streams.iter_mut().find(|s| s.csid == csid) {
            self.buffered -= s.partial.len();
            s.partial = BytesMut::new();
            s.in_progress = false;
        }
    }

    /// Bytes of partial messages held, over all chunk streams.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Decodes the chunk at the start of `input`.
    ///
    /// Returns `Ok(None)` when `input` does not yet hold a whole chunk (nothing consumed),
    /// otherwise how many bytes the chunk took and the message it completed, if any.
    pub fn decode_chunk(
        &mut self,
        input: &[u8],
    ) -> Result<Option<(usize, Option<RawMessage>)>, RtmpError> {
        let Some(mut h) = self.parse_header(input)? else {
            return Ok(None);
        };
        let index = self.streams.iter().position(|s| s.csid == h.csid);
        let continuation = h.fmt == 3 && index.is_some_and(|i| self.streams[i].in_progress);

        if continuation && h.extended {
            // Type 3 continuations repeat the extended timestamp (spec 5.3.1.3), but some
            // old encoders leave it out: accept it only if it matches the message's.
            let s = &self.streams[index.unwrap_or_default()];
            let Some(ext) = input.get(h.len - 4..h.len) else {
                return Ok(None);
            };
            if be32(ext) != s.timestamp_field {
                h.len -= 4;
            }
        }

        let (length, message_remaining) = match index {
            Some(i) if continuation => {
                let s = &self.streams[i];
                (s.length, s.length as usize - s.partial.len())
            }
            _ => (h.length, h.length as usize),
        };
        if length as usize > self.config.max_message_size {
            return Err(RtmpError::MessageTooLarge {
                csid: h.csid,
                size: length as usize,
                max: self.config.max_message_size,
            });
        }
        let payload_len = message_remaining.min(self.chunk_size as usize);
        let total = h.len + payload_len;
        if input.len() < total {
            return Ok(None);
        }
        let payload = &input[h.len..total];

        let i = match index {
            Some(i) => i,
            None => {
                if self.streams.len() >= self.config.max_chunk_streams {
                    return Err(RtmpError::TooManyChunkStreams {
                        max: self.config.max_chunk_streams,
                    });
                }
                self.streams.push(ChunkStream {
                    csid: h.csid,
                    timestamp: 0,
                    timestamp_field: 0,
                    extended: false,
                    length: 0,
                    type_id: 0,
                    stream_id: 0,
                    partial: BytesMut::new(),
                    in_progress: false,
                });
                self.streams.len() - 1
            }
        };

        if !continuation {
            let s = &mut self.streams[i];
            if s.in_progress {
                // A new header while a message was incomplete: the peer abandoned it.
                tracing::debug!(
                    csid = h.csid,
                    "new message header interrupted a partial message"
                );
                self.buffered -= s.partial.len();
                s.partial = BytesMut::new();
            }
            match h.fmt {
                0 => {
                    s.timestamp = h.timestamp_field;
                    s.stream_id = h.stream_id;
                }
                // type 1 and 2 carry a delta; type 3 starting a message reuses the last
                _ => s.timestamp = s.timestamp.wrapping_add(h.timestamp_field),
            }
            s.timestamp_field = h.timestamp_field;
            s.extended = h.extended;
            if h.fmt <= 1 {
                s.length = h.length;
                s.type_id = h.type_id;
            }
            s.in_progress = true;
        }

        let s = &mut self.streams[i];
        if s.partial.len() + payload.len() == s.length as usize {
            // Complete. A single-chunk message is sliced straight out of a fresh copy
            // instead of going through the partial buffer.
            let body = if s.partial.is_empty() {
                Bytes::copy_from_slice(payload)
            } else {
                self.buffered -= s.partial.len();
                let mut p = std::mem::take(&mut s.partial);
                p.extend_from_slice(payload);
                p.freeze()
            };
            s.in_progress = false;
            let msg = RawMessage {
                csid: s.csid,
                type_id: s.type_id,
                stream_id: s.stream_id,
                timestamp: s.timestamp,
                payload: body,
            };
            return Ok(Some((total, Some(msg))));
        }

        if self.buffered + payload.len() > self.config.max_buffered_bytes {
            return Err(RtmpError::TooMuchBuffered {
                bytes: self.buffered + payload.len(),
                max: self.config.max_buffered_bytes,
            });
        }
        if s.partial.is_empty() {
            // Reserve for a few chunks, never for the declared length: memory follows
            // the bytes that actually arrive.
            s.partial
                .reserve((s.length as usize).min(4 * self.chunk_size as usize));
        }
        s.partial.extend_from_slice(payload);
        self.buffered += payload.len();
        Ok(Some((total, None)))
    }

    /// Parses a chunk's basic header, message header and extended timestamp; `None` if
    /// `input` is too short. Type 3 continuations get a provisional extended timestamp
    /// that the caller may take back.
    fn parse_header(&self, input: &[u8]) -> Result<Option<Header>, RtmpError> {
        let Some(&b0) = input.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, basic_len) = match b0 & 0x3f {
            0 => match input.get(1) {
                Some(&b1) => (64 + u32::from(b1), 2),
                None => return Ok(None),
            },
            1 => match input.get(1..3) {
                Some(b) => (64 + u32::from(b[0]) + 256 * u32::from(b[1]), 3),
                None => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let header_len = match fmt {
            0 => 11,
            1 => 7,
            2 => 3,
            _ => 0,
        };
        let Some(mh) = input.get(basic_len..basic_len + header_len) else {
            return Ok(None);
        };
        let known = self.streams.iter().find(|s| s.csid == csid);
        let mut h = Header {
            fmt,
            csid,
            len: basic_len + header_len,
            timestamp_field: 0,
            extended: false,
            length: 0,
            type_id: 0,
            stream_id: 0,
        };
        if fmt == 3 {
            let Some(s) = known else {
                return Err(RtmpError::MissingMessageHeader { csid, fmt });
            };
            h.timestamp_field = s.timestamp_field;
            h.extended = s.extended;
            h.length = s.length;
        } else {
            if fmt != 0 && known.is_none() {
                return Err(RtmpError::MissingMessageHeader { csid, fmt });
            }
            h.timestamp_field = be24(&mh[0..3]);
            h.extended = h.timestamp_field == EXTENDED_TIMESTAMP;
            if fmt <= 1 {
                h.length = be24(&mh[3..6]);
                h.type_id = mh[6];
            } else if let Some(s) = known {
                h.length = s.length;
            }
            if fmt == 0 {
                h.stream_id = u32::from_le_bytes([mh[7], mh[8], mh[9], mh[10]]);
            }
        }
        if h.extended {
            let Some(ext) = input.get(h.len..h.len + 4) else {
                return Ok(None);
            };
            if fmt != 3 || !known.is_some_and(|s| s.in_progress) {
                h.timestamp_field = be32(ext);
            }
            h.len += 4;
        }
        Ok(Some(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::encoder::serialize_message;

    fn decode_all(d: &mut ChunkDecoder, mut input: &[u8]) -> Result<Vec<RawMessage>, RtmpError> {
        let mut out = Vec::new();
        while let Some((used, msg)) = d.decode_chunk(input)? {
            input = &input[used..];
            out.extend(msg);
        }
        assert!(input.is_empty(), "{} bytes left undecoded", input.len());
        Ok(out)
    }

    #[test]
    fn headers_of_every_format_and_size() {
        // csid 3, fmt 0: ts 1000, len 4, type 20, stream 0
        let mut wire = vec![0x03, 0x00, 0x03, 0xE8, 0x00, 0x00, 0x04, 20, 0, 0, 0, 0];
        wire.extend_from_slice(b"abcd");
        // fmt 1: delta 20, len 2, type 9
        wire.extend_from_slice(&[0x43, 0x00, 0x00, 0x14, 0x00, 0x00, 0x02, 9, b'e', b'f']);
        // fmt 2: delta 5
        wire.extend_from_slice(&[0x83, 0x00, 0x00, 0x05, b'g', b'h']);
        // fmt 3: new message reusing delta 5
        wire.extend_from_slice(&[0xC3, b'i', b'j']);
        // 2-byte csid 64+10 = 74, fmt 0, stream id 1 (little endian)
        wire.extend_from_slice(&[0x00, 10, 0, 0, 7, 0, 0, 1, 8, 1, 0, 0, 0, b'k']);
        // 3-byte csid 64 + 1 + 256*2 = 577
        wire.extend_from_slice(&[0x01, 1, 2, 0, 0, 9, 0, 0, 1, 18, 1, 0, 0, 0, b'l']);

        let msgs = decode_all(&mut ChunkDecoder::default(), &wire).unwrap();
        let summary: Vec<_> = msgs
            .iter()
            .map(|m| (m.csid, m.type_id, m.stream_id, m.timestamp))
            .collect();
        assert_eq!(
            summary,
            vec![
                (3, 20, 0, 1000),
                (3, 9, 0, 1020),
                (3, 9, 0, 1025),
                (3, 9, 0, 1030),
                (74, 8, 1, 7),
                (577, 18, 1, 9),
            ]
        );
        assert_eq!(&msgs[3].payload[..], b"ij");
    }

    #[test]
    fn multi_chunk_messages_interleave() {
        let a = serialize_message(4, 8, 1, 10, &[1u8; 300], 128).unwrap();
        let b = serialize_message(6, 9, 1, 20, &[2u8; 200], 128).unwrap();
        // interleave: a chunk 1, b chunk 1, a rest, b rest
        let mut wire = Vec::new();
        wire.extend_from_slice(&a[..12 + 128]);
        wire.extend_from_slice(&b[..12 + 128]);
        wire.extend_from_slice(&a[12 + 128..]);
        wire.extend_from_slice(&b[12 + 128..]);
        let mut d = ChunkDecoder::default();
        let msgs = decode_all(&mut d, &wire).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            (msgs[0].csid, msgs[0].payload.len(), msgs[0].timestamp),
            (4, 300, 10)
        );
        assert_eq!(
            (msgs[1].csid, msgs[1].payload.len(), msgs[1].timestamp),
            (6, 200, 20)
        );
        assert!(msgs[1].payload.iter().all(|&b| b == 2));
        assert_eq!(d.buffered_bytes(), 0);
    }

    #[test]
    fn extended_timestamp_is_repeated_on_type_3_continuations() {
        let ts = 0x0123_4567;
        let wire = serialize_message(6, 9, 1, ts, &[7u8; 300], 128).unwrap();
        // fmt0 header (12) + ext (4) + 128, then fmt3 (1) + ext (4) + 128, ...
        assert_eq!(wire.len(), 12 + 4 + 300 + 2 * (1 + 4));
        assert_eq!(&wire[12 + 4 + 128 + 1..12 + 4 + 128 + 5], &ts.to_be_bytes());
        let msgs = decode_all(&mut ChunkDecoder::default(), &wire).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].timestamp, ts);
        assert_eq!(msgs[0].payload.len(), 300);

        // a following type 3 message on the same stream carries the extended field too,
        // which is its timestamp delta
        let mut wire = wire.to_vec();
        wire.extend_from_slice(&[0xC6, 0x00, 0x00, 0x00, 0x10]);
        wire.extend_from_slice(&[1u8; 128]);
        wire.extend_from_slice(&[0xC6, 0x00, 0x00, 0x00, 0x10]);
        wire.extend_from_slice(&[1u8; 128]);
        wire.extend_from_slice(&[0xC6, 0x00, 0x00, 0x00, 0x10]);
        wire.extend_from_slice(&[1u8; 44]);
        let msgs = decode_all(&mut ChunkDecoder::default(), &wire).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].timestamp, ts.wrapping_add(0x10));
        assert!(msgs[1].payload.iter().all(|&b| b == 1));
    }

    #[test]
    fn continuations_without_the_extended_field_are_tolerated() {
        let ts: u32 = 0x0100_0000;
        let mut wire = vec![0x06, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 200, 9, 1, 0, 0, 0];
        wire.extend_from_slice(&ts.to_be_bytes());
        wire.extend_from_slice(&[3u8; 128]);
        wire.push(0xC6); // no extended timestamp repeated, as some old encoders do
        wire.extend_from_slice(&[3u8; 72]);
        let msgs = decode_all(&mut ChunkDecoder::default(), &wire).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].timestamp, ts);
        assert!(msgs[0].payload.iter().all(|&b| b == 3));
    }

    #[test]
    fn incomplete_chunks_consume_nothing() {
        let wire = serialize_message(3, 20, 0, 0, &[9u8; 100], 128).unwrap();
        let mut d = ChunkDecoder::default();
        for end in 0..wire.len() {
            assert!(
                d.decode_chunk(&wire[..end]).unwrap().is_none(),
                "prefix {end}"
            );
        }
        let (used, msg) = d.decode_chunk(&wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(msg.unwrap().payload.len(), 100);
    }

    #[test]
    fn chunk_size_limits() {
        let mut d = ChunkDecoder::default();
        for bad in [0, (1 << 24) + 1, 1 << 31, u32::MAX] {
            let err = d.set_chunk_size(bad).unwrap_err();
            assert!(matches!(err, RtmpError::ChunkSizeOutOfRange { size, .. } if size == bad));
        }
        assert_eq!(d.chunk_size(), DEFAULT_CHUNK_SIZE);
        d.set_chunk_size(1).unwrap();
        let wire = serialize_message(3, 20, 0, 0, b"xyz", 1).unwrap();
        assert_eq!(decode_all(&mut d, &wire).unwrap()[0].payload, &b"xyz"[..]);
    }

    #[test]
    fn oversized_message_is_rejected_before_any_payload() {
        let mut d = ChunkDecoder::new(ChunkDecoderConfig {
            max_message_size: 1 << 20,
            ..ChunkDecoderConfig::default()
        });
        // header only: declares 0x200000 bytes
        let wire = [0x06, 0, 0, 0, 0x20, 0x00, 0x00, 9, 1, 0, 0, 0];
        let err = d.decode_chunk(&wire).unwrap_err();
        assert!(
            matches!(
                err,
                RtmpError::MessageTooLarge {
                    size: 0x20_0000,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn largest_declared_message_reserves_only_what_arrives() {
        let mut d = ChunkDecoder::default();
        d.set_chunk_size(4096).unwrap();
        let mut wire = vec![0x06, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0];
        wire.extend_from_slice(&[0u8; 4096]);
        let (used, msg) = d.decode_chunk(&wire).unwrap().unwrap();
        assert_eq!((used, msg), (wire.len(), None));
        assert_eq!(d.buffered_bytes(), 4096);
        let s = &d.streams[0];
        assert!(
            s.partial.capacity() <= 4 * 4096,
            "reserved {}",
            s.partial.capacity()
        );
        d.abort(6);
        assert_eq!(d.buffered_bytes(), 0);
    }

    #[test]
    fn chunk_stream_count_is_bounded() {
        let mut d = ChunkDecoder::new(ChunkDecoderConfig {
            max_chunk_streams: 4,
            ..ChunkDecoderConfig::default()
        });
        let mut wire = Vec::new();
        for csid in 3..8 {
            wire.extend_from_slice(&serialize_message(csid, 8, 1, 0, b"a", 128).unwrap());
        }
        let err = decode_all(&mut d, &wire).unwrap_err();
        assert!(matches!(err, RtmpError::TooManyChunkStreams { max: 4 }));
    }

    #[test]
    fn total_partial_bytes_are_bounded() {
        let mut d = ChunkDecoder::new(ChunkDecoderConfig {
            max_buffered_bytes: 300,
            ..ChunkDecoderConfig::default()
        });
        let mut wire = Vec::new();
        for csid in 3..6 {
            // only the first chunk of a 1000-byte message on each stream
            let m = serialize_message(csid, 8, 1, 0, &[0u8; 1000], 128).unwrap();
            wire.extend_from_slice(&m[..12 + 128]);
        }
        let err = decode_all(&mut d, &wire).unwrap_err();
        assert!(
            matches!(
                err,
                RtmpError::TooMuchBuffered {
                    bytes: 384,
                    max: 300
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn stream_must_start_with_a_full_header() {
        let err = decode_all(&mut ChunkDecoder::default(), &[0xC5, 1, 2]).unwrap_err();
        assert!(matches!(
            err,
            RtmpError::MissingMessageHeader { csid: 5, fmt: 3 }
        ));
        let err = decode_all(
            &mut ChunkDecoder::default(),
            &[0x45, 0, 0, 0, 0, 0, 1, 8, 1],
        )
        .unwrap_err();
        assert!(matches!(
            err,
            RtmpError::MissingMessageHeader { csid: 5, fmt: 1 }
        ));
    }

    #[test]
    fn zero_length_message_completes_at_once() {
        let wire = [0x04, 0, 0, 5, 0, 0, 0, 8, 1, 0, 0, 0];
        let msgs = decode_all(&mut ChunkDecoder::default(), &wire).unwrap();
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].payload.is_empty());
    }
}
