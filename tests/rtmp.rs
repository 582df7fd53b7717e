//! RTMP publish/play and HTTP-FLV with real clients: ffmpeg publishes, ffmpeg/ffprobe
//! decode; our own RTMP client core checks exact status codes and frame sequences.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use proto::rtmp::{self, MediaKind};

#[test]
fn ffmpeg_publish_plays_over_rtmp_and_http_flv() {
    let server = Server::start("rtmp-basic", "");
    let mut publisher = publish_testsrc(&server.rtmp_url("live/basic"), 14, 25);
    wait_publishing(&server, "live/basic");

    let (codecs, stderr) = probe_codecs(&server.rtmp_url("live/basic"));
    assert!(
        codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"),
        "ffprobe over RTMP saw: {codecs:?} {stderr}"
    );

    let (frames, stderr, _) = decode(&server.rtmp_url("live/basic"), 3);
    assert_clean_decode("RTMP", frames, 60, &stderr);
    let (frames, stderr, _) = decode(&server.http_url("live/basic.flv"), 3);
    assert_clean_decode("HTTP-FLV", frames, 60, &stderr);

    // CORS for web players, and 404 for an unknown stream.
    let (status, head, _) = http_request(server.http_addr(), "HEAD", "/live/basic.flv", &[]);
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: *"),
        "{head}"
    );
    assert!(head.contains("video/x-flv"), "{head}");
    assert_eq!(server.get("/live/nope.flv").0, 404);
    publisher.kill().unwrap();
    assert!(server.stop().success());
}

#[test]
fn late_joiner_mid_gop_decodes_from_its_first_frame() {
    let server = Server::start("rtmp-midgop", "");
    // A 4 s GOP: a joiner 3 s in is mid-GOP and needs the cached configs and GOP.
    let mut publisher = publish_testsrc(&server.rtmp_url("live/gop"), 12, 100);
    wait_publishing(&server, "live/gop");
    std::thread::sleep(Duration::from_millis(2500));
    let start = Instant::now();
    let (frames, stderr, _) = decode(&server.rtmp_url("live/gop"), 2);
    assert_clean_decode("RTMP mid-GOP", frames, 45, &stderr);
    let (frames, stderr, _) = decode(&server.http_url("live/gop.flv"), 2);
    assert_clean_decode("HTTP-FLV mid-GOP", frames, 45, &stderr);
    assert!(
        start.elapsed() < Duration::from_secs(9),
        "instant start: the cached GOP arrives at once"
    );
    publisher.kill().unwrap();
}

#[test]
fn duplicate_publish_is_refused_and_missing_stream_is_not_found() {
    let server = Server::start("rtmp-dup", "");
    let mut a = publish_testsrc(&server.rtmp_url("live/a"), 14, 25);
    let mut b = publish_testsrc(&server.rtmp_url("live/b"), 14, 25);
    wait_publishing(&server, "live/a");
    wait_publishing(&server, "live/b");

    let mut dup = RtmpClient::publisher(server.rtmp_port, "live", "a");
    dup.expect_status("NetStream.Publish.BadName");
    dup.stop();

    let mut missing = RtmpClient::player(server.rtmp_port, "live", "nobody");
    missing.expect_status("NetStream.Play.StreamNotFound");

    let mut wrong_app = RtmpClient::player(server.rtmp_port, "nosuchapp", "a");
    wrong_app.expect_status("NetConnection.Connect.Rejected");

    // The first publisher of each stream continues untouched.
    for key in ["live/a", "live/b"] {
        let (frames, stderr, _) = decode(&server.http_url(&format!("{key}.flv")), 2);
        assert_clean_decode(key, frames, 40, &stderr);
    }
    assert!(server.metric("shardcast_rejected_total") >= 3.0);
    a.kill().unwrap();
    b.kill().unwrap();
}

