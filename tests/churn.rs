//! Stream churn: publishers come and go, and every ended stream's state is freed at
//! once (the stream table, `server::streams`). 1,000 publish/unpublish cycles of
//! distinct keys with HLS on and no reconnect grace, some with an HLS request blocked
//! on the stream when it ends; afterwards the table, the directory and the blocked
//! requests are empty and RSS is back at its post-warm-up level.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Publish `tags` (a short H.264/AAC clip) on `live/NAME`; or, with `blocked_request`,
/// publish nothing and hold an HLS playlist request, which waits for the first segment,
/// until the publisher leaves. Returns how long that request took to be answered after
/// the publisher left, and its status.
fn cycle(
    server: &Server,
    name: &str,
    tags: &[Media],
    blocked_request: bool,
) -> Option<(Duration, u16)> {
    let mut publisher = RtmpClient::publisher(server.rtmp_port, "live", name);
    // `expect_status` reads in 50 ms rounds; short rounds keep 1,000 cycles quick.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !publisher
        .statuses
        .iter()
        .any(|s| s == "NetStream.Publish.Start")
    {
        assert!(
            Instant::now() < deadline,
            "no Publish.Start: {:?}",
            publisher.statuses
        );
        publisher.pump(Duration::from_millis(2));
    }
    if !blocked_request {
        for t in tags {
            publisher.send(t.kind, t.timestamp_ms, &t.body);
        }
    }
    let blocked = blocked_request.then(|| {
        wait_publishing(server, &format!("live/{name}"));
        let mut s = TcpStream::connect(server.http_addr()).unwrap();
        write!(
            s,
            "GET /live/{name}/ll.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        // Let the request reach its wait before the stream ends.
        std::thread::sleep(Duration::from_millis(30));
        s
    });
    publisher.stop();
    let mut s = blocked?;
    let left = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let (status, _, _) = parse_response(&raw);
    Some((left.elapsed(), status))
}

#[test]
fn a_thousand_publish_cycles_leave_no_state_and_flat_memory() {
    let server = Server::start(
        "churn",
        "[streams]\nreconnect_grace_ms = 0\n[hls]\nenabled = true\nll = true\nts = true\n",
    );
    let tags = flv_tags(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/flv/h264-aac.flv"),
    );
    assert!(tags.len() > 20);
    let pid = server.pid();
    let started = Instant::now();
    let mut answered = Vec::new();
    let mut warm_rss = 0;
    for i in 0..1000 {
        if let Some(a) = cycle(&server, &format!("churn{i}"), &tags, i % 20 == 0) {
            answered.push(a);
        }
        if i == 199 {
            wait_for(
                "the warm-up streams to end",
                Duration::from_secs(10),
                || server.metric("shardcast_streams_owned") == 0.0,
            );
            warm_rss = rss_kib(pid);
        }
    }
    eprintln!("1000 cycles in {:?}", started.elapsed());
    wait_for("every stream to end", Duration::from_secs(10), || {
        server.metric("shardcast_streams_owned") == 0.0
    });
    let (status, _, body) = server.get("/api/streams");
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        list["streams"],
        serde_json::json!([]),
        "no stream is left listed"
    );
    assert_eq!(server.metric("shardcast_hls_blocked_requests"), 0.0);
    assert_eq!(server.metric("shardcast_publishers"), 0.0);

    // A blocked request learns of the end from the owner's announcement, not from a
    // periodic re-check (which is 1 s): it is answered 404 at once.
    assert_eq!(answered.len(), 50);
    for (took, status) in &answered {
        assert_eq!(
            *status, 404,
            "a request blocked on an ended stream: {answered:?}"
        );
        assert!(
            *took < Duration::from_millis(500),
            "answered {took:?} after the stream ended"
        );
    }

    // Requests for keys that do not exist are answered at once and leave nothing
    // behind: 50,000 distinct keys, pipelined.
    let mut s = TcpStream::connect(server.http_addr()).unwrap();
    let mut requests = String::new();
    for i in 0..50_000 {
        requests.push_str(&format!(
            "GET /live/ghost{i}/ll.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
    }
    requests.push_str("GET /live/ghost/ll.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(requests.as_bytes()))
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    writer.join().unwrap().unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(
        text.matches("HTTP/1.1 404").count(),
        50_001,
        "every unknown key is a 404"
    );
    assert_eq!(server.metric("shardcast_hls_blocked_requests"), 0.0);

    let end_rss = rss_kib(pid);
    eprintln!("RSS after warm-up {warm_rss} KiB, after 1000 cycles {end_rss} KiB");
    assert!(
        end_rss <= warm_rss + warm_rss / 20 + 1024,
        "RSS grew from {warm_rss} KiB after 200 cycles to {end_rss} KiB after 1000"
    );
    assert!(!server.log().contains("panicked"));
}
