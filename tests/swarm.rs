//! The swarm load tool (bench/, its own package) against a real shardcast: a handful of
//! RTMP and HTTP-FLV viewers for a few seconds must receive every frame the swarm's
//! publisher sent from their first keyframe on, byte for byte, with no errors.
//!
//! The swarm binary lives in the `shardcast-bench` package, which `cargo test` for this
//! package does not build: the test builds it with the same profile first.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{require, Server};

/// Builds `swarm` next to the `shardcast` binary this test was built with.
fn swarm_binary() -> PathBuf {
    let server = Path::new(env!("CARGO_BIN_EXE_shardcast"));
    let dir = server
        .parent()
        .expect("the binary is in a profile directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "-q", "-p", "shardcast-bench", "--bin", "swarm"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build for the swarm");
    assert!(status.success(), "building the swarm failed: {status}");
    let swarm = dir.join("swarm");
    assert!(
        swarm.is_file(),
        "{} missing after the build",
        swarm.display()
    );
    swarm
}

/// 6 s of 320x240 H.264 + AAC with a 1 s GOP (the swarm loops it).
fn sample_flv(dir: &Path) -> PathBuf {
    let ffmpeg = require("ffmpeg", "ffmpeg");
    let path = dir.join("swarm-test.flv");
    let out = Command::new(ffmpeg)
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "6",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv"])
        .arg(&path)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[test]
fn rtmp_and_http_flv_viewers_receive_every_frame_sent() {
    let swarm = swarm_binary();
    let server = Server::start_with_cores("swarm", "0", "");
    let flv = sample_flv(&server.dir);
    let out = Command::new(&swarm)
        .arg("--flv")
        .arg(&flv)
        .args(["--rtmp", &format!("127.0.0.1:{}", server.rtmp_port)])
        .args(["--http", &format!("127.0.0.1:{}", server.http_port)])
        .args(["--rtmp-viewers", "4", "--flv-viewers", "4"])
        .args(["--warmup", "1.5", "--duration", "3", "--grace", "1"])
        .args(["--server-pid", &server.pid().to_string(), "--label", "test"])
        .output()
        .expect("run the swarm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "swarm failed: {stderr}\nserver log:\n{}",
        server.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON line from the swarm ({e}): {stdout}\n{stderr}"));

    let published = line["published_frames"].as_u64().unwrap();
    // 1.5 + ~1 + 3 s at 25 video + ~43 audio frames per second
    assert!(published > 250, "only {published} frames published: {line}");
    assert!(
        line["server_cpu_s"].as_f64().is_some(),
        "server CPU not sampled: {line}"
    );
    for proto in ["rtmp", "http-flv"] {
        let p = &line["protocols"][proto];
        assert_eq!(p["viewers"], 4, "{proto}: {p}");
        assert_eq!(p["playing"], 4, "{proto}: {p}");
        assert_eq!(p["with_keyframe"], 4, "{proto}: {p}");
        assert_eq!(p["errors"], 0, "{proto}: {p}");
        assert_eq!(p["disconnects"], 0, "{proto}: {p}");
        assert_eq!(p["unknown_frames"], 0, "{proto}: {p}");
        assert_eq!(p["out_of_order"], 0, "{proto}: {p}");
        let expected = p["frames_expected"].as_u64().unwrap();
        // each viewer saw at least the 3 s window: 4 viewers x 3 s x ~68 frames/s
        assert!(expected > 4 * 150, "{proto}: {p}");
        assert_eq!(p["frames_received"], p["frames_expected"], "{proto}: {p}");
        assert_eq!(p["bytes_received"], p["bytes_expected"], "{proto}: {p}");
        assert!(
            p["latency_ms"]["count"].as_u64().unwrap() > 0,
            "{proto}: {p}"
        );
        assert_eq!(p["startup_ms"]["count"], 4, "{proto}: {p}");
    }
    server.stop();
}
