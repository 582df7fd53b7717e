//! Fuzz entry points (`fuzz/fuzz_targets/hls_*.rs`), also run over seeds by unit tests.
//!
//! - [`playlist`]: the playlist reader never panics, and a playlist it accepts survives
//!   render → read unchanged (which also exercises the renderer on odd models).
//! - [`packager`]: arbitrary frame sequences (any timestamps, keyframes, configs,
//!   discontinuities) and requests never panic the packager or a snapshot, and every
//!   published state keeps the playlist invariants.
//! - [`query`]: [`with_query`](super::with_query) never panics, inserts nothing but the
//!   parameter, and a playlist the reader accepted reads the same afterwards, with the
//!   parameter in each URI.

use bytes::Bytes;

use super::parse::{parse_media_playlist, parse_multivariant_playlist};
use super::playlist::{MediaPlaylist, MultivariantPlaylist};
use super::query::{rewrite, uri_with};
use super::{HlsConfig, Packager, Variant};
use crate::media::{AudioCodec, Codec, Frame, FrameKind, StreamKey, VideoCodec};
use crate::mux::{MuxError, Muxer};

/// Reads `data` as a media and as a multivariant playlist; for each that parses,
/// asserts `parse(render(p)) == p` and that rendering is then a fixed point.
pub fn playlist(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(media) = parse_media_playlist(text) {
        let rendered = media.render();
        let text = std::str::from_utf8(&rendered).expect("the renderer writes UTF-8");
        let again = parse_media_playlist(text).expect("a rendered media playlist parses");
        assert_eq!(
            again, media,
            "media playlist changed through render: {text}"
        );
        assert_eq!(again.render(), rendered);
    }
    if let Ok(multivariant) = parse_multivariant_playlist(text) {
        let rendered = multivariant.render();
        let text = std::str::from_utf8(&rendered).expect("the renderer writes UTF-8");
        let again =
            parse_multivariant_playlist(text).expect("a rendered multivariant playlist parses");
        assert_eq!(
            again, multivariant,
            "multivariant playlist changed through render: {text}"
        );
        assert_eq!(again.render(), rendered);
    }
}

/// The parameter the `query` target inserts: a real-looking token.
const QUERY_PARAM: &str =
    "token=v1.k1.1700003600.play.bGl2ZS9jYW0.WyLA_hO4tEIL6RdadbeC2DsdSRD2_YilMoPxIFfdHwk";

/// Runs [`with_query`](super::with_query) on `data`: the output minus the inserted
/// parameters is the input, each insertion is `?` or `&` and the parameter, and a
/// media or multivariant playlist that the reader accepted before reads the same after,
/// except that each URI (but `data:` ones) carries the parameter.
pub fn query(data: &[u8]) {
    let mut inserted = Vec::new();
    let out = rewrite(data, QUERY_PARAM, |at, len| inserted.push((at, len)));
    let mut rest = Vec::with_capacity(data.len());
    let mut copied = 0;
    for (at, len) in inserted {
        assert!(at >= copied, "insertions in order");
        let piece = &out[at..at + len];
        assert!(
            matches!(piece[0], b'?' | b'&') && &piece[1..] == QUERY_PARAM.as_bytes(),
            "inserted {piece:?}"
        );
        rest.extend_from_slice(&out[copied..at]);
        copied = at + len;
    }
    rest.extend_from_slice(&out[copied..]);
    assert!(
        rest == data,
        "the output minus the parameters is not the input"
    );

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let out = std::str::from_utf8(&out).expect("inserting ASCII into UTF-8 keeps it UTF-8");
    let with = |uri: &mut String| {
        if !uri.starts_with("data:") {
            *uri = uri_with(uri, QUERY_PARAM);
        }
    };
    if let Ok(mut expected) = parse_media_playlist(text) {
        let got = parse_media_playlist(out).expect("the rewritten media playlist parses");
        with_each_media_uri(&mut expected, with);
        assert_eq!(got, expected, "rewritten: {out}");
    }
    if let Ok(mut expected) = parse_multivariant_playlist(text) {
        let got =
            parse_multivariant_playlist(out).expect("the rewritten multivariant playlist parses");
        with_each_variant_uri(&mut expected, with);
        assert_eq!(got, expected, "rewritten: {out}");
    }
}

fn with_each_media_uri(playlist: &mut MediaPlaylist, mut f: impl FnMut(&mut String)) {
    for segment in &mut playlist.segments {
        segment.map_uri.iter_mut().for_each(&mut f);
        segment.parts.iter_mut().for_each(|p| f(&mut p.uri));
        segment.complete.iter_mut().for_each(|c| f(&mut c.uri));
    }
    playlist.preload_hint_part.iter_mut().for_each(f);
}

fn with_each_variant_uri(playlist: &mut MultivariantPlaylist, mut f: impl FnMut(&mut String)) {
    playlist.variants.iter_mut().for_each(|v| f(&mut v.uri));
}

/// A muxer that emits one byte per sample and an init segment naming the configs, and
/// refuses media before config like the real ones.
#[derive(Default)]
struct ByteMuxer {
    configs: [Option<Bytes>; 2],
    pending: Vec<u8>,
}

