//! Fuzz entry points for the playlist reader (`fuzz/fuzz_targets/hls_playlist.rs`).
//! Besides "never panics", each checks that a playlist the reader accepts survives
//! render → read unchanged, which also exercises the renderer on odd models.

use super::parse::{parse_media_playlist, parse_multivariant_playlist};

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds of the fuzz target: the golden playlists and hand-written edge cases,
    /// each also cut at every byte (truncated downloads are the commonest bad input).
    #[test]
    fn seeds_and_their_truncations_pass() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/golden/hls");
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
}
