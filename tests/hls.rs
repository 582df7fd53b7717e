//! HLS and LL-HLS end to end: ffmpeg publishes over RTMP, and real clients read back —
//! ffprobe and ffmpeg for both playlists, our TS and fMP4 readers for what is inside the
//! segments, raw HTTP for headers and blocking reloads, and hls.js in headless Chromium
//! (tests/browser/play.mjs) for a browser's view of LL-HLS and its latency.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use proto::fmp4::reader as mp4;
use proto::hls::playlist::MediaPlaylist;
use proto::ts::muxer::{STREAM_TYPE_AAC_ADTS, STREAM_TYPE_H264};
use proto::ts::reader as ts;

/// The server's default `hls.part_ms` (PART-TARGET), which these tests keep.
const PART_TARGET_MS: u64 = 333;

const TS_PLAYLIST: &str = "/live/x/ts.m3u8";
const LL_PLAYLIST: &str = "/live/x/ll.m3u8";

/// A server with `live/x` being published (H.264 with a 1 s GOP + AAC) for `seconds`,
/// once both playlists list at least `segments` complete segments.
fn publishing(
    name: &str,
    extra_toml: &str,
    seconds: u32,
    segments: usize,
) -> (Server, std::process::Child) {
    let server = Server::start(name, extra_toml);
    let publisher = publish_testsrc(&server.rtmp_url("live/x"), seconds, 25);
    wait_publishing(&server, "live/x");
    wait_segments(&server, segments);
    (server, publisher)
}

fn complete_segments(p: &MediaPlaylist) -> usize {
    p.segments.iter().filter(|s| s.complete.is_some()).count()
}

fn wait_segments(server: &Server, segments: usize) {
    wait_for(
        &format!("{segments} complete segments in both playlists"),
        Duration::from_secs(20),
        || {
            [TS_PLAYLIST, LL_PLAYLIST]
                .iter()
                .all(|p| complete_segments(&media_playlist(server, p)) >= segments)
        },
    );
}

/// The media sequence number in a segment or part URI (`ts/12.ts`, `s/12.m4s`,
/// `p/12.3.m4s`) and the part index, if any.
fn uri_numbers(uri: &str) -> (u64, Option<u32>) {
    let name = uri.rsplit('/').next().unwrap();
    let stem = name
        .split_once('.')
        .map(|(a, b)| (a, b.strip_suffix(".m4s").and_then(|p| p.parse().ok())));
    let (msn, part) = stem.unwrap_or_else(|| panic!("unexpected URI {uri}"));
    (
        msn.parse()
            .unwrap_or_else(|_| panic!("no media sequence number in {uri}")),
        part,
    )
}

/// The number of ADTS frames `payload` consists of, or `None` when it is not a whole
/// sequence of them (ISO 14496-3 §1.A.2: 12-bit sync word, 13-bit frame length).
fn adts_frames(mut payload: &[u8]) -> Option<usize> {
    let mut frames = 0;
    while !payload.is_empty() {
        if payload.len() < 7 || payload[0] != 0xff || payload[1] & 0xf0 != 0xf0 {
            return None;
        }
        let length = (usize::from(payload[3] & 0x03) << 11)
            | (usize::from(payload[4]) << 3)
            | usize::from(payload[5] >> 5);
        if length < 7 || length > payload.len() {
            return None;
        }
        payload = &payload[length..];
        frames += 1;
    }
    Some(frames)
}

fn assert_decoded(
    what: &str,
    (frames, stderr, out): (u64, String, std::process::Output),
    min_frames: u64,
) {
    assert!(out.status.success(), "{what}: ffmpeg failed: {stderr}");
    assert_clean_decode(what, frames, min_frames, &stderr);
}

