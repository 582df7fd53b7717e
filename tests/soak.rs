//! Soak: minutes of churn against one server, sampled every 10 s.
//!
//! - a stable publisher sends a looped H.264/AAC clip in real time for the whole run,
//!   watched by one RTMP and one HTTP-FLV viewer that must receive every frame, in
//!   order, from their first keyframe on;
//! - churn publishers come and go on their own keys, some reconnecting within the
//!   grace; one is kicked through the API now and then;
//! - churn viewers join and leave over RTMP, HTTP-FLV and HLS (playlists, segments,
//!   blocking reloads), plus reloads for keys that do not exist;
//! - bad clients: RTMP garbage, HTTP heads that never finish, viewers that stop
//!   reading.
//!
//! Every 10 s it samples RSS, open fds, owned streams, listed streams and open
//! connections. Pass: RSS and fds are flat after warm-up (within 5%, plus a little
//! absolute slack for allocator noise), the fd count returns to its idle level, and
//! both healthy viewers got every frame.
//!
//! The suite runs 3 minutes; `bench/soak` runs the 60-minute version
//! (`SOAK_SECONDS=3600 cargo test --release --test soak -- --ignored`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use proto::rtmp::MediaKind;

/// A small deterministic PRNG (xorshift64*): the run is the same every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn clip() -> Vec<Media> {
    flv_tags(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/flv/h264-aac.flv"))
}

/// Sequence headers and metadata: sent once per publish, not per loop.
fn is_config(m: &Media) -> bool {
    match m.kind {
        MediaKind::Data => true,
        // FLV video: AVCPacketType 0; audio: AACPacketType 0.
        MediaKind::Video => m.body.len() > 1 && m.body[1] == 0,
        MediaKind::Audio => m.body.len() > 1 && m.body[1] == 0,
    }
}

/// What a viewer checks: media in order, by kind, timestamp and size.
type Seen = (u8, u32, usize);

fn seen(m: &Media) -> Seen {
    let k = match m.kind {
        MediaKind::Audio => 8,
        MediaKind::Video => 9,
        MediaKind::Data => 18,
    };
    (k, m.timestamp_ms, m.body.len())
}

/// Publish the clip on `live/NAME` in real time, looped, until `stop` or `until`.
/// Logs the media sent (configs excluded) to `sent`; returns whether the server
/// closed the connection (a kick).
fn publish_loop(
    port: u16,
    name: &str,
    clip: &[Media],
    until: Instant,
    stop: &AtomicBool,
    sent: Option<&Mutex<Vec<Seen>>>,
) -> bool {
    let mut p = RtmpClient::publisher(port, "live", name);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.statuses.iter().any(|s| s == "NetStream.Publish.Start") {
        if Instant::now() > deadline || p.closed {
            return false;
        }
        p.pump(Duration::from_millis(5));
    }
    let span = clip.iter().map(|t| t.timestamp_ms).max().unwrap_or(0) + 40;
    let start = Instant::now();
    let mut round = 0u32;
    'outer: loop {
        for t in clip {
            if round > 0 && is_config(t) {
                continue;
            }
            let ts = round * span + t.timestamp_ms;
            let at = start + Duration::from_millis(u64::from(ts));
            loop {
                let now = Instant::now();
                if now >= until || stop.load(Ordering::Relaxed) || p.closed {
                    break 'outer;
                }
                if now >= at {
                    break;
                }
                // Reading keeps acks flowing and notices a kick.
                p.pump((at - now).min(Duration::from_millis(20)));
            }
            p.send(t.kind, ts, &t.body);
            if let Some(sent) = sent {
                if !is_config(t) {
                    sent.lock().unwrap().push(seen(&Media {
                        kind: t.kind,
                        timestamp_ms: ts,
                        body: t.body.clone(),
                    }));
                }
            }
        }
        round += 1;
    }
    let kicked = p.closed;
    p.stop();
    kicked
}

