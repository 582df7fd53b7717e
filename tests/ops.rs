//! Operating the real binary: config flags, start-up logging, API and kick, limits,
//! metrics, graceful shutdown.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use proto::rtmp::MediaKind;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardcast"))
}

#[test]
fn print_config_round_trips_and_flags_override() {
    let out = bin()
        .args([
            "--print-config",
            "--cores",
            "0",
            "--rtmp-port",
            "1999",
            "--config",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let config = shardcast::server::config::parse("printed", &text)
        .expect("--print-config output parses back");
    assert_eq!(config.rtmp.port, 1999);
    assert_eq!(
        config.server.cores,
        shardcast::server::config::Cores::List(vec![0])
    );
    assert_eq!(
        config.http.port,
        shardcast::server::config::Config::default().http.port
    );
}

#[test]
fn invalid_config_exits_78_naming_the_key() {
    let dir = temp_dir("ops-badconfig");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[hls]\npart_ms = 50\n").unwrap();
    let out = bin()
        .arg("--config")
        .arg(&file)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hls.part_ms") && err.contains("50"), "{err}");
    let out = bin()
        .args(["--config", "/nonexistent/shardcast.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/shardcast.toml"));
    let out = bin()
        .args(["--cores", "0-", "--check-config", "--config", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
}

#[test]
fn logs_shards_nodes_and_ports_then_stops_cleanly_draining_viewers() {
    let server = Server::start("ops-shutdown", "[server]\nshutdown_timeout_ms = 3000\n");
    let mut publisher = publish_testsrc(&server.rtmp_url("live/down"), 20, 25);
    wait_for("the stream", Duration::from_secs(15), || {
        server.get("/api/streams/live/down").0 == 200
    });
    let mut viewer = TcpStream::connect((Ipv4Addr::LOCALHOST, server.http_port)).unwrap();
    write!(viewer, "GET /live/down.flv HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let log = server.log();
    for needle in [
        "shards=2",
        "NUMA node",
        "shard running shard=0",
        "shard running shard=1",
        "listening",
        &server.rtmp_port.to_string(),
        &server.http_port.to_string(),
    ] {
        assert!(
            log.contains(needle),
            "start-up log lacks {needle:?}:\n{log}"
        );
    }
    let started = Instant::now();
    let status = server.stop();
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(6));
    // The viewer's response was finished properly (last chunk), not cut.
    viewer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut raw = Vec::new();
    let _ = viewer.read_to_end(&mut raw);
    assert!(
        raw.len() > 10_000 && raw.ends_with(b"0\r\n\r\n"),
        "viewer got {} bytes, ending {:?}",
        raw.len(),
        &raw[raw.len().saturating_sub(8)..]
    );
    let _ = publisher.kill();
}

#[test]
fn api_lists_streams_and_kicks_publishers() {
    let server = Server::start("ops-api", "[streams]\nreconnect_grace_ms = 500\n");
    let mut publisher = publish_testsrc(&server.rtmp_url("live/api"), 30, 25);
    wait_for("the stream", Duration::from_secs(15), || {
        server.get("/api/streams/live/api").0 == 200
    });
    // The rates are over the last second: wait until one second of steady publishing.
    let fps = || -> f64 {
        let v: serde_json::Value =
            serde_json::from_slice(&server.get("/api/streams/live/api").2).unwrap();
        v["video_fps"].as_f64().unwrap_or(0.0)
    };
    wait_for("video_fps to settle at 25", Duration::from_secs(8), || {
        (20.0..=30.0).contains(&fps())
    });
    let (status, head, body) = server.get("/api/streams");
    assert_eq!(status, 200);
    assert!(head.contains("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let s = &v["streams"][0];
    assert_eq!(s["stream"], "live/api");
    assert_eq!(s["width"], 320);
    assert_eq!(s["height"], 240);
    assert!(s["video"].as_str().unwrap().starts_with("avc1."), "{s}");
    assert_eq!(s["audio"], "mp4a.40.2");
    assert!(s["bitrate_bps"].as_u64().unwrap() > 10_000, "{s}");
    assert!(
        (20.0..=30.0).contains(&s["video_fps"].as_f64().unwrap()),
        "{s}"
    );
    let metrics = String::from_utf8_lossy(&server.get("/metrics").2).into_owned();
    assert!(
        metrics.contains("shardcast_stream_frames_total{stream=\"live/api\"}"),
        "{metrics}"
    );
    assert_eq!(metric_sum(&metrics, "shardcast_publishers"), 1.0);

    assert_eq!(server.post("/api/streams/live/nope/kick").0, 404);
    let (status, _, _) = server.post("/api/streams/live/api/kick");
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if publisher.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kicked publisher is still connected"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for("the kicked stream to end", Duration::from_secs(5), || {
        server.get("/api/streams/live/api").0 == 404
    });
}

#[test]
fn viewer_limits_refuse_clearly() {
    let server = Server::start("ops-limits", "[streams]\nmax_viewers_per_stream = 1\n");
    let mut publisher = publish_testsrc(&server.rtmp_url("live/lim"), 15, 25);
    wait_for("the stream", Duration::from_secs(15), || {
        server.get("/api/streams/live/lim").0 == 200
    });
    let mut first = RtmpClient::player(server.rtmp_port, "live", "lim");
    first.expect_status("NetStream.Play.Start");
    let mut second = RtmpClient::player(server.rtmp_port, "live", "lim");
    second.expect_status("NetStream.Play.Failed");
    let (status, _, _) = server.get("/live/lim.flv");
    assert_eq!(status, 503);
    first.pump(Duration::from_millis(500));
    assert!(
        first.media.iter().any(|m| m.kind == MediaKind::Video),
        "the admitted viewer plays"
    );
    let _ = publisher.kill();
}

#[test]
fn memlock_too_low_fails_at_start_saying_what_to_set() {
    // An unprivileged user whose hard RLIMIT_MEMLOCK is below glommio's minimum.
    let runuser = require("runuser", "util-linux");
    require("prlimit", "util-linux");
    let out = Command::new(runuser)
        .args(["-u", "nobody", "--", "prlimit", "--memlock=65536:65536"])
        .arg(env!("CARGO_BIN_EXE_shardcast"))
        .args(["--config", "/dev/null", "--cores", "0"])
        .args([
            "--rtmp-port",
            &free_port().to_string(),
            "--http-port",
            &free_port().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RLIMIT_MEMLOCK") && err.contains("LimitMEMLOCK=infinity"),
        "{err}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let server = Server::start("ops-json", "[server]\nlog_format = \"json\"\n");
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
}
