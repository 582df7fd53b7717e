//! Test support shared by the TS and fMP4 muxer tests: real encoded input frames, golden
//! file comparison, and ffprobe/ffmpeg checks.
//!
//! Inputs are small fragmented MP4 files made by ffmpeg in `testdata/codec/` (see
//! `testdata/codec/README.md` for the commands); [`frames_from_mp4`] turns one into the
//! config and media [`Frame`]s a publisher would produce, using our own reader.
//!
//! Golden files: [`assert_golden`] compares muxer output byte for byte with
//! `testdata/golden/<path>`. Run `UPDATE_GOLDEN=1 cargo test` to rewrite them after an
//! intended change, and review the diff (and the ffprobe tests) before committing.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;

use super::reader;
use crate::media::{AudioCodec, Codec, Frame, FrameKind, VideoCodec};

/// A file of the repository's `testdata/` (one level above this crate: the server's
/// integration tests and the fuzz corpora share it).
pub fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

fn to_ms(ticks: i64, timescale: u32) -> i64 {
    // Round to nearest, like FLV muxers do.
    (ticks * 1000 + i64::from(timescale) / 2).div_euclid(i64::from(timescale))
}

/// Config frames first, then media frames of all tracks merged in decode order.
pub fn frames_from_mp4(name: &str) -> Vec<Frame> {
    let data = std::fs::read(testdata(&format!("codec/{name}"))).unwrap();
    let file = reader::parse(&data).unwrap();
    let mut configs = Vec::new();
    let mut media: Vec<(i64, usize, Frame)> = Vec::new();
    for (track_index, track) in file.tracks.iter().enumerate() {
        let codec = match &track.sample_entry {
            b"avc1" | b"avc3" => Codec::Video(VideoCodec::H264),
            b"hvc1" | b"hev1" => Codec::Video(VideoCodec::H265),
            b"av01" => Codec::Video(VideoCodec::Av1),
            b"vp09" => Codec::Video(VideoCodec::Vp9),
            b"mp4a" if track.object_type_indication == Some(0x40) => Codec::Audio(AudioCodec::Aac),
            // MP3 as an FLV publisher sends it: format 2, 44 kHz, 16-bit, mono/stereo.
            b"mp4a" => Codec::Audio(AudioCodec::Legacy {
                header: 0x2e | u8::from(track.channels == 2),
            }),
            other => panic!("unexpected sample entry {other:?}"),
        };
        if !matches!(codec, Codec::Audio(AudioCodec::Legacy { .. })) {
            configs.push(Frame {
                codec,
                kind: FrameKind::Config,
                keyframe: false,
                dts_ms: 0,
                cts_ms: 0,
                payload: Bytes::from(track.config.clone()),
            });
        }
        let mut fragments_dts = 0i64;
        for traf in file
            .fragments
            .iter()
            .flat_map(|f| &f.trafs)
            .filter(|t| t.track_id == track.track_id)
        {
            let mut dts = traf
                .base_media_decode_time
                .map_or(fragments_dts, |t| t as i64);
            for s in &traf.samples {
                let dts_ms = to_ms(dts, track.timescale);
                let pts_ms = to_ms(dts + s.composition_offset, track.timescale);
                let is_video = codec.track() == crate::media::Track::Video;
                media.push((
                    dts_ms,
                    track_index,
                    Frame {
                        codec,
                        kind: FrameKind::Media,
                        keyframe: is_video && s.is_sync(),
                        dts_ms: dts_ms as u64,
                        cts_ms: (pts_ms - dts_ms) as i32,
                        payload: Bytes::copy_from_slice(&data[s.data.clone()]),
                    },
                ));
                dts += i64::from(s.duration);
            }
            fragments_dts = dts;
        }
    }
    media.sort_by_key(|(dts, track, _)| (*dts, *track));
    configs
        .into_iter()
        .chain(media.into_iter().map(|(_, _, f)| f))
        .collect()
}

/// Compares `bytes` with the golden file `testdata/golden/<rel>`, or rewrites it when
/// `UPDATE_GOLDEN=1`. Returns the golden file's path.
pub fn assert_golden(rel: &str, bytes: &[u8]) -> PathBuf {
    let path = testdata(&format!("golden/{rel}"));
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        return path;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run UPDATE_GOLDEN=1 cargo test to create it",
            path.display()
        )
    });
    if want != bytes {
        let at = want
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(want.len().min(bytes.len()));
        panic!(
            "{} differs from the muxer output at byte {at} (golden {} bytes, output {} bytes); \
             if the change is intended, run UPDATE_GOLDEN=1 cargo test and review the diff",
            path.display(),
            want.len(),
            bytes.len()
        );
    }
    path
}

fn run(tool: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {tool} ({e}); install the Debian package `ffmpeg` (apt-get install ffmpeg)"
        )
    });
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// ffprobe: no errors, and the codec names of the streams in order.
pub fn ffprobe_codecs(path: &Path) -> Vec<String> {
    let p = path.to_str().unwrap();
    let (stdout, stderr) = run(
        "ffprobe",
        &["-v", "error", "-show_streams", "-of", "json", p],
    );
    assert!(
        stderr.trim().is_empty(),
        "ffprobe reports errors for {p}:\n{stderr}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// ffmpeg decodes every stream of the file without a single error line.
pub fn assert_ffmpeg_decodes(path: &Path) {
    let p = path.to_str().unwrap();
    let (_, stderr) = run("ffmpeg", &["-v", "error", "-i", p, "-f", "null", "-"]);
    assert!(
        stderr.trim().is_empty(),
        "ffmpeg reports decode errors for {p}:\n{stderr}"
    );
}
