//! Entry points for the `ts_reader` and `ts_mux` fuzz targets, and [`drive_muxer`], which
//! turns fuzz bytes into a packager's call sequence for any [`Muxer`] (the fMP4 target
//! uses it too).
//!
//! Invariants checked besides "no panic": the muxer's output is whole packets that our
//! reader accepts, with continuous continuity counters.

use bytes::Bytes;

use crate::media::{AudioCodec, Codec, Frame, FrameKind, VideoCodec};
use crate::mux::Muxer;

use super::{reader, TsMuxer, PACKET_SIZE};

/// Demuxes arbitrary bytes: errors are fine, panics are bugs.
pub fn ts_reader(data: &[u8]) {
    let whole = data.len() - data.len() % PACKET_SIZE;
    if let Ok(ts) = reader::read(&data[..whole]) {
        let _ = ts.max_pcr_interval_ms();
    }
}

/// Runs the TS muxer on a fuzzed call sequence.
pub fn ts_mux(data: &[u8]) {
    let mut mux = TsMuxer::new();
    let mut all = Vec::new();
    drive_muxer(&mut mux, data, |bytes| all.extend_from_slice(bytes));
    assert_eq!(all.len() % PACKET_SIZE, 0, "TS output is whole packets");
    let ts = reader::read(&all).expect("our TS output demuxes");
    assert!(
        ts.cc_errors.is_empty(),
        "continuity errors in our output: {:?}",
        ts.cc_errors
    );
}

const CODECS: [Codec; 8] = [
    Codec::Video(VideoCodec::H264),
    Codec::Video(VideoCodec::H265),
    Codec::Video(VideoCodec::Av1),
    Codec::Video(VideoCodec::Vp9),
    Codec::Audio(AudioCodec::Aac),
    Codec::Audio(AudioCodec::Legacy { header: 0x2f }),
    Codec::Video(VideoCodec::Legacy { codec_id: 2 }),
    Codec::Script,
];

/// Interprets `data` as operations: `[op, codec, dts step, flags, len, payload...]`.
/// `emit` gets every non-empty `take_fragment` result and init segment.
pub fn drive_muxer(mux: &mut dyn Muxer, data: &[u8], mut emit: impl FnMut(&Bytes)) {
    let mut rest = data;
    let mut dts_ms = 0u64;
    while let [op, codec, step, flags, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        dts_ms += u64::from(*step);
        let codec = CODECS[usize::from(*codec) % CODECS.len()];
        match op % 5 {
            0 => mux.start_segment(),
            1 => {
                let bytes = mux.take_fragment(dts_ms);
                if !bytes.is_empty() {
                    emit(&bytes);
                }
            }
            2 => {
                if let Some(init) = mux.init_segment() {
                    emit(&init);
                }
            }
            op => {
                let kind = if op == 3 {
                    FrameKind::Config
                } else {
                    FrameKind::Media
                };
                let frame = Frame {
                    codec,
                    kind,
                    keyframe: flags & 1 == 1,
                    dts_ms,
                    cts_ms: i32::from(*flags as i8) * 4,
                    payload: Bytes::copy_from_slice(payload),
                };
                let _ = mux.push(&frame);
            }
        }
    }
    let bytes = mux.take_fragment(dts_ms + 40);
    if !bytes.is_empty() {
        emit(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::testsupport::testdata;

    /// Replays the golden files (the fuzz seeds) and deterministic mutations of them:
    /// every truncation point at packet granularity and scattered byte flips.
    #[test]
    fn reader_survives_seeds_and_mutations() {
        for name in ["h264_aac.ts", "h265.ts", "mp3.ts"] {
            let data = std::fs::read(testdata(&format!("golden/ts/{name}"))).unwrap();
            ts_reader(&data);
            crate::testkit::for_each_mutation(&data, 400, ts_reader);
        }
    }

    #[test]
    fn muxer_survives_generated_call_sequences() {
        let avc = crate::media::codec::avc::tests::record();
        let mut seed = vec![3, 0, 0, 0, avc.len() as u8];
        seed.extend_from_slice(&avc);
        seed.extend_from_slice(&[3, 4, 0, 0, 2, 0x11, 0x90]);
        seed.extend_from_slice(&[0, 0, 0, 0, 0]);
        for i in 0..40u8 {
            seed.extend_from_slice(&[
                4,
                0,
                33,
                u8::from(i % 10 == 0),
                6,
                0,
                0,
                0,
                2,
                if i % 10 == 0 { 0x65 } else { 0x41 },
                i,
            ]);
            seed.extend_from_slice(&[4, 4, 0, 0, 3, 0x21, i, 0x07]);
            if i % 10 == 9 {
                seed.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            }
        }
        crate::testkit::check_seed_file("ts/corpus/ts_mux", "generated-40-frames", &seed);
        ts_mux(&seed);
        // The seed itself is a meaningful stream: 40 video and 40 audio frames.
        let mut all = Vec::new();
        drive_muxer(&mut TsMuxer::new(), &seed, |b| all.extend_from_slice(b));
        let ts = reader::read(&all).unwrap();
        assert_eq!(ts.pes_of(crate::ts::muxer::VIDEO_PID).count(), 40);
        assert!(ts.pes_of(crate::ts::muxer::AUDIO_PID).count() > 0);
        crate::testkit::for_each_mutation(&seed, 300, ts_mux);
    }

    /// The fuzz corpora, minimised: what the fuzzer grew from the seeds above (the
    /// golden files for the reader; the generated stream for the muxer).
    #[test]
    fn fuzz_corpora_replay() {
        assert!(crate::testkit::replay_corpus("ts/corpus/ts_reader", ts_reader) > 0);
        assert!(crate::testkit::replay_corpus("ts/corpus/ts_mux", ts_mux) > 0);
    }
}
