//! Recording end to end: ffmpeg publishes over RTMP, the server records FLV or fragmented
//! MP4, and ffprobe/ffmpeg check the files — after a clean finish, after `kill -9`, and
//! what happens when the directory cannot be written.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// The config of a recording server: a short reconnect grace so files are finalized
/// soon after the publisher leaves.
fn record_config(format: &str, dir: &str) -> String {
    format!("[streams]\nreconnect_grace_ms = 500\n\n[record]\nenabled = true\nformat = \"{format}\"\ndir = \"{dir}\"\nfsync_ms = 1000\n")
}

/// The one recording under `dir`, once it exists.
fn the_recording(server: &Server, dir: &Path) -> PathBuf {
    wait_for("the recording file", Duration::from_secs(10), || {
        !files_under(dir).is_empty()
    });
    let files = files_under(dir);
    assert_eq!(
        files.len(),
        1,
        "one file per recording: {files:?}\n{}",
        server.log()
    );
    files.into_iter().next().unwrap()
}

fn assert_plays(path: &Path, min_frames: u64) {
    let (codecs, stderr) = probe_codecs(path.to_str().unwrap());
    assert!(
        stderr.trim().is_empty(),
        "ffprobe {}: {stderr}",
        path.display()
    );
    assert!(
        codecs.contains(&"h264".to_owned()) && codecs.contains(&"aac".to_owned()),
        "{}: {codecs:?}",
        path.display()
    );
    let (frames, stderr, out) = decode(path.to_str().unwrap(), 3600);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "decoding {}: {stderr}",
        path.display()
    );
    assert!(
        frames >= min_frames,
        "{}: {frames} frames, expected at least {min_frames}",
        path.display()
    );
}

/// Publish 10 s, unpublish, wait for the file to be closed, then check its duration.
fn records_the_published_duration(format: &str, extension: &str) {
    let server = Server::start(
        &format!("record-{format}"),
        &record_config(format, "recordings"),
    );
    let dir = server.dir.join("recordings");
    let published_s = 10.0;
    let mut publisher = publish_testsrc(&server.rtmp_url("live/rec"), published_s as u32, 25);
    wait_publishing(&server, "live/rec");
    let path = the_recording(&server, &dir);
    assert!(
        path.ends_with(format!(
            "live/rec/{}",
            path.file_name().unwrap().to_str().unwrap()
        )),
        "{}",
        path.display()
    );
    assert_eq!(path.extension().and_then(|e| e.to_str()), Some(extension));
    let status = publisher.wait().unwrap();
    assert!(status.success(), "ffmpeg publisher failed");
    // Finalized after the 500 ms grace.
    wait_for(
        "the recording to be closed",
        Duration::from_secs(10),
        || server.log_contains("recording closed"),
    );

    let (duration, stderr) = probe_duration(&path);
    let duration = duration
        .unwrap_or_else(|| panic!("ffprobe found no duration in {}: {stderr}", path.display()));
    assert!(
        stderr.trim().is_empty(),
        "ffprobe {}: {stderr}",
        path.display()
    );
    assert!(
        (duration - published_s).abs() <= 0.5,
        "{}: ffprobe says {duration:.3} s, {published_s} s were published",
        path.display()
    );
    // The same from the packets, whatever the container's header says.
    let span = probe_video_span(&path);
    assert!(
        (span - published_s).abs() <= 0.5,
        "{}: video packets span {span:.3} s",
        path.display()
    );
    // 10 s at 25 fps: every frame made it.
    assert_plays(&path, 245);
    assert_eq!(server.metric("shardcast_recording_errors_total"), 0.0);
    assert!(server.stop().success());
}

#[test]
fn records_flv_with_the_published_duration() {
    records_the_published_duration("flv", "flv");
}

#[test]
fn records_fmp4_with_the_published_duration() {
    records_the_published_duration("fmp4", "mp4");
}