#[test]
fn ffmpeg_and_ffprobe_read_ts_hls_and_ll_hls_with_audio_and_video_in_the_first_segment() {
    let (server, publisher) = publishing("hls-basic", "", 25, 3);

    for path in ["live/x.m3u8", "live/x/index.m3u8"] {
        let (codecs, stderr) = probe_codecs(&server.http_url(path));
        assert!(stderr.trim().is_empty(), "ffprobe {path}: {stderr}");
        assert!(
            codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"),
            "ffprobe {path} saw {codecs:?}"
        );
        // ffmpeg starts three segments from the live edge, so 3 s decode at once.
        assert_decoded(path, decode(&server.http_url(path), 3), 60);
    }

    // The first TS segment: PAT/PMT, H.264 and AAC PES, a keyframe first.
    let playlist = media_playlist(&server, TS_PLAYLIST);
    let uris: Vec<&str> = playlist
        .segments
        .iter()
        .filter_map(|s| s.complete.as_ref())
        .map(|c| c.uri.as_str())
        .collect();
    let first = ts::read(&get_ok(&server, &format!("/live/x/{}", uris[0])).1)
        .expect("first TS segment demuxes");
    assert!(
        !first.pat_packets.is_empty() && !first.pmt_packets.is_empty(),
        "PAT and PMT in the segment"
    );
    assert_eq!(first.pat_packets[0], 0, "a segment starts with the PAT");
    let pid_of = |t: u8| {
        first
            .streams
            .iter()
            .find(|s| s.stream_type == t)
            .map(|s| s.pid)
    };
    let video = pid_of(STREAM_TYPE_H264)
        .unwrap_or_else(|| panic!("no H.264 stream in the PMT: {:?}", first.streams));
    let audio = pid_of(STREAM_TYPE_AAC_ADTS)
        .unwrap_or_else(|| panic!("no AAC stream in the PMT: {:?}", first.streams));
    assert_eq!(first.streams.len(), 2, "{:?}", first.streams);
    let first_video = first
        .pes_of(video)
        .next()
        .expect("video PES in the first segment");
    assert!(
        first_video.random_access,
        "the segment starts with a keyframe"
    );
    let adts: usize = first
        .pes_of(audio)
        .map(|p| {
            adts_frames(&p.payload).unwrap_or_else(|| {
                panic!("audio PES at packet {} is not whole ADTS frames", p.packet)
            })
        })
        .sum();
    // 2 s of 1024-sample frames at 44.1 kHz is 86 frames.
    assert!(adts >= 80, "{adts} AAC frames in the first segment");
    assert!(
        first.cc_errors.is_empty(),
        "continuity errors: {:?}",
        first.cc_errors
    );

    // PCR every 100 ms at most (ISO 13818-1 §2.7.2), across segment boundaries too: the
    // concatenation of consecutive segments is what a player's demuxer sees.
    let mut joined = Vec::new();
    for uri in &uris {
        let body = get_ok(&server, &format!("/live/x/{uri}")).1;
        let segment = ts::read(&body).unwrap();
        let interval = segment
            .max_pcr_interval_ms()
            .expect("PCRs in every segment");
        assert!(interval <= 100, "{uri}: PCR interval {interval} ms");
        joined.extend_from_slice(&body);
    }
    let all = ts::read(&joined).unwrap();
    assert!(
        all.pcrs.len() >= 3 * 20,
        "{} PCRs over {} segments",
        all.pcrs.len(),
        uris.len()
    );
    assert!(
        all.max_pcr_interval_ms().unwrap() <= 100,
        "PCR interval across segments: {:?} ms",
        all.max_pcr_interval_ms()
    );
    assert!(
        all.cc_errors.is_empty(),
        "continuity errors across segments: {:?}",
        all.cc_errors
    );
    // No frame lost or repeated at a segment boundary: 25 fps with millisecond RTMP
    // timestamps is exactly 40 ms = 3600 ticks of 90 kHz between access units.
    let dts: Vec<u64> = all
        .pes_of(video)
        .map(|p| p.dts.or(p.pts).expect("video PES has a timestamp"))
        .collect();
    assert!(
        dts.len() >= 3 * 45,
        "{} video PES in {} segments",
        dts.len(),
        uris.len()
    );
    if let Some(bad) = dts.windows(2).position(|w| w[1].wrapping_sub(w[0]) != 3600) {
        panic!(
            "video DTS step {} -> {} at access unit {bad} (expected 3600)",
            dts[bad],
            dts[bad + 1]
        );
    }

    // The first LL-HLS segment with its init segment: both tracks, keyframe first.
    let playlist = media_playlist(&server, LL_PLAYLIST);
    let segment = playlist
        .segments
        .iter()
        .find(|s| s.complete.is_some())
        .unwrap();
    let init_uri = playlist
        .segments
        .iter()
        .find_map(|s| s.map_uri.clone())
        .expect("EXT-X-MAP");
    let mut data = get_ok(&server, &format!("/live/x/{init_uri}")).1;
    data.extend_from_slice(
        &get_ok(
            &server,
            &format!("/live/x/{}", segment.complete.as_ref().unwrap().uri),
        )
        .1,
    );
    let file = mp4::parse(&data).expect("init + first fMP4 segment parse");
    let track = |handler: &[u8; 4]| {
        file.tracks
            .iter()
            .find(|t| &t.handler == handler)
            .unwrap_or_else(|| panic!("no {:?} track", handler))
    };
    let (vide, soun) = (track(b"vide"), track(b"soun"));
    assert_eq!(
        (&vide.sample_entry, vide.width, vide.height),
        (b"avc1", 320, 240)
    );
    assert_eq!((&soun.sample_entry, soun.sample_rate), (b"mp4a", 44100));
    assert!(!file.fragments.is_empty(), "fragments in the segment");
    let samples = |id: u32| -> Vec<&mp4::SampleEntry> {
        file.fragments
            .iter()
            .flat_map(|f| &f.trafs)
            .filter(|t| t.track_id == id)
            .flat_map(|t| &t.samples)
            .collect()
    };
    let (v, a) = (samples(vide.track_id), samples(soun.track_id));
    assert!(
        v.first().expect("video samples").is_sync(),
        "the segment starts with a keyframe"
    );
    assert!(v.len() >= 45, "about 2 s of 25 fps video: {}", v.len());
    assert!(a.len() >= 80, "about 2 s of 44.1 kHz AAC: {}", a.len());
    assert!(
        v.iter()
            .chain(&a)
            .all(|s| s.data.end <= data.len() && s.size > 0),
        "samples lie inside the mdat"
    );

    end_process(publisher);
}

