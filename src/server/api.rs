//! The HTTP API (`/api/...`): list live streams with their QoS, and kick a publisher.
//! Answers from the directory on whichever shard the request lands; a kick is sent to
//! the stream's owner shard.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use proto::http::{Method, Request, Response, Status};
use proto::media::StreamKey;
use serde_json::json;

use crate::server::cmd::ShardCmd;
use crate::server::shard::Shard;

fn json_response(status: Status, value: serde_json::Value) -> Response {
    let mut body = serde_json::to_vec_pretty(&value).unwrap_or_default();
    body.push(b'\n');
    Response::with_body(status, "application/json", Bytes::from(body)).cache_control("no-store")
}

fn error(status: Status, message: &str) -> Response {
    json_response(status, json!({ "error": message }))
}

/// `rest` is the path after `/api/`.
pub fn handle(
    request: &Request,
    rest: &str,
    shard: &Rc<Shard>,
    peer: Option<std::net::SocketAddr>,
) -> Response {
    match (&request.method, rest) {
        (Method::Get | Method::Head, "streams") => streams(shard),
        (Method::Get | Method::Head, _) if rest.starts_with("streams/") => {
            let Some(key) = StreamKey::from_path(&rest["streams".len()..]) else {
                return error(Status::NOT_FOUND, "no such stream");
            };
            match stream_json(shard, &key) {
                Some(v) => json_response(Status::OK, v),
                None => error(Status::NOT_FOUND, &format!("stream '{key}' is not live")),
            }
        }
        (Method::Post, _) if rest.starts_with("streams/") && rest.ends_with("/kick") => {
            let path = &rest["streams".len()..rest.len() - "/kick".len()];
            let Some(key) = StreamKey::from_path(path) else {
                return error(Status::NOT_FOUND, "no such stream");
            };
            let Some(entry) = shard.hub.directory().lookup(&key) else {
                return error(Status::NOT_FOUND, &format!("stream '{key}' is not live"));
            };
            shard.access.kicked(peer, &key);
            shard
                .hub
                .send(entry.owner, ShardCmd::Kick { key: key.clone() });
            json_response(
                Status::OK,
                json!({ "stream": key.as_str(), "kicked": true }),
            )
        }
        (_, "streams") => Response::method_not_allowed("GET, HEAD"),
        _ => error(
            Status::NOT_FOUND,
            "unknown API path; see the README for /api/streams",
        ),
    }
}

fn streams(shard: &Rc<Shard>) -> Response {
    let all = shard.hub.directory().all();
    let mut keys: Vec<_> = all.keys().cloned().collect();
    keys.sort();
    let list: Vec<_> = keys.iter().filter_map(|k| stream_json(shard, k)).collect();
    json_response(Status::OK, json!({ "streams": list }))
}

fn stream_json(shard: &Rc<Shard>, key: &StreamKey) -> Option<serde_json::Value> {
    let e = shard.hub.directory().lookup(key)?;
    let s = &e.stats;
    let info = e.shared.info.load_full();
    let uptime = e.started.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0);
    Some(json!({
        "stream": key.as_str(),
        "app": key.app(),
        "name": key.stream(),
        "owner_shard": e.owner,
        "publishing": e.publishing.load(Ordering::Relaxed),
        "uptime_s": (uptime * 10.0).round() / 10.0,
        "viewers": s.viewers.load(Ordering::Relaxed),
        "bitrate_bps": s.bitrate_bps.load(Ordering::Relaxed),
        "video_fps": s.video_fps_milli.load(Ordering::Relaxed) as f64 / 1000.0,
        "frames": s.frames.load(Ordering::Relaxed),
        "bytes": s.bytes.load(Ordering::Relaxed),
        "keyframes": s.keyframes.load(Ordering::Relaxed),
        "lag_skips": s.lag_skips.load(Ordering::Relaxed),
        "slow_viewers_dropped": s.too_slow.load(Ordering::Relaxed),
        "publisher_resumes": s.resumes.load(Ordering::Relaxed),
        "timestamp_fixes": s.timestamp_fixes.load(Ordering::Relaxed),
        "video": info.as_ref().and_then(|i| i.video_codec.clone()),
        "audio": info.as_ref().and_then(|i| i.audio_codec.clone()),
        "width": info.as_ref().and_then(|i| i.width),
        "height": info.as_ref().and_then(|i| i.height),
        "sample_rate": info.as_ref().and_then(|i| i.sample_rate),
        "channels": info.as_ref().and_then(|i| i.channels),
    }))
}