#[test]
fn publisher_reconnect_within_grace_keeps_viewers() {
    let server = Server::start("rtmp-grace", "[streams]\nreconnect_grace_ms = 5000\n");
    let url = server.rtmp_url("live/re");
    let mut first = publish_testsrc(&url, 4, 25);
    wait_publishing(&server, "live/re");
    let viewer_url = server.http_url("live/re.flv");
    let viewer = std::thread::spawn(move || decode(&viewer_url, 10));
    let rtmp_port = server.rtmp_port;
    let timestamps = std::thread::spawn(move || {
        let mut v = RtmpClient::player(rtmp_port, "live", "re");
        v.pump(Duration::from_secs(10));
        v.media
            .iter()
            .filter(|m| m.kind != MediaKind::Data)
            .map(|m| (m.kind, m.timestamp_ms))
            .collect::<Vec<_>>()
    });
    let _ = first.wait();
    // Two reconnects: each lands on whichever shard the kernel picks, so across the
    // runs both the same-shard resume and the hand-over to the owner shard are used.
    std::thread::sleep(Duration::from_millis(300));
    let _ = publish_testsrc(&url, 4, 25).wait();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = publish_testsrc(&url, 5, 25);
    let (frames, stderr, out) = viewer.join().unwrap();
    assert!(out.status.success(), "viewer ended early: {stderr}");
    // 10 s of stream at 25 fps minus two short gaps.
    assert!(
        frames >= 180,
        "viewer decoded only {frames} frames across the reconnects:\n{stderr}"
    );
    let (_, _, body) = server.get("/api/streams/live/re");
    let json = String::from_utf8_lossy(&body);
    assert!(json.contains("\"publisher_resumes\": 2"), "{json}");
    // Each track's timestamps stay monotonic for the viewer across both reconnects.
    let ts = timestamps.join().unwrap();
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let track: Vec<u32> = ts
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, t)| *t)
            .collect();
        assert!(track.len() > 150, "{kind:?}: {} messages", track.len());
        assert!(
            track.windows(2).all(|w| w[0] <= w[1]),
            "{kind:?} timestamps go backwards: {track:?}"
        );
    }
    third.kill().unwrap();
}