impl Muxer for ByteMuxer {
    fn init_segment(&mut self) -> Option<Bytes> {
        let [video, audio] = &self.configs;
        let mut init = Vec::new();
        for config in [video, audio].into_iter().flatten() {
            init.extend_from_slice(config);
        }
        (!init.is_empty()).then(|| Bytes::from(init))
    }

    fn start_segment(&mut self) {
        self.pending.push(b'S');
    }

    fn push(&mut self, frame: &Frame) -> Result<(), MuxError> {
        let slot = match frame.codec {
            Codec::Video(_) => 0,
            Codec::Audio(_) => 1,
            Codec::Script => return Ok(()),
        };
        match frame.kind {
            FrameKind::Config => self.configs[slot] = Some(frame.payload.clone()),
            FrameKind::Media if self.configs[slot].is_none() => {
                return Err(MuxError::MissingConfig { track: "any" });
            }
            FrameKind::Media => self.pending.push(if frame.keyframe { b'K' } else { b'f' }),
            _ => {}
        }
        Ok(())
    }

    fn take_fragment(&mut self, _end_dts_ms: u64) -> Bytes {
        Bytes::from(std::mem::take(&mut self.pending))
    }
}

/// Interprets `data` as operations on a packager (3 bytes each: opcode, timestamp
/// step) and checks the invariants after every update: the playlist parses, media and
/// discontinuity sequence numbers and the target duration never decrease, parts add up
/// to their segment, and lookups of what the playlist lists succeed. Returns how many
/// updates were checked.
pub fn packager(data: &[u8]) -> usize {
    let Some((&variant, ops)) = data.split_first() else {
        return 0;
    };
    let variant = if variant & 1 == 0 {
        Variant::Ts
    } else {
        Variant::Fmp4LowLatency
    };
    let key = StreamKey::new("fuzz", "stream").expect("a valid literal key");
    let mut packager = Packager::new(key, variant, ByteMuxer::default(), HlsConfig::default())
        .expect("the default config is valid");
    let mut dts: u64 = 0;
    let mut floor = (0, 0, 0);
    let mut checked = 0;
    for op in ops.chunks_exact(3) {
        let step = u64::from(u16::from_le_bytes([op[1], op[2]]));
        dts = match op[0] >> 5 {
            0 => dts.wrapping_sub(step),          // timestamps going back
            1 => dts.saturating_add(step * 1000), // and jumping far ahead
            _ => dts.saturating_add(step % 64),
        };
        let codec = if op[0] & 1 == 0 {
            Codec::Video(VideoCodec::H264)
        } else {
            Codec::Audio(AudioCodec::Aac)
        };
        let frame = |kind, keyframe, payload: &'static [u8]| Frame {
            codec,
            kind,
            keyframe,
            dts_ms: dts,
            cts_ms: 0,
            payload: Bytes::from_static(payload),
        };
        let update = match (op[0] >> 1) & 0xf {
            0 => packager.discontinuity(),
            1 if op[1] == 0 => packager.end_of_stream(),
            2 => packager
                .push(&frame(FrameKind::Config, false, b"c1"), dts)
                .ok()
                .flatten(),
            3 => packager
                .push(&frame(FrameKind::Config, false, b"c2"), dts)
                .ok()
                .flatten(),
            4 => packager
                .push(&frame(FrameKind::EndOfSequence, false, b""), dts)
                .ok()
                .flatten(),
            5..=7 => packager
                .push(&frame(FrameKind::Media, true, b"k"), dts)
                .ok()
                .flatten(),
            _ => packager
                .push(&frame(FrameKind::Media, false, b"f"), dts)
                .ok()
                .flatten(),
        };
        if update.is_some() {
            floor = check_snapshot(&packager, floor);
            checked += 1;
        }
    }
    checked
}