/// The last part the playlist lists, and whether its segment is complete.
fn last_part(p: &MediaPlaylist) -> ((u64, u32), bool) {
    let segment = p
        .segments
        .iter()
        .rev()
        .find(|s| !s.parts.is_empty())
        .expect("a playlist with parts");
    let (msn, part) = uri_numbers(&segment.parts.last().unwrap().uri);
    (
        (msn, part.expect("a part URI names its part index")),
        segment.complete.is_some(),
    )
}

/// The part after the last one the playlist lists: the next part of the open segment,
/// or part 0 of the next segment when the last part ended its segment.
fn next_part(p: &MediaPlaylist) -> (u64, u32) {
    match last_part(p) {
        ((msn, _), true) => (msn + 1, 0),
        ((msn, part), false) => (msn, part + 1),
    }
}

fn lists_part(p: &MediaPlaylist, (msn, part): (u64, u32)) -> bool {
    p.segments
        .iter()
        .flat_map(|s| &s.parts)
        .any(|x| uri_numbers(&x.uri) == (msn, Some(part)))
}

/// A part, `(msn, part)`, and when a plain playlist poll first listed it.
type FirstSeen = ((u64, u32), Instant);

#[test]
fn ll_hls_blocking_reload_returns_as_soon_as_the_next_part_exists() {
    let (server, publisher) = publishing("hls-blocking", "", 25, 2);

    // A poller that notes when a plain (non-blocking) playlist first lists each part.
    let seen: Arc<Mutex<Vec<FirstSeen>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (seen, stop, addr) = (Arc::clone(&seen), Arc::clone(&stop), server.http_addr());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (status, _, body) = http_request(addr, "GET", LL_PLAYLIST, &[]);
                let at = Instant::now();
                if status == 200 {
                    let p =
                        proto::hls::parse::parse_media_playlist(&String::from_utf8_lossy(&body))
                            .unwrap();
                    let mut seen = seen.lock().unwrap();
                    for part in p.segments.iter().flat_map(|s| &s.parts) {
                        let (msn, idx) = uri_numbers(&part.uri);
                        let id = (msn, idx.unwrap());
                        if !seen.iter().any(|(s, _)| *s == id) {
                            seen.push((id, at));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // Twelve consecutive parts (4 s): at least one crosses a segment boundary, where the
    // next part is part 0 of the next segment.
    let mut crossed_segment = false;
    let mut blocked_ms = Vec::new();
    for _ in 0..12 {
        let p = media_playlist(&server, LL_PLAYLIST);
        let (msn, part) = next_part(&p);
        let hinted = p.preload_hint_part.as_deref().map(uri_numbers);
        assert_eq!(
            hinted,
            Some((msn, Some(part))),
            "EXT-X-PRELOAD-HINT names the next part"
        );
        crossed_segment |= part == 0;
        let asked = Instant::now();
        let (status, head, body) =
            server.get(&format!("{LL_PLAYLIST}?_HLS_msn={msn}&_HLS_part={part}"));
        let answered = Instant::now();
        assert_eq!(status, 200, "{head}");
        let text = String::from_utf8(body).unwrap();
        let blocked = proto::hls::parse::parse_media_playlist(&text).unwrap();
        assert!(
            lists_part(&blocked, (msn, part)),
            "the blocking reload for {msn}.{part} lists it:\n{text}"
        );
        // The requested part did not exist when we asked, so it appears within one
        // part target; 250 ms slack covers the encoder's frame pacing and a busy
        // 2-core machine.
        let waited = answered - asked;
        assert!(
            waited <= Duration::from_millis(PART_TARGET_MS + 250),
            "blocking reload for {msn}.{part} took {waited:?}, more than a part target"
        );
        blocked_ms.push(waited.as_millis());
        // Against the poller: the blocked request must not answer much later than a
        // plain poll first saw the part. 100 ms slack: the poll interval, the
        // cross-shard wake-up and two loopback requests.
        std::thread::sleep(Duration::from_millis(60));
        let first_seen = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(id, _)| *id == (msn, part))
            .map(|(_, at)| *at);
        if let Some(first_seen) = first_seen {
            assert!(
                answered <= first_seen + Duration::from_millis(100),
                "blocking reload for {msn}.{part} answered {:?} after a plain poll saw the part",
                answered - first_seen
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    assert!(crossed_segment, "the parts crossed a segment boundary");
    // If every request returned at once, nothing was blocking.
    let mean = blocked_ms.iter().sum::<u128>() / blocked_ms.len() as u128;
    assert!(
        mean >= 40,
        "blocking reloads returned in {blocked_ms:?} ms: they did not wait for the part"
    );
    eprintln!("blocking reload waits (ms): {blocked_ms:?}");

    // Parts of each complete segment add up to its EXTINF, 1 ms of rounding per part.
    let p = media_playlist(&server, LL_PLAYLIST);
    let mut checked = 0;
    for s in &p.segments {
        let (Some(complete), Some(first)) = (&s.complete, s.parts.first()) else {
            continue;
        };
        if uri_numbers(&first.uri).1 != Some(0) {
            continue; // older parts are no longer listed
        }
        let sum: u64 = s.parts.iter().map(|x| x.duration_ms).sum();
        let tolerance = s.parts.len() as u64;
        assert!(
            sum.abs_diff(complete.duration_ms) <= tolerance,
            "{}: parts sum to {sum} ms, EXTINF says {} ms",
            complete.uri,
            complete.duration_ms
        );
        assert!(
            s.parts[0].independent,
            "{}: part 0 starts with a keyframe",
            complete.uri
        );
        assert!(
            s.parts.iter().all(|x| x.duration_ms <= PART_TARGET_MS),
            "{}: a part over PART-TARGET",
            complete.uri
        );
        checked += 1;
    }
    assert!(
        checked >= 1,
        "no complete segment with all its parts listed:\n{p:?}"
    );
    assert_segments_are_their_parts_and_continuous(&server, &p);

    // Too far ahead: 400 at once, not a wait.
    let open = next_part(&p).0;
    for query in [
        format!("_HLS_msn={}", open + 100),
        format!("_HLS_msn={}&_HLS_part=0", open + 100),
        "_HLS_part=1".to_owned(),
    ] {
        let asked = Instant::now();
        let (status, head, _) = server.get(&format!("{LL_PLAYLIST}?{query}"));
        assert_eq!(status, 400, "{query}: {head}");
        assert!(
            asked.elapsed() < Duration::from_millis(500),
            "{query}: 400 took {:?}",
            asked.elapsed()
        );
    }
    end_process(publisher);
}

/// What LL-HLS players rely on when they switch between parts and segments: a complete
/// segment's bytes are its parts' bytes in order, and each track's decode time carries
/// on from one segment to the next (tfdt = previous tfdt + sample durations).
fn assert_segments_are_their_parts_and_continuous(server: &Server, p: &MediaPlaylist) {
    let mut next_tfdt: Option<Vec<(u32, u64)>> = None;
    for s in p.segments.iter() {
        let Some(complete) = &s.complete else {
            continue;
        };
        let segment = get_ok(server, &format!("/live/x/{}", complete.uri)).1;
        if s.parts
            .first()
            .is_some_and(|x| uri_numbers(&x.uri).1 == Some(0))
        {
            let mut joined = Vec::new();
            for part in &s.parts {
                joined.extend_from_slice(&get_ok(server, &format!("/live/x/{}", part.uri)).1);
            }
            assert!(
                joined == segment,
                "{}: the segment is not its parts concatenated",
                complete.uri
            );
        }
        let file = mp4::parse(&segment).unwrap_or_else(|e| panic!("{}: {e}", complete.uri));
        let mut tracks: Vec<(u32, u64, u64)> = Vec::new(); // (track, first tfdt, duration)
        for traf in file.fragments.iter().flat_map(|f| &f.trafs) {
            let tfdt = traf.base_media_decode_time.expect("every traf has a tfdt");
            match tracks.iter_mut().find(|t| t.0 == traf.track_id) {
                Some(t) => {
                    assert_eq!(
                        tfdt,
                        t.1 + t.2,
                        "{}: track {} fragments are not contiguous",
                        complete.uri,
                        t.0
                    );
                    t.2 += traf.duration();
                }
                None => tracks.push((traf.track_id, tfdt, traf.duration())),
            }
        }
        tracks.sort_unstable();
        assert_eq!(
            tracks.len(),
            2,
            "{}: audio and video in every segment",
            complete.uri
        );
        if let Some(expected) = &next_tfdt {
            let starts: Vec<(u32, u64)> = tracks.iter().map(|t| (t.0, t.1)).collect();
            assert_eq!(
                &starts, expected,
                "{}: decode times do not continue the previous segment",
                complete.uri
            );
        }
        next_tfdt = Some(tracks.iter().map(|t| (t.0, t.1 + t.2)).collect());
    }
}

#[test]
fn hls_http_headers_cache_control_cors_head_and_errors() {
    let (server, publisher) = publishing("hls-http", "", 20, 1);
    let ts = media_playlist(&server, TS_PLAYLIST);
    let ll = media_playlist(&server, LL_PLAYLIST);
    let ts_segment = format!("/live/x/{}", ts.segments[0].complete.as_ref().unwrap().uri);
    let ll_segment = format!(
        "/live/x/{}",
        ll.segments
            .iter()
            .find_map(|s| s.complete.as_ref())
            .unwrap()
            .uri
    );
    let ll_part = format!(
        "/live/x/{}",
        ll.segments
            .iter()
            .rev()
            .find_map(|s| s.parts.last())
            .unwrap()
            .uri
    );
    let init = format!(
        "/live/x/{}",
        ll.segments.iter().find_map(|s| s.map_uri.as_ref()).unwrap()
    );

    let playlist_type = "application/vnd.apple.mpegurl";
    let cases: [(&str, &str, bool); 8] = [
        ("/live/x.m3u8", playlist_type, false),
        (TS_PLAYLIST, playlist_type, false),
        ("/live/x/index.m3u8", playlist_type, false),
        (LL_PLAYLIST, playlist_type, false),
        (&ts_segment, "video/mp2t", true),
        (&ll_segment, "video/mp4", true),
        (&ll_part, "video/mp4", true),
        (&init, "video/mp4", true),
    ];
    for (path, content_type, immutable) in cases {
        let (head, body) = get_ok(&server, path);
        assert_eq!(
            header(&head, "content-type"),
            Some(content_type),
            "{path}: {head}"
        );
        assert_eq!(
            header(&head, "access-control-allow-origin"),
            Some("*"),
            "{path}: CORS for web players: {head}"
        );
        let cache = header(&head, "cache-control")
            .unwrap_or_else(|| panic!("{path}: no Cache-Control: {head}"));
        let max_age: u64 = cache
            .split(',')
            .find_map(|d| d.trim().strip_prefix("max-age="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{path}: no max-age in {cache}"));
        if immutable {
            assert!(
                cache.contains("immutable") && max_age >= 86_400 * 365,
                "{path}: media must be cacheable for good: {cache}"
            );
        } else {
            // A live playlist changes every part: cached no longer than a part or two.
            assert!(
                max_age <= 1 && !cache.contains("immutable"),
                "{path}: playlist cached too long: {cache}"
            );
        }
        // HEAD: the same head, no body.
        let (status, head_only, empty) = http_request(server.http_addr(), "HEAD", path, &[]);
        assert_eq!(status, 200, "HEAD {path}: {head_only}");
        assert!(
            empty.is_empty(),
            "HEAD {path} sent {} body bytes",
            empty.len()
        );
        assert_eq!(
            header(&head_only, "content-type"),
            Some(content_type),
            "HEAD {path}"
        );
        if !path.ends_with(".m3u8") {
            // Playlists may change between the two requests; media may not.
            let length = header(&head_only, "content-length").and_then(|l| l.parse::<usize>().ok());
            assert_eq!(
                length,
                Some(body.len()),
                "HEAD {path}: Content-Length of the GET body"
            );
        }
    }

    // A blocking reload response may be cached for longer: any later playlist is a
    // correct answer to the same URL.
    let ((msn, part), _) = last_part(&ll);
    let (head, _) = get_ok(
        &server,
        &format!("{LL_PLAYLIST}?_HLS_msn={msn}&_HLS_part={part}"),
    );
    let cache = header(&head, "cache-control").unwrap();
    assert!(
        cache.contains("max-age=") && !cache.contains("immutable"),
        "blocking reload: {cache}"
    );

    for path in [
        "/live/nope.m3u8",
        "/live/nope/ll.m3u8",
        "/live/nope/ts/1.ts",
        "/live/x/ts/1.ts",
        "/live/x/s/1.m4s",
        "/live/x/bogus.m3u8",
    ] {
        let (status, head, _) = server.get(path);
        assert_eq!(status, 404, "{path}: {head}");
        assert_eq!(
            header(&head, "access-control-allow-origin"),
            Some("*"),
            "{path}: CORS on errors too"
        );
    }
    for path in ["/live/x.m3u8", LL_PLAYLIST, &ts_segment] {
        let (status, head, _) = server.post(path);
        assert_eq!(status, 405, "POST {path}: {head}");
        let allow = header(&head, "allow")
            .unwrap_or_else(|| panic!("POST {path}: 405 without Allow: {head}"));
        assert!(
            allow.contains("GET") && allow.contains("HEAD"),
            "POST {path}: Allow: {allow}"
        );
    }
    // A browser's CORS preflight for a player that sends a Range header.
    let (status, head, _) = http_request(
        server.http_addr(),
        "OPTIONS",
        LL_PLAYLIST,
        &[
            ("Origin", "https://player.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "range"),
        ],
    );
    assert!(status == 200 || status == 204, "preflight: {head}");
    assert!(
        header(&head, "access-control-allow-methods").is_some_and(|m| m.contains("GET")),
        "preflight: {head}"
    );
    end_process(publisher);
}

#[test]
fn media_sequence_continues_across_a_publisher_reconnect_with_a_discontinuity() {
    // A three-segment window, so MEDIA-SEQUENCE moves within the test.
    let server = Server::start(
        "hls-reconnect",
        "[streams]\nreconnect_grace_ms = 5000\n[hls]\nwindow_segments = 3\n",
    );
    let url = server.rtmp_url("live/x");
    let mut first = publish_testsrc(&url, 7, 25);
    wait_publishing(&server, "live/x");
    wait_segments(&server, 2);

    // Poll both playlists through the reconnect: MEDIA-SEQUENCE never goes back, every
    // listed segment is where the media sequence says, and nothing ends the playlist.
    let mut history: Vec<(&str, MediaPlaylist)> = Vec::new();
    let poll = |history: &mut Vec<(&str, MediaPlaylist)>| {
        for path in [TS_PLAYLIST, LL_PLAYLIST] {
            history.push((path, media_playlist(&server, path)));
        }
    };
    while first.try_wait().unwrap().is_none() {
        poll(&mut history);
        std::thread::sleep(Duration::from_millis(200));
    }
    let before: Vec<(&str, u64)> = [TS_PLAYLIST, LL_PLAYLIST]
        .iter()
        .map(|path| {
            let last = history.iter().rev().find(|(p, _)| p == path).unwrap();
            let complete: Vec<u64> = last
                .1
                .segments
                .iter()
                .filter_map(|s| s.complete.as_ref())
                .map(|c| uri_numbers(&c.uri).0)
                .collect();
            (*path, *complete.last().unwrap())
        })
        .collect();
    let reconnect_at = history.len();
    std::thread::sleep(Duration::from_millis(500));
    let second = publish_testsrc(&url, 12, 25);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut found = [false, false];
    while found.iter().any(|f| !f) {
        assert!(
            Instant::now() < deadline,
            "no EXT-X-DISCONTINUITY after the reconnect: {:?}",
            history.last()
        );
        poll(&mut history);
        for (i, (path, last_before)) in before.iter().enumerate() {
            let (_, p) = history.iter().rev().find(|(q, _)| q == path).unwrap();
            let disc = p
                .segments
                .iter()
                .enumerate()
                .find(|(_, s)| s.discontinuity)
                .map(|(i, _)| p.media_sequence + i as u64);
            if let Some(msn) = disc {
                assert!(
                    msn > *last_before,
                    "{path}: discontinuity at {msn}, before the reconnect's segments"
                );
                // Each segment after the reconnect starts with a keyframe again, so
                // the discontinuous one is complete once a later one exists.
                found[i] = p.segments.iter().any(|s| {
                    s.complete
                        .as_ref()
                        .is_some_and(|c| uri_numbers(&c.uri).0 > msn)
                });
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for path in [TS_PLAYLIST, LL_PLAYLIST] {
        let mut last_sequence = 0;
        for (_, p) in history.iter().filter(|(q, _)| *q == path) {
            assert!(!p.end_list, "{path}: EXT-X-ENDLIST during the grace");
            assert!(
                p.media_sequence >= last_sequence,
                "{path}: MEDIA-SEQUENCE went back from {last_sequence} to {}",
                p.media_sequence
            );
            last_sequence = p.media_sequence;
            for (i, s) in p.segments.iter().enumerate() {
                let Some(uri) = s
                    .complete
                    .as_ref()
                    .map(|c| c.uri.as_str())
                    .or(s.parts.first().map(|x| x.uri.as_str()))
                else {
                    // Only the open segment may have no URI yet (its tags, no parts).
                    assert_eq!(
                        i + 1,
                        p.segments.len(),
                        "{path}: segment {i} without a URI: {p:?}"
                    );
                    continue;
                };
                assert_eq!(
                    uri_numbers(uri).0,
                    p.media_sequence + i as u64,
                    "{path}: segment {i} is {uri}"
                );
            }
        }
        let (_, p) = history.iter().rev().find(|(q, _)| *q == path).unwrap();
        let (_, at_reconnect) = history[..reconnect_at]
            .iter()
            .rev()
            .find(|(q, _)| *q == path)
            .unwrap();
        assert!(
            p.media_sequence > at_reconnect.media_sequence,
            "{path}: MEDIA-SEQUENCE {} before the reconnect, {} after",
            at_reconnect.media_sequence,
            p.media_sequence
        );
    }
    // The TS variant after the reconnect still decodes.
    assert_decoded(
        "TS after reconnect",
        decode(&server.http_url("live/x.m3u8"), 2),
        40,
    );
    end_process(second);
}

/// hls.js (lowLatencyMode) in headless Chromium plays the LL-HLS stream: the video clock
/// advances in real time and the live latency stays low. Needs node, Chromium and
/// `npm install` in tests/browser (tests/run.sh does all three).
#[test]
fn hls_js_plays_ll_hls_in_headless_chromium_with_low_latency() {
    require("node", "nodejs");
    require("chromium", "chromium");
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/hls.js").is_dir()
            && browser_dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci` in tests/browser (tests/run.sh does)"
    );
    let (server, publisher) = publishing("hls-browser", "", 30, 2);
    let watch_s = 6.0;
    let out = Command::new("node")
        .arg(browser_dir.join("play.mjs"))
        .arg(server.http_url("live/x/index.m3u8"))
        .arg(watch_s.to_string())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("play.mjs printed nothing ({}): {stderr}", out.status));
    let r: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("play.mjs output {line}: {e}; {stderr}"));
    eprintln!("browser: {r}");
    assert_eq!(
        r["h264"], true,
        "this Chromium cannot play H.264 in MSE (Debian's chromium can): {r}"
    );
    assert!(
        out.status.success() && r["startMs"].is_number(),
        "playback never started: {r} {stderr}"
    );
    assert!(
        r["errors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e.as_str().unwrap().starts_with("FATAL")),
        "hls.js fatal error: {r}"
    );
    assert_eq!(
        r["canBlockReload"], true,
        "hls.js saw the LL-HLS server control: {r}"
    );
    assert!(
        (r["partTarget"].as_f64().unwrap() * 1000.0 - PART_TARGET_MS as f64).abs() < 1.0,
        "{r}"
    );
    assert_eq!(
        (r["videoWidth"].as_u64(), r["videoHeight"].as_u64()),
        (Some(320), Some(240)),
        "{r}"
    );
    // The video clock moves with the wall clock: at least 80% (a stall or two at start).
    let advanced = r["advanced"].as_f64().unwrap();
    let wall = r["wallSeconds"].as_f64().unwrap();
    assert!(
        advanced >= 0.8 * wall && advanced <= wall + 1.0,
        "currentTime advanced {advanced:.2} s in {wall:.2} s: {r}"
    );
    // Latency bound 4 s = two segment targets: hls.js in low-latency mode aims at
    // PART-HOLD-BACK (~1 s) behind the edge; a player that fell back to classic HLS
    // sits at HOLD-BACK (3 target durations, 6 s). The program-date-time latency also
    // includes ingest and packaging (up to a part) and must meet the same bound.
    let latency = r["latency"].as_f64().expect("hls.js reported a latency");
    let pdt_latency = r["pdtLatency"]
        .as_f64()
        .expect("program date time of the playing frame");
    println!("LL-HLS live latency in Chromium: hls.js {latency:.2} s, program-date-time {pdt_latency:.2} s");
    assert!(latency < 4.0, "hls.js latency {latency:.2} s: {r}");
    assert!(
        pdt_latency < 4.0 && pdt_latency > 0.0,
        "program-date-time latency {pdt_latency:.2} s: {r}"
    );
    end_process(publisher);
}
