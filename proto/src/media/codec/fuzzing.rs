//! Entry points for the `codec_config` fuzz target (`fuzz/fuzz_targets/codec_config.rs`)
//! and for the unit test that replays its seeds from `testdata/codec/seeds/`.
//!
//! The first input byte picks the parser; the rest is its input. Besides "no panic",
//! every parser with a writer must round-trip: `parse(write(parse(x))) == parse(x)`.

use super::{aac, av1, avc, hevc, nalu, vp9, CodecConfig};
use crate::media::{AudioCodec, Codec, VideoCodec};

/// Runs one fuzz input. Panics only when a round-trip invariant is broken (a bug).
pub fn codec_config(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match selector % 8 {
        0 => {
            if let Ok(c) = avc::AvcConfig::parse(input) {
                let bytes = c.to_bytes().expect("a parsed record has writable sizes");
                assert_eq!(
                    avc::AvcConfig::parse(&bytes).as_ref(),
                    Ok(&c),
                    "AVC record round trip"
                );
                let _ = c.parse_first_sps();
            }
        }
        1 => {
            if let Ok(c) = hevc::HevcConfig::parse(input) {
                let bytes = c.to_bytes().expect("a parsed record has writable sizes");
                assert_eq!(
                    hevc::HevcConfig::parse(&bytes).as_ref(),
                    Ok(&c),
                    "HEVC record round trip"
                );
                let _ = (c.parse_first_sps(), c.codec_string());
            }
        }
        2 => {
            if let Ok(c) = av1::Av1Config::parse(input) {
                assert_eq!(
                    av1::Av1Config::parse(&c.to_bytes()).as_ref(),
                    Ok(&c),
                    "av1C round trip"
                );
                let _ = (c.dimensions(), c.codec_string());
            }
        }
        3 => {
            if let Ok(c) = vp9::VpConfig::parse(input) {
                let bytes = c.to_bytes().expect("a parsed record has writable sizes");
                assert_eq!(
                    vp9::VpConfig::parse(&bytes).as_ref(),
                    Ok(&c),
                    "vpcC round trip"
                );
            }
            let _ = vp9::keyframe_size(input);
        }
        4 => {
            if let Ok(c) = aac::AudioSpecificConfig::parse(input) {
                if let Ok(bytes) = c.to_bytes() {
                    let again =
                        aac::AudioSpecificConfig::parse(&bytes).expect("written ASC parses");
                    assert_eq!(again.codec_string(), c.codec_string(), "ASC round trip");
                    assert_eq!(again.sample_rate, c.sample_rate, "ASC round trip");
                    assert_eq!(
                        again.channel_configuration, c.channel_configuration,
                        "ASC round trip"
                    );
                }
                let _ = c.adts_header(input.len());
            }
        }
        5 => {
            let _ = avc::AvcSps::parse(input);
            let _ = hevc::HevcSps::parse(input);
            let _ = av1::SequenceHeader::parse(input);
        }
        6 => {
            for len_size in [1, 2, 4] {
                let mut out = Vec::new();
                if nalu::to_annex_b(input, len_size, &mut out).is_ok() {
                    let n = nalu::nalus(input, len_size).count();
                    assert!(
                        out.len() <= input.len() + 4 * n,
                        "Annex B output is bounded"
                    );
                }
            }
            for obu in av1::obus(input) {
                if obu.is_err() {
                    break;
                }
            }
        }
        _ => {
            for codec in [
                Codec::Video(VideoCodec::H264),
                Codec::Video(VideoCodec::H265),
                Codec::Video(VideoCodec::Av1),
                Codec::Video(VideoCodec::Vp9),
                Codec::Audio(AudioCodec::Aac),
            ] {
                if let Ok(c) = CodecConfig::parse(codec, input) {
                    let _ = c.info();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Replays every seed of the fuzz corpus, so the seeds stay valid inputs and any
    /// crash the fuzzer found (saved there as a seed) stays fixed.
    #[test]
    fn fuzz_seeds_run_clean() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/codec/seeds");
        let mut count = 0;
        for file in crate::testkit::corpus("codec/seeds") {
            let seed = file.data;
            super::codec_config(&seed);
            if file.grown {
                // grown by the fuzzer (kept by `cargo fuzz cmin`): replayed only
                continue;
            }
            count += 1;
            // Deterministic mutations (xorshift): flips and truncations of the body, and
            // the same body under every parser selector.
            let mut state = 0x9e37_79b9u32 ^ seed.len() as u32;
            for i in 0..300usize {
                let mut m = seed.clone();
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                if m.len() > 1 {
                    let at = 1 + state as usize % (m.len() - 1);
                    m[at] ^= (state >> 24) as u8 | 1;
                }
                m[0] = (i % 8) as u8;
                super::codec_config(&m);
                super::codec_config(&m[..1 + i % m.len().max(1)]);
            }
        }
        assert!(count >= 5, "expected seeds in {}", dir.display());
    }
}