/// `kill -9` the server 6 s into a recording: the file plays, up to about then.
fn survives_kill_9(format: &str) {
    let mut server = Server::start(
        &format!("record-kill-{format}"),
        &record_config(format, "recordings"),
    );
    let dir = server.dir.join("recordings");
    let publisher = publish_testsrc(&server.rtmp_url("live/crash"), 30, 25);
    wait_publishing(&server, "live/crash");
    let started = Instant::now();
    let path = the_recording(&server, &dir);
    std::thread::sleep(Duration::from_secs(6).saturating_sub(started.elapsed()));
    let recorded_s = started.elapsed().as_secs_f64();
    let status = server.kill_hard();
    assert!(!status.success(), "the server died of SIGKILL: {status}");
    end_process(publisher);

    let (duration, stderr) = probe_duration(&path);
    let duration = duration.unwrap_or_else(|| {
        panic!(
            "ffprobe found no duration in {} after kill -9: {stderr}",
            path.display()
        )
    });
    // At most the last unwritten fMP4 fragment (1 s: a GOP, or MAX_FRAGMENT_MS) and the
    // stream's start-up are lost; FLV loses only frames not yet handed to the kernel.
    assert!(
        duration > recorded_s - 2.0 && duration < recorded_s + 0.5,
        "{} after kill -9 lasts {duration:.2} s; {recorded_s:.2} s were published",
        path.display()
    );
    let span = probe_video_span(&path);
    assert!(
        (span - duration).abs() <= 0.5,
        "{}: ffprobe says {duration:.2} s, the packets span {span:.2} s",
        path.display()
    );
    assert_plays(&path, ((recorded_s - 2.0) * 25.0) as u64);
}

#[test]
fn flv_recording_plays_after_kill_9() {
    survives_kill_9("flv");
}

#[test]
fn fmp4_recording_plays_after_kill_9() {
    survives_kill_9("fmp4");
}

#[test]
fn unwritable_directory_is_logged_and_counted_and_viewers_are_unaffected() {
    // A directory below a regular file: no user, root included, can create it.
    let base = temp_dir("record-unwritable-base");
    let blocker = base.join("not-a-directory");
    std::fs::write(&blocker, b"a file where the recording directory should be").unwrap();
    let dir = blocker.join("recordings");
    let server = Server::start(
        "record-unwritable",
        &record_config("flv", dir.to_str().unwrap()),
    );
    let publisher = publish_testsrc(&server.rtmp_url("live/safe"), 20, 25);
    wait_publishing(&server, "live/safe");

    wait_for(
        "the recording error to be counted",
        Duration::from_secs(10),
        || server.metric("shardcast_recording_errors_total") >= 1.0,
    );
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("cannot write recording"))
        .unwrap_or_else(|| panic!("no recording error in the log:\n{log}"));
    let expected = dir.join("live/safe");
    assert!(
        line.contains(expected.to_str().unwrap()),
        "the error names the path {}: {line}",
        expected.display()
    );
    assert!(
        line.contains("live/safe"),
        "the error names the stream: {line}"
    );
    assert!(
        std::fs::read(&blocker).unwrap().starts_with(b"a file"),
        "the blocking file is untouched"
    );

    // Viewers of the same stream over HTTP-FLV and HLS decode as if nothing happened.
    let (frames, stderr, _) = decode(&server.http_url("live/safe.flv"), 3);
    assert!(
        stderr.trim().is_empty() && frames >= 60,
        "HTTP-FLV viewer: {frames} frames, {stderr}"
    );
    wait_for("an HLS segment", Duration::from_secs(15), || {
        let (status, _, body) = server.get("/live/safe/ts.m3u8");
        status == 200 && String::from_utf8_lossy(&body).contains("#EXTINF")
    });
    let (frames, stderr, _) = decode(&server.http_url("live/safe.m3u8"), 2);
    assert!(
        stderr.trim().is_empty() && frames >= 40,
        "HLS viewer: {frames} frames, {stderr}"
    );
    // One error per recording attempt, not one per frame.
    assert_eq!(server.metric("shardcast_recording_errors_total"), 1.0);
    end_process(publisher);
    let _ = std::fs::remove_dir_all(&base);
}

