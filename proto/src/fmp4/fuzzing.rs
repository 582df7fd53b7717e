//! Entry points for the `fmp4_reader` and `fmp4_mux` fuzz targets.
//!
//! Invariants checked besides "no panic": every fragment the muxer emits, after the
//! current init segment, parses with our reader, and its samples lie inside the input.

use crate::ts::fuzzing::drive_muxer;

use super::{reader, Fmp4Muxer};

/// Parses arbitrary bytes as an fMP4 file: errors are fine, panics are bugs.
pub fn fmp4_reader(data: &[u8]) {
    if let Ok(file) = reader::parse(data) {
        for s in file
            .fragments
            .iter()
            .flat_map(|f| &f.trafs)
            .flat_map(|t| &t.samples)
        {
            assert!(
                s.data.end <= data.len(),
                "sample ranges stay inside the input"
            );
        }
    }
}

/// Runs the fMP4 muxer on a fuzzed call sequence (see [`drive_muxer`]).
pub fn fmp4_mux(data: &[u8]) {
    let mut mux = Fmp4Muxer::new();
    let mut out: Vec<bytes::Bytes> = Vec::new();
    drive_muxer(&mut mux, data, |b| out.push(b.clone()));
    for chunk in &out {
        reader::parse(chunk).expect("every init segment and fragment we emit parses");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4::testsupport::testdata;

    #[test]
    fn reader_survives_seeds_and_mutations() {
        for name in ["h264_aac.mp4", "h265.mp4", "av1.mp4", "vp9.mp4"] {
            let data = std::fs::read(testdata(&format!("golden/fmp4/{name}"))).unwrap();
            fmp4_reader(&data);
            crate::testkit::for_each_mutation(&data, 400, fmp4_reader);
        }
    }

    #[test]
    fn muxer_survives_generated_call_sequences() {
        let avc = crate::media::codec::avc::tests::record();
        let mut seed = vec![3, 0, 0, 0, avc.len() as u8];
        seed.extend_from_slice(&avc);
        seed.extend_from_slice(&[3, 4, 0, 0, 2, 0x11, 0x90]);
        for i in 0..30u8 {
            let key = i % 10 == 0;
            seed.extend_from_slice(&[
                4,
                0,
                33,
                u8::from(key),
                6,
                0,
                0,
                0,
                2,
                if key { 0x65 } else { 0x41 },
                i,
            ]);
            seed.extend_from_slice(&[4, 4, 0, 0, 3, 0x21, i, 0x07]);
            if i % 10 == 9 {
                seed.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
            }
        }
        crate::testkit::check_seed_file("fmp4/corpus/fmp4_mux", "generated-30-frames", &seed);
        fmp4_mux(&seed);
        let mut mux = Fmp4Muxer::new();
        let mut chunks = 0;
        drive_muxer(&mut mux, &seed, |_| chunks += 1);
        assert_eq!(chunks, 6, "3 init segments and 3 fragments");
        crate::testkit::for_each_mutation(&seed, 300, fmp4_mux);
    }

    /// The fuzz corpora, minimised: what the fuzzer grew from the golden files (reader)
    /// and from the generated call sequence above (muxer).
    #[test]
    fn fuzz_corpora_replay() {
        assert!(crate::testkit::replay_corpus("fmp4/corpus/fmp4_reader", fmp4_reader) > 0);
        assert!(crate::testkit::replay_corpus("fmp4/corpus/fmp4_mux", fmp4_mux) > 0);
    }
}
