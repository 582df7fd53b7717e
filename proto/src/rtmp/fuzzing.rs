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

    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = corpus_dir(target);
        let mut out: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                let path = e.unwrap().path();
                (path.display().to_string(), std::fs::read(&path).unwrap())
            })
            .collect();
        out.sort();
        out
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

        vec![
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
        let chunk = seeds("rtmp_chunk");
        assert!(chunk.len() >= 3);
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
            let files = seeds(target);
            assert!(files.len() >= 3, "{target}");
            for (name, data) in &files {
                assert!(decode_ok(data), "{name} does not decode");
                run(data);
            }
        }
    }

    #[test]
    fn truncations_of_the_seeds_do_not_panic() {
        // a cheap stand-in for fuzzing on stable: every prefix of every seed
        for (target, _, data) in generated_seeds() {
            let step = (data.len() / 200).max(1);
            for end in (0..data.len()).step_by(step) {
                match target {
                    "rtmp_chunk" => fuzz_chunk_stream(&data[..end]),
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