/// Read an HTTP-FLV stream until it ends; returns its media.
fn flv_watch(server: &Server, key: &str, until: Instant) -> Vec<Seen> {
    let mut s = TcpStream::connect(server.http_addr()).unwrap();
    write!(s, "GET /{key}.flv HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) if Instant::now() < until => {}
            Err(_) => break,
        }
    }
    let (status, _, body) = parse_response(&raw);
    assert_eq!(status, 200, "HTTP-FLV viewer of {key}");
    flv_tags_in(&body)
        .iter()
        .filter(|m| !is_config(m))
        .map(seen)
        .collect()
}

/// Watch `live/NAME` over RTMP until the stream ends (or `until`); returns its media.
fn rtmp_watch(port: u16, name: &str, until: Instant) -> Vec<Seen> {
    let mut v = RtmpClient::player(port, "live", name);
    let mut out = Vec::new();
    while !v.closed && Instant::now() < until {
        v.pump(Duration::from_millis(200));
        out.extend(
            v.media
                .drain(..)
                .filter(|m| !is_config(m))
                .map(|m| seen(&m)),
        );
        if v.statuses
            .iter()
            .any(|s| s.contains("UnpublishNotify") || s.contains("Play.Stop"))
        {
            break;
        }
    }
    out
}

/// `got` must be a contiguous run of `sent` starting at a video frame, and miss at most
/// the frames in flight when the run ended.
fn assert_every_frame(who: &str, sent: &[Seen], got: &[Seen]) {
    assert!(got.len() > 100, "{who} got only {} frames", got.len());
    let first = sent
        .iter()
        .position(|s| *s == got[0])
        .unwrap_or_else(|| panic!("{who}: first frame {:?} was never sent", got[0]));
    assert_eq!(got[0].0, 9, "{who} starts with video (the GOP cache)");
    for (i, g) in got.iter().enumerate() {
        let want = sent.get(first + i);
        assert_eq!(
            Some(g),
            want,
            "{who}: frame {i} after its first is not the next frame sent (a frame was lost or reordered)"
        );
    }
    let missed_at_end = sent.len() - (first + got.len());
    assert!(
        missed_at_end <= 10,
        "{who} missed the last {missed_at_end} frames"
    );
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn soak(total: Duration) {
    let server = Arc::new(Server::start(
        "soak",
        "[streams]\nreconnect_grace_ms = 2000\nsend_stall_timeout_ms = 3000\n\
         [hls]\nenabled = true\nts = true\nll = true\n",
    ));
    let clip = Arc::new(clip());
    let pid = server.pid();
    let t0 = Instant::now();
    let end = t0 + total;
    let stop = Arc::new(AtomicBool::new(false));
    let idle_fds = fds(pid);
    let mut threads = Vec::new();

    // The stable stream and its two healthy viewers.
    let sent = Arc::new(Mutex::new(Vec::new()));
    {
        let (server, clip, stop, sent) = (server.clone(), clip.clone(), stop.clone(), sent.clone());
        threads.push(thread::spawn(move || {
            publish_loop(server.rtmp_port, "stable", &clip, end, &stop, Some(&sent));
        }));
    }
    wait_publishing(&server, "live/stable");
    let rtmp_viewer = {
        let server = server.clone();
        thread::spawn(move || rtmp_watch(server.rtmp_port, "stable", end + Duration::from_secs(10)))
    };
    let flv_viewer = {
        let server = server.clone();
        thread::spawn(move || flv_watch(&server, "live/stable", end + Duration::from_secs(10)))
    };

    // Churn publishers: 3 threads, each on its own keys, some reconnecting in the grace.
    let kicked = Arc::new(AtomicU64::new(0));
    for t in 0..3u64 {
        let (server, clip, stop, kicked) =
            (server.clone(), clip.clone(), stop.clone(), kicked.clone());
        threads.push(thread::spawn(move || {
            let mut rng = Rng(0x9e37_79b9 + t);
            let mut n = 0;
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                let name = format!("churn{t}-{n}");
                let sessions = 1 + rng.below(2); // a second session = a reconnect
                for _ in 0..sessions {
                    let until =
                        (Instant::now() + Duration::from_millis(2000 + rng.below(4000))).min(end);
                    if publish_loop(server.rtmp_port, &name, &clip, until, &stop, None) {
                        kicked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                thread::sleep(Duration::from_millis(rng.below(500)));
            }
        }));
    }

    // Churn viewers over RTMP, HTTP-FLV and HLS.
    for t in 0..3u64 {
        let (server, stop) = (server.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            let mut rng = Rng(0x51_7cc1_b727 + t);
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                let key = if rng.below(2) == 0 {
                    "stable".to_string()
                } else {
                    format!("churn{}-{}", rng.below(3), rng.below(5))
                };
                let stay = Instant::now() + Duration::from_millis(500 + rng.below(3000));
                match rng.below(4) {
                    0 => {
                        let mut v = RtmpClient::player(server.rtmp_port, "live", &key);
                        while Instant::now() < stay && !v.closed {
                            v.pump(Duration::from_millis(100));
                            v.media.clear();
                        }
                    }
                    1 => {
                        if let Ok(mut s) = TcpStream::connect(server.http_addr()) {
                            let _ = write!(s, "GET /live/{key}.flv HTTP/1.1\r\nHost: x\r\n\r\n");
                            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                            let mut buf = vec![0u8; 65536];
                            while Instant::now() < stay {
                                if let Ok(0) = s.read(&mut buf) {
                                    break;
                                }
                            }
                        }
                    }
                    2 => {
                        // An HLS player: playlist, then its newest segment.
                        let (status, _, body) = server.get(&format!("/live/{key}/ts.m3u8"));
                        if status == 200 {
                            let text = String::from_utf8_lossy(&body).into_owned();
                            if let Some(seg) = text
                                .lines()
                                .rev()
                                .find(|l| !l.starts_with('#') && !l.is_empty())
                            {
                                let _ = server.get(&format!("/live/{key}/{seg}"));
                            }
                        }
                    }
                    _ => {
                        // A blocking reload for the next part, and one for a key that
                        // does not exist (answered at once).
                        let _ = server.get(&format!("/live/ghost{}/ll.m3u8", rng.below(1_000_000)));
                        let (status, _, body) = server.get(&format!("/live/{key}/ll.m3u8"));
                        if status == 200 {
                            let text = String::from_utf8_lossy(&body).into_owned();
                            if let Some(msn) = text
                                .lines()
                                .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
                                .and_then(|v| v.trim().parse::<u64>().ok())
                            {
                                let segments = text.matches("#EXTINF").count() as u64;
                                let _ = server.get(&format!(
                                    "/live/{key}/ll.m3u8?_HLS_msn={}&_HLS_part=0",
                                    msn + segments
                                ));
                            }
                        }
                    }
                }
            }
        }));
    }

    // Bad clients and kicks.
    {
        let (server, stop) = (server.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            let mut rng = Rng(0xbad);
            let mut held: Vec<(TcpStream, Instant)> = Vec::new();
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                held.retain(|(_, until)| Instant::now() < *until);
                match rng.below(4) {
                    0 => {
                        // RTMP garbage after a valid C0.
                        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", server.rtmp_port)) {
                            let junk: Vec<u8> = (0..3000).map(|_| rng.next() as u8).collect();
                            let _ = s.write_all(&[3]);
                            let _ = s.write_all(&junk);
                        }
                    }
                    1 => {
                        // An HTTP head that never finishes (held for a while).
                        if let Ok(mut s) = TcpStream::connect(server.http_addr()) {
                            let _ = s.write_all(b"GET /live/stable.flv HTTP/1.1\r\nHost:");
                            held.push((s, Instant::now() + Duration::from_secs(15)));
                        }
                    }
                    2 => {
                        // A viewer that stops reading: dropped by the stall timeout.
                        let s = connect_small_rcvbuf(server.http_addr(), 4096);
                        let mut s = s;
                        let _ = s.write_all(b"GET /live/stable.flv HTTP/1.1\r\nHost: x\r\n\r\n");
                        held.push((s, Instant::now() + Duration::from_secs(8)));
                    }
                    _ => {
                        // Kick one of the live churn publishers.
                        let (_, _, body) = server.get("/api/streams");
                        let text = String::from_utf8_lossy(&body).into_owned();
                        let live: Vec<&str> = text
                            .split("\"stream\":")
                            .skip(1)
                            .filter_map(|s| s.split('"').nth(1))
                            .filter(|k| k.starts_with("live/churn"))
                            .collect();
                        if !live.is_empty() {
                            let key = live[rng.below(live.len() as u64) as usize];
                            let _ = server.post(&format!("/api/streams/{key}/kick"));
                        }
                    }
                }
                thread::sleep(Duration::from_millis(300 + rng.below(700)));
            }
        }));
    }

    // Samples every 10 s.
    let warmup = total / 3;
    let mut samples: Vec<(Duration, u64, usize)> = Vec::new();
    eprintln!("   t    RSS KiB   fds  owned  listed  conns");
    while Instant::now() < end {
        thread::sleep(Duration::from_secs(10).min(end.saturating_duration_since(Instant::now())));
        let t = t0.elapsed();
        let (rss, fd) = (rss_kib(pid), fds(pid));
        let owned = server.metric("shardcast_streams_owned");
        let conns = server.metric("shardcast_open_connections");
        let listed = {
            let (_, _, body) = server.get("/api/streams");
            String::from_utf8_lossy(&body)
                .matches("\"stream\":")
                .count()
        };
        eprintln!(
            "{:>4.0}s {rss:>10} {fd:>5} {owned:>6} {listed:>7} {conns:>6}",
            t.as_secs_f64()
        );
        samples.push((t, rss, fd));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let got_rtmp = rtmp_viewer.join().unwrap();
    let got_flv = flv_viewer.join().unwrap();
    let sent = sent.lock().unwrap().clone();
    eprintln!(
        "stable stream: {} frames sent; RTMP viewer got {}, HTTP-FLV viewer got {}; {} churn publishers kicked",
        sent.len(),
        got_rtmp.len(),
        got_flv.len(),
        kicked.load(Ordering::Relaxed)
    );
    assert_every_frame("the RTMP viewer", &sent, &got_rtmp);
    assert_every_frame("the HTTP-FLV viewer", &sent, &got_flv);

    // Flat after warm-up: the level at the end of warm-up is the baseline.
    let after: Vec<_> = samples.iter().filter(|s| s.0 >= warmup).collect();
    assert!(
        after.len() >= 2,
        "too few samples after warm-up: {samples:?}"
    );
    let (base_rss, base_fds) = (after[0].1, after[0].2);
    for &&(t, rss, fd) in &after {
        assert!(
            rss <= base_rss + base_rss / 20 + 2048,
            "RSS {rss} KiB at {t:?} is more than 5% above {base_rss} KiB after warm-up: {samples:?}"
        );
        assert!(
            fd <= base_fds + base_fds / 20 + 16,
            "{fd} fds at {t:?}, {base_fds} after warm-up: {samples:?}"
        );
    }
    // Everything closes: the fd count returns to its idle level, no stream is left.
    wait_for(
        "connections and streams to close",
        Duration::from_secs(20),
        || fds(pid) <= idle_fds + 2 && server.metric("shardcast_streams_owned") == 0.0,
    );
    assert_eq!(server.metric("shardcast_hls_blocked_requests"), 0.0);
    assert!(!server.log().contains("panicked"), "a task panicked");
}

#[test]
fn soak_three_minutes() {
    soak(Duration::from_secs(180));
}

/// The long soak (`bench/soak`): `SOAK_SECONDS` (default 3600).
#[test]
#[ignore]
fn soak_long() {
    let secs = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600);
    soak(Duration::from_secs(secs));
}