/// SIGTERM while recording: the server closes the file before it exits (the last fMP4
/// fragment is written only at close), so nothing published before the signal is lost —
/// with the publisher still sending, and within the reconnect grace after it left, when
/// no connection is left to hold the shutdown open.
fn sigterm_closes_the_recording(publisher_left: bool) {
    let name = if publisher_left {
        "record-sigterm-grace"
    } else {
        "record-sigterm"
    };
    let config = record_config("fmp4", "recordings")
        .replace("reconnect_grace_ms = 500", "reconnect_grace_ms = 10000");
    let server = Server::start(name, &config);
    let dir = server.dir.join("recordings");
    // 5.5 s: mid-GOP, so the open fragment holds half a second the file lacks until
    // the recording is closed.
    let published_ms = 5500;
    let mut publisher = publish_testsrc(&server.rtmp_url("live/term"), 30, 25);
    wait_publishing(&server, "live/term");
    let started = Instant::now();
    let path = the_recording(&server, &dir);
    std::thread::sleep(Duration::from_millis(published_ms).saturating_sub(started.elapsed()));
    let recorded_s = started.elapsed().as_secs_f64();
    if publisher_left {
        // The publisher drops (as on a network failure); the stream waits for it.
        publisher.kill().unwrap();
        wait_for("the publisher to leave", Duration::from_secs(5), || {
            server.log_contains("publisher left")
        });
        std::thread::sleep(Duration::from_millis(300));
    }
    let log_dir = server.dir.clone();
    assert!(server.stop().success(), "clean exit on SIGTERM");
    end_process(publisher);
    let log = std::fs::read_to_string(log_dir.join("server.log")).unwrap();
    assert!(
        log.contains("recording closed"),
        "the recording was not closed at shutdown:\n{log}"
    );
    let (duration, stderr) = probe_duration(&path);
    let duration =
        duration.unwrap_or_else(|| panic!("no duration in {}: {stderr}", path.display()));
    assert!(
        (duration - recorded_s).abs() <= 0.5,
        "{} lasts {duration:.2} s; {recorded_s:.2} s were published before SIGTERM",
        path.display()
    );
    assert_plays(&path, ((recorded_s - 0.5) * 25.0) as u64);
}

#[test]
fn sigterm_closes_the_recording_of_a_live_publisher() {
    sigterm_closes_the_recording(false);
}

#[test]
fn sigterm_within_the_reconnect_grace_closes_the_recording() {
    sigterm_closes_the_recording(true);
}

/// A publisher that reconnects within the grace continues the same file, and the file's
/// timeline has no hole or overlap where the reconnect was.
#[test]
fn reconnect_within_the_grace_continues_the_same_file() {
    let config = record_config("flv", "recordings")
        .replace("reconnect_grace_ms = 500", "reconnect_grace_ms = 3000");
    let server = Server::start("record-reconnect", &config);
    let dir = server.dir.join("recordings");
    let url = server.rtmp_url("live/again");
    assert!(publish_testsrc(&url, 4, 25).wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(publish_testsrc(&url, 4, 25).wait().unwrap().success());
    wait_for(
        "the recording to be closed",
        Duration::from_secs(10),
        || server.log_contains("recording closed"),
    );
    let path = the_recording(&server, &dir);
    // 8 s of media; the reconnect's gap may or may not be kept in the timeline.
    let span = probe_video_span(&path);
    assert!(
        (7.5..=9.0).contains(&span),
        "{}: {span:.2} s of video for two 4 s publishes",
        path.display()
    );
    assert_plays(&path, 190);
    let video: Vec<u32> = flv_tags(&path)
        .iter()
        .filter(|t| t.kind == proto::rtmp::MediaKind::Video)
        .map(|t| t.timestamp_ms)
        .collect();
    assert!(
        video.windows(2).all(|w| w[1] >= w[0]),
        "video timestamps go back in {}",
        path.display()
    );
}