fn check_snapshot<M: Muxer>(packager: &Packager<M>, floor: (u64, u64, u64)) -> (u64, u64, u64) {
    let snapshot = packager.snapshot();
    let Some(bytes) = snapshot.media_playlist() else {
        return floor;
    };
    let text = std::str::from_utf8(bytes).expect("the renderer writes UTF-8");
    let playlist = parse_media_playlist(text).expect("a published playlist parses");
    let now = (
        playlist.media_sequence,
        playlist.discontinuity_sequence,
        playlist.target_duration_s,
    );
    assert!(
        now.0 >= floor.0 && now.1 >= floor.1 && now.2 >= floor.2,
        "{floor:?} -> {now:?}"
    );
    for segment in &snapshot.segments {
        if !segment.parts.is_empty() {
            let sum: u64 = segment.parts.iter().map(|p| p.duration_ms).sum();
            assert_eq!(sum, segment.duration_ms, "parts of segment {}", segment.msn);
        }
    }
    let rest = |uri: &str| format!("/{uri}");
    for segment in &playlist.segments {
        let uris = segment.parts.iter().map(|p| rest(&p.uri));
        for uri in uris.chain(segment.complete.iter().map(|c| rest(&c.uri))) {
            let found = snapshot.lookup(&uri, "");
            assert!(
                matches!(found, super::HlsLookup::Ready { .. }),
                "{uri}: {found:?}"
            );
        }
    }
    if let Some(hint) = &playlist.preload_hint_part {
        assert!(matches!(
            snapshot.lookup(&rest(hint), ""),
            super::HlsLookup::Wait { .. }
        ));
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds of the playlist target: the golden playlists and hand-written edge
    /// cases, each also cut at every byte (truncated downloads are the commonest bad
    /// input).
    #[test]
    fn playlist_seeds_and_their_truncations_pass() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/golden/hls");
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .expect("testdata/golden/hls exists")
            .map(|entry| {
                std::fs::read(entry.expect("readable dir entry").path()).expect("readable seed")
            })
            .collect();
        assert!(seeds.len() >= 4, "golden playlists missing from {dir}");
        for extra in [
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-DISCONTINUITY\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n  spaced uri  \n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART:DURATION=1,URI=\"a,b\"\n#EXT-X-MAP:URI=\"\"\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=NO\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PROGRAM-DATE-TIME:2024-03-01T12:00:00+05:30\n",
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,FRAME-RATE=0.0005\nx\n#EXT-X-STREAM-INF:BANDWIDTH=2\ny\n",
            "#EXTM3U\n#EXT-X-PRELOAD-HINT:TYPE=MAP,URI=\"i\"\n#EXT-X-TARGETDURATION:18446744073709551615\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:18446744073709551.615,\nx\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:18446744073709551.616,\nx\n",
            "#EXTM3U\n\u{feff}#EXT-X-TARGETDURATION:1\n",
        ] {
            seeds.push(extra.as_bytes().to_vec());
        }
        for seed in &seeds {
            for cut in 0..=seed.len() {
                playlist(&seed[..cut]);
            }
        }
    }

    /// Deterministic pseudo-random operation streams (a 64-bit LCG) for both variants:
    /// even rounds are mostly well-formed media with occasional odd operations, odd
    /// rounds are uniformly random; plus one clean stream per variant.
    #[test]
    fn packager_survives_pseudo_random_streams() {
        let mut state: u64 = 0x5eed;
        let mut checked = 0;
        for round in 0..64u8 {
            // Configs first (opcode 0x44 video, 0x45 audio, no time step).
            let mut data = vec![round, 0x44, 0, 0, 0x45, 0, 0];
            for _ in 0..3000 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let [a, b, c, ..] = (state >> 24).to_le_bytes();
                let opcode = match a {
                    _ if round % 2 == 1 => a,
                    0..=4 => 0x4a,             // video keyframe, small step
                    5..=229 => 0x50 | (a & 1), // video or audio frame, small step
                    _ => a,
                };
                data.extend_from_slice(&[opcode, b, c]);
            }
            checked += packager(&data);
        }
        assert!(checked > 1000, "only {checked} updates checked");
        for variant in [0u8, 1] {
            let mut data = vec![variant, 0x44, 0, 0, 0x45, 0, 0];
            for i in 0..2000u32 {
                let opcode = if i % 61 == 0 { 0x4a } else { 0x50 };
                data.extend_from_slice(&[opcode, 33, 0]);
            }
            // 66 s of video, 2013 ms GOPs: 32 segments; for LL, 7 parts each (six of
            // 330 ms and a final 33 ms) plus 4 of the segment in progress, each its own update.
            let expected = if variant == 0 { 32 } else { 32 * 7 + 4 };
            assert_eq!(packager(&data), expected);
            let name = ["clean-ts", "clean-ll"][usize::from(variant)];
            crate::testkit::check_seed_file("hls/corpus/hls_packager", name, &data);
        }
    }

    /// The `hls_query` seeds are the golden playlists, copied (so a golden update does
    /// not silently change the corpus); each also cut at every byte and mutated.
    #[test]
    fn query_seeds_truncations_and_mutations_pass() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/golden/hls");
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("testdata/golden/hls exists")
            .map(|e| e.expect("readable dir entry").file_name())
            .collect();
        names.sort();
        assert!(names.len() >= 5);
        for name in names {
            let name = name.to_string_lossy();
            let seed = std::fs::read(format!("{dir}/{name}")).expect("readable golden file");
            crate::testkit::check_seed_file("hls/corpus/hls_query", &name, &seed);
            for cut in 0..=seed.len() {
                query(&seed[..cut]);
            }
            let crlf = String::from_utf8(seed.clone())
                .unwrap()
                .replace('\n', "\r\n");
            query(crlf.as_bytes());
            crate::testkit::for_each_mutation(&seed, 1_000, query);
        }
    }

    /// The fuzz corpora, minimised: what the fuzzer grew from the golden playlists
    /// (`hls_playlist`) and from the clean streams above (`hls_packager`).
    #[test]
    fn fuzz_corpora_replay() {
        assert!(crate::testkit::replay_corpus("hls/corpus/hls_playlist", playlist) > 0);
        let n = crate::testkit::replay_corpus("hls/corpus/hls_packager", |d| {
            packager(d);
        });
        assert!(n >= 2);
        assert!(crate::testkit::replay_corpus("hls/corpus/hls_query", query) >= 5);
    }
}
