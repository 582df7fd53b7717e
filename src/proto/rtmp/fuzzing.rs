//! Entry points for the fuzz targets in `fuzz/fuzz_targets/` (and for the seed-corpus
//! test that runs on stable). Each drives production code with arbitrary bytes; the only
//! thing checked is that nothing panics, plus round-trip properties where an encoder
//! exists.

use std::time::Instant;

use bytes::BytesMut;

use super::amf0;
use super::amf3;
use super::chunk::ChunkDecoder;
use super::handshake::HANDSHAKE_SIZE;
use super::{RtmpEvent, RtmpServerConfig, RtmpServerConn};

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