#[test]
fn viewers_on_both_shards_receive_the_same_frames() {
    let server = Server::start("rtmp-shards", "");
    let mut publisher = publish_testsrc(&server.rtmp_url("live/many"), 14, 25);
    wait_publishing(&server, "live/many");
    let mut viewers: Vec<RtmpClient> = (0..16)
        .map(|_| RtmpClient::player(server.rtmp_port, "live", "many"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut per_shard = Vec::new();
    while Instant::now() < deadline {
        for v in &mut viewers {
            v.pump(Duration::from_millis(5));
        }
        if per_shard.is_empty() && Instant::now() + Duration::from_secs(2) > deadline {
            per_shard = server.metric_by_shard("shardcast_rtmp_viewers");
        }
    }
    assert_eq!(per_shard.len(), 2, "two shards");
    assert!(
        per_shard.iter().all(|n| *n > 0.0),
        "viewers on both shards: {per_shard:?}"
    );
    assert_eq!(per_shard.iter().sum::<f64>(), 16.0);
    // The common window: from the latest first keyframe to the earliest last frame.
    let video = |v: &RtmpClient| -> Vec<(u32, bytes::Bytes)> {
        v.media
            .iter()
            .filter(|m| m.kind == MediaKind::Video)
            .map(|m| (m.timestamp_ms, m.body.clone()))
            .collect()
    };
    let from = viewers
        .iter()
        .map(|v| {
            video(v)
                .iter()
                .find(|(_, b)| b[0] >> 4 == 1)
                .map(|(t, _)| *t)
                .unwrap()
        })
        .max()
        .unwrap();
    let to = viewers
        .iter()
        .map(|v| video(v).last().unwrap().0)
        .min()
        .unwrap();
    assert!(
        to > from + 1000,
        "a common window of over a second ({from}..{to})"
    );
    let window = |v: &RtmpClient| -> Vec<(u32, bytes::Bytes)> {
        video(v)
            .into_iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .collect()
    };
    let reference = window(&viewers[0]);
    for (i, v) in viewers.iter().enumerate() {
        assert_eq!(
            window(v),
            reference,
            "viewer {i} got a different frame sequence"
        );
    }
    publisher.kill().unwrap();
}

/// Reads an HTTP-FLV response body from a raw socket into FLV tags.
struct FlvViewer {
    sock: TcpStream,
    raw: Vec<u8>,
}

impl FlvViewer {
    fn open(server: &Server, path: &str) -> FlvViewer {
        let mut sock = TcpStream::connect((Ipv4Addr::LOCALHOST, server.http_port)).unwrap();
        write!(sock, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        FlvViewer {
            sock,
            raw: Vec::new(),
        }
    }

    /// Read for `d` at most (a live stream never goes quiet).
    fn pump(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut buf = [0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn tags(&self) -> Vec<Media> {
        let (status, _, body) = parse_response(&self.raw);
        assert_eq!(status, 200);
        flv_tags_in(&body)
    }
}

/// Enhanced RTMP: ffmpeg 5.1 cannot publish HEVC/AV1 over RTMP, so this test publishes
/// ffmpeg-encoded HEVC and AV1 (testdata/flv, made by make-enhanced.py) with our RTMP
/// client as Enhanced RTMP, looped with increasing timestamps.
#[test]
fn enhanced_rtmp_hevc_and_av1_reach_rtmp_and_http_flv_viewers_byte_identical() {
    let server = Server::start("rtmp-enhanced", "");
    for (name, file) in [("hevc", "hevc.flv"), ("av1", "av1.flv")] {
        let tags = flv_tags(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata/flv")
                .join(file),
        );
        let span = tags.iter().map(|t| t.timestamp_ms).max().unwrap() + 40;
        let mut publisher = RtmpClient::publisher(server.rtmp_port, "live", name);
        publisher.expect_status("NetStream.Publish.Start");
        let mut sent = Vec::new();
        let mut players: Vec<(RtmpClient, FlvViewer)> = Vec::new();
        for round in 0..4u32 {
            for t in &tags {
                // ExVideoTagHeader: IsExHeader bit, PacketType in the low nibble.
                let ex_packet =
                    (t.kind == MediaKind::Video && t.body[0] & 0x80 != 0).then(|| t.body[0] & 0x0f);
                // SequenceEnd never; SequenceStart only the first time round.
                if ex_packet == Some(2) || (round > 0 && ex_packet == Some(0)) {
                    continue;
                }
                let ts = t.timestamp_ms + round * span;
                publisher.send(t.kind, ts, &t.body);
                sent.push(Media {
                    kind: t.kind,
                    timestamp_ms: ts,
                    body: t.body.clone(),
                });
                std::thread::sleep(Duration::from_millis(5));
            }
            if round == 1 {
                players.push((
                    RtmpClient::player(server.rtmp_port, "live", name),
                    FlvViewer::open(&server, &format!("/live/{name}.flv")),
                ));
                let (p, f) = players.last_mut().unwrap();
                p.expect_status("NetStream.Play.Start");
                f.pump(Duration::from_millis(200));
            }
            for (p, f) in &mut players {
                p.pump(Duration::from_millis(50));
                f.pump(Duration::from_millis(50));
            }
        }
        for (p, f) in &mut players {
            p.pump(Duration::from_millis(300));
            f.pump(Duration::from_millis(300));
        }
        let (rtmp_viewer, flv_viewer) = &players[0];
        let via_rtmp: Vec<_> = rtmp_viewer
            .media
            .iter()
            .filter(|m| m.kind == MediaKind::Video)
            .cloned()
            .collect();
        let via_flv: Vec<_> = flv_viewer
            .tags()
            .into_iter()
            .filter(|m| m.kind == MediaKind::Video)
            .collect();
        assert!(
            via_rtmp.len() > tags.len(),
            "{name}: RTMP viewer got {} video messages",
            via_rtmp.len()
        );
        assert_eq!(
            via_rtmp, via_flv,
            "{name}: RTMP and HTTP-FLV viewers got different frames"
        );
        // What viewers got is exactly what was published, from the config on.
        let sent_video: Vec<_> = sent
            .iter()
            .filter(|m| m.kind == MediaKind::Video)
            .cloned()
            .collect();
        let tail = &sent_video[sent_video.len() - (via_rtmp.len() - 1)..];
        assert_eq!(
            via_rtmp[0].body, sent_video[0].body,
            "{name}: the sequence start (config) comes first"
        );
        assert_eq!(
            &via_rtmp[1..],
            tail,
            "{name}: frames differ from what was published"
        );
        publisher.stop();
    }
}

#[test]
fn bad_input_closes_only_that_connection() {
    let server = Server::start("rtmp-bad", "[rtmp]\nmax_message_bytes = 1048576\n");
    let mut publisher = publish_testsrc(&server.rtmp_url("live/safe"), 60, 25);
    wait_publishing(&server, "live/safe");
    let mut watcher = FlvViewer::open(&server, "/live/safe.flv");
    watcher.pump(Duration::from_millis(500));
    let before = watcher.raw.len();

    let closes_soon = |mut s: TcpStream, what: &str| {
        s.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
        let mut buf = [0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(12);
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => assert!(Instant::now() < deadline, "{what}: connection stayed open"),
            }
        }
    };
    // 1. Garbage instead of a handshake.
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, server.rtmp_port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    closes_soon(s, "garbage");
    // 2. A truncated handshake: closed by the handshake timeout.
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, server.rtmp_port)).unwrap();
    s.write_all(&[3u8; 200]).unwrap();
    closes_soon(s, "truncated handshake");
    // 3-5. After a real handshake and connect: chunk size 2^31, an oversized message,
    // an unknown message type.
    let attacks: [(&str, Vec<u8>); 3] = [
        (
            "chunk size 2^31",
            rtmp::serialize_message(2, 1, 0, 0, &0x8000_0000u32.to_be_bytes(), 4096)
                .unwrap()
                .to_vec(),
        ),
        ("oversized message", {
            // fmt 0, csid 3, timestamp 0, length 0xFFFFFF, type 20 (AMF0 command), stream 0
            let mut m = vec![0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0];
            m.extend_from_slice(&[0u8; 4096]);
            m
        }),
        (
            "unknown message type",
            rtmp::serialize_message(3, 99, 0, 0, b"junk", 4096)
                .unwrap()
                .to_vec(),
        ),
    ];
    for (what, bytes) in attacks {
        let mut c = RtmpClient::player(server.rtmp_port, "live", "safe");
        c.expect_status("NetStream.Play.Start");
        c.raw().write_all(&bytes).unwrap();
        let s = c.raw().try_clone().unwrap();
        closes_soon(s, what);
    }
    assert!(
        server.metric("shardcast_protocol_errors_total") >= 4.0,
        "bad input is counted"
    );
    // The publisher and the viewer lost nothing.
    watcher.pump(Duration::from_millis(1500));
    assert!(
        watcher.raw.len() > before + 50_000,
        "the viewer kept receiving ({} -> {} bytes)",
        before,
        watcher.raw.len()
    );
    let (frames, stderr, _) = decode(&server.http_url("live/safe.flv"), 2);
    assert!(
        stderr.trim().is_empty() && frames >= 40,
        "stream still decodes: {frames} frames, {stderr}"
    );
    publisher.kill().unwrap();
}

#[test]
fn play_before_publish_waits_when_configured() {
    let server = Server::start("rtmp-wait", "[rtmp]\nplay_missing = \"wait\"\n");
    let mut early = RtmpClient::player(server.rtmp_port, "live", "later");
    early.expect_status("NetStream.Play.Start");
    early.pump(Duration::from_millis(500));
    assert!(early.media.is_empty());
    let mut publisher = publish_testsrc(&server.rtmp_url("live/later"), 8, 25);
    let deadline = Instant::now() + Duration::from_secs(10);
    while early
        .media
        .iter()
        .filter(|m| m.kind == MediaKind::Video)
        .count()
        < 50
    {
        assert!(
            Instant::now() < deadline && !early.closed,
            "the waiting viewer got {} messages",
            early.media.len()
        );
        early.pump(Duration::from_millis(100));
    }
    // It starts like any joiner: video config first.
    let first_video = early
        .media
        .iter()
        .find(|m| m.kind == MediaKind::Video)
        .unwrap();
    assert_eq!(first_video.body[0], 0x17, "an AVC keyframe tag...");
    assert_eq!(first_video.body[1], 0, "...carrying the sequence header");
    publisher.kill().unwrap();
}
